"""PAM-FR ADT events (gateway.core.hl7v2.adt)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.hl7v2.adt import CANCELLATIONS, SUPPORTED_TRIGGERS, parse_adt
from gateway.core.hl7v2.reader import Message
from gateway.model import Identifier

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
INS = Identifier("279035121518989", "1.2.250.1.213.1.4.10", "ASIP-SANTE-INS-NIR", "INS")


def load(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode("utf-8")


def parse(text: str):
    return parse_adt(Message.parse(text))


def test_a01_vali() -> None:
    event, findings = parse(load("adt_a01_vali.hl7"))
    assert findings == []
    assert (event.trigger, event.structure, event.version, event.national_extension) == (
        "A01",
        "ADT_A01",
        "2.5",
        "2.11",
    )
    assert event.control_id == "ADT0001"
    assert event.event_time == "20250101080000"
    assert event.patient.ins == INS
    assert event.patient.status == ("VALI",)
    assert event.patient_class == "I" and event.visit_number == "V000789"
    assert event.merged_identifiers == () and event.removed_ins is None


def test_a28_prov_without_ins() -> None:
    event, findings = parse(load("adt_a28_prov.hl7"))
    assert findings == []
    assert event.trigger == "A28" and event.patient.ins is None
    assert event.patient.status == ("PROV",)
    assert event.patient.ipp is not None and event.patient.ipp.value == "P000124"


def test_a40_merge() -> None:
    event, findings = parse(load("adt_a40_merge.hl7"))
    assert findings == []
    assert event.is_merge
    assert event.merged_identifiers == (Identifier("P000456", "1.2.250.1.999.1.2", "RELAIS-TEST", "PI"),)
    assert event.patient.ipp is not None and event.patient.ipp.value == "P000123"


def test_a47_removes_ins() -> None:
    event, findings = parse(load("adt_a47_remove_ins.hl7"))
    assert findings == []
    assert event.removed_ins == INS
    assert event.merged_identifiers == (INS,)
    assert event.patient.ins is None
    assert [i.value for i in event.patient.identifiers] == ["P000123"]
    assert event.patient.status == ("PROV",)


def test_a47_with_vali_still_warns() -> None:
    text = load("adt_a47_remove_ins.hl7").replace("|N|PROV", "|N|VALI")
    event, findings = parse(text)
    assert event.removed_ins == INS
    assert [f.code for f in findings] == ["ADT_STATUS_INCONSISTENT"]
    assert findings[0].severity == "warning" and findings[0].location == "PID-32"


def test_a47_with_a_new_ins_is_not_a_removal() -> None:
    new = "1790328512151" + "03^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS"
    text = load("adt_a47_remove_ins.hl7").replace('""^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS', new)
    event, findings = parse(text)
    assert findings == []
    assert event.removed_ins is None
    assert event.patient.ins is not None


@pytest.mark.parametrize("name", ["adt_a40_merge.hl7", "adt_a47_remove_ins.hl7"])
def test_mrg_required(name: str) -> None:
    text = "\r".join(s for s in load(name).split("\r") if not s.startswith("MRG")) + "\r"
    event, findings = parse(text)
    assert [f.code for f in findings] == ["MRG_MISSING"]
    assert findings[0].location == "MRG"  # the segment itself is missing
    assert event.merged_identifiers == () and event.removed_ins is None
    _, findings = parse(text + "MRG|\r")
    assert [(f.code, f.location) for f in findings] == [("MRG_MISSING", "MRG-1")]


@pytest.mark.parametrize("trigger", sorted(SUPPORTED_TRIGGERS))
def test_supported_triggers(trigger: str) -> None:
    text = load("adt_a01_vali.hl7").replace("ADT^A01^ADT_A01", f"ADT^{trigger}^ADT_A01")
    if trigger in ("A40", "A44", "A47"):
        text += "MRG|P9^^^RELAIS-TEST&1.2.250.1.999.1.2&ISO^PI\r"
    if trigger in ("A24", "A37"):
        text += "PID|2||P9^^^RELAIS-TEST&1.2.250.1.999.1.2&ISO^PI||AUTRE^PAT^^^^^L||19800101|M\r"
    event, findings = parse(text)
    assert event.trigger == trigger
    assert [f for f in findings if f.severity == "error"] == []
    assert event.cancels == CANCELLATIONS.get(trigger)
    if trigger in ("A24", "A37"):
        assert event.other_patient is not None and event.other_patient.ipp is not None


@pytest.mark.parametrize("trigger", ["A02", "Z99", "A21", "Z80", "A11"])
def test_encounter_events_require_pv1(trigger: str) -> None:
    text = load("adt_a01_vali.hl7").replace("ADT^A01^ADT_A01", f"ADT^{trigger}^ADT_A01")
    no_pv1 = "\r".join(s for s in text.split("\r") if not s.startswith("PV1"))
    _, findings = parse(no_pv1)
    assert [(f.code, f.location) for f in findings if f.severity == "error"] == [("PV1_MISSING", "PV1")]


def test_link_requires_the_second_pid() -> None:
    text = load("adt_a01_vali.hl7").replace("ADT^A01^ADT_A01", "ADT^A24^ADT_A24")
    _, findings = parse(text)
    assert [(f.code, f.location) for f in findings if f.severity == "error"] == [("PID_LINK_MISSING", "PID[2]-3")]


@pytest.mark.parametrize("msh9", ["ADT^A99^ADT_A01", "ADT^Z98", "ORU^R01^ORU_R01"])
def test_unsupported(msh9: str) -> None:
    event, findings = parse(load("adt_a01_vali.hl7").replace("ADT^A01^ADT_A01", msh9))
    assert [f.code for f in findings] == ["MSG_TYPE_UNSUPPORTED"]
    assert findings[0].location == "MSH-9" and findings[0].severity == "error"
    assert event.patient.ins == INS  # the identity is still read


def test_plain_version_and_unexpected_version() -> None:
    event, findings = parse(load("adt_a01_vali.hl7").replace("|2.5^FRA^2.11|", "|2.5|"))
    assert findings == [] and event.national_extension is None
    _, findings = parse(load("adt_a01_vali.hl7").replace("|2.5^FRA^2.11|", "|2.3.1|"))
    assert [f.code for f in findings] == ["MSG_VERSION_UNEXPECTED"]


def test_pid3_missing() -> None:
    lines = load("adt_a01_vali.hl7").split("\r")
    lines = [("PID|1|||" + line.split("|", 4)[4]) if line.startswith("PID") else line for line in lines]
    _, findings = parse("\r".join(lines))
    assert [f.code for f in findings] == ["PID3_MISSING"]
    no_pid = "\r".join(line for line in load("adt_a01_vali.hl7").split("\r") if not line.startswith("PID"))
    _, findings = parse(no_pid)
    assert [f.code for f in findings] == ["PID3_MISSING"]


def test_findings_never_quote_patient_traits() -> None:
    text = load("adt_a47_remove_ins.hl7").replace("|N|PROV", "|N|VALI").replace("ADT^A47", "ADT^A99")
    for t in (text, load("adt_a47_remove_ins.hl7").replace("|N|PROV", "|N|VALI")):
        _, findings = parse(t)
        for f in findings:
            assert "PAT-TROIS" not in f.message and "279035121518989" not in f.message
