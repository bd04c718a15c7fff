"""One search box: what each kind of term is taken for, and what a viewer may search."""

from __future__ import annotations

import pytest

from gateway.operations.search import search_filters


@pytest.mark.parametrize(
    ("term", "kind", "filters"),
    [
        ("279035121518989", "patient", {"patient": "279035121518989"}),  # INS with its key
        ("2790351215189", "patient", {"patient": "2790351215189"}),  # NIR without key
        ("1.2.250.1.213.1.4.10|P000123", "patient", {"patient": "1.2.250.1.213.1.4.10|P000123"}),  # IPP key
        ("1.2.250.1.999.1.1.20250101.1", "document", {"document": "1.2.250.1.999.1.1.20250101.1"}),
        ("1.2.250.1.999^DOC42", "document", {"document": "1.2.250.1.999^DOC42"}),
        ("71dc0781", "exchange", {"control_or_id": "71dc0781"}),
        ("71dc0781-b55c-4d27", "exchange", {"control_or_id": "71dc0781-b55c-4d27"}),
        ("MDM0001", "control", {"control_or_id": "MDM0001"}),
        ("  MDM0001 ", "control", {"control_or_id": "MDM0001"}),
    ],
)
def test_operator_terms(term: str, kind: str, filters: dict[str, str]) -> None:
    assert search_filters(term, operator=True) == (kind, filters)


@pytest.mark.parametrize("term", ["279035121518989", "1.2.250.1.999.1.1.20250101.1", "1.2.250|P000123"])
def test_a_viewer_never_searches_patient_data(term: str) -> None:
    kind, filters = search_filters(term, operator=False)
    assert kind in ("control", "exchange") and filters == {"control_or_id": term}
