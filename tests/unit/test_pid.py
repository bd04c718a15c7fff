"""PID → PatientIdentity (gateway.core.hl7v2.pid)."""

from __future__ import annotations

from pathlib import Path

from gateway.core.hl7v2.pid import identifiers_from_cx, null_identifiers, patient_from_pid
from gateway.core.hl7v2.reader import Message
from gateway.model import Identifier

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
MSH = "MSH|^~\\&|A|B|C|D|20250101||ADT^A28^ADT_A05|1|T|2.5^FRA^2.11\r"


def pid(text: str):
    return patient_from_pid(Message.parse(MSH + text + "\r"))


def test_fixture_identity() -> None:
    msg = Message.parse((FIXTURES / "adt_a01_vali.hl7").read_bytes().decode("utf-8"))
    p = patient_from_pid(msg)
    assert p.identifiers == (
        Identifier("P000123", "1.2.250.1.999.1.2", "RELAIS-TEST", "PI"),
        Identifier("279035121518989", "1.2.250.1.213.1.4.10", "ASIP-SANTE-INS-NIR", "INS"),
    )
    assert p.ins is not None and p.ins.value == "279035121518989"
    assert p.ipp is not None and p.ipp.value == "P000123"
    assert (p.birth_family, p.first_given, p.birth_given_list) == (
        "PAT-TROIS",
        "DOMINIQUE",
        "DOMINIQUE MARIE-LOUISE",
    )
    assert (p.birth_date, p.gender, p.birthplace_cog, p.status) == ("19790328", "F", "51215", ("VALI",))
    assert p.used_family is None and p.used_given is None


def test_segment_accepted_too() -> None:
    msg = Message.parse(MSH + "PID|1||X1^^^&1.2.3&ISO^PI\r")
    assert patient_from_pid(msg["PID"]).identifiers == (Identifier("X1", "1.2.3", None, "PI"),)


def test_given_list_falls_back_to_first_given() -> None:
    p = pid("PID|1||X^^^&1.2.3&ISO^PI||DARK^JEANNE^^^^^L")
    assert p.first_given == "JEANNE" and p.birth_given_list == "JEANNE"


def test_used_name_and_order_of_repetitions() -> None:
    p = pid("PID|1||X^^^&1.2.3&ISO^PI||^MARIE-CECILE^^^^^D~DARK^JEANNE^JEANNE MARIE CECILE^^Mme^^L")
    assert (p.birth_family, p.first_given, p.birth_given_list) == ("DARK", "JEANNE", "JEANNE MARIE CECILE")
    assert p.used_family is None and p.used_given == "MARIE-CECILE"


def test_family_name_subcomponents_and_escapes() -> None:
    p = pid("PID|1||X^^^&1.2.3&ISO^PI||DE\\T\\LA&VAL^ANNE^^^^^L")
    assert p.birth_family == "DE&LA"


def test_birth_date_truncated_and_status_repetitions() -> None:
    p = pid("PID|1||X^^^&1.2.3&ISO^PI||||197903281230|M" + "|" * 24 + "PROV~FICT~")
    assert p.birth_date == "19790328"
    assert p.gender == "M"
    assert p.status == ("PROV", "FICT")


def test_birthplace_only_from_bdl_repetition() -> None:
    p = pid("PID|1||X^^^&1.2.3&ISO^PI||||||||1 rue A^^PARIS^^75001^FRA^H^^75101~^^^^^^BDL^^2A004")
    assert p.birthplace_cog == "2A004"
    p = pid("PID|1||X^^^&1.2.3&ISO^PI||||||||1 rue A^^PARIS^^75001^FRA^H^^75101")
    assert p.birthplace_cog is None


def test_null_values_read_as_absent() -> None:
    p = pid('PID|1||X^^^&1.2.3&ISO^PI||""^""^^^^^L||""|""')
    assert p.birth_family is None and p.first_given is None
    assert p.birth_date is None and p.gender is None


def test_null_identifier_is_not_an_identifier() -> None:
    msg = Message.parse(
        MSH + 'PID|1||P1^^^&1.2.3&ISO^PI~""^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS\r'
    )
    p = patient_from_pid(msg)
    assert p.identifiers == (Identifier("P1", "1.2.3", None, "PI"),)
    assert p.ins is None
    assert null_identifiers(msg["PID"][3]) == (
        Identifier("", "1.2.250.1.213.1.4.8", "ASIP-SANTE-INS-NIR", "INS"),
    )


def test_identifiers_strip_blanks_and_billing_nir_is_not_ins() -> None:
    msg = Message.parse(
        MSH + "PID|1||1790328512151^^^ASIP-SANTE-NIR&1.2.250.1.213.1.4.8&ISO^NH~~P2 ^^^&1.2.3&ISO^PI\r"
    )
    ids = identifiers_from_cx(msg["PID"][3])
    assert [i.value for i in ids] == ["1790328512151", "P2"]
    assert patient_from_pid(msg).ins is None


def test_missing_pid_gives_empty_identity() -> None:
    p = patient_from_pid(Message.parse(MSH))
    assert p.identifiers == () and p.birth_family is None and p.status == ()
