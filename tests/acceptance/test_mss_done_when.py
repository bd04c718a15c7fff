"""Issue #11 "done when": one config with a dmp-xds and an mssante destination and the creator's return
address; an MDM with DESTDMP = Y, DESTMSSANTEPS = Y and ACK_RECEPTION = Y ends with the DMP
accepting the document once, the RCT's real IMAP mailbox holding one mail whose XDM carries the
byte-identical CDA, and the sender receiving ZAM^Z01 Y and ZAM^Z02 Y.

Run with our mdm_t02_mss.hl7 (DESTDMP switched to Y) and, when ../shared/corpus is there, with
the ANS Ségur MDM."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from hl7.mllp import start_hl7_server

from adapters.dmp.simulator import DmpSimulator
from adapters.mllp_client import MllpClient
from tests.acceptance.mss_support import DOCTOR, ZamCollector, eventually, start_mail_servers, start_serve
from tests.acceptance.test_mss_delivery import embedded_cda, xdm_document
from tests.support import SOURCES, as_cr, field, fixture_bytes, mdm_sample, rewrite_document_message

pytestmark = pytest.mark.slow

DESTDMP_N = b"DESTDMP^Destinataire DMP^MetaDMPMSS||N^"
READ_ACK_Y = b"ACK_LECTURE_MSS^Accus\xc3\xa9 de lecture^MetaDMPMSS||Y^"


def message(source: str) -> tuple[bytes, str, tuple[str, str]]:
    """The MDM for both the DMP and MSSanté, its RCT recipient and its creator (MSH-3, MSH-4)."""
    if source == "fixtures":
        raw = as_cr(fixture_bytes("mdm_t02_mss.hl7"))
        assert raw.count(DESTDMP_N) == 1 and raw.count(READ_ACK_Y) == 1
        # as in the ANS sample: also for the DMP, no read acknowledgement asked
        raw = raw.replace(DESTDMP_N, DESTDMP_N[:-2] + b"Y^").replace(READ_ACK_Y, READ_ACK_Y[:-2] + b"N^")
        return raw, DOCTOR, ("DPI-RELAIS", "CLINIQUE-RELAIS")
    sample = mdm_sample(source)
    key = sample.initial_key
    raw = rewrite_document_message(sample.initial, 1, {key: f"{key}.777"}, ack_reception=True)
    return raw, "adam.hoda@test-ci-sis.mssante.fr", sample.creator


@pytest.mark.parametrize("source", SOURCES)
async def test_mdm_to_dmp_and_mssante_with_z01_and_z02(tmp_path: Path, source: str) -> None:
    raw, rct, creator_app = message(source)
    servers = start_mail_servers(tmp_path, users=() if rct == DOCTOR else (rct,))  # DOCTOR is always a user
    dmp = DmpSimulator()
    dmp_url = await dmp.start("127.0.0.1", 0)
    collector = ZamCollector()
    creator = await start_hl7_server(collector.handle, host="127.0.0.1", port=0, encoding="utf-8")
    cfg = tmp_path / "relais.toml"
    cfg.write_text(servers.config(
        creator_port=creator.sockets[0].getsockname()[1], creator=creator_app,
        tail=f'[[destination]]\nname = "dmp"\nkind = "dmp-xds"\nurl = "{dmp_url}"\n'), encoding="utf-8")
    try:
        proc, port = await start_serve(cfg, tmp_path / "data")
        try:
            async with MllpClient("127.0.0.1", port, timeout=10) as client:
                assert field(await client.send(raw), "MSA", 1) == "AA"
            await eventually(lambda: collector.of("Z01") and collector.of("Z02"), timeout=40)
            mails = servers.messages(rct)
            async with aiohttp.ClientSession() as http, http.get(f"{dmp_url.rstrip('/')}/_sim/submissions") as r:
                subs = await r.json()
            await asyncio.sleep(1.0)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
    finally:
        creator.close()
        await dmp.stop()
        servers.stop()
    assert Counter(s["status"] for s in subs) == {"accepted": 1}
    [mail] = mails
    assert xdm_document(mail) == embedded_cda(raw)
    [z01], [z02] = collector.of("Z01"), collector.of("Z02")
    assert str(z01.segment("OBX")[5]).split("^")[0] == "Y"
    assert str(z02.segments("OBX")[0][5][0][0]) == "Y"
    assert str(z02.segments("OBX")[1][5]).endswith(rct)
