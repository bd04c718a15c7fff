"""DMP destination: ITI-41 Provide and Register over SOAP 1.2 + MTOM, with a signed VIHF.

One ``send`` = (replace: ITI-18 GetDocuments to find the entryUUID of the replaced entry)
→ ebRIM metadata → signed VIHF → SOAP envelope → MTOM → POST → RegistryResponse.

Outcome mapping:

    HTTP 2xx + Success / PartialSuccess        → SendResult (remote_id = document uniqueId)
    HTTP 2xx + Failure with only busy codes    → DestinationUnavailable (XDSRegistryBusy …)
    HTTP 2xx + Failure otherwise               → DestinationRejected (code = first XDS error code)
    SOAP Fault, HTTP 5xx, 408, 429             → DestinationUnavailable (Retry-After honoured)
    other HTTP 4xx                              → DestinationRejected (HTTP_4xx)

Deletion (DMP TD3.3c) and archiving (TD3.3d) are ITI-57 Update Document Set requests to
the *registry* endpoint (SOAP 1.2 + WS-Addressing + VIHF, action
``urn:ihe:iti:2010:UpdateDocumentSet``, IHE ITI TF-2b §3.57): ITI-18 finds the entry by
uniqueId (entryUUID and current status), then one UpdateAvailabilityStatus association
moves it to ``urn:asip:ci-sis:2010:StatusType:Deleted`` (or ``…:Archived``). The
RegistryResponse is classified as for ITI-41. An entry already in the target status
counts as done (a retried deletion), an entry that is not there is ``DMP_ENTRY_UNKNOWN``.

Neither ITI-41 nor ITI-57 is idempotent, so ``lookup_before_retry`` is set: after an
ambiguous failure the base class asks ``already_delivered`` (ITI-18 GetDocuments by
uniqueId: the entry exists, or has the target status) before resending.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import structlog
from lxml import etree

from adapters.base import BaseDestination, RetrySettings, Sleep
from adapters.dmp.ebrim import (
    STATUS_ARCHIVED,
    STATUS_DELETED,
    build_provide_and_register,
    build_update_availability_status,
)
from adapters.dmp.mtom import build_mtom, parse_mtom
from adapters.dmp.soap import (
    ACTION_ITI18,
    ACTION_ITI41,
    ACTION_ITI57,
    QueryHit,
    RegistryOutcome,
    build_envelope,
    build_get_documents_query,
    parse_envelope,
    parse_query_response,
    parse_registry_response,
)
from adapters.dmp.vihf import VihfSettings, build_vihf
from adapters.dmp.xades import sign_submission_set, signature_entry
from gateway.errors import DestinationRejected, DestinationUnavailable
from gateway.model import XdsDocumentEntry, XdsMetadata
from gateway.ports import Clock, Payload, SendResult, SystemClock

__all__ = ["DmpSettings", "DmpDestination"]

log = structlog.get_logger(__name__)

DOCUMENT_CID_SUFFIX = "@relais"


@dataclass(frozen=True)
class DmpSettings:
    """Settings of one DMP destination (section ``[destinations.<name>]``, kind ``dmp-xds``).

    ``registry_url`` defaults to ``registry`` next to ``url`` (``…/repository`` →
    ``…/registry``; ``http://h/`` → ``http://h/registry``), the simulator's layout.
    ``tls_cert`` / ``tls_key`` are the client certificate for mutual TLS; ``tls_ca`` the
    CA bundle that authenticates the server (system store when unset).
    """

    url: str
    vihf: VihfSettings
    registry_url: str | None = None
    source_id: str | None = None  # overrides submissionSet.sourceId when set
    sign_submission_set: bool = True  # XAdES signature document (the DMP requires it)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    retry: RetrySettings = field(default_factory=RetrySettings)

    @property
    def effective_registry_url(self) -> str:
        return self.registry_url or urljoin(self.url, "registry")


class DmpDestination(BaseDestination):
    """``Destination`` for the DMP (and any XDS.b repository accepting a VIHF)."""

    kind = "dmp-xds"
    lookup_before_retry = True

    def __init__(
        self,
        name: str,
        settings: DmpSettings,
        *,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
    ) -> None:
        super().__init__(name, retry=settings.retry, sleep=sleep)
        self.settings = settings
        self._clock: Clock = clock or SystemClock()
        self._session: aiohttp.ClientSession | None = None
        self._session_factory = session_factory

    # -- lifecycle ------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if not (s.tls_cert or s.tls_ca) or not s.url.startswith("https"):
            return None
        context = ssl.create_default_context(cafile=str(s.tls_ca) if s.tls_ca else None)
        if s.tls_cert:
            context.load_cert_chain(str(s.tls_cert), str(s.tls_key) if s.tls_key else None)
        return context

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if self._session_factory is not None:
                self._session = self._session_factory()
            else:
                ssl_context = self._ssl_context()
                connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context else aiohttp.TCPConnector()
                self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    # -- Destination hooks ----------------------------------------------------------------

    async def _send(self, payload: Payload) -> SendResult:
        action = (payload.xds["documentEntry"].get("action") if payload.xds is not None else None) or "submit"
        if action in _STATUS_FOR_ACTION:
            return await self._update_status(payload, action)
        xds, document = self._require(payload)
        entry = xds["documentEntry"]
        replaced_uuid = None
        if action == "replace":
            parent = entry.get("replaces")
            if not parent:
                raise DestinationRejected(
                    "replace without documentEntry.replaces",
                    code="XDS_PARENT_UNKNOWN",
                    location="documentEntry.replaces",
                )
            replaced_uuid = await self._find_entry_uuid(xds, parent)
            if replaced_uuid is None:
                raise DestinationRejected(
                    "the document to replace is not in the DMP registry",
                    code="XDS_PARENT_UNKNOWN",
                    location="documentEntry.replaces",
                )
        xds = self._with_source_id(xds)
        # signing hashes the document and MTOM copies it: off the event loop for a large one
        envelope_bytes, content_type, body = await asyncio.to_thread(
            self._iti41_request, xds, document, replaced_uuid)
        status, response_root, response_text = await self._post(self.settings.url, content_type, body)
        outcome = parse_registry_response(response_root)
        result_detail = {
            "uniqueId": entry.get("uniqueId"),
            "action": action,
            "errors": outcome.error_tuples,
        }
        if replaced_uuid:
            result_detail["replacedEntryUUID"] = replaced_uuid
        _raise_unless_success(outcome, "submission")
        return SendResult(
            remote_id=entry.get("uniqueId"),
            request=envelope_bytes.decode("utf-8"),
            response=response_text,
            status=status,
            detail=result_detail,
        )

    async def _update_status(self, payload: Payload, action: str) -> SendResult:
        """TD3.3c / TD3.3d: ITI-18 for the entry, then ITI-57 UpdateAvailabilityStatus."""
        xds, _ = self._require(payload, need_document=False)
        xds = self._with_source_id(xds)
        unique_id = xds["documentEntry"].get("uniqueId")
        if not unique_id:
            raise DestinationRejected(
                f"{action} without documentEntry.uniqueId", code="DMP_ENTRY_UNKNOWN", location="TXA-12"
            )
        new_status = _STATUS_FOR_ACTION[action]
        hit = await self._find_entry(xds, unique_id)
        if hit is None:
            raise DestinationRejected(
                f"the document to {action} is not in the DMP registry", code="DMP_ENTRY_UNKNOWN", location="TXA-12"
            )
        detail: dict[str, object] = {"uniqueId": unique_id, "action": action, "entryUUID": hit.entry_uuid}
        if hit.status == new_status:
            # A retried deletion whose first attempt reached the registry: nothing to redo.
            return SendResult(remote_id=unique_id, detail={**detail, "already": new_status})
        url = self.settings.effective_registry_url
        request = build_update_availability_status(
            xds,
            target_entry_uuid=hit.entry_uuid,
            original_status=hit.status or "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved",
            new_status=new_status,
        )
        envelope = self._envelope(request, ACTION_ITI57, url, xds)
        body = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
        content_type = f'application/soap+xml; charset=UTF-8; action="{ACTION_ITI57}"'
        status, response_root, response_text = await self._post(url, content_type, body)
        outcome = parse_registry_response(response_root)
        _raise_unless_success(outcome, f"{action} (ITI-57)")
        return SendResult(
            remote_id=unique_id,
            request=body.decode("utf-8"),
            response=response_text,
            status=status,
            detail={**detail, "newStatus": new_status, "errors": outcome.error_tuples},
        )

    async def _lookup(self, payload: Payload) -> bool:
        xds, _ = self._require(payload, need_document=False)
        unique_id = xds["documentEntry"].get("uniqueId")
        if not unique_id:
            return False
        hit = await self._find_entry(xds, unique_id)
        action = xds["documentEntry"].get("action") or "submit"
        if action in _STATUS_FOR_ACTION:
            return hit is not None and hit.status == _STATUS_FOR_ACTION[action]
        return hit is not None

    def _with_source_id(self, xds: XdsMetadata) -> XdsMetadata:
        if not self.settings.source_id:
            return xds
        return {**xds, "submissionSet": {**xds["submissionSet"], "sourceId": self.settings.source_id}}  # type: ignore[typeddict-item]

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _require(payload: Payload, *, need_document: bool = True) -> tuple[XdsMetadata, bytes]:
        if payload.xds is None or (need_document and payload.document is None):
            raise DestinationRejected(
                "DMP payload needs a document and XDS metadata", code="DMP_PAYLOAD_INCOMPLETE"
            )
        return payload.xds, payload.document or b""

    def _signature(self, xds: XdsMetadata, document: bytes) -> tuple[XdsDocumentEntry, bytes]:
        """The XAdES signature document of this submission set and its DocumentEntry.

        Signed with the structure's cachet key, the VIHF's (issue #9); its uniqueId is an
        OID under 2.25 (ITU-T X.667: a UUID as an OID), fresh for each attempt.
        """
        now = self._clock.now()
        vihf = self.settings.vihf
        unique_id = f"2.25.{uuid.UUID(self._clock.new_id()).int}"
        signature = sign_submission_set(
            [(xds["documentEntry"]["uniqueId"], document)],
            submission_set_unique_id=xds["submissionSet"].get("uniqueId", ""),
            key_pem=Path(vihf.key_path).read_bytes(),
            cert_pem=Path(vihf.cert_path).read_bytes(),
            now=now,
            signature_id=f"sig-{self._clock.new_id()}",
            passphrase=vihf.key_password,
        )
        entry = signature_entry(
            xds,
            entry_uuid=f"urn:uuid:{self._clock.new_id()}",
            unique_id=unique_id,
            signature=signature,
            creation_time=now.astimezone(UTC).strftime("%Y%m%d%H%M%S"),
        )
        return entry, signature

    def _envelope(self, body: etree._Element, action: str, to: str, xds: XdsMetadata) -> etree._Element:
        now: datetime = self._clock.now()
        assertion = build_vihf(self.settings.vihf, xds, now, f"_{self._clock.new_id()}")
        return build_envelope(
            body, action=action, message_id=f"urn:uuid:{self._clock.new_id()}", to=to, assertion=assertion
        )

    async def _find_entry_uuid(self, xds: XdsMetadata, unique_id: str) -> str | None:
        """ITI-18 GetDocuments by uniqueId; the entryUUID of the (first) entry, or None."""
        hit = await self._find_entry(xds, unique_id)
        return hit.entry_uuid if hit is not None else None

    async def _find_entry(self, xds: XdsMetadata, unique_id: str) -> QueryHit | None:
        """ITI-18 GetDocuments by uniqueId (LeafClass): the entry with its status, or None."""
        url = self.settings.effective_registry_url
        envelope = self._envelope(build_get_documents_query([unique_id]), ACTION_ITI18, url, xds)
        body = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
        content_type = f'application/soap+xml; charset=UTF-8; action="{ACTION_ITI18}"'
        _, root, _ = await self._post(url, content_type, body)
        outcome, hits = parse_query_response(root)
        if not outcome.success:
            first = outcome.blocking[0] if outcome.blocking else None
            code = first.code if first else "XDS_QUERY_FAILED"
            if outcome.retryable:
                raise DestinationUnavailable(f"registry query failed: {code}", code=code)
            raise DestinationRejected(f"registry query failed: {code}", code=code)
        for hit in hits:
            if hit.unique_id in (None, unique_id) and hit.entry_uuid:
                return hit
        return None

    def _iti41_request(self, xds: XdsMetadata, document: bytes,
                       replaced_uuid: str | None) -> tuple[bytes, str, bytes]:
        """The ITI-41 envelope, and the MTOM body carrying it with the document (and signature)."""
        cid = f"doc-{self._clock.new_id()}{DOCUMENT_CID_SUFFIX}"
        parts = {cid: document}
        signature = None
        if self.settings.sign_submission_set:
            signature_entry_, signature_bytes = self._signature(xds, document)
            signature_cid = f"sig-{self._clock.new_id()}{DOCUMENT_CID_SUFFIX}"
            parts[signature_cid] = signature_bytes
            signature = (signature_entry_, signature_cid)
        request = build_provide_and_register(
            xds, document_id_ref=cid, replaced_entry_uuid=replaced_uuid, signature=signature
        )
        envelope = self._envelope(request, ACTION_ITI41, self.settings.url, xds)
        envelope_bytes = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
        content_type, body = build_mtom(envelope_bytes, parts, action=ACTION_ITI41)
        return envelope_bytes, content_type, body

    async def _post(self, url: str, content_type: str, body: bytes) -> tuple[int, etree._Element, str]:
        """POST and return (status, parsed root part, root part text); map transport outcomes."""
        session = self._client()
        async with session.post(url, data=body, headers={"Content-Type": content_type}) as response:
            raw = await response.read()
            status = response.status
            retry_after = _retry_after(response.headers.get("Retry-After"))
            response_type = response.headers.get("Content-Type", "")
        if status in (502, 503, 504, 408, 429):
            raise DestinationUnavailable(f"HTTP {status}", code=f"HTTP_{status}", retry_after=retry_after)
        try:
            root_bytes, _ = parse_mtom(response_type, raw)
            message = parse_envelope(root_bytes)
        except ValueError as exc:
            if status >= 500:
                raise DestinationUnavailable(
                    f"HTTP {status}", code=f"HTTP_{status}", retry_after=retry_after
                ) from exc
            if status >= 400:
                raise DestinationRejected(f"HTTP {status}", code=f"HTTP_{status}") from exc
            raise DestinationUnavailable(f"unreadable answer: {exc}", code="SOAP_INVALID") from exc
        if message.fault is not None:
            fault = message.fault
            if fault.code.endswith(("Sender", "VersionMismatch", "MustUnderstand")) and 400 <= status < 500:
                # SOAP 1.2 HTTP binding: a Sender fault (400) blames our request — a bad
                # VIHF, a wrong Action: sending it again cannot succeed.
                raise DestinationRejected(
                    f"SOAP fault {fault.code} {fault.subcode or ''}: {fault.reason[:200]}",
                    code="SOAP_FAULT_SENDER",
                )
            # A Receiver fault may come from an overloaded front end as well as from a bug;
            # the dispatcher's retry budget ends in dead letter if it persists.
            raise DestinationUnavailable(
                f"SOAP fault {message.fault.code}: {message.fault.reason[:200]}",
                code="SOAP_FAULT",
                retry_after=retry_after,
            )
        if status >= 500:
            raise DestinationUnavailable(f"HTTP {status}", code=f"HTTP_{status}", retry_after=retry_after)
        if status >= 400:
            raise DestinationRejected(f"HTTP {status}", code=f"HTTP_{status}")
        if message.body is None:
            raise DestinationUnavailable("empty SOAP body", code="SOAP_INVALID")
        return status, message.body, root_bytes.decode("utf-8", errors="replace")


_STATUS_FOR_ACTION = {"delete": STATUS_DELETED, "archive": STATUS_ARCHIVED}


def _raise_unless_success(outcome: RegistryOutcome, what: str) -> None:
    """Map a failed RegistryResponse: busy codes are transient, every other code permanent."""
    if outcome.success:
        return
    first = outcome.blocking[0] if outcome.blocking else None
    code = first.code if first else "XDS_FAILURE"
    message = f"registry refused the {what}: {first.code if first else outcome.status}"
    if outcome.retryable:
        raise DestinationUnavailable(message, code=code)
    raise DestinationRejected(message, code=code, location=first.location if first else None)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: let the dispatcher's backoff decide
