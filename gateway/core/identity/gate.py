"""The identity gate: may a DMP-bound document go now, or must it wait, and why (pure).

A document is held when the identity registry contradicts it, or when the pure identity
rules found a reason and the registry does not lift it:

* ``INS_CONFLICT`` — its IPP is registered with another INS;
* ``INS_TRAITS_MISMATCH`` — an identity registered with its INS has other strict traits;
* the reason the pipeline gave (``IdentityVerdict.reason``) — except ``INS_NOT_QUALIFIED``
  for a valid INS the registry already has *qualified* (an ADT with PID-32 VALI came first).

A document held for want of qualification alone may be lifted inside the journal
transaction that records it, if an ADT qualifies that INS meanwhile:
``GateDecision.unless_qualified`` names the INS to look for.

The registry's view is read by the caller (``Journal.identity_context``) and passed in; the
types below are the few attributes the gate reads, so this module needs no journal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.core.identity.traits import strict_traits_differ
from gateway.model import Finding, PatientIdentity

__all__ = [
    "Claim",
    "GateDecision",
    "Registered",
    "Registry",
    "judge",
    "patient_from_traits",
    "registry_qualified",
    "traits_of",
]


class Registered(Protocol):
    """One identity of the registry, as the gate reads it."""

    @property
    def ins(self) -> str | None: ...
    @property
    def qualified(self) -> int: ...
    @property
    def traits(self) -> Mapping[str, Any]: ...


class Registry(Protocol):
    """The registry's view of a patient: the identity under its IPP, those with its INS."""

    @property
    def by_ipp(self) -> Registered | None: ...
    @property
    def with_ins(self) -> Sequence[Registered]: ...


class Claim(Protocol):
    """What the pure identity rules concluded from the message (``IdentityVerdict``)."""

    @property
    def ipp_key(self) -> str | None: ...
    @property
    def ins(self) -> str | None: ...
    @property
    def ins_valid(self) -> bool: ...
    @property
    def reason(self) -> Finding | None: ...


@dataclass(frozen=True)
class GateDecision:
    """``hold`` is why the document waits (None: it goes now).

    ``unless_qualified``: the INS whose qualification, found in the registry when the
    exchange is recorded, lifts the hold at once.
    """

    hold: Finding | None = None
    unless_qualified: str | None = None


def judge(registry: Registry, claim: Claim, patient: PatientIdentity) -> GateDecision:
    """Hold or go for one DMP-bound (or patient-mailed) document."""
    hold = _hold(registry, claim, patient)
    liftable = hold is not None and hold is claim.reason and hold.code == "INS_NOT_QUALIFIED" and claim.ins_valid
    return GateDecision(hold, claim.ins if liftable else None)


def _hold(registry: Registry, claim: Claim, patient: PatientIdentity) -> Finding | None:
    known = registry.by_ipp
    if claim.ipp_key and known and known.ins and claim.ins and known.ins != claim.ins:
        return Finding("INS_CONFLICT", "this IPP is known with a different INS", "PID-3")
    if claim.ins:
        for other in registry.with_ins:
            differing = strict_traits_differ(patient, patient_from_traits(other.traits))
            if differing:
                return Finding(
                    "INS_TRAITS_MISMATCH",
                    f"strict traits differ from the identity registry: {', '.join(differing)}",
                    "PID-5",
                )
    if claim.reason is None:
        return None
    if claim.reason.code == "INS_NOT_QUALIFIED" and claim.ins_valid and registry_qualified(registry, claim.ins):
        return None
    return claim.reason


def registry_qualified(registry: Registry, ins: str | None) -> bool:
    """The registry holds ``ins`` as a qualified identity (under the IPP or on its own)."""
    rows = [registry.by_ipp, *registry.with_ins]
    return any(r is not None and r.qualified and r.ins == ins for r in rows)


def traits_of(p: PatientIdentity) -> dict[str, Any]:
    """The strict INS traits as the registry stores them."""
    return {
        "birth_family": p.birth_family,
        "birth_given_list": p.birth_given_list,
        "first_given": p.first_given,
        "gender": p.gender,
        "birth_date": p.birth_date,
        "birthplace_cog": p.birthplace_cog,
    }


def patient_from_traits(traits: Mapping[str, Any]) -> PatientIdentity:
    """A registry row's traits as a :class:`PatientIdentity`, to compare with a message's."""
    return PatientIdentity(
        birth_family=traits.get("birth_family"),
        birth_given_list=traits.get("birth_given_list"),
        first_given=traits.get("first_given"),
        gender=traits.get("gender"),
        birth_date=traits.get("birth_date"),
        birthplace_cog=traits.get("birthplace_cog"),
    )
