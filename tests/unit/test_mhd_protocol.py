"""ITI-65 response parsing, error classification and Retry-After, without sockets."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from adapters.mhd.protocol import (
    classify_failure,
    parse_retry_after,
    parse_transaction_response,
    searchset_count,
    summarise_outcome,
)
from adapters.mhd.testing import make_iti65_bundle
from gateway.errors import DestinationRejected, DestinationUnavailable

NOW = datetime(2024, 5, 2, 8, 0, 0, tzinfo=UTC)


def response(*statuses: str, locations: list[str | None] | None = None) -> str:
    locations = locations or [f"Type/{n}/_history/1" for n in range(len(statuses))]
    entries = []
    for status, location in zip(statuses, locations, strict=True):
        entry: dict = {"status": status}
        if location:
            entry["location"] = location
        entries.append({"response": entry})
    return json.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": entries})


def outcome(*issues: tuple[str, str, str | None]) -> str:
    return json.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "error", "code": c, "diagnostics": d, **({"expression": [e]} if e else {})}
                for c, d, e in issues
            ],
        }
    )


class TestTransactionResponse:
    def test_document_reference_location_is_remote_id(self) -> None:
        body = response(
            "201 Created",
            "201 Created",
            "201",
            locations=["List/1/_history/1", "http://x/fhir/DocumentReference/42/_history/1", "Binary/7"],
        )
        result = parse_transaction_response(make_iti65_bundle(), body)
        assert result.remote_id == "http://x/fhir/DocumentReference/42"
        assert result.locations == ("List/1", "http://x/fhir/DocumentReference/42", "Binary/7")
        assert result.detail["documents"] == ["http://x/fhir/DocumentReference/42"]

    def test_bare_status_and_200_are_success(self) -> None:
        result = parse_transaction_response(make_iti65_bundle(), response("201", "200 OK", "201"))
        assert result.remote_id == "Type/1"

    def test_missing_location_gives_no_remote_id(self) -> None:
        body = response("201", "201", "201", locations=[None, None, None])
        assert parse_transaction_response(make_iti65_bundle(), body).remote_id is None

    def test_entry_count_mismatch_is_ambiguous(self) -> None:
        with pytest.raises(DestinationUnavailable) as info:
            parse_transaction_response(make_iti65_bundle(), response("201", "201"))
        assert info.value.code == "MHD_BAD_RESPONSE"

    @pytest.mark.parametrize(
        "body",
        [
            "",
            "not json",
            '{"resourceType": "OperationOutcome"}',
            '{"resourceType": "Bundle", "type": "batch-response"}',
        ],
    )
    def test_not_a_transaction_response_is_ambiguous(self, body: str) -> None:
        with pytest.raises(DestinationUnavailable):
            parse_transaction_response(make_iti65_bundle(), body)

    def test_failed_entry_is_rejected(self) -> None:
        with pytest.raises(DestinationRejected) as info:
            parse_transaction_response(make_iti65_bundle(), response("201", "400 Bad Request", "201"))
        assert info.value.location == "Bundle.entry[1]"
        assert info.value.code == "MHD_ENTRY_FAILED"


class TestClassification:
    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
    def test_retryable_statuses(self, status: int) -> None:
        error = classify_failure(status, "", None, NOW)
        assert isinstance(error, DestinationUnavailable)
        assert error.code == f"MHD_HTTP_{status}"

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 412, 422])
    def test_other_4xx_are_permanent(self, status: int) -> None:
        assert isinstance(classify_failure(status, "<html>nope</html>", None, NOW), DestinationRejected)

    @pytest.mark.parametrize("code", ["transient", "throttled", "timeout", "lock-error"])
    def test_transient_issue_codes_are_retryable_whatever_the_status(self, code: str) -> None:
        error = classify_failure(400, outcome((code, "try later", None)), "3", NOW)
        assert isinstance(error, DestinationUnavailable)
        assert error.retry_after == 3.0

    def test_rejection_summarises_issues_and_locates_the_first(self) -> None:
        body = outcome(
            ("required", "DocumentReference.custodian is required", "Bundle.entry[1].resource.custodian"),
            ("value", "bad hash", "Bundle.entry[1].resource.content[0].attachment.hash"),
        )
        error = classify_failure(422, body, None, NOW)
        assert isinstance(error, DestinationRejected)
        assert error.code == "MHD_HTTP_422"
        assert error.location == "Bundle.entry[1].resource.custodian"
        assert error.message == (
            "HTTP 422: required: DocumentReference.custodian is required (Bundle.entry[1].resource.custodian); "
            "value: bad hash (Bundle.entry[1].resource.content[0].attachment.hash)"
        )

    def test_duplicate_has_its_own_code(self) -> None:
        error = classify_failure(422, outcome(("duplicate", "already stored", None)), None, NOW)
        assert isinstance(error, DestinationRejected)
        assert error.code == "MHD_DUPLICATE"

    def test_503_carries_retry_after(self) -> None:
        error = classify_failure(503, "", "Thu, 02 May 2024 08:00:30 GMT", NOW)
        assert isinstance(error, DestinationUnavailable)
        assert error.retry_after == 30.0

    def test_summary_reads_details_text_and_location(self) -> None:
        body = {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "error", "code": "invalid", "details": {"text": "bad"}, "location": ["x"]}
            ],
        }
        assert summarise_outcome(body) == "invalid: bad (x)"
        assert summarise_outcome({"resourceType": "Patient"}) == ""


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("120", 120.0),
            (" 0 ", 0.0),
            ("Thu, 02 May 2024 08:02:00 GMT", 120.0),
            ("Thu, 02 May 2024 07:00:00 GMT", 0.0),  # in the past: now
            ("soon", None),
            ("-5", None),
            ("", None),
            (None, None),
        ],
    )
    def test_values(self, value: str | None, expected: float | None) -> None:
        assert parse_retry_after(value, NOW) == expected


class TestSearchset:
    def test_counts_matches_only(self) -> None:
        body = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [
                {"resource": {"resourceType": "DocumentReference"}, "search": {"mode": "match"}},
                {"resource": {"resourceType": "Patient"}, "search": {"mode": "include"}},
            ],
        }
        assert searchset_count(json.dumps(body)) == 1

    def test_empty_and_total_only(self) -> None:
        assert searchset_count('{"resourceType": "Bundle", "type": "searchset", "total": 0}') == 0
        assert searchset_count('{"resourceType": "Bundle", "type": "searchset", "total": 2}') == 2

    def test_not_a_bundle(self) -> None:
        with pytest.raises(ValueError):
            searchset_count('{"resourceType": "OperationOutcome"}')
