"""Strict structural validation with hl7apy (gateway.core.hl7v2.strict)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.core.hl7v2.strict import strict_validate

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
OURS = [
    "mdm_t02_initial.hl7",
    "mdm_t10_replace.hl7",
    "mdm_t04_delete.hl7",
    "oru_doc_r01_initial.hl7",
    "adt_a01_vali.hl7",
    "adt_a28_prov.hl7",
    "adt_a40_merge.hl7",
    "adt_a47_remove_ins.hl7",
]
SECRETS = ("PAT-TROIS", "DOMINIQUE", "279035121518989", "PENsaW5p", "PD94bWwg")


def load(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode("utf-8")


def errors(findings):
    return [f for f in findings if f.severity == "error"]


@pytest.mark.parametrize("name", OURS)
def test_our_fixtures_have_no_structural_error(name: str) -> None:
    findings = strict_validate(load(name))
    assert errors(findings) == []
    assert all(f.code == "HL7_STRICT" for f in findings)


def test_prt_is_validated_on_its_own() -> None:
    findings = strict_validate(load("oru_doc_r01_initial.hl7"))
    prt = [f for f in findings if (f.location or "").startswith("PRT[")]
    assert prt  # PRT-2 'UC' is not in the v2.8.2 table 0206: a warning, not an error
    assert all(f.severity == "warning" for f in prt)


def test_missing_required_field_is_named() -> None:
    text = load("mdm_t02_initial.hl7")
    lines = text.split("\r")
    lines = [("PID|1|||" + line.split("|", 4)[4]) if line.startswith("PID") else line for line in lines]
    findings = errors(strict_validate("\r".join(lines)))
    assert len(findings) == 1
    f = findings[0]
    assert f.code == "HL7_STRICT" and f.location == "PID-3"
    assert "PID_3" in f.message and "patient_identifier_list" in f.message


def test_missing_segment_and_dropped_segment() -> None:
    text = "\r".join(s for s in load("mdm_t02_initial.hl7").split("\r") if not s.startswith("TXA"))
    findings = errors(strict_validate(text))
    assert [f.location for f in findings] == ["TXA"]
    text = load("adt_a01_vali.hl7").replace("\rPV1|", "\rXYZ|1\rPV1|")
    findings = errors(strict_validate(text))
    assert any(f.location == "XYZ" for f in findings)


def test_z_segments_are_not_reported() -> None:
    text = load("adt_a01_vali.hl7") + "ZBE|001^RELAIS^1.2.3|20250101||INSERT|N\r"
    assert errors(strict_validate(text)) == []


def test_values_never_appear_in_findings() -> None:
    texts = [load(n) for n in OURS]
    texts.append(load("mdm_t02_initial.hl7").replace("|F|||^^^^^^BDL", "|PAT-TROIS|||^^^^^^BDL"))
    for text in texts:
        for f in strict_validate(text):
            for secret in SECRETS:
                assert secret not in f.message


def test_not_hl7() -> None:
    findings = strict_validate("hello")
    assert [f.code for f in findings] == ["MSH_MISSING"]


def test_unsupported_version() -> None:
    findings = strict_validate(load("adt_a01_vali.hl7").replace("|2.5^FRA^2.11|", "|9.9|"))
    assert [(f.code, f.location) for f in findings] == [("HL7_STRICT", "MSH")]


def test_duration_is_reasonable() -> None:
    text = load("mdm_t02_initial.hl7")
    strict_validate(text)  # warm-up: hl7apy loads its structures lazily
    start = time.perf_counter()
    strict_validate(text)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0  # measured ≈ 30–60 ms; generous bound for slow CI
