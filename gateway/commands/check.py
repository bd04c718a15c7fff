"""``relais check FILE``: the whole pipeline offline on an HL7 v2 or CDA file (no network, no journal).

It predicts what ``serve`` does with the same bytes: the input is dispatched the same
way (MLLP framing bytes stripped; ``MSH`` → HL7 v2, ``<`` → XML, anything else refused
in one line), the analysis is the same pure function, and the acknowledgement shown is
the one serve would send (HL7 enhanced mode included, nothing for an inbound ACK).
With ``--config`` it also shows where each document would go, whether it would be held
and why, and what a destination would refuse.
"""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.commands._common import dump_json, settings_from

__all__ = ["register", "check_bytes", "input_kind"]

EXIT = {"accepted": 0, "recorded": 0, "rejected": 1, "held": 2, "undeliverable": 3}

_MLLP_START, _MLLP_END = b"\x0b", b"\x1c"
_BLANKS = b" \t\r\n"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("check", help="dry-run the pipeline on an HL7 v2 or CDA file")
    p.add_argument("file")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--strict", action="store_true", help="also run hl7apy structural validation")
    p.add_argument("--allow-test-ins", action="store_true", default=None)
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--cda-xsd", metavar="DIR", help="validate CDA documents against this XSD directory")
    p.set_defaults(func=run, data_dir=None)


def input_kind(data: bytes) -> tuple[str, bytes]:
    """``("hl7v2" | "xml" | "neither", payload)``: the dispatch serve's listeners make.

    MLLP framing (VT … FS CR) is what the MLLP listener strips before the pipeline
    sees the message, so a captured frame checks the same as the bare message.
    """
    body = data.lstrip(_BLANKS)
    if body.startswith(_MLLP_START):
        body = body[1:]
        end = body.rfind(_MLLP_END)
        if end != -1:
            body = body[:end]
    payload = body.removeprefix(b"\xef\xbb\xbf")
    head = payload.lstrip(_BLANKS)
    if head.startswith(b"MSH"):
        return "hl7v2", head
    if head.startswith(b"<") or head.startswith((b"\xff\xfe<", b"\xfe\xff\x00<")):
        return "xml", payload
    return "neither", payload


def check_bytes(data: bytes, *, allow_test_ins: bool, strict: bool = False, cda_xsd: str | None = None,
                config: str | None = None, ids: Any = None) -> dict[str, Any]:
    from gateway.core.pipeline import Ids
    from gateway.intake.handler import pipeline_options
    from gateway.settings import load_settings

    settings = load_settings(
        config,
        overrides={"identity": {"allow_test_ins": allow_test_ins}, "pipeline": {"cda_xsd": cda_xsd}},
    )
    opts = pipeline_options(settings)
    # relais check is an offline tool: the real clock and random ids are fine at this edge.
    ids = ids or Ids(now=datetime.now(UTC), new_uuid=lambda: str(uuid.uuid4()))
    kind, payload = input_kind(data)
    if kind == "neither":
        return _unknown_input()
    an = _analyse(kind, payload, opts, ids, strict=strict)
    out = _verdict(an, _control_id(an, kind, payload))
    out.update(_details(an, kind, opts, ids))
    if config is not None and an.kind in ("document", "cda") and an.ack_code == "AA":
        out["routes"] = _routes(settings, an)
        if out["outcome"] == "accepted" and any(r["status"] == "refused" for r in out["routes"]):
            out["outcome"] = "undeliverable"
    return out


def _unknown_input() -> dict[str, Any]:
    """Neither HL7 v2 nor XML: serve's MLLP listener would answer AR (no MSH: MSA-2 empty); over HTTP a 4xx."""
    return {
        "outcome": "rejected", "message_type": None, "control_id": None, "ack_code": "AR",
        "errors": [{"code": "INPUT_UNKNOWN", "message": "neither an HL7 v2 message (MSH…) nor an XML document (<…)",
                    "location": "byte 0"}],
        "warnings": [], "identity": {"qualified": False, "hold_reason": None}, "fhir": None, "xds": None,
    }


def _analyse(kind: str, payload: bytes, opts: Any, ids: Any, *, strict: bool) -> Any:
    """The pipeline's analysis, as serve makes it; with ``strict``, hl7apy's findings added."""
    from gateway.core.pipeline import analyse_cda, analyse_hl7v2

    if kind != "hl7v2":
        return analyse_cda(payload, {"DESTDMP": True}, opts, ids)
    an = analyse_hl7v2(payload, opts, ids)
    # a message with a malformed segment id is already refused naming it: hl7apy would only add noise
    if strict and an.message is not None and an.kind in ("document", "adt") and not an.message.bad_segment_names():
        from gateway.core.hl7v2.strict import strict_validate

        for f in strict_validate("\r".join(s.raw for s in an.message.segments)):
            (an.warnings if f.severity == "warning" else an.errors).append(f)
        if an.errors and an.ack_code == "AA":
            an.ack_code = "AE"
    return an


def _control_id(an: Any, kind: str, payload: bytes) -> str | None:
    """The control id serve echoes in MSA-2."""
    control_id: str | None = an.summary.get("control_id")
    if control_id is not None or kind != "hl7v2":
        return control_id
    from gateway.core.hl7v2.salvage import salvage_control_id

    # an MSH the reader refuses may still give MSH-10
    salvaged = salvage_control_id(payload)
    return salvaged.decode("latin-1") if salvaged is not None else None


def _xds(doc: Any) -> dict[str, Any]:
    return {"documentEntry": doc.xds["documentEntry"], "submissionSet": doc.xds["submissionSet"]}


def _verdict(an: Any, control_id: str | None) -> dict[str, Any]:
    """What every check reports: the outcome, the ACK, the findings, the first document's FHIR and XDS."""
    doc = an.documents[0] if an.documents else None
    return {
        "outcome": an.outcome,
        "message_type": an.summary.get("message_type"),
        "control_id": control_id,
        "ack_code": an.ack_code or None,
        "errors": [f.as_dict() for f in an.errors],
        "warnings": [f.as_dict() for f in an.warnings],
        "identity": {
            "qualified": an.identity.qualified,
            "hold_reason": an.identity.reason.as_dict() if an.identity.reason else None,
        },
        "fhir": doc.fhir if doc else None,
        "xds": _xds(doc) if doc is not None else None,
    }


def _details(an: Any, kind: str, opts: Any, ids: Any) -> dict[str, Any]:
    """What only some inputs have: enhanced-mode ACKs, the ACK answered, the ADT patient, the hold,
    every document when there are several."""
    out: dict[str, Any] = {}
    plan = an.ack_plan
    if kind == "hl7v2" and an.message is not None and an.kind != "ack" and plan.enhanced:
        out["acknowledgement"] = {
            "mode": "enhanced",
            "accept": plan.immediate,
            "application": an.ack_code if plan.application else None,
        }
    if an.kind == "ack":
        out["acknowledges"] = an.acknowledges
    if an.kind == "adt" and an.patient is not None and an.adt is not None:
        out["adt"] = _adt(an, opts, ids)
    if an.outcome == "held" and an.identity.reason is not None:
        out["hold"] = an.identity.reason.as_dict()
    if len(an.documents) > 1:
        out["documents"] = [{"uniqueId": d.unique_id, "fhir": d.fhir, "xds": _xds(d)} for d in an.documents]
    return out


def _adt(an: Any, opts: Any, ids: Any) -> dict[str, Any]:
    """The ADT event and the FHIR Patient serve would keep for it."""
    from gateway.core.fhir.patient import build_patient
    from gateway.core.identity.status import reliability_extension

    status = an.identity.status
    reliability = reliability_extension(status, opts.convention) if status is not None and status.status else None
    return {
        "trigger": an.adt.trigger,
        "cancels": an.adt.cancels,
        "patient_class": an.adt.patient_class,
        "qualified": an.identity.qualified,
        "patient": build_patient(an.patient, reliability=reliability, id=ids.new_uuid()),
    }


def _routes(settings: Any, an: Any) -> list[dict[str, Any]]:
    """Where each document would go, as serve's router and destinations would decide."""
    from gateway.destinations import DOCUMENT_KINDS, configured

    # serve's own list: with no document destination, it writes to a file outbox
    dests = [d for d in configured(settings) if d.kind in DOCUMENT_KINDS]
    if not an.dmp_bound:
        return [{"document": d.unique_id, "destination": None, "status": "not sent",
                 "reason": "DESTDMP is not Y: no document destination"} for d in an.documents]
    from gateway.intake.handler import Router

    route = Router(tuple(d.name for d in dests), routes=settings.routes).route_for(an)
    if route is not None:  # the first matching [[route]] names the destinations, as in serve
        dests = [d for d in dests if d.name in route.destinations]
        if not dests:
            return [{"document": d.unique_id, "destination": None, "status": "not sent", "route": route.name,
                     "reason": f"route {route.name!r} sends it nowhere"} for d in an.documents]
    hold = an.identity.reason
    routes: list[dict[str, Any]] = []
    for doc in an.documents:
        for dest in dests:
            refusal = _refusal(dest.kind, doc)
            if refusal is not None:
                status, reason = "refused", refusal
            elif hold is not None:
                status, reason = "held", f"{hold.code}: {hold.message}"
            else:
                status, reason = "queued", None
            routes.append({"document": doc.unique_id, "destination": dest.name, "kind": dest.kind,
                           "action": doc.action, "status": status, "reason": reason,
                           "route": route.name if route is not None else None})
    return routes


def _refusal(kind: str, doc: Any) -> str | None:
    """What the destination adapter would refuse for good (its DestinationRejected codes)."""
    entry = doc.xds.get("documentEntry", {})
    # a deletion is delivered (DMP: ITI-57 TD3.3c; MHD: the PDSM4DMP PATCH), so only a
    # replacement that names no replaced document is refused for good
    if kind in ("dmp-xds", "mhd") and doc.action == "replace" and not entry.get("replaces"):
        return "XDS_PARENT_UNKNOWN: replace without documentEntry.replaces"
    return None


def run(args: argparse.Namespace) -> int:
    data = Path(args.file).read_bytes()
    settings = settings_from(args)
    allow = args.allow_test_ins if args.allow_test_ins is not None else settings.identity.allow_test_ins
    out = check_bytes(data, allow_test_ins=allow, strict=args.strict, cda_xsd=args.cda_xsd, config=args.config)
    if args.format == "json":
        dump_json(out)
        return EXIT[out["outcome"]]
    if out["errors"] and out["errors"][0]["code"] == "INPUT_UNKNOWN":
        print(f"relais check: {args.file}: {out['errors'][0]['message']}")
        return EXIT["rejected"]
    ack = out["ack_code"] or "no acknowledgement (an ACK is never acknowledged)"
    print(f"{out['outcome'].upper()}  {out['message_type'] or '-'}  control id {out['control_id'] or '-'}  ACK {ack}")
    if out.get("acknowledgement"):
        a = out["acknowledgement"]
        print(f"  enhanced mode: accept ACK {a['accept'] or 'none'}, application ACK {a['application'] or 'none'}")
    for f in out["errors"]:
        print(f"  error   {f['code']:<26} {f.get('location') or '-':<28} {f['message']}")
    for f in out["warnings"]:
        print(f"  warning {f['code']:<26} {f.get('location') or '-':<28} {f['message']}")
    if out.get("hold"):
        print(f"  held    {out['hold']['code']:<26} {out['hold'].get('location') or '-':<28} {out['hold']['message']}")
    if out.get("adt"):
        p = out["adt"]["patient"]
        ids = ", ".join(f"{i.get('system', '-')}|{i.get('value', '-')}" for i in p.get("identifier", []))
        print(f"  identity {'qualified' if out['adt']['qualified'] else 'not qualified'}: Patient {ids or '-'}")
    if out["xds"]:
        de = out["xds"]["documentEntry"]
        print(f"  XDS uniqueId={de.get('uniqueId') or '-'} typeCode={(de.get('typeCode') or {}).get('code') or '-'} "
              f"classCode={(de.get('classCode') or {}).get('code') or '-'} "
              f"formatCode={(de.get('formatCode') or {}).get('code') or '-'}")
    for r in out.get("routes", []):
        via = f" via [[route]] {r['route']!r}" if r.get("route") else " (default: every document destination)"
        print(f"  route   {r['destination'] or '-'} ({r.get('kind') or '-'}) {r['status']}{via}"
              + (f": {r['reason']}" if r.get("reason") else ""))
    return EXIT[out["outcome"]]
