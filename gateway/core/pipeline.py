"""The pure pipeline: raw bytes → decoded → parsed → validated → identity → FHIR and XDS.

No journal, no clock, no network: time and ids come in through :class:`Ids`. The same
function serves the MLLP listener, the HTTP ingest, ``relais check`` (offline) and
replay, so they can never disagree. What needs the journal (duplicates, identity
registry conflicts, holding and releasing) is decided afterwards in ``gateway.intake``.

ACK policy (the application verdict; ``gateway.core.ackmode`` decides what is sent
in HL7 enhanced mode):
* AR — unreadable MSH, unsupported message type, event, version or volet profile (MSH-21), too large;
* AE — stored but rejected: charset, syntax, segment, profile or consistency errors (ERR names the field);
* AA — accepted (it may still be *held* by the identity gate: we keep it and answer AA);
* nothing — an inbound acknowledgement (MSH-9.1 ``ACK``): HL7 v2.5 ch. 2 §2.9.2 never
  acknowledges an acknowledgement; it is journaled and matched to what it answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from gateway.core import cda as cda_mod
from gateway.core.ackmode import AckPlan, plan_acks
from gateway.core.charset import decode_message
from gateway.core.fhir.patient import build_patient
from gateway.core.fhir.pdsm import build_iti65_bundle
from gateway.core.hl7v2.adt import SUPPORTED_TRIGGERS, AdtEvent, parse_adt
from gateway.core.hl7v2.documents import DocumentMessage, check_against_cda, parse_document_message
from gateway.core.hl7v2.limits import Limits, check_limits, check_segments
from gateway.core.hl7v2.profile import read_profile
from gateway.core.hl7v2.reader import Message
from gateway.core.identity.ins import validate_ins
from gateway.core.identity.status import (
    IdentityConvention,
    StatusAssessment,
    assess_status,
    reliability_extension,
)
from gateway.core.xds import build_xds
from gateway.errors import GatewayError
from gateway.model import CdaHeader, Finding, Identifier, PatientIdentity, SubmissionContext

__all__ = ["Ids", "PipelineOptions", "DocumentResult", "IdentityVerdict", "Analysis", "analyse_hl7v2", "analyse_cda"]

Kind = Literal["document", "adt", "cda", "ack", "unsupported", "unreadable"]

_DOC_TYPES = {("ORU", "R01"), ("MDM", "T02"), ("MDM", "T10"), ("MDM", "T04")}
_DOC_CODES = frozenset(code for code, _ in _DOC_TYPES)
#: Findings that make an enhanced-mode accept acknowledgement a commit reject (CR).
_COMMIT_REJECT = frozenset(
    {"MSG_TYPE_UNSUPPORTED", "EVENT_UNSUPPORTED", "VERSION_UNSUPPORTED", "PROCESSING_ID_UNSUPPORTED"}
)
_DMP_REQUIRED = frozenset(
    {"XDS_TYPECODE_NOT_DMP", "XDS_FORMAT_UNKNOWN", "XDS_DOCUMENT_ID_EXTENSION", "XDS_STRUCT_IDNAT"}
)
_SUPPORTED_VERSIONS = ("2.3", "2.4", "2.5", "2.6", "2.7", "2.8", "2.9")


@dataclass(frozen=True)
class Ids:
    """Injected time and identifiers (never read from globals in core code)."""

    now: datetime
    new_uuid: Callable[[], str]

    def urn(self) -> str:
        return f"urn:uuid:{self.new_uuid()}"

    def oid(self) -> str:
        # 2.25.<128-bit integer> is the standard OID form of a UUID (ITU-T X.667).
        return "2.25." + str(int(self.new_uuid().replace("-", ""), 16))

    @property
    def xds_time(self) -> str:
        return self.now.strftime("%Y%m%d%H%M%S")


@dataclass(frozen=True)
class PipelineOptions:
    default_charset: str = "utf-8"
    allow_test_ins: bool = False
    convention: IdentityConvention = "pam-2.11"
    cda_xsd: Path | None = None
    source_id: str = "1.2.250.1.999999.1"
    max_cda_bytes: int = 20 * 1024 * 1024
    limits: Limits = field(default_factory=Limits)
    max_cda_elements: int = cda_mod.DEFAULT_MAX_ELEMENTS
    max_cda_depth: int = cda_mod.DEFAULT_MAX_DEPTH


@dataclass
class DocumentResult:
    index: int
    unique_id: str
    cda: bytes
    header: CdaHeader
    xds: dict[str, Any]
    fhir: dict[str, Any] | None
    action: str


@dataclass(frozen=True)
class IdentityVerdict:
    """What the pure rules say about the patient identity (the registry may add conflicts)."""

    ins: str | None = None
    ins_oid: str | None = None
    ipp_key: str | None = None
    ins_valid: bool = False
    qualified: bool = False
    reason: Finding | None = None  # why a DMP-bound document must be held
    status: StatusAssessment | None = None


@dataclass
class Analysis:
    kind: Kind
    ack_code: str = "AA"
    message: Message | None = None
    charset: str | None = None  # MSH-18 as declared
    summary: dict[str, Any] = field(default_factory=dict)
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    documents: list[DocumentResult] = field(default_factory=list)
    patient: PatientIdentity | None = None
    identity: IdentityVerdict = field(default_factory=IdentityVerdict)
    dmp_bound: bool = False
    ack_reception: bool = False
    adt: AdtEvent | None = None
    doc_message: DocumentMessage | None = None
    acknowledges: str | None = None  # inbound ACK: MSA-2, the control id it answers
    acknowledgement: str | None = None  # inbound ACK: MSA-1

    @property
    def ack_plan(self) -> AckPlan:
        """What goes back: original-mode ACK, or enhanced-mode accept + application ACKs."""
        if self.kind == "ack":
            return AckPlan(enhanced=False, immediate=None, application=False)
        if self.message is None:
            return AckPlan(enhanced=False, immediate=self.ack_code, application=False)
        commit_reject = any(f.code in _COMMIT_REJECT for f in self.errors)
        return plan_acks(
            self.message.msh.value(15), self.message.msh.value(16), self.ack_code, commit_reject=commit_reject
        )

    @property
    def outcome(self) -> str:
        """accepted / rejected / held / recorded (an inbound ACK), as ``relais check`` reports it."""
        if self.kind == "ack":
            return "recorded"
        if self.ack_code != "AA":
            return "rejected"
        if self.kind in ("document", "cda") and self.dmp_bound and self.identity.reason is not None:
            return "held"
        return "accepted"

    def findings_json(self) -> dict[str, list[dict[str, str | None]]]:
        return {"errors": [f.as_dict() for f in self.errors], "warnings": [f.as_dict() for f in self.warnings]}


def ipp_key(ident: Identifier | None) -> str | None:
    """Registry key of an IPP: its assigning authority (OID, else namespace) and value."""
    if ident is None or not ident.value:
        return None
    return f"{ident.oid or ident.namespace or ''}|{ident.value}"


# --------------------------------------------------------------------------- HL7 v2


def analyse_hl7v2(raw: bytes, opts: PipelineOptions, ids: Ids) -> Analysis:
    """Run the whole pure pipeline over one HL7 v2 message as received."""
    try:
        decoded = decode_message(raw, opts.default_charset)
    except GatewayError as exc:
        return _undecodable(raw, exc)
    too_many = check_segments(decoded.text, opts.limits)
    text = decoded.text if too_many is None else _first_segment(decoded.text)
    try:
        msg = Message.parse(text, codec=decoded.charset)
    except GatewayError as exc:
        return Analysis(kind="unreadable", ack_code="AR", errors=[Finding(exc.code, exc.message, exc.location)])
    # an MSH field beyond the limits makes the MSH itself unusable: refused like an unreadable one
    msh_over = check_limits([msg.msh], msg.encoding, opts.limits)
    if msh_over is not None:
        return _msh_over_limits(msg, decoded.declared, msh_over, opts.limits)
    an = Analysis(kind="unsupported", message=msg, charset=decoded.declared, summary=_summary(msg, decoded.declared))
    if too_many is not None:
        an.errors.append(too_many)
        an.ack_code = "AE"
        return an
    # Blanks around components are not part of the value: "ORU^R01 " is ORU^R01.
    if msg.msh.value(9, 1).strip() == "ACK":
        _analyse_ack(an, msg)
        return an
    if _refused_by_header(an, msg, opts.limits):
        return an
    _analyse_by_type(an, msg, opts, ids)
    if an.ack_code == "AA" and an.errors:
        an.ack_code = "AE"
    return an


def _undecodable(raw: bytes, exc: GatewayError) -> Analysis:
    """A message whose bytes do not decode in their charset: AE, answered through an MSH read in latin-1."""
    an = Analysis(kind="unreadable", ack_code="AE", errors=[Finding(exc.code, exc.message, exc.location or "MSH-18")])
    # we still want MSA-2 and the MSH swap: read MSH in latin-1, which cannot fail
    try:
        an.message = Message.parse(raw.decode("latin-1"))
        an.kind = "unsupported"
        an.summary = _summary(an.message, None)
    except GatewayError:
        an.ack_code = "AR"  # no MSH to answer to: the unreadable-MSH AR, as the journal records
    else:
        if an.message.msh.value(9, 1).strip() == "ACK":
            _analyse_ack(an, an.message)
    return an


def _msh_over_limits(msg: Message, charset: str | None, finding: Finding, limits: Limits) -> Analysis:
    """An MSH with a field beyond the limits: AR, summarised from the MSH fields that fit."""
    fits = {n: len(msg.msh.field(n).raw) <= limits.max_field_chars for n in (3, 4, 9, 10, 12)}
    summary = {
        key: msg.msh.value(n) if fits[n] else None
        for key, n in (("sender_app", 3), ("sender_facility", 4), ("control_id", 10), ("version", 12))
    }
    summary["message_type"] = msg.message_type if fits[9] else None
    return Analysis(
        kind="unsupported", ack_code="AR", message=msg, charset=charset, summary=summary,
        errors=[finding],
    )


def _refused_by_header(an: Analysis, msg: Message, limits: Limits) -> bool:
    """MSH-10, MSH-12 and the limits of the segments after MSH; True when the message goes no further."""
    if not msg.control_id.strip():
        an.errors.append(Finding("MSH10_MISSING", "MSH-10 (message control id) is empty", "MSH-10"))
        an.ack_code = "AE"
    version = msg.msh.value(12).strip()
    if not version.startswith(_SUPPORTED_VERSIONS):
        shown = _shown(version) or "(empty)"
        an.errors.append(Finding("VERSION_UNSUPPORTED", f"HL7 version {shown} is not supported", "MSH-12"))
        an.ack_code = "AR"
        return True
    over = check_limits(msg.segments[1:], msg.encoding, limits)
    if over is not None:
        an.errors.append(over)
        an.ack_code = "AE"
        return True
    return False


def _analyse_by_type(an: Analysis, msg: Message, opts: PipelineOptions, ids: Ids) -> None:
    """Documents and ADT events are read; any other type or event is refused (AR)."""
    code, trigger = msg.msh.value(9, 1).strip(), msg.msh.value(9, 2).strip()
    if (code, trigger) in _DOC_TYPES:
        _analyse_document(an, msg, opts, ids)
    elif code == "ADT" and trigger in SUPPORTED_TRIGGERS:
        an.kind = "adt"
        _check_segment_ids(an, msg)
        _analyse_adt(an, msg, opts)
    elif code == "ADT" or code in _DOC_CODES:
        an.errors.append(
            Finding(
                "EVENT_UNSUPPORTED",
                f"MSH-9 '{code}^{trigger}': event {trigger or '(empty)'} is not one this gateway processes",
                "MSH-9",
            )
        )
        an.ack_code = "AR"
    else:
        an.errors.append(
            Finding("MSG_TYPE_UNSUPPORTED", f"message type {_shown(f'{code}^{trigger}')} is not supported", "MSH-9")
        )
        an.ack_code = "AR"


def _analyse_document(an: Analysis, msg: Message, opts: PipelineOptions, ids: Ids) -> None:
    """A document message, once its volet profile (MSH-21) is one we read."""
    profile, refusal = read_profile(msg)
    if refusal is not None and refusal.severity == "error":
        an.errors.append(refusal)
        an.ack_code = "AR"
        return
    an.kind = "document"
    if refusal is not None:
        an.warnings.append(refusal)
    _check_segment_ids(an, msg)
    _analyse_document_message(an, msg, opts, ids, orc_required=profile.requires_orc)


def _first_segment(text: str) -> str:
    """The MSH line alone: enough to answer a message we refuse to read further."""
    return re.split(r"[\r\n]", text[:65536], maxsplit=1)[0]


def _shown(value: str, limit: int = 40) -> str:
    """A sender's value quoted in a finding, cut so that an absurd one cannot bloat the ACK or the journal."""
    return value if len(value) <= limit else value[:limit] + "\u2026"


def _analyse_ack(an: Analysis, msg: Message) -> None:
    """An inbound acknowledgement: recorded, never answered (HL7 v2.5 ch. 2 §2.9.2)."""
    an.kind = "ack"
    an.ack_code = ""
    an.errors = []
    an.acknowledgement = msg["MSA"].value(1).strip() or None
    an.acknowledges = msg["MSA"].field(2).raw or None
    an.summary["acknowledges"] = an.acknowledges


def _check_segment_ids(an: Analysis, msg: Message) -> None:
    """Segment ids are exactly three characters ``[A-Z][A-Z0-9]{2}`` (HL7 v2.5 ch. 2 §2.5.2).

    ``PIDX`` or ``PV`` is not a PID or a PV1 with a typo we could guess: it is refused,
    naming the segment and its position, and never read as another segment.
    """
    for seg in msg.bad_segment_names():
        shown = seg.name if len(seg.name) <= 20 else seg.name[:20] + "…"
        an.errors.append(
            Finding(
                "SEGMENT_ID_INVALID",
                f"segment {seg.index} '{shown}' is not a segment id (three characters [A-Z][A-Z0-9]{{2}})",
                f"segment {seg.index} ({shown})",
            )
        )


def _summary(msg: Message, charset: str | None) -> dict[str, Any]:
    return {
        "sender_app": msg.msh.value(3),
        "sender_facility": msg.msh.value(4),
        "control_id": msg.control_id,
        "message_type": msg.message_type,
        "version": msg.msh.value(12),
        "charset": charset,
    }


def _split(findings: list[Finding], an: Analysis) -> None:
    for f in findings:
        (an.warnings if f.severity == "warning" else an.errors).append(f)


def _assess_identity(patient: PatientIdentity, opts: PipelineOptions, *, from_v2: bool) -> IdentityVerdict:
    ins = patient.ins
    ipp = ipp_key(patient.ipp)
    where = "PID-3" if from_v2 else "recordTarget/patientRole/id"
    if ins is None:
        return IdentityVerdict(
            ipp_key=ipp,
            reason=Finding("INS_NOT_QUALIFIED", "no INS for this patient: the DMP needs a qualified INS", where),
        )
    verdict = validate_ins(
        ins.value,
        oid=ins.oid,
        type_code=ins.type_code,
        sex=patient.gender,
        birth_date=patient.birth_date,
        allow_test=opts.allow_test_ins,
    )
    status = assess_status(patient.status, True, opts.convention) if from_v2 else None
    reason: Finding | None = None
    if not verdict.valid:
        first = verdict.errors[0]
        reason = Finding(first.code, first.message, where)
    elif status is not None and not status.qualified:
        reason = status.reason or Finding(
            "INS_NOT_QUALIFIED", f"identity status {status.status or '(empty)'} is not qualified", "PID-32"
        )
    return IdentityVerdict(
        ins=ins.value,
        ins_oid=ins.oid,
        ipp_key=ipp,
        ins_valid=verdict.valid,
        qualified=verdict.valid and (status is None or status.qualified),
        reason=reason,
        status=status,
    )


def _analyse_document_message(
    an: Analysis, msg: Message, opts: PipelineOptions, ids: Ids, *, orc_required: bool = True
) -> None:
    dm, findings = parse_document_message(msg, orc_required=orc_required)
    an.doc_message = dm
    _split(findings, an)
    an.patient = dm.patient
    an.dmp_bound = bool(dm.flags.get("DESTDMP"))
    an.ack_reception = bool(dm.flags.get("ACK_RECEPTION"))
    if an.errors:
        return
    an.identity = _assess_identity(dm.patient, opts, from_v2=True)
    for doc in dm.documents:
        ctx = SubmissionContext(
            action=dm.action or "submit",  # None only with errors, which return earlier
            flags=dict(dm.flags),
            sender=dm.sender,
            patient_class=dm.patient_class,
            patient=dm.patient,
            type_code=doc.type_code,
            parent_document_id=dm.txa13.unique_id if dm.txa13 else None,
            source_id=opts.source_id,
            sending_application=msg.msh.value(3, 1) or None,
        )
        result = _map_document(an, doc.data, ctx, opts, ids, location=doc.location, index=len(an.documents) + 1)
        if result is None:
            continue
        _split(check_against_cda(dm, doc, result.header), an)
        an.documents.append(result)


def _map_document(
    an: Analysis, data: bytes, ctx: SubmissionContext, opts: PipelineOptions, ids: Ids, *, location: str, index: int, infer_action: bool = False
) -> DocumentResult | None:
    """Parse one CDA and map it to XDS and FHIR; None (with the errors in ``an``) when it cannot be."""
    header = _read_cda(an, data, opts, location)
    if header is None:
        return None
    if infer_action and header.related_type == "RPLC" and header.parent_document_id:
        ctx = replace(ctx, action="replace", parent_document_id=header.parent_document_id)
    ctx = replace(
        ctx,
        submission_time=ids.xds_time,
        submission_set_unique_id=ids.oid(),
        entry_uuid=ids.urn(),
        submission_set_uuid=ids.urn(),
        binary_uuid=ids.urn(),
        patient_uuid=ids.urn(),
    )
    if ctx.patient is None:
        ctx = replace(ctx, patient=header.patient)
    return _build_document(an, data, header, ctx, opts, ids, location=location, index=index)


def _read_cda(an: Analysis, data: bytes, opts: PipelineOptions, location: str) -> CdaHeader | None:
    """The hardened parse, the header and (when configured) the XSD check; None when the CDA is refused.

    A refusal is one error in ``an``; XSD errors are added to ``an`` but keep the header.
    """
    try:
        root = cda_mod.parse_cda(
            data, max_size=opts.max_cda_bytes, max_elements=opts.max_cda_elements, max_depth=opts.max_cda_depth
        )
        header = cda_mod.parse_header(root)
    except GatewayError as exc:
        an.errors.append(Finding(exc.code, exc.message, location))
        return None
    if opts.cda_xsd is not None:
        for f in cda_mod.validate_xsd(root, opts.cda_xsd):
            an.errors.append(replace(f, location=f"{location}: {f.location}" if f.location else location))
    return header


def _build_document(
    an: Analysis,
    data: bytes,
    header: CdaHeader,
    ctx: SubmissionContext,
    opts: PipelineOptions,
    ids: Ids,
    *,
    location: str,
    index: int,
) -> DocumentResult | None:
    """XDS metadata and, unless it is a deletion, the ITI-65 bundle of a parsed CDA."""
    try:
        xds, xds_findings = build_xds(header, data, ctx)
    except GatewayError as exc:
        an.errors.append(Finding(exc.code, exc.message, exc.location or location))
        return None
    _split_xds_findings(an, xds_findings, dmp_bound=bool(ctx.flags.get("DESTDMP")), location=location)
    patient = ctx.patient or header.patient
    status = assess_status(patient.status, patient.ins is not None, opts.convention) if patient.status else None
    # identityReliability only when PID-32 said something (a CDA has no status): no guessed PROV
    reliability = reliability_extension(status, opts.convention) if status is not None and status.status else None
    bundle: dict[str, Any] | None = None
    if ctx.action != "delete":  # a deletion has no ITI-65 form: only the XDS adapter handles it
        try:
            patient_resource = build_patient(patient, reliability=reliability, id=ctx.patient_uuid or ids.urn())
            bundle = build_iti65_bundle(header, data, ctx, xds, patient_resource=patient_resource)
        except GatewayError as exc:
            an.errors.append(Finding(exc.code, exc.message, exc.location or location))
            return None
    return DocumentResult(
        index=index,
        unique_id=xds["documentEntry"].get("uniqueId", header.document_id),
        cda=data,
        header=header,
        xds=dict(xds),
        fhir=bundle,
        action=ctx.action,
    )


def _split_xds_findings(an: Analysis, xds_findings: list[Finding], *, dmp_bound: bool, location: str) -> None:
    """The XDS mapper's findings, with the severity the destination gives them."""
    for f in xds_findings:
        if f.code == "XDS_PATIENT_ID_MISSING":
            # No INS means no XDS patientId: the identity gate holds such a document, so this is
            # not a reason to reject it.
            f = replace(f, severity="warning")
        elif f.code in _DMP_REQUIRED:
            # The DMP refuses a typeCode outside JDV_J66 and needs a formatCode: for a DMP-bound
            # document these are rejections, elsewhere only warnings.
            f = replace(f, severity="error" if dmp_bound else "warning", location=f.location or location)
        _split([f], an)


def _analyse_adt(an: Analysis, msg: Message, opts: PipelineOptions) -> None:
    event, findings = parse_adt(msg)
    _split(findings, an)
    an.adt = event
    an.patient = event.patient
    if event.patient.ins is not None:
        an.identity = _assess_identity(event.patient, opts, from_v2=True)
    else:
        an.identity = IdentityVerdict(ipp_key=ipp_key(event.patient.ipp))


# --------------------------------------------------------------------------- CDA over HTTP


def analyse_cda(data: bytes, flags: dict[str, bool], opts: PipelineOptions, ids: Ids) -> Analysis:
    """The pipeline for a CDA posted on its own (HTTP ingest, ``relais check file.xml``)."""
    an = Analysis(kind="cda", summary={"message_type": "CDA", "control_id": None})
    an.dmp_bound = bool(flags.get("DESTDMP", True))
    an.ack_reception = False
    ctx = SubmissionContext(action="submit", flags=dict(flags), source_id=opts.source_id)
    result = _map_document(an, data, ctx, opts, ids, location="ClinicalDocument", index=1, infer_action=True)
    if result is not None:
        an.documents.append(result)
        an.patient = result.header.patient
        an.summary["control_id"] = result.unique_id
        an.identity = _assess_identity(result.header.patient, opts, from_v2=False)
    if an.errors:
        an.ack_code = "AE"
    return an
