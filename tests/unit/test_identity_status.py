"""Identity status under the two conventions, and the FR Core reliability extension."""

from __future__ import annotations

import pytest

from gateway.core.identity.status import (
    CS_IDENTITY_STATUS,
    CS_V2_0445,
    RELIABILITY_URL,
    StatusAssessment,
    assess_status,
    reliability_extension,
)


def status_coding(ext: dict) -> dict:
    assert ext["url"] == RELIABILITY_URL
    (sub,) = ext["extension"]
    assert sub["url"] == "identityStatus"
    return sub["valueCoding"]


# --- pam-2.11 (default) --------------------------------------------------------------


def test_vali_with_ins_is_qualified_under_pam() -> None:
    a = assess_status(["VALI"], has_ins=True)
    assert a == StatusAssessment(qualified=True, status="VALI", attributes=(), reason=None)
    assert status_coding(reliability_extension(a)) == {"system": CS_V2_0445, "code": "VALI"}


def test_vali_with_fict_is_not_qualified() -> None:
    a = assess_status(["VALI", "FICT"], has_ins=True, convention="pam-2.11")
    assert not a.qualified
    assert a.status == "VALI" and a.attributes == ("FICT",)
    assert a.reason is not None and a.reason.code == "INS_NOT_QUALIFIED"
    assert "FICT" in a.reason.message
    # VALI means "qualifiée" in FR Core 2.1.0, so it is not claimed once the INS is dropped.
    assert status_coding(reliability_extension(a))["code"] == "PROV"


def test_dout_in_any_repetition_blocks() -> None:
    assert not assess_status(["VALI", "HOMA", "DOUT"], has_ins=True).qualified
    assert not assess_status(["DOUT", "VALI"], has_ins=True).qualified


def test_prov_with_ins_is_not_qualified_and_names_the_status() -> None:
    a = assess_status(["PROV"], has_ins=True)
    assert not a.qualified
    assert a.reason is not None
    assert a.reason.code == "INS_NOT_QUALIFIED"
    assert "PROV" in a.reason.message
    assert a.reason.location is None
    assert status_coding(reliability_extension(a)) == {"system": CS_V2_0445, "code": "PROV"}


def test_vali_without_ins_is_not_qualified_and_has_no_reason() -> None:
    a = assess_status(["VALI"], has_ins=False)
    assert not a.qualified and a.reason is None


def test_missing_status() -> None:
    a = assess_status([], has_ins=True)
    assert a.status is None and not a.qualified
    assert a.reason is not None and "no identity status" in a.reason.message
    assert status_coding(reliability_extension(a))["code"] == "PROV"
    assert assess_status(["", '""'], has_ins=False).status is None


def test_other_0445_codes_pass_through_under_pam() -> None:
    a = assess_status(["prov", "homa"], has_ins=False)
    assert a.status == "PROV" and a.attributes == ("HOMA",)
    assert status_coding(reliability_extension(assess_status(["DPOT"], has_ins=False)))["code"] == "DPOT"


def test_qual_is_not_a_pam_code() -> None:
    assert not assess_status(["QUAL"], has_ins=True, convention="pam-2.11").qualified


# --- frcore-rniv ---------------------------------------------------------------------


def test_qual_with_ins_is_qualified_under_rniv() -> None:
    a = assess_status(["QUAL"], has_ins=True, convention="frcore-rniv")
    assert a.qualified and a.reason is None
    assert status_coding(reliability_extension(a, "frcore-rniv")) == {
        "system": CS_IDENTITY_STATUS,
        "code": "QUAL",
    }


def test_vali_is_only_validee_under_rniv() -> None:
    a = assess_status(["VALI"], has_ins=True, convention="frcore-rniv")
    assert not a.qualified
    assert a.reason is not None and "VALI" in a.reason.message and "QUAL" in a.reason.message
    assert status_coding(reliability_extension(a, "frcore-rniv"))["code"] == "VALI"


@pytest.mark.parametrize(
    ("reps", "has_ins", "expected"),
    [
        (["RECUP"], True, "RECUP"),
        (["PROV"], False, "PROV"),
        (["QUAL", "FICT"], True, "PROV"),  # EXI SI 09: fictitious stays PROV
        (["VALI", "DOUT"], False, "PROV"),
        (["QUAL"], False, "PROV"),  # QUAL cannot be claimed without an INS
        (["VIDE"], False, "PROV"),
        ([], False, "PROV"),
    ],
)
def test_rniv_extension_codes(reps: list[str], has_ins: bool, expected: str) -> None:
    a = assess_status(reps, has_ins=has_ins, convention="frcore-rniv")
    assert not a.qualified
    assert status_coding(reliability_extension(a, "frcore-rniv")) == {
        "system": CS_IDENTITY_STATUS,
        "code": expected,
    }


def test_unknown_convention_raises() -> None:
    with pytest.raises(ValueError):
        assess_status(["VALI"], has_ins=True, convention="rniv-2")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        reliability_extension(StatusAssessment(False, None), "x")  # type: ignore[arg-type]
