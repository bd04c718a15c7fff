"""Patient-bound MSSanté mail goes through the identity gate like a DMP document; professional mail does not."""

from __future__ import annotations

import asyncio
import json

from gateway.core.mss.orders import MailOrder
from gateway.operations.metrics import Metrics
from gateway.web.dashboard import timeline
from tests import builders
from tests.integration.test_identity_gate import only, send
from tests.support import field, fixture_bytes, running

# SMTP that never answers: deliveries stay open, so the gate's decisions are visible.
UNREACHABLE = """
[[destination]]
name = "mss"
kind = "mssante"
mailbox = "relais@pfi.mss.test"
smtp_host = "127.0.0.1"
smtp_port = 9
"""


def mss(status: bytes, control: bytes) -> bytes:
    raw = fixture_bytes("mdm_t02_mss.hl7").replace(b"|MDM0100|", b"|" + control + b"|")
    raw = raw.replace(b"|N|VALI", b"|N|" + status)
    # DESTMSSANTEPAT = Y
    return raw.replace(b"DESTMSSANTEPAT^Destinataire Patient^MetaDMPMSS||N^^", b"DESTMSSANTEPAT^Destinataire Patient^MetaDMPMSS||Y^^")


def mails(service, exchange_id: str) -> dict[str, dict]:  # type: ignore[no-untyped-def,type-arg]
    def read(tx):  # type: ignore[no-untyped-def]
        return [tx.get_delivery(d["id"]) for d in tx.deliveries_for(exchange_id) if d["kind"] == "mail"]
    return {MailOrder.from_json(bytes(r["payload"])).audience: r for r in service.journal.read_sync(read)}


async def test_unqualified_identity_holds_the_patient_mail_only_then_adt_releases_it(tmp_path) -> None:
    async with running(builders.settings(tmp_path, text=UNREACHABLE)) as service:
        assert field(await send(service, mss(b"PROV", b"G1")), "MSA", 1) == "AA"
        ex = only(service, "G1")
        assert ex["status"] == "held" and ex["reason_code"] == "INS_NOT_QUALIFIED"
        by = mails(service, ex["id"])
        assert by["patient"]["status"] == "waiting"
        assert by["ps"]["status"] in ("queued", "in_flight", "failed")  # professionals: derogation, not held
        assert MailOrder.from_json(bytes(by["patient"]["payload"])).recipient == "279035121518989@patient.mssante.fr"

        assert field(await send(service, fixture_bytes("adt_a01_vali.hl7")), "MSA", 1) == "AA"
        for _ in range(100):
            if mails(service, ex["id"])["patient"]["status"] != "waiting":
                break
            await asyncio.sleep(0.05)
        assert mails(service, ex["id"])["patient"]["status"] in ("queued", "in_flight", "failed")


async def test_qualified_identity_mails_the_patient_at_once(tmp_path) -> None:
    async with running(builders.settings(tmp_path, text=UNREACHABLE)) as service:
        assert field(await send(service, mss(b"VALI", b"G2")), "MSA", 1) == "AA"
        ex = only(service, "G2")
        assert ex["status"] == "queued"
        assert mails(service, ex["id"])["patient"]["status"] in ("queued", "in_flight", "failed")
        detail = service.journal.read_sync(lambda tx: tx.events(ex["id"]))
        labels = [r["label"] for r in timeline({"events": detail})]
        assert "MSSanté mails requested" in labels
        orders = next(e for e in detail if e["stage"] == "mss:orders")["detail"]
        assert orders == {"recipients": 2, "patient": True, "warnings": []}
        assert "279035121518989" not in json.dumps(detail)  # no INS in the timeline


def test_metrics_count_attempts_per_destination_kind() -> None:
    m = Metrics()
    m.destination_kinds.update({"mss": "mssante", "dmp": "dmp-xds"})
    m.observe_delivery("mss", "delivered", 0.1)
    m.observe_delivery("mss", "dead", 0.1)
    m.observe_delivery("zam:DPI|CLI", "delivered", 0.01)
    assert m.sample("relais_deliveries_by_kind_total", {"kind": "mssante", "outcome": "delivered"}) == 1
    assert m.sample("relais_deliveries_by_kind_total", {"kind": "mssante", "outcome": "dead"}) == 1
    assert m.sample("relais_deliveries_by_kind_total", {"kind": "zam", "outcome": "delivered"}) == 1


async def test_a_report_read_twice_sends_one_zam(tmp_path) -> None:
    """A crash between the journal commit and IMAP \\Seen makes the poller read a DSN again: one Z02 only."""
    from pathlib import Path

    from adapters.mssante.poller import ReportPoller
    from gateway.delivery.mss_acks import MssAcks

    text = UNREACHABLE + '\n[[creator]]\napplication = "DPI-RELAIS"\nfacility = "CLINIQUE-RELAIS"\naddress = "127.0.0.1:9"\n'
    async with running(builders.settings(tmp_path, text=text)) as service:
        assert field(await send(service, mss(b"VALI", b"G3")), "MSA", 1) == "AA"
        ex = only(service, "G3")
        ps = mails(service, ex["id"])["ps"]
        dsn = (Path(__file__).resolve().parents[2] / "fixtures" / "mail" / "dsn_delivered.eml").read_bytes()
        dsn = dsn.replace(b"0f1e2d3c-0000-4000-8000-000000000001", ps["id"].encode())
        dest = service.destinations["mss"]
        poller = ReportPoller(dest.config, service.journal, MssAcks(service.settings, service.clock),  # type: ignore[attr-defined]
                              service.clock)
        assert await poller._handle(dsn, "1") and await poller._handle(dsn, "1")

        def zams(tx):  # type: ignore[no-untyped-def]
            return [d["unique_id"] for d in tx.deliveries_for(ex["id"]) if d["kind"] == "zam"]
        assert service.journal.read_sync(zams) == [f"Z02:{ps['id']}"]
        stages = [e["stage"] for e in service.journal.read_sync(lambda tx: tx.events(ex["id"]))]
        assert stages.count("mss:dsn") == 2 and stages.count("zam:queued") == 1
