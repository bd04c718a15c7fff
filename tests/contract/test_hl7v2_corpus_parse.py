"""Every ANS sample message goes through our parsers without raising (findings only).

Corpus: ../shared/corpus/hl7v2/ansforge/hl7V2-exemples (read-only, beside the repo).
ACKs and ZAM business acknowledgements are skipped (other module), and so are the
ig-spec-examples fragments (hard-wrapped, not whole messages). The expected errors
below document the known defects of the samples (volet notes §11); anything else
that appears as an error makes the test fail, so a regression in our rules shows.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.cda import sniff_cda
from gateway.core.hl7v2.adt import parse_adt
from gateway.core.hl7v2.documents import check_against_cda, parse_document_message
from gateway.core.hl7v2.reader import Message
from gateway.model import Finding

pytestmark = pytest.mark.corpus

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
SAMPLES = CORPUS / "hl7v2" / "ansforge" / "hl7V2-exemples"


def _samples() -> list[Path]:
    if not SAMPLES.is_dir():
        return []
    out = []
    for path in sorted(SAMPLES.rglob("*")):
        if path.suffix not in (".er7", ".hl7"):
            continue
        lower = path.name.lower()
        if lower.startswith(("ack", "zam")):
            continue
        out.append(path)
    return out


# Known sample defects → the error codes we must report (relative path → codes).
EXPECTED_ERRORS: dict[str, set[str]] = {
    # volet v1.2: ORC-1 'SC', placeholder instead of a CDA, no SB PRT although DESTDMP=Y
    "trans-doc-cda/v1.2/mdm/message.hl7": {"DOC_NOT_CDA", "DOC_ACTION_INCONSISTENT", "PRT_SB_MISSING"},
    "trans-doc-cda/v1.2/oru/message.hl7": {"DOC_NOT_CDA", "DOC_ACTION_INCONSISTENT", "PRT_SB_MISSING"},
    # volet v2.0 MDM: no ORC / OBR at all; non-Base64 variants carry a placeholder
    "trans-doc-cda/v2.0/mdm/delete/message_MDM_CR_Radio_DEL_N1.er7": {"ORC_MISSING", "DOC_NOT_CDA"},
    "trans-doc-cda/v2.0/mdm/initial/message_MDM_CR_Radio_INIT_N1_Base64.er7": {"ORC_MISSING"},
    "trans-doc-cda/v2.0/mdm/replace/message_MDM_CR_Radio_RPLC_N1.er7": {"ORC_MISSING", "DOC_NOT_CDA"},
    # "non-Base64" samples: placeholder sentence instead of the CDA
    "trans-doc-cda/v2.1/oru/delete/message_ORU_CR_Bio_DEL_N1_N3.er7": {"DOC_NOT_CDA"},
    "trans-doc-cda/v2.1/oru/initial/message_ORU_CR_Bio_INIT_N1_N3.hl7": {"DOC_NOT_CDA"},
    "trans-doc-cda/v2.1-segur/mdm/initial/message_MDM_CR_Radio_INIT_N1.er7": {"DOC_NOT_CDA"},
    # LPS / MSSanté sister volet (PFI → DPI direction): ORC-1 'SC' or OBX-11 of the
    # XDM attachment, metadata subset; placeholder CDA in the non-Base64 ones
    "trans-lps-cda-mss/v1.0/mdm/message.hl7": {"DOC_NOT_CDA", "DOC_ACTION_INCONSISTENT"},
    "trans-lps-cda-mss/v1.0/mdm/messageDocB64.hl7": {"DOC_ACTION_INCONSISTENT"},
    "trans-lps-cda-mss/v1.1-segur/mdm/initial/message_MDM__LPS_MSS_CR_Radio_INIT_N1.er7": {"DOC_NOT_CDA"},
}


def _parse(text: str) -> list[Finding]:
    msg = Message.parse(text)
    if msg.message_type.startswith("ADT"):
        _, findings = parse_adt(msg)
    else:
        _, findings = parse_document_message(msg)
    return findings


@pytest.mark.parametrize("path", _samples(), ids=lambda p: str(p.relative_to(SAMPLES)))
def test_sample_parses_to_findings(path: Path) -> None:
    findings = _parse(path.read_bytes().decode("utf-8"))
    assert all(isinstance(f, Finding) for f in findings)
    rel = str(path.relative_to(SAMPLES))
    got = {f.code for f in findings if f.severity == "error"}
    assert got == EXPECTED_ERRORS.get(rel, set()), [f.as_dict() for f in findings if f.severity == "error"]


def test_corpus_present_or_skip() -> None:
    if not SAMPLES.is_dir():
        pytest.skip(reason="../shared/corpus/hl7v2/ansforge/hl7V2-exemples is absent")
    assert _samples(), "corpus directory present but no sample found"
    for rel in EXPECTED_ERRORS:
        assert (SAMPLES / rel).is_file(), rel


# Cross-checks against the embedded CDA header (only documents that are real CDAs).
EXPECTED_CDA_ERRORS: dict[str, set[str]] = {
    # the delete ORU embeds another patient's CR-BIO (volet notes §11)
    "trans-doc-cda/v2.1-segur/oru/delete/message_ORU_CR_Bio_DEL_N3_SEGUR.hl7": {"INS_PID_CDA_MISMATCH"},
    "trans-doc-cda/v2.1/oru/replace/message_ORU_CR_Bio_RPLC_N1_Base64_N3_Base64.er7": {
        "INS_PID_CDA_MISMATCH"
    },
    # TXA-12 written root.extension while the CDA id has root + extension
    "trans-doc-cda/v2.0/mdm/initial/message_MDM_CR_Radio_INIT_N1_Base64.er7": {"TXA12_CDA_MISMATCH"},
    # LPS v1.0: TXA-12 '2638', and a CDA about the test patient in a message about another one
    "trans-lps-cda-mss/v1.0/mdm/messageDocB64.hl7": {"INS_PID_CDA_MISMATCH", "TXA12_CDA_MISMATCH"},
}


@pytest.mark.parametrize("path", _samples(), ids=lambda p: str(p.relative_to(SAMPLES)))
def test_sample_cross_checks_against_cda(path: Path) -> None:
    from gateway.core import cda
    msg = Message.parse(path.read_bytes().decode("utf-8"))
    if msg.message_type.startswith("ADT"):
        pytest.skip(reason="no document in an ADT message")
    dm, _ = parse_document_message(msg)
    got: set[str] = set()
    for doc in dm.documents:
        if not sniff_cda(doc.data):
            continue  # placeholder sentence: already DOC_NOT_CDA
        header = cda.parse_header(cda.parse_cda(doc.data))
        findings = check_against_cda(dm, doc, header)
        got |= {f.code for f in findings if f.severity == "error"}
    assert got == EXPECTED_CDA_ERRORS.get(str(path.relative_to(SAMPLES)), set())
