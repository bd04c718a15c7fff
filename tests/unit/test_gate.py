"""The identity gate (pure): what holds a DMP-bound document, and what lifts the hold."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.core.identity.gate import GateDecision, judge, patient_from_traits, traits_of
from gateway.model import Finding, PatientIdentity

INS = "279035121518989"
PATIENT = PatientIdentity(birth_family="PAT-TROIS", first_given="DOMINIQUE", birth_given_list="DOMINIQUE MARIE-LOUISE",
                          gender="F", birth_date="1979-03-28", birthplace_cog="51215")
NOT_QUALIFIED = Finding("INS_NOT_QUALIFIED", "identity status PROV is not qualified", "PID-32")


@dataclass(frozen=True)
class Row:
    ins: str | None
    qualified: int = 0
    traits: dict[str, Any] = field(default_factory=lambda: traits_of(PATIENT))


@dataclass(frozen=True)
class View:
    by_ipp: Row | None = None
    with_ins: tuple[Row, ...] = ()


@dataclass(frozen=True)
class Verdict:
    ipp_key: str | None = "ipp|P1"
    ins: str | None = INS
    ins_valid: bool = True
    reason: Finding | None = None


def test_a_qualified_identity_the_registry_does_not_contradict_goes() -> None:
    assert judge(View(with_ins=(Row(INS, 1),)), Verdict(), PATIENT) == GateDecision()


def test_an_ipp_registered_with_another_ins_is_a_conflict() -> None:
    decision = judge(View(by_ipp=Row("184127645108946", 1)), Verdict(), PATIENT)
    assert decision.hold is not None and decision.hold.code == "INS_CONFLICT"
    assert decision.unless_qualified is None  # an operator decides, not an ADT


def test_other_strict_traits_under_the_same_ins_are_a_mismatch() -> None:
    other = Row(INS, 1, traits_of(PatientIdentity(**{**traits_of(PATIENT), "birth_date": "1979-03-29"})))
    decision = judge(View(with_ins=(other,)), Verdict(), PATIENT)
    assert decision.hold is not None and decision.hold.code == "INS_TRAITS_MISMATCH"
    assert "birth_date" in decision.hold.message


def test_not_qualified_waits_for_the_ins_unless_the_registry_has_it_qualified() -> None:
    waiting = judge(View(), Verdict(reason=NOT_QUALIFIED), PATIENT)
    assert waiting == GateDecision(NOT_QUALIFIED, unless_qualified=INS)
    assert judge(View(with_ins=(Row(INS, 1),)), Verdict(reason=NOT_QUALIFIED), PATIENT) == GateDecision()
    assert judge(View(with_ins=(Row(INS, 0),)), Verdict(reason=NOT_QUALIFIED), PATIENT).hold is NOT_QUALIFIED


def test_an_invalid_ins_is_never_lifted_by_the_registry() -> None:
    broken = Finding("INS_KEY_INVALID", "bad key", "PID-3")
    decision = judge(View(with_ins=(Row(INS, 1),)), Verdict(ins_valid=False, reason=NOT_QUALIFIED), PATIENT)
    assert decision == GateDecision(NOT_QUALIFIED, None)
    assert judge(View(), Verdict(ins_valid=False, reason=broken), PATIENT) == GateDecision(broken, None)


def test_traits_round_trip_through_the_registry_shape() -> None:
    assert patient_from_traits(traits_of(PATIENT)) == PATIENT
