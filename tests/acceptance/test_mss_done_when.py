"""Issue #11 "done when": one config with a dmp-xds and an mssante destination and the creator's return
address; the ANS Ségur MDM with DESTDMP = Y, DESTMSSANTEPS = Y and ACK_RECEPTION = Y ends with the DMP
accepting the document once, the RCT's real IMAP mailbox holding one mail whose XDM carries the
byte-identical CDA, and the sender receiving ZAM^Z01 Y and ZAM^Z02 Y."""

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
from tests.acceptance.mss_support import ZamCollector, eventually, start_mail_servers, start_serve
from tests.acceptance.test_mss_delivery import embedded_cda, xdm_document
from tests.support import CORPUS, SEGUR, as_cr, corpus_path, field, rewrite_document_message

pytestmark = pytest.mark.slow

RCT = "adam.hoda@test-ci-sis.mssante.fr"


async def test_segur_mdm_to_dmp_and_mssante_with_z01_and_z02(tmp_path: Path) -> None:
    sample = as_cr(corpus_path(*SEGUR.relative_to(CORPUS).parts, "mdm", "initial",
                               "message_MDM_CR_Radio_INIT_N1_Base64.er7").read_bytes())
    root = "1.2.250.1.71.4.2.2.120456789.71024000081"
    raw = rewrite_document_message(sample, 1, {root: f"{root}.777"}, ack_reception=True)
    servers = start_mail_servers(tmp_path, users=(RCT,))
    dmp = DmpSimulator()
    dmp_url = await dmp.start("127.0.0.1", 0)
    collector = ZamCollector()
    creator = await start_hl7_server(collector.handle, host="127.0.0.1", port=0, encoding="utf-8")
    cfg = tmp_path / "relais.toml"
    cfg.write_text(servers.config(
        creator_port=creator.sockets[0].getsockname()[1], creator=("RIS-Y", "Organisation-Y"),
        tail=f'[[destination]]\nname = "dmp"\nkind = "dmp-xds"\nurl = "{dmp_url}"\n'), encoding="utf-8")
    try:
        proc, port = await start_serve(cfg, tmp_path / "data")
        try:
            async with MllpClient("127.0.0.1", port, timeout=10) as client:
                assert field(await client.send(raw), "MSA", 1) == "AA"
            await eventually(lambda: collector.of("Z01") and collector.of("Z02"), timeout=40)
            mails = servers.messages(RCT)
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
    assert str(z02.segments("OBX")[1][5]).endswith(RCT)
