"""``relais check FILE``: the whole pipeline offline on an HL7 v2 or CDA file (no network, no journal)."""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.commands._common import dump_json, settings_from

__all__ = ["register", "check_bytes"]

EXIT = {"accepted": 0, "rejected": 1, "held": 2}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("check", help="dry-run the pipeline on an HL7 v2 or CDA file")
    p.add_argument("file")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--strict", action="store_true", help="also run hl7apy structural validation")
    p.add_argument("--allow-test-ins", action="store_true", default=None)
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--cda-xsd", metavar="DIR", help="validate CDA documents against this XSD directory")
    p.set_defaults(func=run, data_dir=None)


def _is_hl7(data: bytes) -> bool:
    return data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"MSH")


def check_bytes(data: bytes, *, allow_test_ins: bool, strict: bool = False, cda_xsd: str | None = None,
                config: str | None = None, ids: Any = None) -> dict[str, Any]:
    from gateway.core.pipeline import Ids, analyse_cda, analyse_hl7v2
    from gateway.intake import pipeline_options
    from gateway.settings import load_settings

    settings = load_settings(
        config,
        overrides={"identity": {"allow_test_ins": allow_test_ins}, "pipeline": {"cda_xsd": cda_xsd}},
    )
    opts = pipeline_options(settings)
    # relais check is an offline tool: the real clock and random ids are fine at this edge.
    ids = ids or Ids(now=datetime.now(UTC), new_uuid=lambda: str(uuid.uuid4()))
    if _is_hl7(data):
        an = analyse_hl7v2(data, opts, ids)
        if strict and an.message is not None:
            from gateway.core.hl7v2.strict import strict_validate

            for f in strict_validate("\r".join(s.raw for s in an.message.segments)):
                (an.warnings if f.severity == "warning" else an.errors).append(f)
            if an.errors and an.ack_code == "AA":
                an.ack_code = "AE"
    else:
        an = analyse_cda(data, {"DESTDMP": True}, opts, ids)
    doc = an.documents[0] if an.documents else None
    xds = None
    if doc is not None:
        xds = {"documentEntry": doc.xds["documentEntry"], "submissionSet": doc.xds["submissionSet"]}
    out: dict[str, Any] = {
        "outcome": an.outcome,
        "message_type": an.summary.get("message_type"),
        "control_id": an.summary.get("control_id"),
        "ack_code": an.ack_code,
        "errors": [f.as_dict() for f in an.errors],
        "warnings": [f.as_dict() for f in an.warnings],
        "identity": {
            "qualified": an.identity.qualified,
            "hold_reason": an.identity.reason.as_dict() if an.identity.reason else None,
        },
        "fhir": doc.fhir if doc else None,
        "xds": xds,
    }
    if an.outcome == "held" and an.identity.reason is not None:
        out["hold"] = an.identity.reason.as_dict()
    if len(an.documents) > 1:
        out["documents"] = [
            {"uniqueId": d.unique_id, "fhir": d.fhir,
             "xds": {"documentEntry": d.xds["documentEntry"], "submissionSet": d.xds["submissionSet"]}}
            for d in an.documents
        ]
    return out


def run(args: argparse.Namespace) -> int:
    data = Path(args.file).read_bytes()
    settings = settings_from(args)
    allow = args.allow_test_ins if args.allow_test_ins is not None else settings.identity.allow_test_ins
    out = check_bytes(data, allow_test_ins=allow, strict=args.strict, cda_xsd=args.cda_xsd, config=args.config)
    if args.format == "json":
        dump_json(out)
    else:
        print(f"{out['outcome'].upper()}  {out['message_type'] or '-'}  control id {out['control_id'] or '-'}")
        for f in out["errors"]:
            print(f"  error   {f['code']:<26} {f.get('location') or '-':<28} {f['message']}")
        for f in out["warnings"]:
            print(f"  warning {f['code']:<26} {f.get('location') or '-':<28} {f['message']}")
        if out.get("hold"):
            print(f"  held    {out['hold']['code']:<26} {out['hold'].get('location') or '-':<28} {out['hold']['message']}")
        if out["xds"]:
            de = out["xds"]["documentEntry"]
            print(f"  XDS uniqueId={de.get('uniqueId')} typeCode={de.get('typeCode', {}).get('code')} "
                  f"classCode={de.get('classCode', {}).get('code')} formatCode={de.get('formatCode', {}).get('code')}")
    return EXIT[out["outcome"]]
