"""Golden tests: each fixture we wrote, run through `relais check`, gives exactly fixtures/expected/<name>.json.

Time and ids are injected, so the output is deterministic. After an intended change,
regenerate with ``RELAIS_UPDATE_GOLDEN=1 pytest tests/unit/test_golden.py`` and review the diff.
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.commands.check import check_bytes
from gateway.core.pipeline import Ids
from tests.support import FIXTURES

INPUTS = sorted((FIXTURES / "hl7v2").glob("*.hl7")) + sorted(
    p for p in (FIXTURES / "cda").glob("*.xml")
)


def fixed_ids() -> Ids:
    counter = itertools.count(1)
    return Ids(now=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), new_uuid=lambda: str(uuid.UUID(int=next(counter))))


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.name)
def test_golden(source: Path) -> None:
    out = check_bytes(source.read_bytes(), allow_test_ins=True, ids=fixed_ids())
    expected_path = FIXTURES / "expected" / f"{source.stem}.json"
    text = json.dumps(out, ensure_ascii=False, indent=1, sort_keys=True) + "\n"
    if os.environ.get("RELAIS_UPDATE_GOLDEN"):
        expected_path.write_text(text, encoding="utf-8")
    assert expected_path.exists(), f"no golden file for {source.name}: run with RELAIS_UPDATE_GOLDEN=1"
    assert json.loads(text) == json.loads(expected_path.read_text(encoding="utf-8"))


def test_golden_outcomes_are_the_ones_we_mean() -> None:
    """A reading guide to the golden files: what each fixture is for."""
    outcome = {p.stem: json.loads((FIXTURES / "expected" / f"{p.stem}.json").read_text("utf-8"))["outcome"]
               for p in INPUTS}
    assert outcome["mdm_t02_initial"] == outcome["mdm_t10_replace"] == outcome["oru_doc_r01_initial"] == "accepted"
    assert outcome["adt_a01_vali"] == outcome["adt_a01_latin9"] == "accepted"
    assert outcome["xxe"] == outcome["billion_laughs"] == "rejected"
    # deletion by MDM^T04 and by ORU ORC-1=CA: accepted, for an ITI-57 (no FHIR Bundle)
    assert outcome["mdm_t04_delete"] == outcome["oru_doc_r01_delete"] == outcome["mdm_t02_secret"] == "accepted"


def test_secret_connection_fixture_carries_the_vihf_inputs() -> None:
    """What the golden file does not show: the request part of the XDS metadata (VIHF inputs)."""
    from gateway.core.pipeline import PipelineOptions, analyse_hl7v2

    an = analyse_hl7v2(
        (FIXTURES / "hl7v2" / "mdm_t02_secret.hl7").read_bytes(), PipelineOptions(allow_test_ins=True), fixed_ids()
    )
    (doc,) = an.documents
    assert doc.xds["request"] == {
        "secretConnection": True,
        "sendingApplication": "DPI-RELAIS",
        "sender": {
            "id": "801234567890",
            "family": "MEDECIN",
            "given": "JEAN",
            "service": "CARDIOLOGIE",
            "structureIdNat": "1999000001",  # PRT-8.7 FINEG 999000001 -> 1 + FINESS
        },
    }
    delete = analyse_hl7v2(
        (FIXTURES / "hl7v2" / "oru_doc_r01_delete.hl7").read_bytes(), PipelineOptions(allow_test_ins=True), fixed_ids()
    )
    assert [d.action for d in delete.documents] == ["delete"] and delete.documents[0].fhir is None
