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

* hl7apy knows the international tables only. The French profiles extend several of
  them, so a value they define is not a defect (``relais check --strict`` must not
  report false positives on the ANS samples): :data:`NATIONAL_VALUES` lists, per HL7
  table, what PAM-FR 2.11 and the volet add (PID-32 reliability codes of PAM-FR
  §6.6.15, INS / RPPS / FINESS identifier types, PRT-2 ``UC`` pre-adopted from v2.9,
  OBX-2 ``CWE``, the volet's coding-system names, the HD-3 ``M`` / ``N`` of the ANS
  PAM-FR samples, PAM-FR's Z trigger events). TXA-2 takes JDV_J07 codes instead of
  table 0270 (volet, TXA page). Any other value outside a table is reported *with the
  value* (a code, never free text: only table-bound elements are quoted), and a
  finding never says ``None``.

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

__all__ = ["strict_validate", "PRT_VERSION", "NATIONAL_VALUES"]

#: Values the French profiles add to HL7 tables (see the module docstring); "*" = any value.
NATIONAL_VALUES: dict[str, frozenset[str]] = {
    # PAM-FR 2.11 §6.6.15, table 0445 as specialised for France
    "0445": frozenset({"VIDE", "PROV", "VALI", "DOUB", "DESA", "DPOT", "DOUA", "COLP", "COLV", "FILI", "CACH",
                       "ANOM", "IDVER", "RECD", "IDRA", "USUR", "HOMD", "HOMA", "INVA", "FICT", "DOUT"}),
    # identifier types of the INS annex, PAM-FR and the volet's PRT (InteropSanté table 0203)
    "0203": frozenset({"INS", "INS-NIR", "INS-NIA", "INS-C", "RPPS", "ADELI", "IDNPS", "FINEG", "FINEJ",
                       "IDNST", "SIRET", "SIREN", "UF", "SVR", "EJ", "EG"}),
    "0206": frozenset({"UC"}),  # PRT-2 "unchanged", pre-adopted from v2.9 with PRT
    "0125": frozenset({"CWE"}),  # OBX-2 of the metadata OBX in MDM (v2.6 datatype)
    "0301": frozenset({"M", "N"}),  # HD-3 of the ANS PAM-FR samples (AUT-AFFECTATION&…&M, CHU-X&…&N)
    "0270": frozenset({"*"}),  # TXA-2 carries the JDV_J07 document type, not table 0270
    "0003": frozenset({"Z80", "Z81", "Z82", "Z83", "Z84", "Z85", "Z86", "Z87", "Z88", "Z89", "Z99"}),
    # PAM-FR national values of PV1-36 (mode de sortie), PV2-7, PV2-18
    "0112": frozenset({"*"}),
    "0130": frozenset({"*"}),
    "0214": frozenset({"*"}),
}
#: Coding systems the volet and the ANS terminologies name in CE/CWE-3 (table 0396 lacks them).
_NATIONAL_SYSTEMS = re.compile(
    r"(MetaDMPMSS|AckMetierZAM|expandedYes-NoIndicator|participation|DMP_ERROR_CODE|SMTPERRORCODE"
    r"|(TRE|JDV|ASS)_[A-Z0-9]+(-[\w-]+)?|HL7\d{4}|L|LN|99\w{1,3})"
)

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
_TABLE = re.compile(r"Value (?P<value>.*) not in table (?P<table>\w+) in element (?P<parent>\w+)\.(?P<child>\w+)$")
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
    found = _validate(tree, version)
    if msg.msh.value(9, 2).strip() in ("A24", "A37") and len(msg.all("PID")) == 2:
        # ADT_A24 is PID [PD1] [PV1] [DB1] PID [PD1] [PV1] [DB1] (HL7 v2.5 ch. 3 §3.3.24):
        # hl7apy's structure counts the second PID as a repetition of the first
        found = [f for f in found if not f.message.startswith("too many repetitions of PID ")]
    findings.extend(found)
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
            if key is None:
                continue  # a value the French profiles define
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
        got = m["got"] if m["got"] != "None" else "(none)"
        want = m["want"] if m["want"] != "None" else "(none)"
        return Finding(
            _CODE,
            f"{_describe(m['child'], version)} has datatype {got}, expected {want}",
            _location(m["parent"], m["child"]),
        )
    # Unknown / invalid element messages print the element (name only, no value).
    safe = re.sub(r"[^\w<>.,:()\[\] -]", "", detail)[:200].replace("None", "(none)")
    return Finding(_CODE, f"{safe}", "MSH")


def _warning(detail: str, version: str) -> tuple[str, str | None] | None:
    if m := _TABLE.search(detail):
        table = m["table"].removeprefix("HL7")
        value = m["value"]
        allowed = NATIONAL_VALUES.get(table, frozenset())
        if "*" in allowed or value in allowed or (table == "0396" and _NATIONAL_SYSTEMS.fullmatch(value)):
            return None
        what = f"{_describe(m['child'], version)} is not in HL7 table {table}"
        if not _may_quote(m["parent"]):
            return (f"value of {what}", _location(m["parent"], m["child"]))
        shown = value if len(value) <= 40 else value[:40] + "…"  # blanks kept: 'R01 ' is the defect
        return (f"value '{shown}' of {what}", _location(m["parent"], m["child"]))
    if m := _LENGTH.search(detail):
        return (
            f"{_describe(m['child'], version)} exceeds its maximum length {m['max']}",
            _location(m["parent"], m["child"]),
        )
    return ("hl7apy warning", "MSH")


#: Segments whose fields may hold patient traits: their values are never quoted, even a
#: "code" (a sender may put a name where a code belongs), nor are components whose
#: segment hl7apy does not tell (CX_4.HD_3 …).
_PATIENT_SEGMENTS = frozenset({"PID", "PD1", "NK1", "MRG", "PV1", "PV2", "GT1", "IN1", "ROL", "PRT"})


def _may_quote(parent: str) -> bool:
    """Quote the offending value only for coded elements of message-level segments (MSH, OBX, TXA …)."""
    seg = parent.split("_", 1)[0]
    if not _SEGMENT.fullmatch(seg) or seg in _PATIENT_SEGMENTS:
        return False
    return parent == seg or bool(_ELEMENT.match(parent))


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
