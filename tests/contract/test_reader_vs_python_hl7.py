"""Our HL7 v2 reader against python-hl7 (a parser we did not write), message by message.

Both read the same decoded text (charset from MSH-18, segments joined with CR) of every
fixtures/hl7v2/*.hl7 and of every ANS sample message of ../shared/corpus (that part skips
when the corpus is absent). Compared: segment names, field counts, repetitions,
components (raw), subcomponents (raw count, decoded value).

A disagreement must be one of ``ACCEPTED`` below, each with its reason; anything else
fails. Escape-related differences are explained only when the values agree once the
escape sequences of the accepted kinds are removed from the raw value, so a wrongly
decoded ``\\F\\`` or a shifted component can never hide behind them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hl7
import pytest

from gateway.core.charset import decode_message
from gateway.core.hl7v2.reader import Message, unescape
from gateway.errors import DecodeError, ParseError
from tests.support import CORPUS, FIXTURES

# python-hl7 0.4.5 compared with our reader: what differs on purpose, and why.
ACCEPTED: dict[str, str] = {
    "refused-msh2": "unusable encoding characters in MSH-2: we refuse the message (MSH_ENCODING, "
    "answered AR), python-hl7 reads on with whatever delimiters it finds",
    "msh-delimiters": "MSH-1/MSH-2 are the delimiters themselves: python-hl7 keeps MSH-2 whole, "
    "our Field would split it on ^ and ~, so only their raw text is compared",
    "empty-field": "an empty field has one empty repetition in python-hl7 and none in Field.reps; "
    "both read it as empty",
    "null": 'the explicit null "" reads as empty through our sub(), python-hl7 returns the two quotes',
    "highlight": r"\H\ and \N\ (highlighting) become '_' in python-hl7; we drop them (plain text)",
    "formatting": r"\.br\, \.sp n\, \.in n\ … : python-hl7 writes CR and 4 spaces per indent, "
    "we write LF and the spaces HL7 ch. 2 §2.7.6 asks for",
    "hex": r"\Xhh\ : python-hl7 maps each byte to one code point (Latin-1); we decode the bytes "
    "in the charset MSH-18 names",
    "charset-switch": r"\Cxxyy\ and \Mxxyyzz\ : python-hl7 drops them, we keep them verbatim",
    "unknown-escape": r"an unknown or empty escape (\Z99\, \\) : python-hl7 drops it, we keep it verbatim "
    "so no data is lost",
    "unterminated-escape": "a lone escape character: python-hl7 drops everything after it, we keep "
    "the text verbatim",
}

_KIND_OF_LETTER = {"H": "highlight", "N": "highlight", "X": "hex", "C": "charset-switch", "M": "charset-switch"}
_DELIMITER_ESCAPES = frozenset("FSTRE")  # never an accepted difference: both must decode them alike

SAMPLES = CORPUS / "hl7v2" / "ansforge" / "hl7V2-exemples"  # whole messages (ig-spec-examples are fragments)
OURS = sorted((FIXTURES / "hl7v2").glob("*.hl7"))
THEIRS = sorted(p for p in SAMPLES.rglob("*") if p.suffix in (".hl7", ".er7")) if SAMPLES.is_dir() else []


@dataclass(frozen=True)
class Difference:
    where: str
    ours: object
    theirs: object
    kinds: frozenset[str]  # the accepted kinds that explain it; empty: unexplained


def decoded(raw: bytes) -> tuple[str, str]:
    """The message text both parsers read, and the codec of its charset."""
    try:
        found = decode_message(raw)
        text, codec = found.text, found.charset
    except DecodeError:  # e.g. the fixture with bytes invalid for its MSH-18: latin-1 reads any bytes
        text, codec = raw.decode("latin-1"), "latin-1"
    lines = [line for line in re.split(r"\r\n|\r|\n", text) if line.strip()]
    return "\r".join(lines), codec


def escape_kinds(raw: str, esc: str) -> tuple[set[str], str]:
    """The accepted kinds of the escape sequences in ``raw``, and ``raw`` without them."""
    kinds: set[str] = set()
    out: list[str] = []
    pos = 0
    pattern = re.compile(f"{re.escape(esc)}([^{re.escape(esc)}]*){re.escape(esc)}")
    for m in pattern.finditer(raw):
        seq = m.group(1)
        if seq in _DELIMITER_ESCAPES:
            continue  # left in place: both sides must decode it
        kind = "formatting" if seq.startswith(".") else _KIND_OF_LETTER.get(seq[:1], "unknown-escape")
        kinds.add(kind)
        out.append(raw[pos : m.start()])
        pos = m.end()
    rest = raw[pos:]
    if esc in rest and pattern.search(rest) is None:
        # an escape character with no closing one
        kinds.add("unterminated-escape")
        rest = rest[: rest.index(esc)]
    out.append(rest)
    return kinds, "".join(out)


def explain_value(raw: str, ours: str, theirs: str, msg: Message, hmsg: hl7.Message) -> frozenset[str]:
    """Which accepted kinds explain ``ours != theirs`` for the subcomponent ``raw`` (empty: none)."""
    if raw == '""' and ours == "" and theirs == '""':
        return frozenset({"null"})
    kinds, neutral = escape_kinds(raw, msg.encoding.escape)
    if kinds and unescape(neutral, msg.encoding) == hmsg.unescape(neutral):
        return frozenset(kinds)
    return frozenset()


def their_reps(field: hl7.Field) -> list[list[list[str]]]:
    """python-hl7's field as repetitions → components → raw subcomponents (it collapses single leaves)."""
    reps = []
    for rep in field:
        if isinstance(rep, str):
            reps.append([[rep]])
        else:
            reps.append([[comp] if isinstance(comp, str) else [str(sub) for sub in comp] for comp in rep])
    return reps


def differences(text: str, codec: str, *, their_text: str | None = None) -> Iterator[Difference]:
    """Every disagreement between the two parsers on ``text`` (python-hl7 reads ``their_text``
    instead when given: that is how the tests below see the comparison fail)."""
    try:
        msg = Message.parse(text, codec=codec)
    except ParseError as exc:
        if exc.code != "MSH_ENCODING":
            raise
        yield Difference("MSH-2", exc.code, "read", frozenset({"refused-msh2"}))
        return
    hmsg = hl7.parse(text if their_text is None else their_text)
    names, their_names = msg.segment_names, [str(s[0]) for s in hmsg]
    if names != their_names:
        yield Difference("segments", names, their_names, frozenset())
        return
    sub_sep = msg.encoding.subcomponent
    for seg, hseg in zip(msg.segments, hmsg, strict=True):
        where = f"{seg.name}[{seg.index}]"
        if len(seg) != len(hseg) - 1:
            yield Difference(f"{where} field count", len(seg), len(hseg) - 1, frozenset())
            continue
        for n in range(1, len(seg) + 1):
            field, hfield = seg.field(n), hseg[n]
            at = f"{where}-{n}"
            if seg.name == "MSH" and n in (1, 2):
                if field.raw != str(hfield):
                    yield Difference(at, field.raw, str(hfield), frozenset())
                continue  # "msh-delimiters": raw text only
            theirs = their_reps(hfield)
            reps = field.reps or [field.rep(1)]  # "empty-field"
            if len(reps) != len(theirs):
                yield Difference(f"{at} repetitions", len(reps), len(theirs), frozenset())
                continue
            for r, (rep, hrep) in enumerate(zip(reps, theirs, strict=True), start=1):
                comps = rep.comps
                if [c.raw for c in comps] != [sub_sep.join(h) for h in hrep]:
                    yield Difference(f"{at}({r}) components", [c.raw for c in comps], hrep, frozenset())
                    continue
                for c, (comp, hcomp) in enumerate(zip(comps, hrep, strict=True), start=1):
                    raws = comp.raw.split(sub_sep)
                    if len(comp.subs) != len(hcomp):
                        yield Difference(f"{at}({r}).{c} subcomponents", len(comp.subs), len(hcomp), frozenset())
                        continue
                    for s, (raw, hraw) in enumerate(zip(raws, hcomp, strict=True), start=1):
                        ours, mine = comp.sub(s), hmsg.unescape(hraw)
                        if ours != mine:
                            yield Difference(f"{at}({r}).{c}.{s}", ours, mine,
                                             explain_value(raw, ours, mine, msg, hmsg))


def unexplained(raw: bytes) -> list[Difference]:
    return [d for d in differences(*decoded(raw)) if not d.kinds]


def _id(path: Path) -> str:
    return path.name if path.parent == FIXTURES / "hl7v2" else str(path.relative_to(SAMPLES))


@pytest.mark.parametrize("path", OURS, ids=_id)
def test_fixture_reads_alike(path: Path) -> None:
    assert unexplained(path.read_bytes()) == []


@pytest.mark.corpus
@pytest.mark.parametrize(
    "path", THEIRS or [pytest.param(None, marks=pytest.mark.skip(reason="../shared/corpus is absent"))],
    ids=lambda p: _id(p) if p else "corpus",
)
def test_corpus_sample_reads_alike(path: Path) -> None:
    assert unexplained(path.read_bytes()) == []


MSH = "MSH|^~\\&|APP|FAC|RCV|RFAC|20240101120000||ORU^R01^ORU_R01|CTRL1|P|2.5|||||FRA|UNICODE UTF-8"


@pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")  # python-hl7's logger
@pytest.mark.parametrize(
    ("value", "kinds"),
    [
        ('""', {"null"}),
        ("\\H\\bold\\N\\", {"highlight"}),
        ("line\\.br\\next\\.sp 2\\end\\.in 2\\x", {"formatting"}),
        ("caf\\XC3A9\\", {"hex"}),
        ("a\\C2842\\b", {"charset-switch"}),
        ("keep \\Z99\\ as is", {"unknown-escape"}),
        ("lone \\ escape", {"unterminated-escape"}),
        ("a\\F\\b \\H\\c\\N\\", {"highlight"}),
    ],
)
def test_each_accepted_difference_is_real_and_explained(value: str, kinds: set[str]) -> None:
    """The list holds for python-hl7 0.4.5: each kind does differ, and is recognised as such."""
    found = list(differences(f"{MSH}\rOBX|1|ST|X||{value}", "utf-8"))
    assert [d.where for d in found] == ["OBX[2]-5(1).1.1"]
    assert found[0].kinds == kinds and kinds <= ACCEPTED.keys()


@pytest.mark.parametrize(
    "ours",
    [
        "PID|1||A^B||x\\F\\y",  # component value changed
        "PID|1||A^C^D||x\\F\\y",  # one component more
        "PID|1||A^C~D||x\\F\\y",  # one repetition more
        "PID|1||A&B^C||x\\F\\y",  # one subcomponent more
        "PID|1||A^C|||x\\F\\y",  # field shifted
        "PID|1||A^C||x\\S\\y",  # delimiter escape decoded differently
        "PID|1||A^C||x\\F\\y\\H\\z",  # an accepted kind does not hide another change
        "PIX|1||A^C||x\\F\\y",  # segment renamed
    ],
)
def test_a_real_mismatch_is_never_explained(ours: str) -> None:
    """Had our reader read anything else than python-hl7 did, the comparison would fail."""
    theirs = f"{MSH}\rPID|1||A^C||x\\F\\y"
    assert list(differences(theirs, "utf-8")) == []
    assert [d for d in differences(f"{MSH}\r{ours}", "utf-8", their_text=theirs) if not d.kinds]
