"""Helpers shared by the integration and acceptance tests (no mocks: real sockets, real journal)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.service import Service
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
CORPUS = ROOT.parent / "shared" / "corpus"
SEGUR = CORPUS / "hl7v2" / "ansforge" / "hl7V2-exemples" / "trans-doc-cda" / "v2.1-segur"


def corpus_path(*parts: str) -> Path:
    """A path inside ../shared/corpus, or skip the test when the corpus is absent."""
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"../shared/corpus is not beside the repository ({path.name} missing)")
    return path


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / "hl7v2" / name).read_bytes()


@dataclass(frozen=True)
class MdmSample:
    """One initial / replace / delete MDM chain about one document, and what tests renumber in it.

    ``initial_key`` and ``replace_key`` are the document ids as ``rewrite_document_message``
    maps them (the same text in TXA-12/13 and in the CDA); the DMP ``uniqueId`` is
    ``uid_prefix + key``.
    """

    initial: bytes
    replace: bytes
    delete: bytes
    initial_key: str
    replace_key: str
    uid_prefix: str
    creator: tuple[str, str]  # MSH-3, MSH-4: the creator the ZAM goes back to
    control_id: str  # MSH-10 of the initial message

    def uid(self, key: str) -> str:
        return self.uid_prefix + key


# Each acceptance test runs on our fixtures; the ANS Ségur samples are extra coverage, collected
# only when ../shared/corpus is there (the session header says when it is not).
SOURCES = ["fixtures", *([pytest.param("corpus", marks=pytest.mark.corpus)] if SEGUR.is_dir() else [])]


def mdm_sample(source: str) -> MdmSample:
    """The MDM chain of ``source``: ``"fixtures"`` (ours) or ``"corpus"`` (ANS Ségur, skips when absent)."""
    if source == "fixtures":
        return MdmSample(
            initial=as_cr(fixture_bytes("mdm_t02_initial.hl7")),
            replace=as_cr(fixture_bytes("mdm_t10_replace.hl7")),
            delete=as_cr(fixture_bytes("mdm_t04_delete.hl7")),
            initial_key="1.2.250.1.999.1.1.20250101.1",
            replace_key="1.2.250.1.999.1.1.20250101.2",
            uid_prefix="",
            creator=("DPI-RELAIS", "CLINIQUE-RELAIS"),
            control_id="MDM0001",
        )
    assert source == "corpus", source
    mdm = SEGUR.relative_to(CORPUS).parts + ("mdm",)
    return MdmSample(
        initial=as_cr(corpus_path(*mdm, "initial", "message_MDM_CR_Radio_INIT_N1_Base64.er7").read_bytes()),
        replace=as_cr(corpus_path(*mdm, "replace", "message_MDM_CR_Radio_RPLC_N1.er7").read_bytes()),
        delete=as_cr(corpus_path(*mdm, "delete", "message_MDM_CR_Radio_DEL_N1.er7").read_bytes()),
        initial_key="120456789.71024000081",  # TXA-12 writes root.extension, the CDA root + extension
        replace_key="120456789.71024000082",
        uid_prefix="1.2.250.1.71.4.2.2.",
        creator=("RIS-Y", "Organisation-Y"),
        control_id="015",
    )


def as_cr(data: bytes) -> bytes:
    lines = [line for line in re.split(rb"\r\n|\n|\r", data) if line.strip()]
    return b"\r".join(lines) + b"\r"


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Service]:
    service = Service(settings)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def mllp_port(service: Service) -> int:
    return int(service.addresses["mllp"].rsplit(":", 1)[1])


def field(ack: bytes | str, segment: str, index: int) -> str:
    text = ack.decode("utf-8", "replace") if isinstance(ack, bytes) else ack
    for seg in re.split(r"\r\n|\n|\r", text):
        if seg.startswith(segment):
            parts = seg.split("|")
            if segment == "MSH":
                parts.insert(1, "|")
            return parts[index] if len(parts) > index else ""
    return ""


def rewrite_document_message(raw: bytes, n: int, mapping: dict[str, str], *, ack_reception: bool | None = None) -> bytes:
    """Copy of an ANS document message made distinct: MSH-10 gets ``-nnn``, and every ``old``
    of ``mapping`` becomes ``new`` both in TXA and inside the embedded base64 CDA."""

    def swap(text: str) -> str:
        for old, new in mapping.items():
            text = text.replace(old, new)
        return text

    out = []
    for seg in raw.decode("utf-8").split("\r"):
        fields = seg.split("|")
        if seg.startswith("MSH"):
            fields[9] = f"{fields[9]}-{n:03d}"
        elif seg.startswith("OBX") and len(fields) > 5 and fields[2] == "ED" and "CORPSMAIL" not in fields[3]:
            import base64

            comps = fields[5].split("^")
            payload = comps[4]
            cda = base64.b64decode(payload + "=" * (-len(payload) % 4)).decode("utf-8")
            comps[4] = base64.b64encode(swap(cda).encode("utf-8")).decode("ascii")
            fields[5] = "^".join(comps)
        elif seg.startswith("OBX") and "ACK_RECEPTION^" in seg and ack_reception is not None:
            fields[5] = f"{'Y' if ack_reception else 'N'}^^expandedYes-NoIndicator"
        seg = "|".join(fields)
        out.append(swap(seg) if seg.startswith("TXA") else seg)
    return "\r".join(out).encode("utf-8")
