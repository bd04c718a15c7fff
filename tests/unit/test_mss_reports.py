"""DSN (RFC 3464) and MDN (RFC 8098) parsing from the samples in fixtures/mail/."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.mss.reports import parse_report, smtp_code

MAIL = Path(__file__).resolve().parents[2] / "fixtures" / "mail"


def report(name: str):
    r = parse_report((MAIL / name).read_bytes())
    assert r is not None
    return r


def test_success_dsn_matches_by_envelope_id_and_returned_headers() -> None:
    r = report("dsn_delivered.eml")
    assert r.kind == "dsn"
    assert r.envelope_id == "0f1e2d3c-0000-4000-8000-000000000001"
    assert r.original_message_id == "<0f1e2d3c-0000-4000-8000-000000000001@pfi.mss.test>"
    [line] = r.recipients
    assert (line.address, line.action, line.status, line.positive, line.final) == (
        "dr.martin@hopital.mss.test", "delivered", "2.0.0", True, True)


def test_failed_dsn_keeps_the_smtp_code_and_folded_diagnostic() -> None:
    [line] = report("dsn_failed_user_unknown.eml").recipients
    assert line.action == "failed" and not line.positive
    assert line.status == "5.1.1"
    assert line.diagnostic.startswith("550 5.1.1 <nobody@hopital.mss.test>: Recipient address rejected")
    assert smtp_code(line.status, line.diagnostic) == "550 5.1.1"


def test_delayed_dsn_is_not_final() -> None:
    [line] = report("dsn_delayed_mailbox_full.eml").recipients
    assert (line.action, line.status, line.final) == ("delayed", "4.2.2", False)


def test_mdn_displayed() -> None:
    r = report("mdn_displayed.eml")
    assert r.kind == "mdn"
    assert r.original_message_id == "<0f1e2d3c-0000-4000-8000-000000000001@pfi.mss.test>"
    [line] = r.recipients
    assert (line.address, line.action, line.positive) == ("dr.martin@hopital.mss.test", "displayed", True)


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@b\r\nSubject: hello\r\nContent-Type: text/plain\r\n\r\nnot a report\r\n",
        b"From: a@b\r\nContent-Type: multipart/report; report-type=other; boundary=x\r\n\r\n--x\r\n\r\n--x--\r\n",
    ],
)
def test_ordinary_mail_is_not_a_report(raw: bytes) -> None:
    assert parse_report(raw) is None


def test_mdn_without_original_message_id_falls_back_to_in_reply_to() -> None:
    raw = (MAIL / "mdn_displayed.eml").read_bytes().replace(b"Original-Message-ID", b"X-Removed")
    r = parse_report(raw)
    assert r is not None and r.original_message_id == "<0f1e2d3c-0000-4000-8000-000000000001@pfi.mss.test>"
