"""MSSanté end to end with real processes: `relais serve` + `relais simulate mss` (aiosmtpd relay and
dovecot IMAP/LMTP) + the creator's MLLP listener (python-hl7).

Our fixture mdm_t02_mss.hl7 asks for DESTMSSANTEPS = Y, ACK_RECEPTION = Y and ACK_LECTURE_MSS = Y
with one RCT recipient, so this runs without ../shared.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import signal
import zipfile
from pathlib import Path

import pytest
from hl7.mllp import start_hl7_server

from adapters.mllp_client import MllpClient
from gateway.core.hl7v2.reader import Message
from tests.acceptance.mss_support import (
    APP,
    DOCTOR,
    FULL,
    ZamCollector,
    eventually,
    start_mail_servers,
    start_serve,
)
from tests.support import as_cr, field, fixture_bytes

pytestmark = pytest.mark.slow


def message(recipient: str = DOCTOR, control: str = "MDM0100") -> bytes:
    raw = as_cr(fixture_bytes("mdm_t02_mss.hl7"))
    return raw.replace(DOCTOR.encode(), recipient.encode()).replace(b"|MDM0100|", f"|{control}|".encode())


def embedded_cda(raw: bytes) -> bytes:
    msg = Message.parse(raw.decode("utf-8"))
    obx = next(s for s in msg.segments if s.name == "OBX" and s[2].value(1) == "ED")
    data = obx[5].value(5)
    return base64.b64decode(data + "=" * (-len(data) % 4))


def xdm_document(mail) -> bytes:  # type: ignore[no-untyped-def]
    [att] = [p for p in mail.iter_attachments() if p.get_filename() == "IHE_XDM.ZIP"]
    zf = zipfile.ZipFile(io.BytesIO(att.get_content()))
    assert {"INDEX.HTM", "README.TXT", "IHE_XDM/SUBSET01/METADATA.XML"} <= set(zf.namelist())
    return zf.read("IHE_XDM/SUBSET01/DOC00001.XML")


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, raws: list[bytes], *, readers: tuple[str, ...] = (), until):  # type: ignore[no-untyped-def]
    """Mail servers + creator listener + `relais serve`; send ``raws``; wait for ``until``; yield."""
    servers = start_mail_servers(tmp_path, readers=readers)
    collector = ZamCollector()
    creator = await start_hl7_server(collector.handle, host="127.0.0.1", port=0, encoding="utf-8")
    creator_port = creator.sockets[0].getsockname()[1]
    cfg = tmp_path / "relais.toml"
    cfg.write_text(servers.config(creator_port=creator_port), encoding="utf-8")
    try:
        proc, port = await start_serve(cfg, tmp_path / "data")
        try:
            async with MllpClient("127.0.0.1", port, timeout=10) as client:
                for raw in raws:
                    assert field(await client.send(raw), "MSA", 1) == "AA"
            await eventually(lambda: until(servers, collector), timeout=40)
            yield servers, collector
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
    finally:
        creator.close()
        servers.stop()


async def test_document_reaches_the_rct_mailbox_as_xdm_and_the_creator_gets_z02_y(tmp_path: Path) -> None:
    raw = message()
    async with gateway(tmp_path, [raw], until=lambda s, c: c.of("Z02")) as (servers, collector):
        [mail] = servers.messages(DOCTOR)
    assert mail["From"] == APP and mail["Reply-To"] == "secretariat@clinique.mss.test"
    assert mail["Disposition-Notification-To"] == APP and mail["Subject"].startswith("XDM/1.0/DDM+")
    assert "compte rendu de consultation" in mail.get_body(("plain",)).get_content()
    assert xdm_document(mail) == embedded_cda(raw)  # byte-identical CDA
    [z02] = collector.of("Z02")
    assert str(z02.segment("MSH")[9]) == "ZAM^Z02^ZAM_Z01"
    obx = z02.segments("OBX")
    assert str(obx[0][3][0][0]) == "ACK_RECEPTION_MSS" and str(obx[0][4]) == "MDM0100"
    assert str(obx[0][5][0][0]) == "Y"
    assert str(obx[1][3][0][0]) == "DESTINATAIRE_MSS" and str(obx[1][5]).endswith(DOCTOR)


async def test_unknown_recipient_gives_z02_n_with_the_smtp_code(tmp_path: Path) -> None:
    async with gateway(tmp_path, [message("nobody@hopital.mss.test", "MDM0101")],
                       until=lambda s, c: c.of("Z02")) as (_, collector):
        pass
    [z02] = collector.of("Z02")
    assert str(z02.segments("OBX")[0][5][0][0]) == "N"
    err = z02.segment("ERR")
    assert str(err[5][0][0]) == "550" and str(err[5][0][2]) == "SMTPERRORCODE"
    assert "5.1.1" in str(err[5][0][1])


async def test_mailbox_full_ends_in_z02_n_after_the_relay_gives_up(tmp_path: Path) -> None:
    async with gateway(tmp_path, [message(FULL, "MDM0102")], until=lambda s, c: c.of("Z02")) as (_, collector):
        pass
    [z02] = collector.of("Z02")
    assert str(z02.segments("OBX")[0][5][0][0]) == "N"
    assert str(z02.segment("ERR")[5][0][2]) == "SMTPERRORCODE"
    assert "5.2.2" in str(z02.segment("ERR")[5][0][1]) or "4.2.2" in str(z02.segment("ERR")[5][0][1])


async def test_read_mdn_gives_z03(tmp_path: Path) -> None:
    async with gateway(tmp_path, [message(control="MDM0103")], readers=(DOCTOR,),
                       until=lambda s, c: c.of("Z03") and c.of("Z02")) as (_, collector):
        pass
    [z03] = collector.of("Z03")
    obx = z03.segments("OBX")
    assert str(obx[0][3][0][0]) == "ACK_LECTURE_MSS" and str(obx[0][5][0][0]) == "Y"
    assert str(obx[1][3][0][0]) == "LECTEUR_MSS" and str(obx[1][5]).endswith(DOCTOR)
    assert len(collector.of("Z02")) == 1


def test_sigkill_while_sending_never_mails_a_recipient_twice(tmp_path: Path) -> None:
    """SIGKILL `relais serve` while mails leave; after a restart each recipient holds each document once."""
    count = 12

    async def scenario():  # type: ignore[no-untyped-def]
        servers = start_mail_servers(tmp_path)
        cfg = tmp_path / "relais.toml"
        cfg.write_text(servers.config(creator_port=9), encoding="utf-8")
        try:
            proc, port = await start_serve(cfg, tmp_path / "data")
            async with MllpClient("127.0.0.1", port, timeout=10) as client:
                for n in range(count):
                    assert field(await client.send(message(control=f"K{n:04d}")), "MSA", 1) == "AA"
            await eventually(lambda: len(servers.messages(DOCTOR)) >= 3, timeout=30, step=0.05)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            at_kill = len(servers.messages(DOCTOR))
            assert at_kill < count, "the kill came too late to interrupt anything"
            proc, _ = await start_serve(cfg, tmp_path / "data")
            await eventually(lambda: len(servers.messages(DOCTOR)) >= count, timeout=60)
            await asyncio.sleep(3)  # anything sent twice would have arrived by now
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
            return [m["Message-ID"] for m in servers.messages(DOCTOR)]
        finally:
            servers.stop()

    ids = asyncio.run(scenario())
    assert len(ids) == count and len(set(ids)) == count, ids
