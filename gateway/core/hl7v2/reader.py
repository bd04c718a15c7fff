"""A small lazy HL7 v2 reader for the hot path.

Segments are split once; fields, repetitions, components and subcomponents are
split only when asked for, and escape sequences are decoded on access. The
encoding characters come from MSH-1/MSH-2, so custom separators work.

Numbering follows HL7: ``msg["PID"][3]`` is PID-3, and for MSH, ``MSH-1`` is the
field separator itself and ``MSH-2`` the encoding characters, so ``MSH-9`` is the
message type as everybody writes it. Everything is 1-based; asking for something
that is not there returns an empty element rather than raising, because HL7 v2
treats absent and empty alike. ``'""'`` (the explicit null) is kept as ``'""'`` in
``raw`` and reported by ``is_null``; its ``text`` is the empty string.

Why not hl7apy here: it needs tens of milliseconds per message and, with
``find_groups=True``, drops Z segments. hl7apy is used only for optional strict
structural validation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache

from gateway.errors import ParseError

__all__ = ["Encoding", "Message", "Segment", "Field", "Repetition", "Component", "unescape", "escape"]

_SEGMENT_SPLIT = re.compile(r"\r\n|\r|\n")
_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")


@dataclass(frozen=True, slots=True)
class Encoding:
    """The five delimiters of one message (MSH-1 and MSH-2)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str | None = None  # v2.7+ fifth encoding character, kept for completeness
    codec: str = "latin-1"  # charset of \\Xhh\\ escapes: the one MSH-18 names (ch. 2 §2.7.5)

    @property
    def msh2(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent + (self.truncation or "")


DEFAULT_ENCODING = Encoding()


def _formatting(seq: str) -> str | None:
    """The text a formatting command of HL7 v2.5 ch. 2 §2.7.6 (FT data type) stands for.

    ``\\.br\\`` begins a new line; ``\\.sp n\\`` ends the line and skips n vertical
    spaces, i.e. n blank lines (n = 1 when absent); ``\\.in n\\`` / ``\\.ti n\\`` indent the line by n spaces
    (a negative n only moves the margin back, which plain text cannot show);
    ``\\.sk n\\`` skips n spaces to the right; ``\\.ce\\`` ends the line;
    ``\\.fi\\`` / ``\\.nf\\`` switch word wrap, which plain text has no use for.
    ``None`` when ``seq`` is not a formatting command.
    """
    if not seq.startswith("."):
        return None
    name, _, arg = seq[1:].partition(" ")
    arg = arg.strip()
    try:
        n = int(arg) if arg else None
    except ValueError:
        return None
    if name == "br" and n is None:
        return "\n"
    if name == "sp":
        return "\n" * (1 + (n if n is not None and n > 0 else 1))
    if name in ("in", "ti", "sk"):
        return " " * n if n is not None and n > 0 else ""
    if name == "ce" and n is None:
        return "\n"
    if name in ("fi", "nf") and n is None:
        return ""
    return None


def unescape(text: str, enc: Encoding = DEFAULT_ENCODING) -> str:
    """Decode HL7 escape sequences (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\``, formatting commands).

    ``\\Xhh…\\`` are bytes in the message's character set (HL7 v2.5 ch. 2 §2.7.5):
    ``enc.codec`` is the Python codec MSH-18 named (``Message.parse(…, codec=…)``).
    Formatting commands (``\\.br\\``, ``\\.sp n\\``, ``\\.in n\\``, ``\\.ti n\\`` …)
    become the line breaks and spaces they stand for, highlighting (``\\H\\`` /
    ``\\N\\``) is dropped; anything else is kept verbatim so no data is lost.

    One regular-expression pass (not a Python loop per character), and mid-sized
    results are cached: the same field is read again and again (PID-3 by the PID,
    identity and FHIR steps), and a field full of backslashes must not cost its
    length in Python steps at every read.
    """
    esc = enc.escape
    if not esc or esc not in text:
        return text
    if len(text) <= _CACHED_MAX:
        return _unescape_cached(text, enc)
    return _unescape(text, enc)


_CACHED_MAX = 65536


@lru_cache(maxsize=1024)
def _unescape_cached(text: str, enc: Encoding) -> str:
    return _unescape(text, enc)


@lru_cache(maxsize=64)
def _escape_pattern(esc: str) -> re.Pattern[str]:
    e = re.escape(esc)
    return re.compile(f"{e}([^{e}]*){e}")


def _unescape(text: str, enc: Encoding) -> str:
    simple = {"F": enc.field, "S": enc.component, "T": enc.subcomponent, "R": enc.repetition,
              "E": enc.escape, "H": "", "N": ""}  # H/N: highlight on/off, formatting only

    def one(m: re.Match[str]) -> str:
        seq = m.group(1)
        found = simple.get(seq)
        if found is not None:
            return found
        if seq.startswith("X") and len(seq) > 1 and len(seq) % 2 == 1:
            try:
                return bytes.fromhex(seq[1:]).decode(enc.codec)
            except (ValueError, LookupError):  # UnicodeDecodeError is a ValueError
                return m.group(0)
        formatted = _formatting(seq)
        return m.group(0) if formatted is None else formatted

    # a lone escape character at the end never matches, so it is kept verbatim
    return _escape_pattern(enc.escape).sub(one, text)


def escape(text: str, enc: Encoding = DEFAULT_ENCODING) -> str:
    """Escape delimiters so ``text`` can be written inside one HL7 v2 element."""
    if enc.escape in text:
        text = text.replace(enc.escape, f"{enc.escape}E{enc.escape}")
    for ch, code in (
        (enc.field, "F"),
        (enc.component, "S"),
        (enc.subcomponent, "T"),
        (enc.repetition, "R"),
    ):
        if ch in text:
            text = text.replace(ch, f"{enc.escape}{code}{enc.escape}")
    return text.replace("\r", f"{enc.escape}X0D{enc.escape}").replace("\n", f"{enc.escape}.br{enc.escape}")


class _Element:
    """Shared behaviour of fields, repetitions and components."""

    __slots__ = ("raw", "_enc")

    def __init__(self, raw: str, enc: Encoding) -> None:
        self.raw = raw
        self._enc = enc

    @property
    def is_null(self) -> bool:
        """True for the explicit HL7 null ``""`` (delete the value at the receiver)."""
        return self.raw == '""'

    @property
    def text(self) -> str:
        """The decoded value (escapes resolved); ``""`` null reads as empty."""
        if self.raw == '""':
            return ""
        return unescape(self.raw, self._enc)

    def __bool__(self) -> bool:
        return bool(self.raw) and self.raw != '""'

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.raw!r})"


class Component(_Element):
    """One component; its subcomponents are split on demand."""

    __slots__ = ()

    def sub(self, i: int = 1) -> str:
        """Decoded subcomponent ``i`` (1-based); empty when absent."""
        parts = self.raw.split(self._enc.subcomponent)
        if 1 <= i <= len(parts):
            raw = parts[i - 1]
            return "" if raw == '""' else unescape(raw, self._enc)
        return ""

    @property
    def subs(self) -> list[str]:
        return [unescape(p, self._enc) for p in self.raw.split(self._enc.subcomponent)]


class Repetition(_Element):
    """One repetition of a field; its components are split on demand."""

    __slots__ = ()

    def comp(self, i: int = 1) -> Component:
        parts = self.raw.split(self._enc.component)
        if 1 <= i <= len(parts):
            return Component(parts[i - 1], self._enc)
        return Component("", self._enc)

    def value(self, comp: int = 1, sub: int = 1) -> str:
        return self.comp(comp).sub(sub)

    @property
    def comps(self) -> list[Component]:
        return [Component(p, self._enc) for p in self.raw.split(self._enc.component)]


class Field(_Element):
    """One field; repetitions split on demand."""

    __slots__ = ()

    def rep(self, i: int = 1) -> Repetition:
        parts = self.raw.split(self._enc.repetition)
        if 1 <= i <= len(parts):
            return Repetition(parts[i - 1], self._enc)
        return Repetition("", self._enc)

    @property
    def reps(self) -> list[Repetition]:
        if not self.raw:
            return []
        return [Repetition(p, self._enc) for p in self.raw.split(self._enc.repetition)]

    def comp(self, i: int = 1) -> Component:
        """Component ``i`` of the first repetition (the common case)."""
        return self.rep(1).comp(i)

    def value(self, comp: int = 1, sub: int = 1, rep: int = 1) -> str:
        return self.rep(rep).comp(comp).sub(sub)


class Segment:
    """One segment. ``seg[n]`` is field n with HL7 numbering (MSH-aware)."""

    __slots__ = ("name", "raw", "index", "_enc", "_fields")

    def __init__(self, raw: str, enc: Encoding, index: int) -> None:
        self.raw = raw
        self._enc = enc
        self.index = index  # position in the message, 1-based, for error locations
        # The id is everything before the first field separator, not the first three
        # characters: "PIDX|…" must never be read as a PID (HL7 v2.5 ch. 2 §2.5.2: a
        # segment id is exactly three characters).
        cut = raw.find(enc.field) if enc.field else -1
        self.name = raw if cut == -1 else raw[:cut]
        self._fields: list[str] | None = None

    def _split(self) -> list[str]:
        if self._fields is None:
            parts = self.raw.split(self._enc.field)
            if self.name == "MSH":
                # MSH-1 is the separator itself and MSH-2 the encoding characters;
                # re-number so that parts[n] is MSH-n.
                parts = [parts[0], self._enc.field, *parts[1:]]
            self._fields = parts
        return self._fields

    def __getitem__(self, n: int) -> Field:
        return self.field(n)

    def field(self, n: int) -> Field:
        parts = self._split()
        if 1 <= n < len(parts):
            raw = parts[n]
            if self.name == "MSH" and n in (1, 2):
                # never unescape the delimiters themselves
                return Field(raw, Encoding(escape=""))
            return Field(raw, self._enc)
        return Field("", self._enc)

    def value(self, n: int, comp: int = 1, sub: int = 1, rep: int = 1) -> str:
        return self.field(n).value(comp, sub, rep)

    def __len__(self) -> int:
        """Number of fields present (the highest field number)."""
        return len(self._split()) - 1

    def __repr__(self) -> str:
        return f"Segment({self.name}#{self.index})"


class Message:
    """A parsed HL7 v2 message: a list of segments plus its encoding characters."""

    __slots__ = ("segments", "encoding", "__dict__")

    def __init__(self, segments: list[Segment], encoding: Encoding) -> None:
        self.segments = segments
        self.encoding = encoding

    @classmethod
    def parse(cls, text: str, codec: str = "latin-1") -> Message:
        """Split ``text`` (already decoded) into segments.

        Accepts CR, LF and CRLF segment terminators and ignores blank lines and
        trailing whitespace-only lines. Raises :class:`ParseError` when there is
        no MSH segment first or the encoding characters are unusable. ``codec`` is
        the Python codec of the charset the text was decoded from: ``\\Xhh\\``
        escapes are bytes in that charset.
        """
        text = text.lstrip("\ufeff")
        lines = [line for line in _SEGMENT_SPLIT.split(text) if line.strip()]
        if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 8:
            raise ParseError("message does not start with an MSH segment", code="MSH_MISSING", location="MSH")
        msh = lines[0]
        field_sep = msh[3]
        if field_sep.isalnum() or field_sep in " \t":
            raise ParseError("unusable field separator in MSH-1", code="MSH_ENCODING", location="MSH-1")
        end = msh.find(field_sep, 4)
        enc_chars = msh[4:end] if end != -1 else msh[4:]
        if (
            len(enc_chars) < 4
            or len(enc_chars) > 5
            or len(set(enc_chars + field_sep)) != len(enc_chars) + 1
            or any(ch.isalnum() or ch.isspace() for ch in enc_chars)
        ):
            raise ParseError(
                "MSH-2 must hold four distinct encoding characters", code="MSH_ENCODING", location="MSH-2"
            )
        enc = Encoding(
            field=field_sep,
            component=enc_chars[0],
            repetition=enc_chars[1],
            escape=enc_chars[2],
            subcomponent=enc_chars[3],
            truncation=enc_chars[4] if len(enc_chars) > 4 else None,
            codec=codec,
        )
        segments = [Segment(line, enc, i) for i, line in enumerate(lines, start=1)]
        return cls(segments, enc)

    # -- access ---------------------------------------------------------------
    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    def __getitem__(self, name: str) -> Segment:
        seg = self.segment(name)
        if seg is None:
            return Segment(name, self.encoding, 0)  # empty: every field reads as ""
        return seg

    def segment(self, name: str) -> Segment | None:
        for seg in self.segments:
            if seg.name == name:
                return seg
        return None

    def all(self, name: str) -> list[Segment]:
        return [seg for seg in self.segments if seg.name == name]

    def get(self, path: str) -> str:
        """Decoded value at a terser-like path: ``PID-3``, ``PID-3.4.2``, ``PID-3(2).1``.

        The first segment with that name is used; ``(n)`` picks a repetition.
        """
        m = _PATH.fullmatch(path)
        if not m:
            raise ValueError(f"bad HL7 path {path!r}")
        seg = self.segment(m["seg"])
        if seg is None:
            return ""
        rep = int(m["rep"] or 1)
        comp = int(m["comp"] or 1)
        sub = int(m["sub"] or 1)
        return seg.field(int(m["field"])).value(comp, sub, rep)

    # -- the MSH summary everybody needs ----------------------------------------
    @cached_property
    def control_id(self) -> str:
        return self.msh.value(10)

    @cached_property
    def message_type(self) -> str:
        """``MDM^T02`` style: MSH-9.1 ^ MSH-9.2 (the structure is not needed here)."""
        f = self.msh.field(9)
        code, trigger = f.value(1), f.value(2)
        return f"{code}^{trigger}" if trigger else code

    @cached_property
    def version(self) -> str:
        return self.msh.value(12)

    @property
    def segment_names(self) -> list[str]:
        return [s.name for s in self.segments]

    def bad_segment_names(self) -> list[Segment]:
        """Segments whose name is not three upper-case letters/digits."""
        return [s for s in self.segments if not _SEGMENT_NAME.fullmatch(s.name)]


_PATH = re.compile(r"(?P<seg>[A-Z][A-Z0-9]{2})-(?P<field>\d+)(?:\((?P<rep>\d+)\))?(?:\.(?P<comp>\d+))?(?:\.(?P<sub>\d+))?")
