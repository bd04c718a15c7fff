"""DMP simulator: an in-memory XDS.b repository + registry speaking ITI-41 and ITI-18.

Endpoints (aiohttp):

    POST /  and  /repository   ITI-41 Provide and Register (MTOM or plain SOAP 1.2)
    POST /registry             ITI-18 Registry Stored Query (GetDocuments)
    GET  /_sim/submissions     one JSON entry per ITI-41 request received
    GET  /_sim/documents       the registry content
    POST /_sim/reset           forget everything (also the fault script)

What is checked on ITI-41 (first failure class wins):

* SOAP 1.2 envelope (else ``s:VersionMismatch``), WS-Addressing Action (else
  ``s:Sender`` / ``a:ActionNotSupported``), a VIHF in ``wsse:Security`` whose signature
  verifies (else ``s:Sender`` / ``wsse:InvalidSecurity``). With ``trust_cert`` the VIHF
  must be signed by that certificate; without it the certificate embedded in KeyInfo is
  used, which proves integrity only (documented shortcut of a *simulator*);
* optional XSD validity of the ProvideAndRegisterDocumentSetRequest (``xsd_dir``);
* DMP metadata rules, answered as a RegistryResponse Failure with IHE error codes:
  uniqueId present (``root^ext`` only a warning unless ``strict_unique_id``), patientId
  an INS ``…^^^&1.2.250.1.213.1.4.(8|9|10|11)&ISO^NH`` equal in entry and submission set,
  typeCode / classCode / formatCode / confidentialityCode / healthcareFacilityTypeCode /
  practiceSettingCode present, hash and size equal to the attachment, a document for each
  entry, an RPLC target that exists and is Approved, and a uniqueId not already registered
  (``XDSDuplicateUniqueIdInRegistry`` — how "accepted exactly once" is checked).

Faults (ITI-41 only; the registry stays reliable so lookups after a fault can succeed):
with probability ``fail_rate`` (seeded) one of ``faults`` is injected — ``503`` (HTTP 503,
Retry-After 1), ``reset`` (connection aborted), ``timeout`` (no answer for
``timeout_seconds``), ``soap`` (SOAP 1.2 Receiver fault, HTTP 500). A share
``after_store_ratio`` (default one half) of them happens *after* the document is stored,
to exercise the client's no-double-submission logic. ``script`` queues explicit faults
(``"503"``, ``"reset:after"`` …) consumed before any random draw, for deterministic tests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import random
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from lxml import etree

from adapters.dmp.ebrim import QUERY_NS, RIM_NS, UUID, XDSB_NS, XOP_NS, inline_documents, load_xds_schema
from adapters.dmp.mtom import build_mtom, parse_mtom
from adapters.dmp.soap import (
    ACTION_ITI18,
    ACTION_ITI18_RESPONSE,
    ACTION_ITI41,
    ACTION_ITI41_RESPONSE,
    GET_DOCUMENTS_QUERY,
    SOAP12_NS,
    QueryHit,
    RegistryError,
    SoapMessage,
    build_envelope,
    build_query_response,
    build_registry_response,
    build_soap_fault,
    parse_envelope,
)
from adapters.dmp.vihf import VihfError, verify_vihf

__all__ = ["FAULT_KINDS", "DmpSimulator", "StoredDocument", "Submission"]

log = structlog.get_logger(__name__)

FAULT_KINDS = ("503", "reset", "timeout", "soap")
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
_INS_PATIENT_ID = re.compile(r"^[0-9A-Za-z]{13,15}\^\^\^&1\.2\.250\.1\.213\.1\.4\.(8|9|10|11)&ISO\^NH$")
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_REQUIRED_CODES = {
    "typeCode": UUID.DE_TYPE_CODE,
    "classCode": UUID.DE_CLASS_CODE,
    "formatCode": UUID.DE_FORMAT_CODE,
    "confidentialityCode": UUID.DE_CONFIDENTIALITY_CODE,
    "healthcareFacilityTypeCode": UUID.DE_FACILITY_TYPE_CODE,
    "practiceSettingCode": UUID.DE_PRACTICE_SETTING_CODE,
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
    content: bytes = field(default=b"", repr=False)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("content")
        return {
            "uniqueId": data["unique_id"],
            "entryUUID": data["entry_uuid"],
            "patientId": data["patient_id"],
            "mimeType": data["mime_type"],
            "hash": data["hash"],
            "size": data["size"],
            "status": "Approved" if self.status == APPROVED else "Deprecated",
            "replaces": data["replaces"],
        }


@dataclass
class Submission:
    """One ITI-41 request as the simulator saw it."""

    unique_id: str | None
    patient_id: str | None
    status: str  # accepted | rejected
    errors: list[tuple[str, str, str]]
    envelope: str
    fault: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "uniqueId": self.unique_id,
            "patientId": self.patient_id,
            "status": self.status,
            "errors": [list(e) for e in self.errors],
            "envelope": self.envelope,
            "fault": self.fault,
        }


class _Refusal(Exception):
    """A SOAP-level refusal (answered with a Sender fault, HTTP 400)."""

    def __init__(self, subcode: str, reason: str, *, code: str = "s:Sender") -> None:
        super().__init__(reason)
        self.code = code
        self.subcode = subcode
        self.reason = reason


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
        strict_unique_id: bool = False,
        script: Iterable[str] = (),
        now: Callable[[], datetime] | None = None,
    ) -> None:
        unknown = set(faults) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        self.fail_rate = fail_rate
        self.faults = tuple(faults)
        self.latency_ms = latency_ms
        self.after_store_ratio = after_store_ratio
        self.timeout_seconds = timeout_seconds
        self.strict_unique_id = strict_unique_id
        self._seed = seed
        self._rng = random.Random(seed)
        self._ids = random.Random(None if seed is None else seed + 1)
        self._schema = load_xds_schema(Path(xsd_dir)) if xsd_dir else None
        if isinstance(trust_cert, (str, Path)):
            trust_cert = Path(trust_cert).read_bytes()
        self._trust_cert: bytes | None = trust_cert
        self._now = now
        self.script: list[str] = list(script)
        self.documents: dict[str, StoredDocument] = {}
        self.submissions: list[Submission] = []
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.url: str | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp application (usable with aiohttp's test client or a runner)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/", self._iti41)
        app.router.add_post("/repository", self._iti41)
        app.router.add_post("/registry", self._iti18)
        app.router.add_get("/_sim/submissions", self._list_submissions)
        app.router.add_get("/_sim/documents", self._list_documents)
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
        self._stopping.set()  # wakes "timeout" faults so shutdown is quick
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def reset(self) -> None:
        self.documents.clear()
        self.submissions.clear()
        self.script.clear()
        self._rng = random.Random(self._seed)

    # -- faults ---------------------------------------------------------------------------

    def _draw_fault(self) -> tuple[str, bool] | None:
        if self.script:
            kind, _, when = self.script.pop(0).partition(":")
            if kind not in FAULT_KINDS:
                return None  # "ok" or anything else: a normal answer
            return kind, when == "after"
        if not self.faults or self.fail_rate <= 0 or self._rng.random() >= self.fail_rate:
            return None
        return self._rng.choice(self.faults), self._rng.random() < self.after_store_ratio

    async def _apply_fault(
        self, request: web.Request, kind: str, normal: web.Response | None
    ) -> web.StreamResponse:
        if kind == "503":
            return web.Response(
                status=503, text="Service Unavailable (simulated)", headers={"Retry-After": "1"}
            )
        if kind == "reset":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never written: the connection is gone
        if kind == "timeout":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.timeout_seconds)
            return normal or web.Response(status=504)
        fault = build_soap_fault("s:Receiver", "Simulated internal error")
        return _soap_response(fault, action="http://www.w3.org/2005/08/addressing/soap/fault", status=500)

    # -- ITI-41 ---------------------------------------------------------------------------

    async def _iti41(self, request: web.Request) -> web.StreamResponse:
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        body = await request.read()
        fault = self._draw_fault()
        try:
            root_part, attachments = parse_mtom(request.headers.get("Content-Type", ""), body)
        except ValueError:
            root_part, attachments = body, {}
        envelope_text = root_part.decode("utf-8", errors="replace")
        if fault and not fault[1]:
            self.submissions.append(
                Submission(
                    None,
                    None,
                    "rejected",
                    [(f"SIM_FAULT_{fault[0].upper()}", "injected before storing", "error")],
                    envelope_text,
                    {"kind": fault[0], "afterStore": False},
                )
            )
            log.info("dmp_simulator.fault", kind=fault[0], after_store=False)
            return await self._apply_fault(request, fault[0], None)

        try:
            message = self._check_soap(root_part, ACTION_ITI41)
            unique_id, patient_id, errors = self._register(message, attachments)
        except _Refusal as refusal:
            self.submissions.append(
                Submission(
                    None, None, "rejected", [(refusal.subcode, refusal.reason, "error")], envelope_text
                )
            )
            return _soap_response(
                build_soap_fault(refusal.code, refusal.reason, subcode=refusal.subcode),
                action="http://www.w3.org/2005/08/addressing/soap/fault",
                status=400 if refusal.code == "s:Sender" else 500,
            )
        blocking = [e for e in errors if e.severity == "error"]
        self.submissions.append(
            Submission(
                unique_id,
                patient_id,
                "rejected" if blocking else "accepted",
                [e.as_tuple() for e in errors],
                envelope_text,
                {"kind": fault[0], "afterStore": True} if fault else None,
            )
        )
        log.info("dmp_simulator.iti41", accepted=not blocking, errors=[e.code for e in errors])
        envelope = build_envelope(
            build_registry_response(errors),
            action=ACTION_ITI41_RESPONSE,
            message_id=f"urn:uuid:{self._new_uuid()}",
            relates_to=message.message_id or "",
        )
        envelope_bytes = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
        content_type, mtom_body = build_mtom(envelope_bytes, {}, action=ACTION_ITI41_RESPONSE)
        normal = web.Response(body=mtom_body, headers={"Content-Type": content_type})
        if fault:
            log.info("dmp_simulator.fault", kind=fault[0], after_store=True)
            return await self._apply_fault(request, fault[0], normal)
        return normal

    def _check_soap(self, root_part: bytes, expected_action: str) -> SoapMessage:
        try:
            message = parse_envelope(root_part)
        except ValueError as exc:
            raise _Refusal(
                "VersionMismatch", f"not a SOAP 1.2 envelope: {exc}", code="s:VersionMismatch"
            ) from exc
        if message.action != expected_action:
            raise _Refusal("a:ActionNotSupported", f"expected WS-Addressing Action {expected_action}")
        if not message.message_id:
            raise _Refusal("a:MessageAddressingHeaderRequired", "WS-Addressing MessageID is required")
        if message.assertion is None:
            raise _Refusal("wsse:InvalidSecurity", "no VIHF (saml:Assertion) in wsse:Security")
        try:
            verify_vihf(message.assertion, cert_pem=self._trust_cert, now=self._now() if self._now else None)
        except VihfError as exc:
            raise _Refusal("wsse:FailedCheck", exc.message) from exc
        return message

    def _register(
        self, message: SoapMessage, attachments: dict[str, bytes]
    ) -> tuple[str | None, str | None, list[RegistryError]]:
        request = message.body
        if request is None or request.tag != f"{{{XDSB_NS}}}ProvideAndRegisterDocumentSetRequest":
            return (
                None,
                None,
                [RegistryError("XDSRegistryMetadataError", "no ProvideAndRegisterDocumentSetRequest")],
            )
        errors: list[RegistryError] = []
        if self._schema is not None:
            infoset = inline_documents(request, attachments)
            if not self._schema.validate(infoset):
                first = self._schema.error_log[0]
                errors.append(
                    RegistryError("XDSRegistryMetadataError", f"XSD line {first.line}: {first.message}")
                )
                return None, None, errors

        documents = self._documents_of(request, attachments, errors)
        entries = request.findall(f".//{{{RIM_NS}}}ExtrinsicObject")
        if len(entries) != 1:
            errors.append(
                RegistryError("XDSRegistryMetadataError", f"expected one DocumentEntry, got {len(entries)}")
            )
            return None, None, errors
        entry = entries[0]
        entry_id = entry.get("id", "")
        unique_id = _external_id(entry, UUID.DE_UNIQUE_ID)
        patient_id = _external_id(entry, UUID.DE_PATIENT_ID)
        package = request.find(f".//{{{RIM_NS}}}RegistryPackage")
        ss_patient = _external_id(package, UUID.SS_PATIENT_ID) if package is not None else None

        if not unique_id:
            errors.append(RegistryError("XDSRegistryMetadataError", "DocumentEntry.uniqueId is missing"))
        elif "^" in unique_id or not _OID.match(unique_id):
            errors.append(
                RegistryError(
                    "XDSRegistryMetadataError",
                    "DMP expects a root-only OID as DocumentEntry.uniqueId",
                    "error" if self.strict_unique_id else "warning",
                )
            )
        if not patient_id or not _INS_PATIENT_ID.match(patient_id):
            errors.append(
                RegistryError(
                    "XDSUnknownPatientId", "patientId must be an INS ^^^&1.2.250.1.213.1.4.x&ISO^NH"
                )
            )
        if ss_patient != patient_id:
            errors.append(
                RegistryError("XDSPatientIdDoesNotMatch", "SubmissionSet and DocumentEntry patientId differ")
            )
        if package is None or not _external_id(package, UUID.SS_UNIQUE_ID):
            errors.append(RegistryError("XDSRegistryMetadataError", "SubmissionSet.uniqueId is missing"))
        for name, scheme in _REQUIRED_CODES.items():
            if not any(c.get("nodeRepresentation") for c in _classifications(entry, scheme)):
                errors.append(RegistryError("XDSRegistryMetadataError", f"DocumentEntry.{name} is missing"))

        content = documents.get(entry_id)
        if content is None:
            errors.append(RegistryError("XDSMissingDocument", f"no document for {entry_id}"))
        else:
            declared_hash = _slot_value(entry, "hash")
            declared_size = _slot_value(entry, "size")
            if declared_hash and declared_hash.lower() != hashlib.sha1(content).hexdigest():
                errors.append(RegistryError("XDSNonIdenticalHash", "hash differs from the document"))
            if declared_size and declared_size != str(len(content)):
                errors.append(RegistryError("XDSNonIdenticalSize", "size differs from the document"))
        for extra in set(documents) - {entry_id}:
            errors.append(
                RegistryError("XDSMissingDocumentMetadata", f"document {extra} has no DocumentEntry")
            )

        replaced: StoredDocument | None = None
        for assoc in request.iter(f"{{{RIM_NS}}}Association"):
            if assoc.get("associationType") == UUID.RPLC:
                target = assoc.get("targetObject", "")
                replaced = next((d for d in self.documents.values() if d.entry_uuid == target), None)
                if replaced is None:
                    errors.append(
                        RegistryError("UnresolvedReferenceException", f"RPLC target {target} is unknown")
                    )
                elif replaced.status != APPROVED:
                    errors.append(RegistryError("XDSRegistryMetadataError", "RPLC target is not Approved"))
                elif replaced.patient_id != patient_id:
                    errors.append(
                        RegistryError("XDSPatientIdDoesNotMatch", "RPLC target belongs to another patient")
                    )

        if unique_id and unique_id in self.documents:
            errors.append(
                RegistryError("XDSDuplicateUniqueIdInRegistry", f"uniqueId {unique_id} already registered")
            )

        if any(e.severity == "error" for e in errors):
            return unique_id, patient_id, errors
        assert unique_id and patient_id and content is not None
        if replaced is not None:
            replaced.status = DEPRECATED
        self.documents[unique_id] = StoredDocument(
            unique_id=unique_id,
            entry_uuid=f"urn:uuid:{self._new_uuid()}",
            patient_id=patient_id,
            mime_type=entry.get("mimeType", ""),
            hash=hashlib.sha1(content).hexdigest(),
            size=len(content),
            replaces=replaced.entry_uuid if replaced else None,
            content=content,
        )
        return unique_id, patient_id, errors

    @staticmethod
    def _documents_of(
        request: etree._Element, attachments: dict[str, bytes], errors: list[RegistryError]
    ) -> dict[str, bytes]:
        documents: dict[str, bytes] = {}
        for doc in request.findall(f"{{{XDSB_NS}}}Document"):
            include = doc.find(f"{{{XOP_NS}}}Include")
            if include is not None:
                cid = (include.get("href") or "").removeprefix("cid:")
                if cid not in attachments:
                    errors.append(RegistryError("XDSMissingDocument", f"no MIME part for cid:{cid}"))
                    continue
                documents[doc.get("id", "")] = attachments[cid]
            else:
                try:
                    documents[doc.get("id", "")] = base64.b64decode(doc.text or "", validate=False)
                except ValueError:
                    errors.append(RegistryError("XDSMissingDocument", "Document is not base64"))
        return documents

    # -- ITI-18 ---------------------------------------------------------------------------

    async def _iti18(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            root_part, _ = parse_mtom(request.headers.get("Content-Type", ""), body)
            message = self._check_soap(root_part, ACTION_ITI18)
        except _Refusal as refusal:
            return _soap_response(
                build_soap_fault(refusal.code, refusal.reason, subcode=refusal.subcode),
                action="http://www.w3.org/2005/08/addressing/soap/fault",
                status=400,
            )
        except ValueError:
            return web.Response(status=400, text="unreadable multipart body")
        query = message.body
        errors: list[RegistryError] = []
        hits: list[QueryHit] = []
        return_type = "LeafClass"
        if query is None or query.tag != f"{{{QUERY_NS}}}AdhocQueryRequest":
            errors.append(RegistryError("XDSRegistryError", "expected query:AdhocQueryRequest"))
        else:
            option = query.find(f"{{{QUERY_NS}}}ResponseOption")
            return_type = option.get("returnType", "LeafClass") if option is not None else "LeafClass"
            adhoc = query.find(f"{{{RIM_NS}}}AdhocQuery")
            if adhoc is None or adhoc.get("id") != GET_DOCUMENTS_QUERY:
                errors.append(RegistryError("XDSUnknownStoredQuery", "only GetDocuments is simulated"))
            else:
                wanted_uids = _query_values(adhoc, "$XDSDocumentEntryUniqueId")
                wanted_uuids = _query_values(adhoc, "$XDSDocumentEntryEntryUUID")
                if not wanted_uids and not wanted_uuids:
                    errors.append(
                        RegistryError("XDSStoredQueryParamNumber", "uniqueId or entryUUID required")
                    )
                for doc in self.documents.values():
                    if doc.unique_id in wanted_uids or doc.entry_uuid in wanted_uuids:
                        hits.append(QueryHit(doc.entry_uuid, doc.unique_id, doc.status))
        response = build_query_response(hits, return_type=return_type, errors=errors)
        envelope = build_envelope(
            response,
            action=ACTION_ITI18_RESPONSE,
            message_id=f"urn:uuid:{self._new_uuid()}",
            relates_to=message.message_id or "",
        )
        return web.Response(
            body=etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"),
            headers={"Content-Type": "application/soap+xml; charset=UTF-8"},
        )

    # -- inspection -----------------------------------------------------------------------

    async def _list_submissions(self, request: web.Request) -> web.Response:
        return web.json_response([s.as_json() for s in self.submissions], dumps=_dumps)

    async def _list_documents(self, request: web.Request) -> web.Response:
        return web.json_response([d.as_json() for d in self.documents.values()], dumps=_dumps)

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})

    def _new_uuid(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _soap_response(body: etree._Element, *, action: str, status: int) -> web.Response:
    envelope = etree.Element(f"{{{SOAP12_NS}}}Envelope", nsmap={"s": SOAP12_NS})
    etree.SubElement(envelope, f"{{{SOAP12_NS}}}Body").append(body)
    return web.Response(
        status=status,
        body=etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"),
        headers={"Content-Type": f'application/soap+xml; charset=UTF-8; action="{action}"'},
    )


def _external_id(obj: etree._Element | None, scheme: str) -> str | None:
    if obj is None:
        return None
    for ei in obj.findall(f"{{{RIM_NS}}}ExternalIdentifier"):
        if ei.get("identificationScheme") == scheme:
            return ei.get("value")
    return None


def _classifications(obj: etree._Element, scheme: str) -> list[etree._Element]:
    return [c for c in obj.findall(f"{{{RIM_NS}}}Classification") if c.get("classificationScheme") == scheme]


def _slot_value(obj: etree._Element, name: str) -> str | None:
    for slot in obj.findall(f"{{{RIM_NS}}}Slot"):
        if slot.get("name") == name:
            value = slot.find(f"{{{RIM_NS}}}ValueList/{{{RIM_NS}}}Value")
            return value.text if value is not None else None
    return None


def _query_values(adhoc: etree._Element, name: str) -> set[str]:
    """Values of a stored-query slot: ``('a','b')`` lists, possibly over several Values."""
    found: set[str] = set()
    for slot in adhoc.findall(f"{{{RIM_NS}}}Slot"):
        if slot.get("name") != name:
            continue
        for value in slot.iter(f"{{{RIM_NS}}}Value"):
            text = (value.text or "").strip()
            if text.startswith("(") and text.endswith(")"):
                text = text[1:-1]
            for item in re.findall(r"'((?:[^']|'')*)'", text) or [text]:
                if item:
                    found.add(item.replace("''", "'"))
    return found
