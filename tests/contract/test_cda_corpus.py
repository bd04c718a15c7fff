"""Every public CDA sample in ../shared/corpus parses, has an id, and maps to XDS metadata.

Corpus documents: ``cda/examples/**.xml`` (ANS TestContenuCDA 3.0, IHE XDS-SD) and the Ségur
HL7 v2 volet samples ``hl7v2/ansforge/hl7V2-exemples/trans-doc-cda/v2.1-segur/**.xml``.
XSD validity is recorded against ``cda/xsd`` when present; documents known to be invalid are
listed, with the reason, in ``cda_corpus_expected.json`` and do not fail the run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.core import cda, xds
from gateway.model import SubmissionContext

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
XSD_DIR = CORPUS / "cda" / "xsd"
EXPECTED = json.loads((Path(__file__).parent / "cda_corpus_expected.json").read_text(encoding="utf-8"))

pytestmark = pytest.mark.corpus


def _documents() -> list[str]:
    if not CORPUS.is_dir():
        return []
    paths = list((CORPUS / "cda" / "examples").rglob("*.xml"))
    paths += (CORPUS / "hl7v2" / "ansforge" / "hl7V2-exemples" / "trans-doc-cda" / "v2.1-segur").rglob(
        "*.xml"
    )
    return sorted(str(p.relative_to(CORPUS)) for p in paths)


DOCUMENTS = _documents()


def _require_corpus() -> None:
    if not DOCUMENTS:
        pytest.skip(reason=f"corpus CDA documents not available under {CORPUS}")


@pytest.fixture(scope="module")
def xsd_results() -> dict[str, list[str]]:
    """relative path -> XSD error messages (empty when valid); computed once."""
    _require_corpus()
    if not XSD_DIR.is_dir():
        pytest.skip(reason=f"CDA XSD not available at {XSD_DIR}")
    results = {}
    for rel in DOCUMENTS:
        root = cda.parse_cda((CORPUS / rel).read_bytes())
        results[rel] = [f.message for f in cda.validate_xsd(root, XSD_DIR)]
    return results


def test_corpus_is_complete() -> None:
    _require_corpus()
    assert len(DOCUMENTS) >= EXPECTED["min_documents"]


@pytest.mark.parametrize("rel", DOCUMENTS or ["<no corpus>"])
def test_parses_has_id_and_maps(rel: str) -> None:
    _require_corpus()
    data = (CORPUS / rel).read_bytes()
    header = cda.parse_header(cda.parse_cda(data))
    assert header.id_root
    assert header.level in (1, 3)
    expected = EXPECTED["headers"].get(rel)
    if expected is not None:
        assert {
            "document_id": header.document_id,
            "level": header.level,
            "type": header.code["code"] if header.code else None,
            "related_type": header.related_type,
            "parent_document_id": header.parent_document_id,
        } == expected
    metadata, findings = xds.build_xds(header, data, SubmissionContext(submission_time="20240101000000"))
    entry = metadata["documentEntry"]
    assert entry["uniqueId"] == header.document_id
    assert entry["size"] == len(data)
    assert all(f.code.startswith("XDS_") for f in findings)


def test_xsd_validity(xsd_results: dict[str, list[str]], record_property: pytest.RecordProperty) -> None:
    known_invalid: dict[str, str] = EXPECTED["xsd_invalid"]
    valid = sorted(rel for rel, errors in xsd_results.items() if not errors)
    invalid = {rel: errors[0] for rel, errors in xsd_results.items() if errors}
    record_property("cda_xsd_valid", len(valid))
    record_property("cda_xsd_total", len(xsd_results))
    print(f"\nCDA corpus: {len(valid)}/{len(xsd_results)} documents valid against CDA_extended.xsd")
    unexpected = {rel: err for rel, err in invalid.items() if rel not in known_invalid}
    assert unexpected == {}, (
        "corpus documents newly failing XSD validation (add to cda_corpus_expected.json?)"
    )
    # A document listed as invalid that now validates means the list is stale: say so.
    stale = sorted(rel for rel in known_invalid if rel in xsd_results and rel not in invalid)
    assert stale == [], "documents listed in xsd_invalid now validate: remove them"
