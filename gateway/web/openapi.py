"""The OpenAPI 3.1 description of every HTTP route, served at ``/openapi.json``.

Written by hand (not generated) so it stays a reviewed contract; a test checks that
every route the application registers is described here.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

__all__ = ["openapi_document", "handle_openapi"]

_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _resp(description: str, schema: dict[str, Any] | None = None, media: str = "application/json") -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {media: {"schema": schema}}
    return out


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": _PROBLEM}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _q(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
       "description": "exchange id (or a unique prefix of it)"}
_AUTH_ERRORS = {"401": _problem("missing or invalid bearer token")}
_OPERATOR_ERRORS = {**_AUTH_ERRORS, "403": _problem("the token's role is not operator")}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict each call)."""
    flags = [_q(name, "MetaDMPMSS flag, Y or N", {"type": "string", "enum": ["Y", "N"]})
             for name in ("MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REP_LEGAUX", "CONNEXION_SECRETE",
                          "MODIF_CONF_CODE", "DESTDMP", "DESTMSSANTEPS", "DESTMSSANTEPAT", "ACK_RECEPTION")]
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Liveness", "security": [], "tags": ["health"],
                             "responses": {"200": _resp("the process is alive", {"type": "object"})}}},
        "/readyz": {"get": {"summary": "Readiness", "security": [], "tags": ["health"],
                            "responses": {"200": _resp("every component is started", {"type": "object"}),
                                          "503": _resp("starting or stopping", {"type": "object"})}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "tags": ["health"],
                             "responses": {"200": _resp("text exposition format", {"type": "string"},
                                                        "text/plain")}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [], "tags": ["health"],
                                  "responses": {"200": _resp("OpenAPI 3.1", {"type": "object"})}}},
        "/v1/documents": {"post": {
            "summary": "Submit a CDA R2 document (any valid token: sending systems need no operator role)",
            "tags": ["ingest"], "parameters": flags,
            "requestBody": {"required": True, "content": {
                "application/xml": {"schema": {"type": "string"}},
                "multipart/form-data": {"schema": {"type": "object", "properties": {
                    "document": {"type": "string", "format": "binary"}}}}}},
            "responses": {"202": _resp("stored and queued (or held)", _ref("Accepted")),
                          "400": _problem("not a CDA document or a bad flag"),
                          "413": _problem("body too large"),
                          "422": _problem("document rejected; exchange_id and errors included"),
                          **_AUTH_ERRORS}}},
        "/v1/hl7v2": {"post": {
            "summary": "Submit one HL7 v2 message (ER7); the reply is the HL7 acknowledgement",
            "tags": ["ingest"],
            "requestBody": {"required": True, "content": {"x-application/hl7-v2+er7": {"schema": {"type": "string"}}}},
            "responses": {"200": _resp("the HL7 ACK (MSA-1 AA, AE or AR)", {"type": "string"},
                                       "x-application/hl7-v2+er7"),
                          "400": _problem("empty body"), "413": _problem("message too large"), **_AUTH_ERRORS}}},
        "/v1/exchanges": {"get": {
            "summary": "List exchanges, newest first", "tags": ["exchanges"],
            "parameters": [
                _q("status", "exchange status", {"type": "string", "enum": list(_STATUSES)}),
                _q("type", "message type, e.g. MDM^T02 (prefix match, * wildcard)"),
                _q("sender", "sending application, facility or app|facility"),
                _q("since", "received at or after (ISO 8601)", {"type": "string", "format": "date-time"}),
                _q("until", "received before (ISO 8601)", {"type": "string", "format": "date-time"}),
                _q("control_id", "MSH-10 message control id"),
                _q("q", "control id, exchange id prefix or document unique id"),
                _q("limit", "page size (1-500)", {"type": "integer", "default": 50}),
                _q("offset", "rows to skip", {"type": "integer", "default": 0}),
            ],
            "responses": {"200": _resp("one page", _ref("ExchangePage")), "400": _problem("bad filter"),
                          **_AUTH_ERRORS}}},
        "/v1/exchanges/{id}": {"get": {
            "summary": "Whole trace of an exchange: summary, events, findings, FHIR, XDS, deliveries, attempts",
            "description": "Raw bytes (base64), patient_ins/patient_ipp, the FHIR Patient, the XDS patient "
                           "fields and attempt request/response bodies are returned to operators only.",
            "tags": ["exchanges"], "parameters": [_ID],
            "responses": {"200": _resp("the trace", _ref("ExchangeDetail")), "404": _problem("unknown id"),
                          **_AUTH_ERRORS}}},
        "/v1/exchanges/{id}/replay": {"post": {
            "summary": "Run the pipeline again from the stored bytes (operator; audited)", "tags": ["actions"],
            "parameters": [_ID],
            "responses": {"201": _resp("the new exchange", _ref("Replay")), "404": _problem("unknown id"),
                          "409": _problem("bytes pruned"), **_OPERATOR_ERRORS}}},
        "/v1/exchanges/{id}/release": {"post": {
            "summary": "Release an exchange held by the identity gate (operator; audited)", "tags": ["actions"],
            "parameters": [_ID],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["reason"], "properties": {"reason": {"type": "string"}}}}}},
            "responses": {"200": _resp("queued", {"type": "object"}), "400": _problem("no reason"),
                          "404": _problem("unknown id"), "409": _problem("not held"), **_OPERATOR_ERRORS}}},
        "/v1/deliveries/{id}/retry": {"post": {
            "summary": "Make a failed or dead delivery due now (operator; audited)", "tags": ["actions"],
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _resp("due now", {"type": "object"}), "404": _problem("unknown delivery"),
                          "409": _problem("not failed or dead"), **_OPERATOR_ERRORS}}},
        "/v1/bulk/release": {"post": {
            "summary": "Release many held exchanges in one transaction, each audited (operator)", "tags": ["actions"],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["reason"], "properties": {
                    "reason": {"type": "string"}, "ids": {"type": "array", "items": {"type": "string"}},
                    "all_held": {"type": "boolean"}, "hold_code": {"type": "string"}}}}}},
            "responses": {"200": _resp("released and refused ids", {"type": "object", "properties": {
                "released": {"type": "array", "items": {"type": "string"}},
                "refused": {"type": "array", "items": {"type": "object"}}}}),
                "400": _problem("no reason, or neither/both of ids and all_held"), **_OPERATOR_ERRORS}}},
        "/v1/bulk/retry": {"post": {
            "summary": "Retry many failed or dead deliveries in one transaction, each audited (operator)",
            "tags": ["actions"],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["reason"], "properties": {
                    "reason": {"type": "string"}, "ids": {"type": "array", "items": {"type": "string"}},
                    "all_dead": {"type": "boolean"}, "destination": {"type": "string"}}}}}},
            "responses": {"200": _resp("retried and refused ids", {"type": "object", "properties": {
                "retried": {"type": "array", "items": {"type": "string"}},
                "refused": {"type": "array", "items": {"type": "object"}}}}),
                "400": _problem("no reason, or neither/both of ids and all_dead"), **_OPERATOR_ERRORS}}},
        "/v1/bulk/reroute": {"post": {
            "summary": "Give the work of a renamed or removed destination to a configured one (operator; "
                       "audited per delivery)", "tags": ["actions"],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["from", "to", "reason"], "properties": {
                    "from": {"type": "string"}, "to": {"type": "string"}, "reason": {"type": "string"}}}}}},
            "responses": {"200": _resp("moved deliveries", {"type": "object", "properties": {
                "rerouted": {"type": "array", "items": {"type": "string"}}}}),
                "400": _problem("missing field or unknown target"), **_OPERATOR_ERRORS}}},
        "/v1/destinations": {"get": {
            "summary": "Health of each destination: state, failure rates over 5 and 60 minutes, last success, "
                       "queue depth, age of the oldest delivery not yet done", "tags": ["operations"],
            "responses": {"200": _resp("one item per destination", {"type": "object", "properties": {
                "items": {"type": "array", "items": {"type": "object"}}}}), **_AUTH_ERRORS}}},
        "/v1/identities": {"get": {
            "summary": "Identity registry (identifiers and traits for operators only)", "tags": ["identities"],
            "parameters": [_q("held", "only patients with held exchanges", {"type": "boolean"})],
            "responses": {"200": _resp("rows", {"type": "object", "properties": {
                "items": {"type": "array", "items": _ref("Identity")}}}), **_AUTH_ERRORS}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Relais operations API", "version": "1",
                 "description": "HL7 v2 / CDA gateway: ingest, trace and operate. Roles: sender (ingest only), "
                                "viewer (read) and operator (read, ingest + actions). The dashboard at / "
                                "uses sessions from /login."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Problem": {"type": "object", "description": "RFC 9457 problem details", "properties": {
                    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                    "detail": {"type": "string"}}},
                "Accepted": {"type": "object", "properties": {
                    "exchange_id": {"type": "string"}, "status": {"type": "string"},
                    "warnings": {"type": "array", "items": {"type": "object"}}}},
                "Exchange": {"type": "object", "properties": {k: {"type": ["string", "integer", "null"]} for k in (
                    "id", "received_at", "status", "control_id", "message_type", "sender", "sha256", "size",
                    "listener", "ack_code", "reason_code", "reason", "document_id")}},
                "ExchangePage": {"type": "object", "properties": {
                    "items": {"type": "array", "items": _ref("Exchange")}, "limit": {"type": "integer"},
                    "offset": {"type": "integer"},
                    "next": {"type": ["string", "null"], "description": "URL of the next page, null at the end"}}},
                "ExchangeDetail": {"allOf": [_ref("Exchange"), {"type": "object", "properties": {
                    "events": {"type": "array", "items": {"type": "object"}},
                    "findings": {"type": "object"}, "documents": {"type": "array", "items": {"type": "object"}},
                    "fhir": {"type": ["object", "null"]}, "xds": {"type": ["object", "null"]},
                    "deliveries": {"type": "array", "items": {"type": "object"}},
                    "raw_base64": {"type": ["string", "null"], "description": "operators only"},
                    "patient_ins": {"type": ["string", "null"], "description": "operators only"},
                    "patient_ipp": {"type": ["string", "null"], "description": "operators only"}}}]},
                "Replay": {"type": "object", "properties": {
                    "exchange_id": {"type": "string"}, "status": {"type": "string"},
                    "replay_of": {"type": "string"}}},
                "Identity": {"type": "object", "properties": {
                    "ref": {"type": "string"}, "status": {"type": ["string", "null"]},
                    "qualified": {"type": "boolean"}, "held_exchanges": {"type": "array"},
                    "ipp_key": {"type": "string", "description": "operators only"},
                    "ins": {"type": ["string", "null"], "description": "operators only"},
                    "traits": {"type": "object", "description": "operators only"}}},
            },
        },
    }


_STATUSES = ("received", "accepted", "rejected", "held", "queued", "delivered", "dead", "duplicate", "recorded")


async def handle_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())
