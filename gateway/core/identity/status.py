"""Identity status: is the identity qualified, so that its INS may be used?

The word ``VALI`` is overloaded (domain.md §2 and §9.1), so the reading is explicit:

* ``pam-2.11`` (default) — IHE PAM France 2.11.2 and FR Core 2.1.0: PID-32 ``VALI``
  together with an INS in PID-3 means *qualifiée*. Table 0445 has no QUAL/RECUP.
* ``frcore-rniv`` — RNIV and the FR Core CI build (PR #306): four statuses
  PROV / RECUP / VALI / QUAL, and only ``QUAL`` is *qualifiée*.

In both, the ``FICT`` (fictitious) and ``DOUT`` (doubtful) attributes, in any
repetition, keep the identity unqualified (RNIV EXI SI 09), and an INS received for
an unqualified identity is not used: the message is integrated without it
(PAM §6.6.15). Pure functions; no patient data in findings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.core.identity.ins import InsCode
from gateway.model import Finding

__all__ = [
    "IdentityConvention",
    "CONVENTIONS",
    "DEFAULT_CONVENTION",
    "StatusAssessment",
    "assess_status",
    "reliability_extension",
    "RELIABILITY_URL",
    "CS_V2_0445",
    "CS_IDENTITY_STATUS",
]

IdentityConvention = Literal["pam-2.11", "frcore-rniv"]
CONVENTIONS: tuple[IdentityConvention, ...] = ("pam-2.11", "frcore-rniv")
DEFAULT_CONVENTION: IdentityConvention = "pam-2.11"

RELIABILITY_URL = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
CS_V2_0445 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445"
CS_IDENTITY_STATUS = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-identity-status"

_BLOCKING_ATTRIBUTES = frozenset({"FICT", "DOUT"})
_QUALIFYING = {"pam-2.11": "VALI", "frcore-rniv": "QUAL"}


@dataclass(frozen=True, slots=True)
class StatusAssessment:
    """What PID-32 (or an equivalent) says about the identity.

    ``status`` is the first repetition as received (upper-cased), ``attributes`` the
    other repetitions (``HOMA``, ``FICT``, ``DOUT`` ...). ``reason`` is set when an INS
    was received but must not be used.
    """

    qualified: bool
    status: str | None
    attributes: tuple[str, ...] = ()
    reason: Finding | None = None

    @property
    def blocked_by_attribute(self) -> bool:
        """True when FICT or DOUT appears anywhere in the status repetitions."""
        return bool(_BLOCKING_ATTRIBUTES & ({self.status} | set(self.attributes)))


def _check_convention(convention: str) -> None:
    if convention not in _QUALIFYING:
        raise ValueError(f"unknown identity convention {convention!r}; expected one of {CONVENTIONS}")


def assess_status(
    status_reps: Sequence[str],
    has_ins: bool,
    convention: IdentityConvention = DEFAULT_CONVENTION,
) -> StatusAssessment:
    """Decide whether the identity is qualified under ``convention``.

    An identity without an INS is never qualified (qualification is what makes the
    INS usable); it gets no ``reason`` since there is nothing to drop. With an INS and
    a non-qualifying status, ``reason`` is an ``INS_NOT_QUALIFIED`` warning: per
    PAM §6.6.15 the message is integrated without the INS, not rejected.
    """
    _check_convention(convention)
    reps = tuple(r.strip().upper() for r in status_reps if r and r.strip() and r.strip() != '""')
    status = reps[0] if reps else None
    attributes = reps[1:]
    blocked = bool(_BLOCKING_ATTRIBUTES & set(reps))
    wanted = _QUALIFYING[convention]
    qualified = has_ins and status == wanted and not blocked

    reason: Finding | None = None
    if has_ins and not qualified:
        if blocked:
            found = sorted(_BLOCKING_ATTRIBUTES & set(reps))
            why = f"identity carries the attribute {'/'.join(found)}"
        elif status is None:
            why = "no identity status was given"
        else:
            why = f"identity status is {status}, not {wanted}"
        reason = Finding(
            code=InsCode.INS_NOT_QUALIFIED.value,
            message=f"INS received for an identity that is not qualified ({why}, convention {convention}); "
            "the INS is not used",
            location=None,
            severity="warning",
        )
    return StatusAssessment(qualified=qualified, status=status, attributes=attributes, reason=reason)


def _status_code(assessment: StatusAssessment, convention: IdentityConvention) -> tuple[str, str]:
    """(system, code) for the ``identityStatus`` sub-extension."""
    if convention == "frcore-rniv":
        if assessment.qualified:
            return CS_IDENTITY_STATUS, "QUAL"
        # EXI SI 09: doubtful or fictitious identities stay PROV. A QUAL without an
        # INS cannot be claimed (the CI-build invariants require the INS with QUAL).
        if not assessment.blocked_by_attribute and assessment.status in {"RECUP", "VALI"}:
            return CS_IDENTITY_STATUS, assessment.status
        return CS_IDENTITY_STATUS, "PROV"
    # pam-2.11: the 0445 code as received. Exception: VALI means "qualifiée" in
    # FR Core 2.1.0 (invariant fr-core-1 ties it to an INS), so an unqualified VALI
    # (INS absent or dropped, or FICT/DOUT) is emitted as PROV rather than lie.
    code = assessment.status or "PROV"
    if code == "VALI" and not assessment.qualified:
        code = "PROV"
    return CS_V2_0445, code


def reliability_extension(
    assessment: StatusAssessment,
    convention: IdentityConvention = DEFAULT_CONVENTION,
) -> dict[str, Any]:
    """The FR Core ``fr-core-identity-reliability`` extension (identityStatus only).

    ``validationDate``/``validationMode``/``methodCollection`` are not carried by
    PID-32, so they are left to callers that know them.
    """
    _check_convention(convention)
    system, code = _status_code(assessment, convention)
    return {
        "url": RELIABILITY_URL,
        "extension": [{"url": "identityStatus", "valueCoding": {"system": system, "code": code}}],
    }
