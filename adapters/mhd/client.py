"""The PDSm (MHD ITI-65) destination: POST the transaction Bundle, read the transaction-response.

``BaseDestination`` owns the timeout, the quick retries and the logging; this module does
one attempt (``_send``) and the existence check (``_lookup``). What an answer *means* is
decided by the pure functions of ``adapters.mhd.protocol``.

ITI-65 is not idempotent — the same masterIdentifier twice is a ``duplicate`` error — so
``lookup_before_retry`` is on: after an ambiguous failure the base class searches
``DocumentReference?identifier=<system>|<value>`` before sending again.

A replacement (``relatesTo.code = replaces``) also updates the replaced DocumentReference
to ``superseded`` in the same transaction (PDSM4DMP TD2.1, slice UpdateDocumentRefs).
Its logical id is known only to the recipient, so it is looked up by identifier just
before sending and the update added as a PATCH entry; ``relatesTo.target`` then also
carries the literal reference. A replaced document the recipient does not have is a
permanent refusal (``MHD_PARENT_UNKNOWN``): per-patient order already delivered the
original first if it went through this destination.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from adapters.base import BaseDestination, RetrySettings, Sleep
from gateway.core.fhir.pdsm import document_identifier
from gateway.errors import DestinationRejected, DestinationUnavailable
from gateway.ports import Clock, Payload, SendResult, SystemClock
from gateway.settings import DestinationSettings, Settings

from .protocol import classify_failure, master_identifier, parse_transaction_response, searchset_count

__all__ = ["MhdConfig", "MhdDestination", "destination_from_settings"]

log = structlog.get_logger(__name__)

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class MhdConfig:
    """Where and how to reach a PDSm endpoint.

    ``bearer_token`` is a secret: build it from the environment (``bearer_token_env`` in
    the destination options names the variable), never from a committed file.
    """

    base_url: str
    bearer_token: str | None = None
    client_cert: str | None = None  # PEM certificate (mutual TLS)
    client_key: str | None = None  # PEM key, when not in client_cert
    ca_file: str | None = None  # CA bundle to trust instead of the system store
    verify_tls: bool = True
    timeout: float = 30.0

    @classmethod
    def from_options(cls, url: str, options: Mapping[str, Any]) -> MhdConfig:
        """Build from a ``[[destinations]]`` section (``gateway.settings.DestinationSettings``)."""
        token = options.get("bearer_token")
        env_name = options.get("bearer_token_env")
        if not token and env_name:
            token = os.environ.get(str(env_name))
        return cls(
            base_url=url,
            bearer_token=token or None,
            client_cert=options.get("client_cert"),
            client_key=options.get("client_key"),
            ca_file=options.get("ca_file"),
            verify_tls=bool(options.get("verify_tls", True)),
            timeout=float(options.get("timeout", 30.0)),
        )


class MhdDestination(BaseDestination):
    """Deliver ``payload.fhir`` (a PDSm ITI-65 transaction Bundle) to ``[base]``."""

    kind = "mhd"
    lookup_before_retry = True

    def __init__(
        self,
        name: str,
        config: MhdConfig,
        *,
        retry: RetrySettings | None = None,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(name, retry=retry or RetrySettings(timeout=config.timeout), sleep=sleep)
        self.config = config
        self._base = config.base_url.rstrip("/")
        self._clock = clock or SystemClock()
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        cfg = self.config
        if not self._base.startswith("https:"):
            return True
        if not cfg.verify_tls:
            return False
        context = ssl.create_default_context(cafile=cfg.ca_file)
        if cfg.client_cert:
            context.load_cert_chain(cfg.client_cert, cfg.client_key)
        return context

    def _headers(self, content: bool) -> dict[str, str]:
        headers = {"Accept": FHIR_JSON}
        if content:
            headers["Content-Type"] = f"{FHIR_JSON}; charset=utf-8"
        if self.config.bearer_token:
            headers["Authorization"] = f"Bearer {self.config.bearer_token}"
        return headers

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # The base class enforces the per-attempt timeout; aiohttp's is a backstop.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl()),
                timeout=aiohttp.ClientTimeout(total=self.config.timeout + 5),
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    @staticmethod
    def _bundle(payload: Payload) -> dict[str, Any]:
        bundle = payload.fhir
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise DestinationRejected("payload has no ITI-65 Bundle", code="MHD_NO_BUNDLE")
        return bundle

    @staticmethod
    def _update_action(payload: Payload) -> str | None:
        action = payload.xds["documentEntry"].get("action") if payload.xds is not None else None
        return action if action in _PATCHES else None

    def _target_query(self, payload: Payload) -> str:
        """``identifier=<system>|<value>`` of the document to update (its uniqueId, PDSm form)."""
        unique_id = payload.xds["documentEntry"].get("uniqueId") if payload.xds is not None else None
        if not unique_id:
            raise DestinationRejected("update without documentEntry.uniqueId", code="MHD_ENTRY_UNKNOWN")
        ident = document_identifier(unique_id)
        return f"{ident['system']}|{ident['value']}"

    async def _patch(self, payload: Payload, action: str) -> SendResult:
        """PDSM4DMP TD3.3c / TD3.3d (draft 0.1.0): a JSON Patch on the DocumentReference found
        by its identifier — status ``entered-in-error`` for a deletion, the
        ``pdsm-ext-is-archived`` extension for archiving. The P4D page itself flags
        ``entered-in-error`` as outside MHD (open question, PDSm issue 99): a server that
        follows MHD strictly answers 4xx, which becomes a precise refusal here."""
        body = json.dumps(_PATCHES[action], separators=(",", ":"))
        headers = {**self._headers(False), "Content-Type": "application/json-patch+json"}
        session = await self._client()
        async with session.patch(
            f"{self._base}/DocumentReference", params={"identifier": self._target_query(payload)},
            data=body.encode("utf-8"), headers=headers,
        ) as resp:
            text = await resp.text(encoding="utf-8", errors="replace")
            status = resp.status
            retry_after = resp.headers.get("Retry-After")
        if status == 404:
            raise DestinationRejected(f"the document to {action} is not on the server", code="MHD_ENTRY_UNKNOWN")
        if not 200 <= status < 300:
            raise classify_failure(status, text, retry_after, self._clock.now())
        return SendResult(request=body, response=text, status=status, detail={"action": action})

    async def _send(self, payload: Payload) -> SendResult:
        action = self._update_action(payload)
        if action is not None:
            return await self._patch(payload, action)
        bundle = await self._with_supersede(self._bundle(payload))
        # the Bundle carries the CDA in base64: serialised off the event loop
        body = await asyncio.to_thread(json.dumps, bundle, ensure_ascii=False, separators=(",", ":"))
        session = await self._client()
        async with session.post(self._base, data=body.encode("utf-8"), headers=self._headers(True)) as resp:
            text = await resp.text(encoding="utf-8", errors="replace")
            status = resp.status
            retry_after = resp.headers.get("Retry-After")
        if not 200 <= status < 300:
            error = classify_failure(status, text, retry_after, self._clock.now())
            log.info(
                "mhd.failed",
                destination=self.name,
                delivery_id=payload.delivery_id,
                status=status,
                code=error.code,
                retryable=isinstance(error, DestinationUnavailable),
            )
            raise error
        parsed = parse_transaction_response(bundle, text)
        return SendResult(
            remote_id=parsed.remote_id,
            request=body,
            response=text,
            status=status,
            detail=dict(parsed.detail),
        )

    async def _search(self, token: str) -> str:
        """The searchset text of ``DocumentReference?identifier=<token>``; failures classified."""
        session = await self._client()
        async with session.get(
            f"{self._base}/DocumentReference", params={"identifier": token}, headers=self._headers(False)
        ) as resp:
            text = await resp.text(encoding="utf-8", errors="replace")
            status = resp.status
            retry_after = resp.headers.get("Retry-After")
        if status != 200:
            raise classify_failure(status, text, retry_after, self._clock.now())
        return text

    async def _find(self, token: str) -> list[dict[str, Any]]:
        """DocumentReference resources matching ``identifier=<token>`` (searchset entries)."""
        text = await self._search(token)
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise DestinationUnavailable("search answer is not a Bundle", code="MHD_BAD_RESPONSE") from exc
        return [
            e["resource"] for e in (doc.get("entry") or [])
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
            and (e.get("search") or {}).get("mode", "match") == "match"
        ]

    async def _with_supersede(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """Add the PATCH that makes the replaced DocumentReference ``superseded`` (PDSM4DMP TD2.1)."""
        bundle = copy.deepcopy(bundle)  # the journal's Bundle stays as it was built
        entries = bundle.setdefault("entry", [])
        for entry in entries:
            resource = entry.get("resource") or {}
            if resource.get("resourceType") != "DocumentReference":
                continue
            for relation in resource.get("relatesTo") or []:
                target = relation.get("target") or {}
                ident = target.get("identifier") or {}
                if relation.get("code") != "replaces" or not ident.get("value") or target.get("reference"):
                    continue
                token = f"{ident['system']}|{ident['value']}" if ident.get("system") else str(ident["value"])
                found = [r for r in await self._find(token) if r.get("id") and r.get("status") != "entered-in-error"]
                if not found:
                    raise DestinationRejected(
                        "the document to replace is not stored at this MHD recipient",
                        code="MHD_PARENT_UNKNOWN", location="DocumentReference.relatesTo.target",
                    )
                old = f"DocumentReference/{found[0]['id']}"
                relation["target"] = {**target, "reference": old}
                entries.append(
                    {
                        "fullUrl": old,
                        "resource": {
                            "resourceType": "Parameters",
                            "parameter": [{"name": "operation", "part": [
                                {"name": "type", "valueCode": "replace"},
                                {"name": "path", "valueString": "DocumentReference.status"},
                                {"name": "value", "valueCode": "superseded"},
                            ]}],
                        },
                        "request": {"method": "PATCH", "url": old},
                    }
                )
        return bundle

    async def _lookup(self, payload: Payload) -> bool:
        action = self._update_action(payload)
        if action is not None:
            token = self._target_query(payload)
        else:
            ident = master_identifier(self._bundle(payload))
            if ident is None:
                return False
            system, value = ident
            token = f"{system}|{value}" if system else value
        text = await self._search(token)
        try:
            found = searchset_count(text) > 0
            if found and action is not None:
                found = _already_updated(text, action)
        except ValueError as exc:
            raise DestinationUnavailable("search answer is not a Bundle", code="MHD_BAD_RESPONSE") from exc
        log.debug("mhd.lookup", destination=self.name, delivery_id=payload.delivery_id, found=found)
        return found


_ARCHIVED_EXT = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"
#: PDSM4DMP ``transaction_td3.3c.md`` / ``transaction_td3.3d.md`` request bodies.
_PATCHES: dict[str, list[dict[str, Any]]] = {
    "delete": [{"op": "replace", "path": "/status", "value": "entered-in-error"}],
    "archive": [{"op": "replace", "path": f"/extension[url:'{_ARCHIVED_EXT}']/valueBoolean", "value": True}],
}


def _already_updated(searchset: str, action: str) -> bool:
    """Whether the DocumentReference found already has the state the PATCH sets."""
    for entry in json.loads(searchset).get("entry") or []:
        resource = entry.get("resource") or {}
        if action == "delete" and resource.get("status") == "entered-in-error":
            return True
        if action == "archive" and any(
            e.get("url") == _ARCHIVED_EXT and e.get("valueBoolean") is True for e in resource.get("extension") or []
        ):
            return True
    return False


def destination_from_settings(d: DestinationSettings, settings: Settings, clock: Clock) -> MhdDestination:
    """A ``kind = "mhd"`` table: ``url`` the FHIR base; options ``bearer_token_env`` (the name
    of the environment variable holding the token, never the token), ``tls_cert``, ``tls_key``,
    ``tls_ca``."""
    opts = d.options
    env = opts.get("bearer_token_env")
    config = MhdConfig(
        base_url=d.url, bearer_token=os.environ.get(str(env)) if env else None,
        client_cert=opts.get("tls_cert"), client_key=opts.get("tls_key"), ca_file=opts.get("tls_ca"),
        timeout=settings.dispatcher.attempt_timeout,
    )
    return MhdDestination(d.name, config, retry=RetrySettings.from_settings(settings), clock=clock)
