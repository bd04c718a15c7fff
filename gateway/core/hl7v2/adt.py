"""PAM-FR (IHE PAM national extension France 2.11) ADT events.

Every event of the two PAM-FR transactions is accepted (AA) and journaled:

* ITI-30 *Patient Identity Feed*: A28 create, A31 update (PID applied to the identity
  registry), A24 link / A37 unlink two patients (a second PID names the other one),
  A40 merge (MRG-1 holds the ids merged away), A47 change of identifier list
  (PAM-FR §4.4.3–4.4.4 uses it to *remove* an INS: the old INS goes in MRG-1 and
  PID-3 carries ``""`` for the INS authority, with the new status, typically PROV,
  in PID-32);
* ITI-31 *Patient Encounter Management*: admissions and registrations (A01 A04 A05
  A14), their cancellations (A11 A38 A27), transfers (A02, A12 cancel; A15 pending,
  A26 cancel), discharges (A03, A13 cancel; A16 pending, A25 cancel), class changes
  (A06 A07), leaves of absence (A21/A52 out, A22/A53 back), attending doctor (A54,
  A55 cancel), account move (A44, MRG required), patient update (A08), and the French
  movements Z80–Z89 (changes of medical / nursing responsibility and their
  cancellations) and Z99 (update of a movement). These carry a PID (applied to the
  registry) and a PV1 (kept as the patient's encounter: PV1-2 drives the DMP
  contentTypeCode, volet mapping page).

Required segments (HL7 v2.5 ch. 3 message structures as PAM-FR constrains them):
PID for every event; PV1 for every ITI-31 event (ADT_A01 / ADT_A02 / ADT_A03 /
ADT_A06 / ADT_A09 / ADT_A21 / ADT_A38 / ADT_A52 / ADT_A54 … structures); MRG for
A40 / A44 / A47; two PID for A24 / A37 (ADT_A24 structure). A missing one is an
error naming the segment (ACK AE). ZBE, which PAM-FR requires in movement messages,
only warns: it carries the movement id, which the gateway does not need.

MSH-12 may be written ``2.5^FRA^2.11`` (version ^ country ^ national extension
version); only component 1 is the HL7 version.

Findings use the same codes as the document messages (``MSG_TYPE_UNSUPPORTED``,
``PID3_MISSING``) plus ``MRG_MISSING``, ``PV1_MISSING``, ``PID_LINK_MISSING`` and
``ADT_STATUS_INCONSISTENT``. Whether an INS may be *used* (PID-32 = VALI …) is the
identity gate's business, not this module's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.core.hl7v2.pid import identifiers_from_cx, null_identifiers, patient_from_pid
from gateway.core.hl7v2.reader import Message, Segment
from gateway.model import INS_OIDS, Finding, Identifier, PatientIdentity

__all__ = [
    "CANCELLATIONS",
    "ENCOUNTER_TRIGGERS",
    "IDENTITY_TRIGGERS",
    "SUPPORTED_TRIGGERS",
    "AdtEvent",
    "parse_adt",
]

#: ITI-30 Patient Identity Feed (PAM-FR 2.11 §3.30).
IDENTITY_TRIGGERS = frozenset({"A24", "A28", "A31", "A37", "A40", "A47"})
#: ITI-31 Patient Encounter Management (PAM-FR 2.11 §3.31), French Z-events included.
ENCOUNTER_TRIGGERS = frozenset(
    {
        "A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11", "A12", "A13", "A14",
        "A15", "A16", "A21", "A22", "A25", "A26", "A27", "A38", "A44", "A52", "A53", "A54",
        "A55", "Z80", "Z81", "Z82", "Z83", "Z84", "Z85", "Z86", "Z87", "Z88", "Z89", "Z99",
    }
)
SUPPORTED_TRIGGERS = IDENTITY_TRIGGERS | ENCOUNTER_TRIGGERS
#: Cancellation → the event it cancels (HL7 v2.5 ch. 3 §3.3; PAM-FR Z-event pairs).
CANCELLATIONS: dict[str, str] = {
    "A11": "A01", "A12": "A02", "A13": "A03", "A25": "A16", "A26": "A15", "A27": "A14",
    "A38": "A05", "A52": "A21", "A53": "A22", "A55": "A54", "A37": "A24",
    "Z81": "Z80", "Z83": "Z82", "Z85": "Z84", "Z87": "Z86", "Z89": "Z88",
}
_MRG_TRIGGERS = frozenset({"A40", "A44", "A47"})
_LINK_TRIGGERS = frozenset({"A24", "A37"})


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
    other_patient: PatientIdentity | None = None  # A24 / A37: the second PID
    cancels: str | None = None  # A11, A12 …: the trigger this event cancels

    @property
    def is_encounter(self) -> bool:
        """An ITI-31 event: its PV1 is the patient's current encounter."""
        return self.trigger in ENCOUNTER_TRIGGERS

    @property
    def is_merge(self) -> bool:
        return self.trigger == "A40"


def parse_adt(msg: Message) -> tuple[AdtEvent, list[Finding]]:
    """Read a PAM-FR ADT message. Never raises for content problems; returns findings."""
    pids = msg.all("PID")
    pid = pids[0] if pids else None
    patient = patient_from_pid(pid) if pid is not None else PatientIdentity()
    base = _envelope(msg, patient)
    trigger = base["trigger"]
    unsupported = _unsupported(msg, trigger)
    if unsupported is not None:
        return AdtEvent(**base), [unsupported]
    findings = _structure_findings(msg, trigger, base["version"], pid, patient)
    other = _other_patient(trigger, pids, findings)
    merged, removed_ins = _merged(msg, trigger, pid, patient, findings)
    pv1 = msg["PV1"]
    event = AdtEvent(
        **base,
        patient_class=pv1.value(2).strip() or None,
        visit_number=pv1.value(19).strip() or None,
        merged_identifiers=merged,
        removed_ins=removed_ins,
        other_patient=other,
        cancels=CANCELLATIONS.get(trigger),
    )
    return event, findings


def _envelope(msg: Message, patient: PatientIdentity) -> dict[str, Any]:
    """The fields every event has, supported or not: MSH-9/10/12, EVN-2 and the first PID."""
    msh = msg.msh
    extension = msh[12].value(3).strip() if msh[12].value(2).strip() == "FRA" else ""
    return {
        "trigger": msh[9].value(2).strip(),
        "structure": msh[9].value(3).strip(),
        "control_id": msg.control_id,
        "version": msh[12].value(1).strip(),
        "national_extension": extension or None,
        "event_time": msg["EVN"].value(2).strip() or None,
        "patient": patient,
    }


def _unsupported(msg: Message, trigger: str) -> Finding | None:
    """``MSG_TYPE_UNSUPPORTED`` when MSH-9 is not one of the PAM-FR ADT events."""
    code = msg.msh[9].value(1).strip()
    if code == "ADT" and trigger in SUPPORTED_TRIGGERS:
        return None
    return Finding(
        "MSG_TYPE_UNSUPPORTED",
        f"MSH-9 '{code}^{trigger}' is not a supported ADT event ({', '.join(sorted(SUPPORTED_TRIGGERS))})",
        "MSH-9",
    )


def _structure_findings(
    msg: Message, trigger: str, version: str, pid: Segment | None, patient: PatientIdentity
) -> list[Finding]:
    """The HL7 version, then the segments every event of its transaction requires (PID; PV1, ZBE)."""
    findings: list[Finding] = []
    if not version.startswith("2.5"):
        findings.append(
            Finding("MSG_VERSION_UNEXPECTED", f"MSH-12 '{version}': PAM-FR uses 2.5", "MSH-12", "warning")
        )
    if pid is None:
        findings.append(Finding("PID3_MISSING", "PID segment is missing", "PID"))
    elif not patient.identifiers:
        findings.append(Finding("PID3_MISSING", "PID-3 carries no patient identifier", "PID-3"))
    if trigger not in ENCOUNTER_TRIGGERS:
        return findings
    if msg.segment("PV1") is None:
        findings.append(Finding("PV1_MISSING", f"ADT^{trigger} requires a PV1 segment (PAM-FR)", "PV1"))
    if trigger != "A08" and msg.segment("ZBE") is None:
        findings.append(
            Finding("ZBE_MISSING", f"ADT^{trigger} without the PAM-FR movement segment ZBE", "ZBE", "warning")
        )
    return findings


def _other_patient(trigger: str, pids: list[Segment], findings: list[Finding]) -> PatientIdentity | None:
    """A24 / A37: the patient of the second PID, linked to (or unlinked from) the first."""
    if trigger not in _LINK_TRIGGERS:
        return None
    other = patient_from_pid(pids[1]) if len(pids) >= 2 else None
    if other is None or not other.identifiers:
        findings.append(
            Finding(
                "PID_LINK_MISSING",
                f"ADT^{trigger} requires a second PID naming the other patient (ADT_A24 structure)",
                "PID[2]-3",
            )
        )
        return None
    return other


def _merged(
    msg: Message, trigger: str, pid: Segment | None, patient: PatientIdentity, findings: list[Finding]
) -> tuple[tuple[Identifier, ...], Identifier | None]:
    """A40 / A44 / A47: the MRG-1 identifiers, and for A47 the INS the sender withdraws."""
    if trigger not in _MRG_TRIGGERS:
        return (), None
    mrg = msg.segment("MRG")
    merged = identifiers_from_cx(mrg[1]) if mrg is not None else ()
    if mrg is None:
        findings.append(Finding("MRG_MISSING", f"ADT^{trigger} requires an MRG segment", "MRG"))
    elif not merged and trigger != "A44":
        findings.append(Finding("MRG_MISSING", f"ADT^{trigger} requires MRG-1 (previous identifiers)", "MRG-1"))
    if trigger != "A47" or pid is None:
        return merged, None
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
    return merged, removed_ins


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
