"""An in-process PDSm (MHD ITI-65) document recipient for tests, demos and the acceptance suite.

It answers like the DMP PDSm endpoint would, closely enough to exercise the client:

* ``POST /`` or ``POST /fhir`` — an ITI-65 transaction Bundle. Checked with
  ``adapters.mhd.rules`` (PDSm cardinalities, attachment ↔ Binary size and SHA-1) and
  parsed with ``fhir.resources.R4B``; a masterIdentifier already stored → 422
  ``duplicate``; success → 200 ``transaction-response`` (one entry per request entry,
  same order, ``201 Created``, ``location`` = ``<Type>/<id>/_history/1``).
* ``GET /DocumentReference?identifier=<system>|<value>`` — searchset on masterIdentifier
  and identifier; ``GET /<Type>/<id>`` — a stored resource.
* ``GET /_sim/submissions`` — one JSON object per received submission (``uniqueId``,
  ``patientId``, ``status`` accepted/rejected, ``errors``, ``fault``, ``bundle``);
  ``POST /_sim/reset`` forgets everything.

Fault injection: with probability ``fail_rate`` a POST gets one of ``faults`` — ``503``
(with ``Retry-After``), ``reset`` (connection aborted), ``timeout`` (no answer for
``hang_seconds``), ``fhir`` (500 OperationOutcome) — half of them *after* the documents
were stored, which is the case ``already_delivered`` exists for. ``inject()`` queues a
deterministic fault for the next POSTs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import structlog
from aiohttp import web

from adapters.faults import Fault, FaultPlan, abort, hang
from gateway.core.fhir.structure import validate_structure
from gateway.model import Finding

from .rules import check_iti65, check_r4b, issue_code, master_identifier, patient_id
from .testing import make_iti65_bundle

__all__ = ["FAULTS", "MhdSimulator", "operation_outcome"]

log = structlog.get_logger(__name__)

FAULTS = ("503", "reset", "timeout", "fhir")
FHIR_JSON = "application/fhir+json"


def operation_outcome(findings: Sequence[Finding | tuple[str, str, str | None]]) -> dict[str, Any]:
    """An OperationOutcome from findings (or ``(issue code, diagnostics, expression)`` triples)."""
    issues = []
    for item in findings:
        if isinstance(item, Finding):
            code, text, where = issue_code(item.code), f"{item.code}: {item.message}", item.location
        else:
            code, text, where = item
        issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": text}
        if where:
            issue["expression"] = [where]
        issues.append(issue)
    return {"resourceType": "OperationOutcome", "issue": issues}


def _r4b_findings(bundle: dict[str, Any]) -> list[Finding]:
    """The generic R4 structure check, shared with ``relais check`` (``gateway.core.fhir.structure``)."""
    try:
        return validate_structure(bundle)
    except KeyError:  # fhir_core raises KeyError for an unknown entry resourceType
        return check_r4b(bundle)


def _fhir_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body, ensure_ascii=False), content_type=FHIR_JSON, headers=headers
    )


class MhdSimulator:
    """A PDSm ITI-65 recipient on aiohttp; ``await start(host, port)`` returns its base URL."""

    def __init__(
        self,
        fail_rate: float = 0.0,
        faults: tuple[str, ...] = FAULTS,
        latency_ms: int = 0,
        seed: int | None = None,
        *,
        retry_after: int = 1,
        hang_seconds: float = 60.0,
        validate_r4b: bool = True,
    ) -> None:
        self.plan = FaultPlan(FAULTS, faults, fail_rate=fail_rate, seed=seed)
        self.latency_ms = latency_ms
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds
        self.validate_r4b = validate_r4b
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.url: str | None = None
        self.reset()

    # -- state ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every submission and stored resource (queued faults too)."""
        self.submissions: list[dict[str, Any]] = []
        self.resources: dict[str, dict[str, Any]] = {}  # "Type/id" → resource
        self._by_master: dict[tuple[str | None, str], str] = {}  # masterIdentifier → "DocumentReference/id"
        self._next_id = 1
        self.plan.reset(reseed=False)

    def inject(self, fault: str, *, after_store: bool = False, count: int = 1) -> None:
        """Force ``fault`` on the next ``count`` POSTs, before or after storing."""
        self.plan.inject(fault, after_store=after_store, count=count)

    @property
    def accepted(self) -> list[dict[str, Any]]:
        """Submissions that were stored."""
        return [s for s in self.submissions if s["status"] == "accepted"]

    # -- lifecycle ------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp application (usable with aiohttp's test client too)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for prefix in ("", "/fhir"):
            app.router.add_post(prefix or "/", self._provide)
            if prefix:
                app.router.add_post(prefix + "/", self._provide)
            app.router.add_get(prefix + "/DocumentReference", self._search)
            app.router.add_get(prefix + "/{type:[A-Z][A-Za-z]+}/{id}", self._read)
        app.router.add_get("/_sim/submissions", self._submissions)
        app.router.add_post("/_sim/reset", self._reset)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0: any free port) and return the base URL."""
        if self.validate_r4b:
            # Load the R4B models now, not during the first (timed) request.
            await asyncio.to_thread(_r4b_findings, make_iti65_bundle())
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(self.make_app(), shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only through the server sockets
        sockets = getattr(server, "sockets", None) or []
        bound_port = sockets[0].getsockname()[1] if sockets else port
        self.url = f"http://{host}:{bound_port}"
        log.info("mhd_simulator.started", url=self.url)
        return self.url

    async def stop(self) -> None:
        """Stop listening; requests hanging on a ``timeout`` fault are released."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.info("mhd_simulator.stopped")

    # -- handlers -------------------------------------------------------------------------

    def _record(
        self, bundle: Any, status: str, errors: list[Finding], fault: Fault | None = None
    ) -> dict[str, Any]:
        is_dict = isinstance(bundle, dict)
        ident = master_identifier(bundle) if is_dict else None
        record = {
            "uniqueId": ident[1] if ident else None,
            "patientId": patient_id(bundle) if is_dict else None,
            "status": status,
            "errors": [f.as_dict() for f in errors],
            "fault": fault.kind if fault else None,
            "faultAfterStore": fault.after_store if fault else None,
            "bundle": bundle,
        }
        self.submissions.append(record)
        return record

    async def _apply_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        log.info("mhd_simulator.fault", fault=fault.kind, after_store=fault.after_store)
        if fault.kind == "503":
            outcome = operation_outcome([("transient", "simulated outage", None)])
            return _fhir_response(outcome, 503, {"Retry-After": str(self.retry_after)})
        if fault.kind == "fhir":
            return _fhir_response(operation_outcome([("exception", "simulated server error", None)]), 500)
        if fault.kind == "timeout":
            await hang(self._stopping, self.hang_seconds)  # stop() releases it: shutdown stays quick
            return _fhir_response(operation_outcome([("timeout", "simulated timeout", None)]), 504)
        return abort(request)  # reset: the TCP connection dropped without an answer

    async def _provide(self, request: web.Request) -> web.StreamResponse:
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        raw = await request.read()
        if request.content_type not in (FHIR_JSON, "application/json"):
            finding = Finding("MHD_MEDIA_TYPE", f"unsupported Content-Type {request.content_type!r}", None)
            self._record(raw.decode("utf-8", "replace"), "rejected", [finding])
            return _fhir_response(operation_outcome([finding]), 415)
        try:
            bundle: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            finding = Finding("MHD_NOT_BUNDLE", "the body is not JSON", "Bundle")
            self._record(raw.decode("utf-8", "replace"), "rejected", [finding])
            return _fhir_response(operation_outcome([finding]), 400)
        fault = self.plan.draw()

        if fault is not None and not fault.after_store:
            self._record(bundle, "rejected", [Finding("SIM_FAULT", f"injected fault {fault.kind}")], fault)
            return await self._apply_fault(request, fault)

        findings = check_iti65(bundle)
        if self.validate_r4b and isinstance(bundle, dict) and bundle.get("resourceType") == "Bundle":
            findings = findings + _r4b_findings(bundle)
        if findings:
            self._record(bundle, "rejected", findings)
            status = (
                400
                if any(f.code in ("MHD_NOT_BUNDLE", "MHD_FHIR_INVALID", "FHIR_INVALID") for f in findings)
                else 422
            )
            return _fhir_response(operation_outcome(findings), status)

        conflict = self._conflicts(bundle)
        if conflict:
            self._record(bundle, "rejected", conflict)
            status = 404 if conflict[0].code == "MHD_NOT_FOUND" else 422
            return _fhir_response(operation_outcome(conflict), status)

        response = self._store(bundle)
        self._record(bundle, "accepted", [], fault)
        if fault is not None:
            return await self._apply_fault(request, fault)
        return _fhir_response(response)

    def _conflicts(self, bundle: dict[str, Any]) -> list[Finding]:
        findings = []
        for index, entry in enumerate(bundle.get("entry") or []):
            resource = entry.get("resource") or {}
            if resource.get("resourceType") == "DocumentReference":
                ident = resource["masterIdentifier"]
                if (ident.get("system"), str(ident["value"])) in self._by_master:
                    findings.append(
                        Finding(
                            "MHD_DUPLICATE",
                            "a document with this masterIdentifier is already stored",
                            f"Bundle.entry[{index}].resource.masterIdentifier",
                        )
                    )
            elif entry["request"]["method"] == "PATCH" and entry["request"].get("url") not in self.resources:
                findings.append(
                    Finding(
                        "MHD_NOT_FOUND", "PATCH target is not stored", f"Bundle.entry[{index}].request.url"
                    )
                )
        return findings

    def _store(self, bundle: dict[str, Any]) -> dict[str, Any]:
        out = []
        for entry in bundle["entry"]:
            resource = dict(entry["resource"])
            request = entry["request"]
            if request["method"] == "PATCH":
                # P4D replacement: the old DocumentReference becomes superseded.
                target = request["url"]
                stored = self.resources[target]
                stored["status"] = "superseded"
                stored["meta"] = {**stored.get("meta", {}), "versionId": "2"}
                out.append({"response": {"status": "200 OK", "location": f"{target}/_history/2"}})
                continue
            rtype = resource["resourceType"]
            rid = f"sim-{self._next_id}"
            self._next_id += 1
            resource["id"] = rid
            resource["meta"] = {**(resource.get("meta") or {}), "versionId": "1"}
            key = f"{rtype}/{rid}"
            self.resources[key] = resource
            if rtype == "DocumentReference":
                ident = resource["masterIdentifier"]
                self._by_master[(ident.get("system"), str(ident["value"]))] = key
            out.append(
                {"response": {"status": "201 Created", "location": f"{key}/_history/1", "etag": 'W/"1"'}}
            )
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": out}

    async def _search(self, request: web.Request) -> web.Response:
        token = request.query.get("identifier")
        matches = []
        for key, resource in self.resources.items():
            if not key.startswith("DocumentReference/"):
                continue
            if token is None or _token_matches(token, resource):
                matches.append((key, resource))
        base = str(request.url.with_query(None)).rsplit("/DocumentReference", 1)[0]
        body = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(matches),
            "link": [{"relation": "self", "url": str(request.url)}],
            "entry": [
                {"fullUrl": f"{base}/{key}", "resource": resource, "search": {"mode": "match"}}
                for key, resource in matches
            ],
        }
        return _fhir_response(body)

    async def _read(self, request: web.Request) -> web.Response:
        key = f"{request.match_info['type']}/{request.match_info['id']}"
        resource = self.resources.get(key)
        if resource is None:
            return _fhir_response(operation_outcome([("not-found", f"{key} is not stored", None)]), 404)
        return _fhir_response(resource)

    async def _submissions(self, request: web.Request) -> web.Response:
        return web.json_response(self.submissions)

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})


def _token_matches(token: str, resource: dict[str, Any]) -> bool:
    """FHIR token search on masterIdentifier and identifier: ``value``, ``system|value``, ``|value``."""
    if "|" in token:
        system, value = token.split("|", 1)
        want_system: str | None = system or None
        any_system = False
    else:
        value, want_system, any_system = token, None, True
    candidates = [resource.get("masterIdentifier") or {}, *(resource.get("identifier") or [])]
    for ident in candidates:
        if not isinstance(ident, dict) or str(ident.get("value")) != value:
            continue
        if any_system or ident.get("system") == want_system:
            return True
    return False
