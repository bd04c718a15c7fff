"""Optional strict structural validation with hl7apy (``relais check --strict``), off the hot path.

How it works, and why:

* hl7apy's *STRICT parse* stops at the first problem and its exception text quotes
  the offending value (a whole base64 CDA, a patient name): useless for a report and
  unsafe for logs. So we parse with ``VALIDATION_LEVEL.TOLERANT`` and then run
  hl7apy's own strict checker, :meth:`hl7apy.validation.Validator.validate`, which
  walks the whole tree (cardinalities, allowed children, datatypes, tables, lengths).
  It only *raises* the first error, but writes every error and warning to its
  report file: we give it an anonymous temporary file (unlinked at once on Linux,
  deleted on close elsewhere) and turn each line into a Finding. Values are never
  copied into the findings — only hl7apy element names (``PID_3``) and their long
  names (``patient_identifier_list``).
* The volet pre-adopts **PRT** (HL7 v2.9) in ORU_R01 2.5 / MDM_T02 2.6, where those
  structures do not allow it. PRT segments are removed before the message is
  validated, then each PRT is validated on its own as a v2.8.2 segment (the newest
  version hl7apy knows; PRT exists since v2.7).
* hl7apy (``find_groups=True``) silently drops segments it cannot place. We compare
  the segments it kept with the ones in the text and report the missing ones
  (segment not allowed here / out of order). Z segments (ZBE, ZFA … of PAM-FR) are
  national extensions and are not reported.

Codes: every finding is ``HL7_STRICT``; structural problems are errors, hl7apy's
value warnings (table membership, maximum length) are warnings, de-duplicated per
element. Expect a few tens of milliseconds per message.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections import Counter
from typing import Any

from gateway.core.hl7v2.reader import Message
from gateway.errors import ParseError
from gateway.model import Finding

__all__ = ["strict_validate", "PRT_VERSION"]

PRT_VERSION = "2.8.2"
_CODE = "HL7_STRICT"

_MISSING = re.compile(r"Missing required child (?P<parent>[\w]+)\.(?P<child>\w+)")
_TOO_MANY = re.compile(r"Child limit exceeded (?P<parent>[\w]+)\.(?P<child>\w+)")
_INVALID_CHILDREN = re.compile(
    r"Invalid children detected for <\w+ (?P<parent>\w+)[^>]*>: \[(?P<children>[^\]]*)\]"
)
_DATATYPE = re.compile(
    r"Datatype (?P<got>\w+) is not correct for (?P<parent>\w+)\.(?P<child>\w+) \(it must be (?P<want>\w+)\)"
)
_TABLE = re.compile(r"Value .* not in table (?P<table>\w+) in element (?P<parent>\w+)\.(?P<child>\w+)$")
_LENGTH = re.compile(r"Exceeded max length \((?P<max>-?\d+)\) of (?P<parent>\w+)\.(?P<child>\w+)")
_ELEMENT = re.compile(r"^(?P<seg>[A-Z][A-Z0-9]{2})_(?P<num>\d+)$")
_SEGMENT = re.compile(r"[A-Z][A-Z0-9]{2}")
_COMPONENT = re.compile(r"^(?P<dt>[A-Z][A-Z0-9]{1,2})_(?P<num>\d+)$")


def strict_validate(text: str) -> list[Finding]:
    """Validate ``text`` (one decoded HL7 v2 message) against hl7apy's HL7 structures."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import HL7apyException
    from hl7apy.parser import parse_message, parse_segment

    try:
        msg = Message.parse(text)
    except ParseError as exc:
        return [Finding(exc.code, exc.message, exc.location)]
    version = msg.version.strip()
    kept = [seg.raw for seg in msg if seg.name != "PRT"]
    prts = [seg.raw for seg in msg if seg.name == "PRT"]
    findings: list[Finding] = []
    try:
        tree = parse_message("\r".join(kept), validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=True)
    except HL7apyException as exc:
        # the exception text may quote values: report its class only
        return [
            Finding(
                _CODE,
                f"hl7apy cannot parse the message as HL7 v{version or '?'} ({type(exc).__name__})",
                "MSH",
            )
        ]
    findings.extend(_validate(tree, version))
    findings.extend(_dropped_segments(tree, kept))
    for k, raw in enumerate(prts, start=1):
        try:
            seg = parse_segment(raw, version=PRT_VERSION, validation_level=VALIDATION_LEVEL.TOLERANT)
        except HL7apyException as exc:
            findings.append(
                Finding(
                    _CODE,
                    f"PRT[{k}] cannot be parsed as a v{PRT_VERSION} PRT ({type(exc).__name__})",
                    f"PRT[{k}]",
                )
            )
            continue
        findings.extend(_relabel(f, f"PRT[{k}]") for f in _validate(seg, PRT_VERSION))
    return findings


def _validate(element: Any, version: str) -> list[Finding]:
    from hl7apy.exceptions import HL7apyException
    from hl7apy.validation import Validator

    with tempfile.TemporaryFile("w+", encoding="utf-8") as report:
        # hl7apy opens and closes the report itself: hand it a duplicate descriptor.
        # It raises the first error, which is also in the report.
        with contextlib.suppress(HL7apyException):
            Validator.validate(element, report_file=os.dup(report.fileno()))
        report.seek(0)
        lines = report.read().splitlines()
    findings: list[Finding] = []
    seen_warnings: Counter[tuple[str, str | None]] = Counter()
    warning_order: list[tuple[str, str | None]] = []
    for line in lines:
        kind, _, detail = line.partition(": ")
        if kind == "Error":
            findings.append(_error(detail, version))
        elif kind == "Warning":
            key = _warning(detail, version)
            if key not in seen_warnings:
                warning_order.append(key)
            seen_warnings[key] += 1
    for key in warning_order:
        message, location = key
        count = seen_warnings[key]
        findings.append(
            Finding(_CODE, message + (f" ({count} occurrences)" if count > 1 else ""), location, "warning")
        )
    return findings


def _error(detail: str, version: str) -> Finding:
    if m := _MISSING.search(detail):
        return Finding(
            _CODE,
            f"missing required {_describe(m['child'], version)} in {m['parent']}",
            _location(m["parent"], m["child"]),
        )
    if m := _TOO_MANY.search(detail):
        return Finding(
            _CODE,
            f"too many repetitions of {_describe(m['child'], version)} in {m['parent']}",
            _location(m["parent"], m["child"]),
        )
    if m := _INVALID_CHILDREN.search(detail):
        children = m["children"].replace("'", "")
        return Finding(_CODE, f"elements not allowed in {m['parent']}: {children}", m["parent"])
    if m := _DATATYPE.search(detail):
        return Finding(
            _CODE,
            f"{_describe(m['child'], version)} has datatype {m['got']}, expected {m['want']}",
            _location(m["parent"], m["child"]),
        )
    # Unknown / invalid element messages print the element (name only, no value).
    safe = re.sub(r"[^\w<>.,:()\[\] -]", "", detail)[:200]
    return Finding(_CODE, f"{safe}", None)


def _warning(detail: str, version: str) -> tuple[str, str | None]:
    if m := _TABLE.search(detail):
        table = m["table"].removeprefix("HL7")
        return (
            f"value of {_describe(m['child'], version)} is not in HL7 table {table}",
            _location(m["parent"], m["child"]),
        )
    if m := _LENGTH.search(detail):
        return (
            f"{_describe(m['child'], version)} exceeds its maximum length {m['max']}",
            _location(m["parent"], m["child"]),
        )
    return ("hl7apy warning", None)


def _describe(name: str, version: str) -> str:
    """``PID_3 (patient_identifier_list)``; segment and group names are returned as is."""
    from hl7apy import load_reference
    from hl7apy.exceptions import HL7apyException

    for classname in ("Field", "Component"):
        try:
            ref = load_reference(name, classname, version)
        except (HL7apyException, KeyError, ValueError):
            continue
        if ref and len(ref) > 3 and isinstance(ref[3], str):
            return f"{name} ({ref[3].lower()})"
    return name


def _location(parent: str, child: str) -> str:
    """HL7-style location: ``PID-3`` for a field, ``PID-3.5`` for a component of a field.

    Deeper elements (``CX_4.HD_3``) keep hl7apy's names: the report does not say
    which field they belong to.
    """
    if _SEGMENT.fullmatch(parent) and (m := _ELEMENT.match(child)):
        return f"{m['seg']}-{m['num']}"
    if (p := _ELEMENT.match(parent)) and (c := _COMPONENT.match(child)):
        return f"{p['seg']}-{p['num']}.{c['num']}"
    if _SEGMENT.fullmatch(child):
        return child
    return f"{parent}.{child}"


def _relabel(finding: Finding, label: str) -> Finding:
    """``PRT-8`` → ``PRT[2]-8`` for the k-th PRT validated on its own."""
    loc = finding.location
    if loc and loc.startswith("PRT"):
        loc = label + loc[3:]
    elif loc is None:
        loc = label
    return Finding(finding.code, f"{label}: {finding.message}", loc, finding.severity)


def _segment_names(element: Any) -> Counter[str]:
    names: Counter[str] = Counter()
    stack = [element]
    while stack:
        el = stack.pop()
        if el.classname == "Segment":
            names[el.name] += 1
        elif el.classname in ("Message", "Group"):
            stack.extend(el.children)
    return names


def _dropped_segments(tree: Any, raws: list[str]) -> list[Finding]:
    present = Counter(raw[:3] for raw in raws if not raw.startswith("Z"))
    kept = _segment_names(tree)
    out: list[Finding] = []
    for name, count in present.items():
        missing = count - kept.get(name, 0)
        if missing > 0:
            out.append(
                Finding(
                    _CODE,
                    f"{missing} {name} segment(s) not allowed at their position by the message structure",
                    name,
                )
            )
    return out
