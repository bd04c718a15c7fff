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
    # PRT-2 'UC' (v2.9, pre-adopted by the volet) is not a false positive any more
    assert [f for f in strict_validate(load("oru_doc_r01_initial.hl7")) if (f.location or "").startswith("PRT[")] == []
    findings = strict_validate(load("oru_doc_r01_initial.hl7").replace("PRT||UC||SB", "PRT||QQ||SB"))
    prt = [f for f in findings if (f.location or "").startswith("PRT[")]
    assert prt and all(f.severity == "warning" for f in prt)
    assert "0206" in prt[0].message and "'QQ'" not in prt[0].message  # PRT holds persons: never quoted


def test_ans_national_values_are_not_false_positives() -> None:
    """PID-32 VALI, CX-5 INS, OBX-2 CWE, PRT-2 UC, MetaDMPMSS … are what the French profiles define."""
    for name in OURS:
        text = load(name)
        if "PIDX|" in text or "PV1" not in text:
            continue
        assert [f for f in strict_validate(text) if "table" in f.message] == [], name


def test_an_offending_code_is_shown_and_none_never_printed() -> None:
    text = load("mdm_t02_initial.hl7").replace("|ED|11488-4", "|XX|11488-4", 1)
    findings = strict_validate(text)
    (obx2,) = [f for f in findings if "OBX_2" in f.message]
    assert "'XX'" in obx2.message and "0125" in obx2.message
    assert all("None" not in f.message and f.location for f in findings)


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
