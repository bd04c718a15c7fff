"""Build HL7 v2 acknowledgements: the technical ACK and the business ZAM.

Pure functions: the message, the findings, ``now`` and the new control id come in,
a CR-separated string goes out (no trailing CR, no MLLP framing; encode it with
``gateway.core.charset.encode_for(<MSH-18 of the ACK>, text)``).

The ACK is written with the original message's encoding characters, so fields we
copy (MSH-3..6, MSH-11, MSH-12, MSH-17, MSH-18, MSH-21) go back byte for byte and
custom delimiters keep working. Every value we write ourselves goes through
``reader.escape``.

ERR layout follows HL7 v2.5+ (ERR-2 ERL location, ERR-3 table 0357, ERR-4 table
0516 severity, ERR-5 our stable finding code, ERR-8 user message). Messages in
v2.1-2.4 get the older ERR-1 (ELD) form instead, which is all they can read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.core.charset import HL7_CHARSETS, declared_charset
from gateway.core.hl7v2.reader import DEFAULT_ENCODING, Encoding, Message, escape
from gateway.model import Finding

__all__ = [
    "zam_msh_fields",
    "HL7_0357",
    "ZAM_PROFILE",
    "build_ack",
    "build_ack_unreadable",
    "build_zam",
    "erl",
    "hl7_error_code",
]

#: HL7 table 0357 (message error condition codes) as far as we use it.
HL7_0357: dict[str, str] = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}

#: MSH-21 of the ZAM (volet « Transmission d'un document CDA-R2 en HL7v2 » 2.1).
ZAM_PROFILE = ("2.1", "CISIS_CDA_HL7_V2")

_ACK_CODES = frozenset({"AA", "AE", "AR"})
_ENHANCED = {"AA": "CA", "AE": "CE", "AR": "CR"}
_SEVERITY = {"error": "E", "warning": "W"}  # HL7 table 0516

_LOCATION = re.compile(
    r"(?P<seg>[A-Z][A-Z0-9]{2})(?:\[(?P<seq>\d+)\])?"
    r"(?:-(?P<field>\d+)(?:\((?P<rep>\d+)\))?(?:\.(?P<comp>\d+)(?:\.(?P<sub>\d+))?)?)?"
)


@dataclass(frozen=True, slots=True)
class _Rule:
    """One line of the finding code → table 0357 mapping; it matches when any of its tests does.

    A code is read as its ``_``-separated words: ``words`` matches when the code has one of
    them, ``all_words`` when it has every one; ``prefixes`` and ``within`` test the whole
    code, ``codes`` names exact codes. ``unless`` excludes codes, and ``on_segment`` limits
    the rule to findings located on a whole segment (``PV1``, ``MRG[2]``).
    """

    hl7: str
    words: frozenset[str] = frozenset()
    all_words: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    within: tuple[str, ...] = ()
    codes: frozenset[str] = frozenset()
    unless: frozenset[str] = frozenset()
    on_segment: bool = False

    def matches(self, code: str, words: set[str], on_segment: bool) -> bool:
        if code in self.unless or (self.on_segment and not on_segment):
            return False
        return bool(
            code in self.codes
            or code.startswith(self.prefixes)
            or words & self.words
            or (self.all_words and self.all_words <= words)
            or any(part in code for part in self.within)
        )


#: Finding code → HL7 table 0357, first match wins; a code no rule matches gets 102.
#: The rules are in the order of ``hl7_error_code``'s docstring, which says why.
_RULES: tuple[_Rule, ...] = (
    _Rule("207", words=frozenset({"INTERNAL", "JOURNAL"}), prefixes=("FHIR_CONTEXT",)),
    _Rule("203", prefixes=("PROFILE_",), unless=frozenset({"PROFILE_MISSING"})),
    _Rule("100", words=frozenset({"MISSING", "REQUIRED"}), on_segment=True),
    _Rule("103", codes=frozenset({"CHARSET_UNSUPPORTED"})),
    _Rule(
        "102",
        prefixes=("CHARSET_", "PARSE_"),
        codes=frozenset({"MSH_ENCODING"}),
        words=frozenset({"DATATYPE", "FORMAT"}),
    ),
    _Rule("203", words=frozenset({"VERSION"})),
    _Rule("201", words=frozenset({"EVENT", "TRIGGER"})),
    _Rule("200", within=("MESSAGE_TYPE", "MSG_TYPE")),
    _Rule("202", words=frozenset({"PROCESSING"})),
    _Rule("205", words=frozenset({"DUPLICATE"})),
    _Rule("204", within=("UNKNOWN_KEY", "NOT_FOUND")),
    _Rule("100", codes=frozenset({"MSH_MISSING"}), words=frozenset({"SEGMENT", "ORDER", "SEQUENCE"})),
    _Rule("101", words=frozenset({"MISSING", "REQUIRED", "EMPTY"})),
    _Rule(
        "103",
        words=frozenset({"TABLE", "VALUESET", "INCONSISTENT"}),
        all_words=frozenset({"CODE", "UNKNOWN"}),
        within=("NOT_DMP",),
    ),
)

_BARE_SEGMENT = re.compile(r"[A-Z][A-Z0-9]{2}(\[\d+\])?")


def hl7_error_code(finding: Finding) -> tuple[str, str]:
    """Map a finding to an HL7 table 0357 ``(code, text)`` from its stable code.

    The code is split on ``_`` and read word by word against ``_RULES``, first match wins:

    * our own faults (``INTERNAL_*``, ``JOURNAL_*``, ``FHIR_CONTEXT_*``) → 207, and only
      they: 0357 calls 207 "application internal error";
    * a refused volet profile (``PROFILE_*`` other than ``PROFILE_MISSING``, MSH-21) → 203: MSH-21
      versions the volet the way MSH-12 versions HL7;
    * a ``MISSING`` / ``REQUIRED`` finding located on a whole segment (``PV1``,
      ``MRG``) → 100, since 0357 files absent segments under "segment sequence";
    * ``CHARSET_UNSUPPORTED`` → 103 (MSH-18 is not a value of table 0211);
      other ``CHARSET_*``, ``*_DATATYPE``, ``*_FORMAT``, ``PARSE_*``,
      ``MSH_ENCODING`` → 102 (the bytes or the syntax do not fit the type);
    * a ``VERSION`` word → 203; ``EVENT`` / ``TRIGGER`` → 201;
      ``MESSAGE_TYPE`` / ``MSG_TYPE`` → 200; ``PROCESSING`` → 202;
    * ``DUPLICATE`` → 205; ``UNKNOWN_KEY`` / ``NOT_FOUND`` (a referenced document
      or patient we do not know) → 204;
    * ``MSH_MISSING``, a ``SEGMENT`` or ``ORDER`` / ``SEQUENCE`` word → 100;
    * a ``MISSING`` / ``REQUIRED`` / ``EMPTY`` word → 101;
    * a ``TABLE`` / ``VALUESET`` / ``CODE`` + ``UNKNOWN`` word, a value outside the set the
      volet allows (``*_NOT_DMP``, ``*_INCONSISTENT``: ORC-1 / OBX-11 / trigger) → 103;
    * any other content rule (INS rules, CDA content, a field that contradicts another:
      ``*_MISMATCH``) → 102, the value in the field is not what the field must hold.
    """
    code = finding.code.upper()
    words = set(code.split("_"))
    on_segment = bool(finding.location and _BARE_SEGMENT.fullmatch(finding.location))
    hl7 = next((rule.hl7 for rule in _RULES if rule.matches(code, words, on_segment)), "102")
    return hl7, HL7_0357[hl7]


def erl(location: str | None, enc: Encoding = DEFAULT_ENCODING) -> str:
    """An ERL (error location) from ``PID-3.4``, ``PID-3(2).4``, ``OBX[2]-5`` or ``MSH-18``.

    ``[n]`` names the segment occurrence (1 when not given); the field repetition
    is 1 unless ``(n)`` says otherwise. Locations that are not HL7 v2 paths (CDA
    XPaths, free text) give ``""``: a wrong ERL would be worse than none.
    """
    if not location:
        return ""
    m = _LOCATION.fullmatch(location.strip())
    if not m:
        return ""
    parts = [m["seg"], m["seq"] or "1"]
    if m["field"]:
        parts.append(m["field"])
        if m["rep"] or m["comp"]:
            parts.append(m["rep"] or "1")
        if m["comp"]:
            parts.append(m["comp"])
            if m["sub"]:
                parts.append(m["sub"])
    return enc.component.join(parts)


def _ts(now: datetime) -> str:
    """HL7 DTM: seconds precision, with the UTC offset when ``now`` is aware."""
    return now.strftime("%Y%m%d%H%M%S%z")


def _version_tuple(version: str) -> tuple[int, ...]:
    nums: list[int] = []
    for part in version.split("."):
        # isdigit() accepts "²" and other Unicode digits that int() refuses
        if not (part.isascii() and part.isdigit()):
            break
        nums.append(int(part))
    return tuple(nums)


#: Longest text we echo into ERR-5 / ERR-8 / MSA-3 and longest field we copy from the
#: original MSH: findings quote what the sender wrote, and escaping can grow it, so a
#: 4 MB MSH-9 must not come back as a 24 MB AR.
MAX_ECHO = 200
_MAX_COPIED = 256


def _clip(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` cut to ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _copied(raw: str, fallback: str = "") -> str:
    """A field copied from the original MSH, unless it is too long to be an honest value."""
    return raw if len(raw) <= _MAX_COPIED else fallback


def _segment(enc: Encoding, name: str, fields: Sequence[str]) -> str:
    """``name|f1|f2…`` with trailing empty fields dropped."""
    values = list(fields)
    while values and not values[-1]:
        values.pop()
    return enc.field.join([name, *values])


def _msh(enc: Encoding, fields: dict[int, str]) -> str:
    """An MSH from ``{field number: raw value}`` (MSH-1/2 are the encoding itself)."""
    top = max(fields)
    values = [fields.get(n, "") for n in range(3, top + 1)]
    return _segment(enc, "MSH", [enc.msh2, *values])


def _err(finding: Finding, enc: Encoding, version: tuple[int, ...]) -> str:
    c = enc.component
    code, text = hl7_error_code(finding)
    if version and version < (2, 5):
        # ERR-1 ELD: segment ^ sequence ^ field ^ code&text&HL70357 (CE in a component)
        s = enc.subcomponent
        where = erl(finding.location, enc).split(c) if finding.location else []
        eld = [
            where[0] if where else "",
            where[1] if len(where) > 1 else "",
            where[2] if len(where) > 2 else "",
        ]
        # ELD.4 is a CE: the 0357 code as identifier, our stable code and text as the
        # alternate identifier (coding system L, local) so a v2.3 sender still sees why.
        eld.append(
            s.join([code, escape(text, enc), "HL70357", escape(finding.code, enc), escape(finding.message, enc), "L"])
        )
        return _segment(enc, "ERR", [c.join(eld)])
    return _segment(
        enc,
        "ERR",
        [
            "",  # ERR-1 withdrawn since 2.5
            erl(finding.location, enc),
            c.join([code, escape(text, enc), "HL70357"]),
            _SEVERITY.get(finding.severity, "E"),
            c.join([escape(_clip(finding.code, 80), enc), escape(_clip(finding.message), enc), "L"]),
            "",
            "",
            escape(_clip(finding.message), enc),
        ],
    )


def build_ack(
    msg: Message | None,
    code: str,
    *,
    errors: Sequence[Finding] = (),
    now: datetime,
    control_id: str,
    app: str = "RELAIS",
    facility: str = "RELAIS",
    text: str | None = None,
    enhanced: bool | None = None,
    charset: str | None = None,
    ack_types: tuple[str, str] | None = None,
) -> str:
    """Build the technical ACK for ``msg`` with MSA-1 ``code`` (``AA``, ``AE`` or ``AR``).

    ``enhanced=True`` writes the enhanced-mode accept acknowledgement (AA/AE/AR become
    CA/CE/CR); ``False`` writes AA/AE/AR as given (original mode, or the separate
    application acknowledgement of enhanced mode); ``None`` decides from MSH-15.
    ``charset`` replaces the copied MSH-18 (when the original's is unusable, the ACK
    must say which charset it is really written in); ``ack_types`` writes MSH-15/16
    of the ACK itself (an application acknowledgement asks for an accept ACK).
    One ERR is written per finding given; findings should come with AE/AR, or as
    warnings with AA. ``text`` goes to MSA-3: keep it short and free of patient
    data. With ``msg=None`` the result is the same as :func:`build_ack_unreadable`
    without a charset hint.
    """
    if code not in _ACK_CODES:
        raise ValueError(f"ACK code must be one of {sorted(_ACK_CODES)}, not {code!r}")
    if msg is None:
        return _unreadable(
            None, code, errors, now=now, control_id=control_id, app=app, facility=facility, text=text
        )
    enc = msg.encoding
    msh = msg.msh
    c = enc.component
    if enhanced if enhanced is not None else bool(msh.field(15).raw.strip()):
        code = _ENHANCED[code]
    trigger = _copied(msh.field(9).comp(2).raw)
    version_raw = _copied(msh.field(12).raw, "2.5") or "2.5"
    fields = {
        3: _copied(msh.field(5).raw) or escape(app, enc),
        4: _copied(msh.field(6).raw) or escape(facility, enc),
        5: _copied(msh.field(3).raw),
        6: _copied(msh.field(4).raw),
        7: _ts(now),
        9: c.join(["ACK", trigger, "ACK"]) if trigger else "ACK",
        10: escape(control_id, enc),
        11: _copied(msh.field(11).raw),
        12: version_raw,
        15: ack_types[0] if ack_types else "",
        16: ack_types[1] if ack_types else "",
        17: _copied(msh.field(17).raw),
        18: _copied(msh.field(18).raw) if charset is None else escape(charset, enc),
        21: _copied(msh.field(21).raw),
    }
    segments = [_msh(enc, fields), _msa(enc, code, msh.field(10).raw, text)]
    version = _version_tuple(msh.field(12).comp(1).text)
    segments += [_err(f, enc, version) for f in errors]
    return "\r".join(segments)


def _msa(enc: Encoding, code: str, control_raw: str, text: str | None) -> str:
    return _segment(enc, "MSA", [code, control_raw, escape(_clip(text), enc) if text else ""])


def _unreadable(
    charset: str | None,
    code: str,
    errors: Sequence[Finding],
    *,
    now: datetime,
    control_id: str,
    app: str,
    facility: str,
    text: str | None,
) -> str:
    enc = DEFAULT_ENCODING
    fields = {
        3: escape(app, enc),
        4: escape(facility, enc),
        7: _ts(now),
        9: "ACK",
        10: escape(control_id, enc),
        11: "P",  # required; we cannot know the sender's processing id
        12: "2.5",
        18: charset or "",
    }
    segments = [_msh(enc, fields), _msa(enc, code, "", text)]
    segments += [_err(f, enc, (2, 5)) for f in errors]
    return "\r".join(segments)


def build_ack_unreadable(
    raw: bytes,
    now: datetime,
    control_id: str,
    reason: Finding,
    *,
    app: str = "RELAIS",
    facility: str = "RELAIS",
) -> str:
    """AR for bytes whose MSH cannot be parsed: empty MSA-2, version 2.5, one ERR.

    Nothing is guessed from the broken MSH (a wrong MSA-2 would acknowledge some
    other message) except MSH-18: when ``raw`` declares a supported charset the
    ACK declares it too, so the sender decodes the reply as it expects.
    """
    declared = declared_charset(raw)
    charset = declared if " ".join(declared.upper().split()) in HL7_CHARSETS else None
    return _unreadable(
        charset, "AR", (reason,), now=now, control_id=control_id, app=app, facility=facility, text=None
    )


def zam_msh_fields(
    original: Message, trigger: str, *, now: datetime, control_id: str, app: str, facility: str
) -> dict[int, str]:
    """MSH-3 … MSH-21 of a business acknowledgement ``ZAM^<trigger>^ZAM_Z01`` answering ``original``.

    Sender and receiver swap (MSH-5/6 of the original become MSH-3/4), v2.6, the volet's
    ZAM profile in MSH-21; the charset and language follow the original. Shared by Z01
    (DMP receipt) and the MSSanté Z02/Z03 (``gateway.core.mss.zam``).
    """
    enc = original.encoding
    msh = original.msh
    return {
        3: msh.field(5).raw or escape(app, enc),
        4: msh.field(6).raw or escape(facility, enc),
        5: msh.field(3).raw,
        6: msh.field(4).raw,
        7: _ts(now),
        9: enc.component.join(["ZAM", trigger, "ZAM_Z01"]),
        10: escape(control_id, enc),
        11: msh.field(11).raw or "P",
        12: "2.6",
        17: msh.field(17).raw or "FRA",
        18: msh.field(18).raw,
        21: enc.component.join(ZAM_PROFILE),
    }


def build_zam(
    original: Message,
    *,
    positive: bool,
    now: datetime,
    control_id: str,
    error: Finding | None = None,
    dmp_error: tuple[str, str] | None = None,
    app: str = "RELAIS",
    facility: str = "RELAIS",
) -> str:
    """Build the DMP business acknowledgement ``ZAM^Z01^ZAM_Z01`` for ``original``.

    Layout as in the volet's sample (MSH, EVN, OBX, [ERR]): OBX-3
    ``ACK_RECEPTION_DMP^Accusé de réception DMP^AckMetierZAM``, OBX-4 = the
    original MSH-10, OBX-5 ``Y``/``N^^expandedYes-NoIndicator``. A negative ZAM
    carries one ERR: ERR-3 ``207``, ERR-4 from ``error`` (E by default), ERR-5
    ``code^label^DMP_ERROR_CODE`` from ``dmp_error`` (else the finding's own code,
    coding system ``L``), ERR-8 the finding's message.
    """
    enc = original.encoding
    msh = original.msh
    c = enc.component
    fields = zam_msh_fields(original, "Z01", now=now, control_id=control_id, app=app, facility=facility)
    obx = _segment(
        enc,
        "OBX",
        [
            "1",
            "CWE",
            c.join(["ACK_RECEPTION_DMP", escape("Accusé de réception DMP", enc), "AckMetierZAM"]),
            msh.field(10).raw,
            c.join(["Y" if positive else "N", "", "expandedYes-NoIndicator"]),
            "",
            "",
            "",
            "",
            "",
            "F",
        ],
    )
    segments = [_msh(enc, fields), _segment(enc, "EVN", ["", _ts(now)]), obx]
    if not positive:
        if dmp_error is not None:
            err5 = c.join([escape(dmp_error[0], enc), escape(dmp_error[1], enc), "DMP_ERROR_CODE"])
        elif error is not None:
            err5 = c.join([escape(error.code, enc), escape(error.message, enc), "L"])
        else:
            err5 = ""
        segments.append(
            _segment(
                enc,
                "ERR",
                [
                    "",
                    "",
                    c.join(["207", escape(HL7_0357["207"], enc), "HL70357"]),
                    _SEVERITY.get(error.severity, "E") if error else "E",
                    err5,
                    "",
                    "",
                    escape(error.message, enc) if error else "",
                ],
            )
        )
    return "\r".join(segments)
