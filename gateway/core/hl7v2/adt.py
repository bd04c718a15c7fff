"""PAM-FR (IHE PAM national extension France 2.11) ADT events that touch the patient identity.

Supported triggers: A01 A03 A04 A05 A08 (admission/visit events carrying a PID),
A28 A31 (create/update a person), A40 (merge: MRG-1 holds the ids merged away),
A47 (change of identifier list; PAM-FR §4.4.3–4.4.4 uses it to *remove* an INS:
the old INS goes in MRG-1 and PID-3 carries ``""`` for the INS authority, with the
new status, typically PROV, in PID-32).

MSH-12 may be written ``2.5^FRA^2.11`` (version ^ country ^ national extension
version); only component 1 is the HL7 version.

Findings use the same codes as the document messages (``MSG_TYPE_UNSUPPORTED``,
``PID3_MISSING``) plus ``MRG_MISSING`` and ``ADT_STATUS_INCONSISTENT``. Whether an
INS may be *used* (PID-32 = VALI …) is the identity gate's business, not this module's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.core.hl7v2.pid import identifiers_from_cx, null_identifiers, patient_from_pid
from gateway.core.hl7v2.reader import Message
from gateway.model import INS_OIDS, Finding, Identifier, PatientIdentity

__all__ = ["SUPPORTED_TRIGGERS", "AdtEvent", "parse_adt"]

SUPPORTED_TRIGGERS = frozenset({"A01", "A03", "A04", "A05", "A08", "A28", "A31", "A40", "A47"})
_MRG_TRIGGERS = frozenset({"A40", "A47"})


@dataclass(frozen=True)
class AdtEvent:
    """One PAM-FR ADT event, reduced to what the identity and routing layers need."""

    trigger: str  # MSH-9.2
    structure: str  # MSH-9.3 as written (ADT_A01, ADT_A05, ADT_A39 …)
    control_id: str  # MSH-10
    version: str  # MSH-12.1 (2.5)
    national_extension: str | None = None  # MSH-12.3 (2.11) when MSH-12.2 = FRA
    event_time: str | None = None  # EVN-2 (recorded date/time)
    patient: PatientIdentity = field(default_factory=PatientIdentity)
    patient_class: str | None = None  # PV1-2
    visit_number: str | None = None  # PV1-19.1
    merged_identifiers: tuple[Identifier, ...] = ()  # MRG-1 (A40: ids merged away; A47: previous ids)
    removed_ins: Identifier | None = None  # A47: the INS the sender withdraws

    @property
    def is_merge(self) -> bool:
        return self.trigger == "A40"


def parse_adt(msg: Message) -> tuple[AdtEvent, list[Finding]]:
    """Read a PAM-FR ADT message. Never raises for content problems; returns findings."""
    findings: list[Finding] = []
    msh = msg.msh
    code, trigger, structure = msh[9].value(1).strip(), msh[9].value(2).strip(), msh[9].value(3).strip()
    version = msh[12].value(1).strip()
    extension = msh[12].value(3).strip() if msh[12].value(2).strip() == "FRA" else ""
    pid = msg.segment("PID")
    patient = patient_from_pid(pid) if pid is not None else PatientIdentity()
    base: dict[str, Any] = {
        "trigger": trigger,
        "structure": structure,
        "control_id": msg.control_id,
        "version": version,
        "national_extension": extension or None,
        "event_time": msg["EVN"].value(2).strip() or None,
        "patient": patient,
    }
    if code != "ADT" or trigger not in SUPPORTED_TRIGGERS:
        findings.append(
            Finding(
                "MSG_TYPE_UNSUPPORTED",
                f"MSH-9 '{code}^{trigger}' is not a supported ADT event ({', '.join(sorted(SUPPORTED_TRIGGERS))})",
                "MSH-9",
            )
        )
        return AdtEvent(**base), findings
    if not version.startswith("2.5"):
        findings.append(
            Finding("MSG_VERSION_UNEXPECTED", f"MSH-12 '{version}': PAM-FR uses 2.5", "MSH-12", "warning")
        )
    if pid is None:
        findings.append(Finding("PID3_MISSING", "PID segment is missing", "PID"))
    elif not patient.identifiers:
        findings.append(Finding("PID3_MISSING", "PID-3 carries no patient identifier", "PID-3"))

    merged: tuple[Identifier, ...] = ()
    removed_ins: Identifier | None = None
    if trigger in _MRG_TRIGGERS:
        mrg = msg.segment("MRG")
        merged = identifiers_from_cx(mrg[1]) if mrg is not None else ()
        if not merged:
            findings.append(
                Finding("MRG_MISSING", f"ADT^{trigger} requires MRG-1 (previous identifiers)", "MRG-1")
            )
        if trigger == "A47" and pid is not None:
            removed_ins = _removed_ins(merged, patient, null_identifiers(pid[3]))
            if removed_ins is not None and "VALI" in patient.status:
                findings.append(
                    Finding(
                        "ADT_STATUS_INCONSISTENT",
                        "ADT^A47 removes the INS but PID-32 still says VALI (PAM-FR expects a downgraded status)",
                        "PID-32",
                        "warning",
                    )
                )
    pv1 = msg["PV1"]
    event = AdtEvent(
        **base,
        patient_class=pv1.value(2).strip() or None,
        visit_number=pv1.value(19).strip() or None,
        merged_identifiers=merged,
        removed_ins=removed_ins,
    )
    return event, findings


def _removed_ins(
    merged: tuple[Identifier, ...], patient: PatientIdentity, nulls: tuple[Identifier, ...]
) -> Identifier | None:
    """The INS of MRG-1 that PID-3 withdraws, if any.

    Withdrawn means: PID-3 carries ``""`` for that INS authority, or carries no INS
    at all. A *different* INS in PID-3 is a correction, not a removal.
    """
    old = next((i for i in merged if i.oid in INS_OIDS and i.type_code != "NH"), None)
    if old is None:
        return None
    null_oids = {n.oid for n in nulls if n.oid}
    if old.oid in null_oids or patient.ins is None:
        return old
    return None
