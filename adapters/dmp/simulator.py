"""DMP simulator: the HTTP shell, registry state and fault injection around a strict checker.

Requests are judged by ``adapters.dmp.conformance`` (written from the ANS/IHE texts, sharing
nothing with our DMP client). This module only speaks HTTP, keeps the in-memory registry,
builds the answers and injects faults.

Endpoints (aiohttp):

    POST /  and  /repository   ITI-41 Provide and Register Document Set-b (MTOM/XOP)
    POST /registry             ITI-18 Registry Stored Query (GetDocuments) and
                               ITI-57 Update Document Set (TD3.3c deletion, TD3.3d archiving),
                               told apart by their WS-Addressing Action
    GET  /_sim/submissions     one JSON entry per request received (any transaction)
    GET  /_sim/documents       the registry content
    GET  /_sim/violations      {"violations": [...every rule violation so far...]}
    POST /_sim/reset           forget everything (also the fault script)

Answers, as an XDS.b registry/repository gives them (IHE ITI TF-2x Appendix V, SOAP 1.2
Part 2 §7.5): a refusal of the transport or security layer (not MTOM, not SOAP 1.2, wrong
Action, no MessageID, VIHF missing, unsigned, not verifying, untrusted or expired) is a SOAP
1.2 fault, HTTP 400 for ``env:Sender`` (subcode ``wsse:InvalidSecurity``,
``wsse:FailedCheck``, ``a:ActionNotSupported``…) and 500 for ``env:Receiver``; a request
that reaches the registry logic is answered HTTP 200 with a ``rs:RegistryResponse`` whose
status is Success or Failure, with one ``rs:RegistryError`` per violation (``errorCode`` =
IHE code, ``codeContext`` = ``[rule] text (reference)``, ``location`` = rule code,
``severity`` = ebRS ErrorSeverityType). ITI-41 answers are MTOM like the requests;
ITI-18/57 answers are plain ``application/soap+xml``.

Inspection JSON:

* ``/_sim/submissions``: ``[{"transaction": "ITI-41"|"ITI-18"|"ITI-57", "accepted": bool,
  "status": "accepted"|"answered"|"updated"|"rejected", "uniqueId", "patientId",
  "violations": [{"rule", "text", "reference"}], "errors": [[errorCode, text, severity]],
  "vihf": {attribute name: [values], "NameID": str} | null, "xades_valid": bool | null,
  "schemaChecked": bool, "envelope": SOAP part, "fault": {"kind", "afterStore"} | null,
  "targets": [{"entryUUID", "uniqueId", "newStatus"}] (ITI-57)}]``. VIHF values that are
  HL7 CE elements (role, purposeofuse, confidentiality-code) read ``code^codeSystem``.
  ``status`` keeps its historic ITI-41 meaning so counting stored documents stays simple.
* ``/_sim/documents``: ``[{"uniqueId", "entryUUID", "patientId", "mimeType", "hash", "size",
  "status": "Approved"|"Deprecated"|"Deleted"|"Archived", "availabilityStatus": full URN,
  "replaces": entryUUID | null, "submissionSetUniqueId"}]`` (the XAdES signature documents
  are registered too, but listed only through ``DmpSimulator.signatures``).
* ``/_sim/violations``: ``{"violations": [{"rule", "text", "reference", "transaction"}]}``.

Faults (ITI-41 only; the registry stays reliable so lookups after a fault can succeed): with
probability ``fail_rate`` (seeded) one of ``faults`` is injected — ``503`` (HTTP 503,
Retry-After 1), ``reset`` (connection aborted), ``timeout`` (no answer for
``timeout_seconds``), ``soap`` (SOAP 1.2 Receiver fault, HTTP 500). A share
``after_store_ratio`` (default one half) happens *after* the document is stored, to
exercise the client's no-double-submission logic. ``script`` queues explicit faults
(``"503"``, ``"reset:after"`` …) consumed before any random draw, for deterministic tests.

Trust: with ``trust_cert`` the VIHF and the XAdES signature must be made with that
certificate (the structure's cachet); without it the embedded certificate is used, which
proves integrity only. Schema validation uses ``xsd_dir`` (default: the corpus copy of the
ebRS/XDS.b schemas when present; without schemas the ``XDS-SCHEMA-01`` rule cannot run and
each submission says ``"schemaChecked": false``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from cryptography import x509
from lxml import etree

from adapters.dmp.conformance import DEFAULT_XSD_DIR, ConformanceChecker, KnownEntry, Verdict, Violation
from adapters.dmp.conformance.mime import MimeError, read_body
from adapters.dmp.conformance.names import (
    ACTIONS,
    DE,
    NS,
    QUERY,
    RESPONSE_FAILURE,
    RESPONSE_SUCCESS,
    SEVERITY_ERROR,
    SEVERITY_WARNING,
    SS,
    STATUS,
)
from adapters.dmp.conformance.xades import signature_entries
from adapters.faults import FaultPlan, abort, hang

__all__ = ["FAULT_KINDS", "DmpSimulator", "StoredDocument", "Submission"]

log = structlog.get_logger(__name__)

FAULT_KINDS = ("503", "reset", "timeout", "soap")
APPROVED = STATUS.APPROVED
DEPRECATED = STATUS.DEPRECATED
_SHORT_STATUS = {
    STATUS.APPROVED: "Approved",
    STATUS.DEPRECATED: "Deprecated",
    STATUS.DELETED: "Deleted",
    STATUS.ARCHIVED: "Archived",
}


@dataclass
class StoredDocument:
    """One registry entry (with the repository's bytes)."""

    unique_id: str
    entry_uuid: str
    patient_id: str
    mime_type: str
    hash: str
    size: int
    status: str = APPROVED
    replaces: str | None = None  # entryUUID of the entry this one replaced
    submission_set_unique_id: str | None = None
    content: bytes = field(default=b"", repr=False)

    def as_json(self) -> dict[str, Any]:
        """The /_sim JSON form."""
        return {
            "uniqueId": self.unique_id,
            "entryUUID": self.entry_uuid,
            "patientId": self.patient_id,
            "mimeType": self.mime_type,
            "hash": self.hash,
            "size": self.size,
            "status": _SHORT_STATUS.get(self.status, self.status),
            "availabilityStatus": self.status,
            "replaces": self.replaces,
            "submissionSetUniqueId": self.submission_set_unique_id,
        }


@dataclass
class Submission:
    """One request as the simulator saw it.

    ``status`` keeps its historic meaning for ITI-41 (``accepted`` = stored, ``rejected``);
    ITI-18 uses ``answered``/``rejected`` and ITI-57 ``updated``/``rejected``, so counting
    accepted ITI-41 submissions by uniqueId stays meaningful.
    """

    transaction: str
    accepted: bool
    status: str
    violations: list[Violation]
    envelope: str
    unique_id: str | None = None
    patient_id: str | None = None
    vihf: dict[str, Any] | None = None
    xades_valid: bool | None = None
    schema_checked: bool = False
    fault: dict[str, Any] | None = None
    targets: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The /_sim JSON form."""
        return {
            "transaction": self.transaction,
            "accepted": self.accepted,
            "status": self.status,
            "uniqueId": self.unique_id,
            "patientId": self.patient_id,
            "violations": [v.as_json() for v in self.violations],
            "errors": [[v.error_code, v.text, v.severity] for v in self.violations],
            "vihf": self.vihf,
            "xades_valid": self.xades_valid,
            "schemaChecked": self.schema_checked,
            "envelope": self.envelope,
            "fault": self.fault,
            "targets": self.targets,
        }


class _Registry:
    """The read view the checker needs (see ``adapters.dmp.conformance.metadata.RegistryView``)."""

    def __init__(self, simulator: DmpSimulator) -> None:
        self._sim = simulator

    def entry(self, entry_uuid: str) -> KnownEntry | None:
        """The registered entry with this entryUUID, if any."""
        doc = self._sim._by_entry_uuid(entry_uuid)
        return None if doc is None else KnownEntry(doc.entry_uuid, doc.unique_id, doc.patient_id, doc.status)

    def has_unique_id(self, unique_id: str) -> bool:
        """Whether a document, signature or SubmissionSet has this uniqueId."""
        sim = self._sim
        return unique_id in sim.documents or unique_id in sim.signatures or unique_id in sim.submission_sets


class DmpSimulator:
    """In-memory DMP (repository + registry) with fault injection; see the module docstring."""

    def __init__(
        self,
        *,
        fail_rate: float = 0.0,
        faults: Sequence[str] = FAULT_KINDS,
        latency_ms: int = 0,
        seed: int | None = None,
        xsd_dir: Path | str | None = None,
        trust_cert: bytes | Path | str | None = None,
        after_store_ratio: float = 0.5,
        timeout_seconds: float = 120.0,
        script: Iterable[str] = (),
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.plan = FaultPlan(FAULT_KINDS, faults, fail_rate=fail_rate, seed=seed,
                              after_store_ratio=after_store_ratio, script=script)
        #: scripted faults, consumed before any random draw (the plan's own list)
        self.script = self.plan.script
        self.latency_ms = latency_ms
        self.timeout_seconds = timeout_seconds
        self._ids = random.Random(None if seed is None else seed + 1)
        if xsd_dir is None and (DEFAULT_XSD_DIR / "IHE" / "XDS.b_DocumentRepository.xsd").exists():
            xsd_dir = DEFAULT_XSD_DIR
        if xsd_dir is None:
            log.warning("dmp_simulator.no_schemas", rule="XDS-SCHEMA-01")
        if isinstance(trust_cert, (str, Path)):
            trust_cert = Path(trust_cert).read_bytes()
        trusted = x509.load_pem_x509_certificate(trust_cert) if trust_cert else None
        self.checker = ConformanceChecker(
            trusted_cert=trusted, xsd_dir=Path(xsd_dir) if xsd_dir else None, now=now
        )
        self.documents: dict[str, StoredDocument] = {}
        self.signatures: dict[str, StoredDocument] = {}
        self.submission_sets: set[str] = set()  # uniqueIds of registered SubmissionSets
        self.submissions: list[Submission] = []
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._registry = _Registry(self)
        self.url: str | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp application (usable with aiohttp's test client or a runner)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/", self._iti41)
        app.router.add_post("/repository", self._iti41)
        app.router.add_post("/registry", self._registry_endpoint)
        app.router.add_get("/_sim/submissions", self._list_submissions)
        app.router.add_get("/_sim/documents", self._list_documents)
        app.router.add_get("/_sim/violations", self._list_violations)
        app.router.add_post("/_sim/reset", self._reset)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 = any free port); return the base URL."""
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{host}:{bound[1]}/"
        log.info("dmp_simulator.started", url=self.url)
        return self.url

    async def stop(self) -> None:
        """Stop serving (pending "timeout" faults are released first)."""
        self._stopping.set()  # wakes "timeout" faults so shutdown is quick
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def reset(self) -> None:
        """Forget every document, submission and scripted fault."""
        self.documents.clear()
        self.signatures.clear()
        self.submission_sets.clear()
        self.submissions.clear()
        self.plan.reset()

    def _by_entry_uuid(self, entry_uuid: str) -> StoredDocument | None:
        return next((d for d in self.documents.values() if d.entry_uuid == entry_uuid), None)

    # -- faults ---------------------------------------------------------------------------

    async def _apply_fault(
        self, request: web.Request, kind: str, normal: web.Response | None
    ) -> web.StreamResponse:
        if kind == "503":
            return web.Response(
                status=503, text="Service Unavailable (simulated)", headers={"Retry-After": "1"}
            )
        if kind == "reset":
            return abort(request)
        if kind == "timeout":
            await hang(self._stopping, self.timeout_seconds)
            return normal or web.Response(status=504)
        return _fault_response("s:Receiver", None, "Simulated internal error", status=500)

    # -- ITI-41 ---------------------------------------------------------------------------

    async def _iti41(self, request: web.Request) -> web.StreamResponse:
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        body = await request.read()
        content_type = request.headers.get("Content-Type", "")
        fault = self.plan.draw()
        if fault and not fault.after_store:
            violation = Violation(
                f"SIM_FAULT_{fault.kind.upper()}", "injected before storing", "simulator fault injection",
                f"SIM_FAULT_{fault.kind.upper()}",
            )
            self.submissions.append(
                Submission("ITI-41", False, "rejected", [violation], _text(_root_part(content_type, body)),
                           fault={"kind": fault.kind, "afterStore": False})
            )
            log.info("dmp_simulator.fault", kind=fault.kind, after_store=False)
            return await self._apply_fault(request, fault.kind, None)

        verdict = self.checker.check("ITI-41", content_type, body, self._registry)
        submission = self._record(verdict, body, stored_label="accepted")
        if fault:
            submission.fault = {"kind": fault.kind, "afterStore": True}
        if verdict.fault is not None:
            return _fault_response(*_fault_of(verdict.fault), status=400 if _sender(verdict.fault) else 500)
        if verdict.accepted:
            self._store(verdict, submission)
        log.info("dmp_simulator.iti41", accepted=verdict.accepted, rules=[v.rule for v in verdict.violations])
        envelope = _envelope(
            _registry_response(verdict.violations),
            ACTIONS.ITI41_RESPONSE,
            f"urn:uuid:{self._new_uuid()}",
            verdict.message_id,
        )
        content_type_out, mtom_body = _mtom(envelope, ACTIONS.ITI41_RESPONSE)
        normal = web.Response(body=mtom_body, headers={"Content-Type": content_type_out})
        if fault:
            log.info("dmp_simulator.fault", kind=fault.kind, after_store=True)
            return await self._apply_fault(request, fault.kind, normal)
        return normal

    def _record(self, verdict: Verdict, body: bytes, *, stored_label: str) -> Submission:
        metadata = verdict.metadata
        unique_id = patient_id = None
        if metadata is not None:
            content = [e for e in metadata.entries if e not in signature_entries(metadata)]
            if content:
                unique_id = content[0].external_ids.get(DE.UNIQUE_ID)
            if metadata.submission_set is not None:
                patient_id = metadata.submission_set.external_ids.get(SS.PATIENT_ID)
        submission = Submission(
            verdict.transaction,
            verdict.accepted,
            stored_label if verdict.accepted else "rejected",
            list(verdict.violations),
            _text(verdict.root_part or body),
            unique_id=unique_id,
            patient_id=patient_id,
            vihf=verdict.vihf.as_json() if verdict.vihf is not None else None,
            xades_valid=verdict.xades_valid,
            schema_checked=verdict.schema_checked,
        )
        self.submissions.append(submission)
        return submission

    def _store(self, verdict: Verdict, submission: Submission) -> None:
        metadata = verdict.metadata
        assert metadata is not None and metadata.submission_set is not None
        ss_uid = metadata.submission_set.external_ids.get(SS.UNIQUE_ID)
        if ss_uid:
            self.submission_sets.add(ss_uid)
        signatures = signature_entries(metadata)
        new_uuids: dict[str, str] = {}
        for entry in metadata.entries:
            content = verdict.documents[entry.id]
            unique_id = entry.external_ids[DE.UNIQUE_ID]
            # A registry assigns entryUUIDs when the submitter used symbolic ids (ITI TF-3 §4.1.12.3).
            entry_uuid = entry.id if entry.id.startswith("urn:uuid:") else f"urn:uuid:{self._new_uuid()}"
            new_uuids[entry.id] = entry_uuid
            stored = StoredDocument(
                unique_id=unique_id,
                entry_uuid=entry_uuid,
                patient_id=entry.external_ids.get(DE.PATIENT_ID, ""),
                mime_type=entry.element.get("mimeType", ""),
                hash=hashlib.sha1(content).hexdigest(),
                size=len(content),
                submission_set_unique_id=ss_uid,
                content=content,
            )
            (self.signatures if entry in signatures else self.documents)[unique_id] = stored
        for association in metadata.associations:
            if association.type == "urn:ihe:iti:2007:AssociationType:RPLC":
                replaced = self._by_entry_uuid(association.target)
                source = next(
                    (d for d in self.documents.values() if d.entry_uuid == new_uuids.get(association.source)),
                    None,
                )
                if replaced is not None and source is not None:
                    replaced.status = DEPRECATED
                    source.replaces = replaced.entry_uuid

    # -- registry endpoint: ITI-18 and ITI-57 ---------------------------------------------

    async def _registry_endpoint(self, request: web.Request) -> web.StreamResponse:
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        body = await request.read()
        content_type = request.headers.get("Content-Type", "")
        # An ITI-62 deletion attempt is judged (and refused, XDS-DEL-02) as the ITI-57 it should be.
        action = _action_of(content_type, body)
        transaction = "ITI-57" if action in (ACTIONS.ITI57, "urn:ihe:iti:2010:DeleteDocumentSet") else "ITI-18"
        verdict = self.checker.check(transaction, content_type, body, self._registry)
        if transaction == "ITI-57":
            return self._iti57(verdict, body)
        return self._iti18(verdict, body)

    def _iti57(self, verdict: Verdict, body: bytes) -> web.StreamResponse:
        submission = self._record(verdict, body, stored_label="updated")
        if verdict.fault is not None:
            return _fault_response(*_fault_of(verdict.fault), status=400 if _sender(verdict.fault) else 500)
        if verdict.accepted:
            if verdict.metadata is not None and verdict.metadata.submission_set is not None:
                self.submission_sets.add(verdict.metadata.submission_set.external_ids.get(SS.UNIQUE_ID, ""))
            for change in verdict.changes:
                target = self._by_entry_uuid(change.entry_uuid)
                if target is not None:
                    target.status = change.new
                    submission.targets.append(
                        {"entryUUID": target.entry_uuid, "uniqueId": target.unique_id, "newStatus": change.new}
                    )
                    submission.unique_id = submission.unique_id or target.unique_id
        log.info("dmp_simulator.iti57", accepted=verdict.accepted, rules=[v.rule for v in verdict.violations])
        envelope = _envelope(
            _registry_response(verdict.violations),
            ACTIONS.ITI57_RESPONSE,
            f"urn:uuid:{self._new_uuid()}",
            verdict.message_id,
        )
        return _soap_response(envelope, ACTIONS.ITI57_RESPONSE)

    def _iti18(self, verdict: Verdict, body: bytes) -> web.StreamResponse:
        submission = self._record(verdict, body, stored_label="answered")
        if verdict.fault is not None:
            return _fault_response(*_fault_of(verdict.fault), status=400 if _sender(verdict.fault) else 500)
        errors = [v for v in verdict.violations if v.severity == "error"]
        hits: list[StoredDocument] = []
        return_type = "LeafClass"
        query = verdict.body
        if not errors and isinstance(query, etree._Element):
            option = query.find(f"{{{NS['query']}}}ResponseOption")
            return_type = option.get("returnType", "LeafClass") if option is not None else "LeafClass"
            adhoc = query.find(f"{{{NS['rim']}}}AdhocQuery")
            if adhoc is None or adhoc.get("id") != QUERY.GET_DOCUMENTS:
                errors.append(Violation("ITI18-QUERY-01", "only GetDocuments is simulated",
                                        "IHE ITI TF-2b §3.18.4.1.2.3.7.5", "XDSUnknownStoredQuery"))
            else:
                uids = _query_values(adhoc, "$XDSDocumentEntryUniqueId")
                uuids = _query_values(adhoc, "$XDSDocumentEntryEntryUUID")
                if not uids and not uuids:
                    errors.append(Violation("ITI18-QUERY-02", "GetDocuments needs uniqueId or entryUUID",
                                            "IHE ITI TF-2b §3.18.4.1.2.3.7.5", "XDSStoredQueryParamNumber"))
                hits = [d for d in self.documents.values() if d.unique_id in uids or d.entry_uuid in uuids]
        if errors and not submission.violations:
            submission.violations.extend(errors)
            submission.accepted = False
            submission.status = "rejected"
        if hits:
            submission.unique_id = hits[0].unique_id
            submission.patient_id = hits[0].patient_id
        envelope = _envelope(
            _query_response(hits, return_type, errors),
            ACTIONS.ITI18_RESPONSE,
            f"urn:uuid:{self._new_uuid()}",
            verdict.message_id,
        )
        return _soap_response(envelope, ACTIONS.ITI18_RESPONSE)

    # -- inspection -----------------------------------------------------------------------

    async def _list_submissions(self, request: web.Request) -> web.Response:
        return web.json_response([s.as_json() for s in self.submissions], dumps=_dumps)

    async def _list_documents(self, request: web.Request) -> web.Response:
        return web.json_response([d.as_json() for d in self.documents.values()], dumps=_dumps)

    async def _list_violations(self, request: web.Request) -> web.Response:
        every = [
            {**v.as_json(), "transaction": s.transaction}
            for s in self.submissions
            for v in s.violations
            if not v.rule.startswith("SIM_")
        ]
        return web.json_response({"violations": every}, dumps=_dumps)

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})

    def _new_uuid(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))


# -- answers --------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _root_part(content_type: str, body: bytes) -> bytes:
    """The SOAP part of a body (the whole body when it is not a readable package)."""
    try:
        return read_body(content_type, body).root
    except MimeError:
        return body


def _action_of(content_type: str, body: bytes) -> str | None:
    """The WS-Addressing Action, read cheaply to route /registry (the checker re-reads it)."""
    match = re.search(rb"<(?:\w+:)?Action\b[^>]*>\s*([^<\s]+)\s*<", body)
    if match:
        return match.group(1).decode("utf-8", "replace")
    match_ct = re.search(r'action="([^"]+)"', content_type)
    return match_ct.group(1) if match_ct else None


def _sender(violation: Violation) -> bool:
    """SOAP 1.2 Part 2 §7.5.1.2: env:Sender faults are HTTP 400, VersionMismatch and Receiver 500."""
    return violation.fault not in ("s:Receiver", "s:VersionMismatch")


def _fault_of(violation: Violation) -> tuple[str, str | None, str]:
    fault = violation.fault or "s:Sender"
    if fault in ("s:VersionMismatch", "s:Sender", "s:Receiver"):
        return fault, None, f"[{violation.rule}] {violation.text} ({violation.reference})"
    return "s:Sender", fault, f"[{violation.rule}] {violation.text} ({violation.reference})"


def _envelope(body: etree._Element, action: str, message_id: str, relates_to: str | None) -> bytes:
    s, wsa = NS["s"], NS["wsa"]
    envelope = etree.Element(f"{{{s}}}Envelope", nsmap={"s": s, "a": wsa})
    header = etree.SubElement(envelope, f"{{{s}}}Header")
    etree.SubElement(header, f"{{{wsa}}}Action", {f"{{{s}}}mustUnderstand": "1"}).text = action
    etree.SubElement(header, f"{{{wsa}}}MessageID").text = message_id
    if relates_to:
        etree.SubElement(header, f"{{{wsa}}}RelatesTo").text = relates_to
    etree.SubElement(envelope, f"{{{s}}}Body").append(body)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def _error_list(parent: etree._Element, violations: Sequence[Violation]) -> None:
    if not violations:
        return
    rs = NS["rs"]
    errors = etree.SubElement(parent, f"{{{rs}}}RegistryErrorList")
    for v in violations:
        etree.SubElement(
            errors,
            f"{{{rs}}}RegistryError",
            {
                "errorCode": v.error_code,
                "codeContext": f"[{v.rule}] {v.text} ({v.reference})",
                "location": v.rule,
                "severity": SEVERITY_ERROR if v.severity == "error" else SEVERITY_WARNING,
            },
        )


def _registry_response(violations: Sequence[Violation]) -> etree._Element:
    rs = NS["rs"]
    failed = any(v.severity == "error" for v in violations)
    response = etree.Element(
        f"{{{rs}}}RegistryResponse",
        {"status": RESPONSE_FAILURE if failed else RESPONSE_SUCCESS},
        nsmap={"rs": rs},
    )
    _error_list(response, violations)
    return response


def _query_response(hits: Sequence[StoredDocument], return_type: str, errors: Sequence[Violation]) -> etree._Element:
    query, rim, rs = NS["query"], NS["rim"], NS["rs"]
    response = etree.Element(
        f"{{{query}}}AdhocQueryResponse",
        {"status": RESPONSE_FAILURE if errors else RESPONSE_SUCCESS},
        nsmap={"query": query, "rim": rim, "rs": rs},
    )
    _error_list(response, errors)
    objects = etree.SubElement(response, f"{{{rim}}}RegistryObjectList")
    for doc in hits:
        if return_type == "ObjectRef":
            etree.SubElement(objects, f"{{{rim}}}ObjectRef", {"id": doc.entry_uuid})
            continue
        entry = etree.SubElement(
            objects,
            f"{{{rim}}}ExtrinsicObject",
            {"id": doc.entry_uuid, "lid": doc.entry_uuid, "mimeType": doc.mime_type,
             "objectType": DE.STABLE, "status": doc.status},
        )
        for scheme, value, name in (
            (DE.PATIENT_ID, doc.patient_id, "XDSDocumentEntry.patientId"),
            (DE.UNIQUE_ID, doc.unique_id, "XDSDocumentEntry.uniqueId"),
        ):
            ei = etree.SubElement(
                entry,
                f"{{{rim}}}ExternalIdentifier",
                {"id": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, doc.entry_uuid + scheme)}",
                 "registryObject": doc.entry_uuid, "identificationScheme": scheme, "value": value},
            )
            etree.SubElement(etree.SubElement(ei, f"{{{rim}}}Name"), f"{{{rim}}}LocalizedString", {"value": name})
    return response


def _soap_response(envelope: bytes, action: str, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=envelope,
        headers={"Content-Type": f'application/soap+xml; charset=UTF-8; action="{action}"'},
    )


def _fault_response(code: str, subcode: str | None, reason: str, *, status: int) -> web.Response:
    s = NS["s"]
    fault = etree.Element(f"{{{s}}}Fault", nsmap={"s": s, "a": NS["wsa"], "wsse": NS["wsse"]})
    code_el = etree.SubElement(fault, f"{{{s}}}Code")
    etree.SubElement(code_el, f"{{{s}}}Value").text = code
    if subcode:
        etree.SubElement(etree.SubElement(code_el, f"{{{s}}}Subcode"), f"{{{s}}}Value").text = subcode
    text = etree.SubElement(etree.SubElement(fault, f"{{{s}}}Reason"), f"{{{s}}}Text")
    text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    text.text = reason
    envelope = etree.Element(f"{{{s}}}Envelope", nsmap={"s": s})
    etree.SubElement(envelope, f"{{{s}}}Body").append(fault)
    return _soap_response(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"), ACTIONS.FAULT, status)


def _mtom(envelope: bytes, action: str) -> tuple[str, bytes]:
    """An MTOM package with the envelope as its only part (W3C MTOM §3)."""
    boundary = f"MIMEBoundary_{hashlib.sha1(envelope).hexdigest()}"
    cid = "root.response@dmp-simulator"
    body = (
        f"--{boundary}\r\n"
        f'Content-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"; action="{action}"\r\n'
        f"Content-Transfer-Encoding: binary\r\nContent-ID: <{cid}>\r\n\r\n"
    ).encode() + envelope + f"\r\n--{boundary}--\r\n".encode()
    content_type = (
        f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; '
        f'start="<{cid}>"; start-info="application/soap+xml"; action="{action}"'
    )
    return content_type, body


def _query_values(adhoc: etree._Element, name: str) -> set[str]:
    """Values of a stored-query slot: ``('a','b')`` lists, possibly over several Values."""
    rim = NS["rim"]
    found: set[str] = set()
    for slot in adhoc.findall(f"{{{rim}}}Slot"):
        if slot.get("name") != name:
            continue
        for value in slot.iter(f"{{{rim}}}Value"):
            text = (value.text or "").strip()
            if text.startswith("(") and text.endswith(")"):
                text = text[1:-1]
            for item in re.findall(r"'((?:[^']|'')*)'", text) or [text]:
                if item:
                    found.add(item.replace("''", "'"))
    return found
