"""Mail into the application mailbox → the DPI as the LPS volet's MDM^T02, with real processes:
`relais simulate mss`, `relais serve`, a professional's mail client submitting over STARTTLS
with its certificate, and a DPI-side MLLP listener (python-hl7)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import signal
import smtplib
import ssl
import subprocess
import sys
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest
from hl7.mllp import start_hl7_server

from tests.acceptance.mss_support import (
    APP,
    DOCTOR,
    MailServers,
    ZamCollector,
    eventually,
    start_mail_servers,
    start_serve,
)
from tests.support import FIXTURES

pytestmark = pytest.mark.slow

CDA = FIXTURES / "cda" / "cr_bio_n3.xml"

# A METADATA.XML written by hand from ITI TF-3 §4.2.3.2 (URI, hash, size on the DocumentEntry),
# independent of the gateway's own XDM builder.
METADATA = """<?xml version="1.0" encoding="UTF-8"?>
<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
    xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
  <rim:RegistryObjectList>
    <rim:ExtrinsicObject id="Document01" mimeType="text/xml"
        objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">
      <rim:Slot name="hash"><rim:ValueList><rim:Value>{sha1}</rim:Value></rim:ValueList></rim:Slot>
      <rim:Slot name="size"><rim:ValueList><rim:Value>{size}</rim:Value></rim:ValueList></rim:Slot>
      <rim:Slot name="URI"><rim:ValueList><rim:Value>DOC0001.XML</rim:Value></rim:ValueList></rim:Slot>
    </rim:ExtrinsicObject>
  </rim:RegistryObjectList>
</lcm:SubmitObjectsRequest>
"""


def xdm(document: bytes, *, declared: bytes | None = None) -> bytes:
    declared = declared if declared is not None else document
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("README.TXT", "XDM package\r\n")
        zf.writestr("INDEX.HTM", "<html><body><a href='IHE_XDM/SUBSET01/DOC0001.XML'>doc</a></body></html>")
        zf.writestr("IHE_XDM/SUBSET01/METADATA.XML", METADATA.format(
            sha1=hashlib.sha1(declared).hexdigest(), size=len(declared)))  # noqa: S324
        zf.writestr("IHE_XDM/SUBSET01/DOC0001.XML", document)
    return buf.getvalue()


def mail_to_relais(servers: MailServers, attachment: bytes, subject: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = DOCTOR, APP, subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@hopital.mss.test>"
    msg.set_content("Compte rendu ci-joint.")
    msg.add_attachment(attachment, maintype="application", subtype="zip", filename="IHE_XDM.ZIP")
    ctx = ssl.create_default_context(cafile=str(servers.pki / "ca.pem"))
    ctx.load_cert_chain(str(servers.pki / "client.pem"), str(servers.pki / "client.key"))
    with smtplib.SMTP("127.0.0.1", servers.smtp, timeout=10) as smtp:
        smtp.starttls(context=ctx)
        smtp.send_message(msg)


async def test_xdm_mailed_to_the_application_mailbox_reaches_the_dpi_as_lps_mdm(tmp_path: Path) -> None:
    document = CDA.read_bytes()
    servers = start_mail_servers(tmp_path)
    dpi = ZamCollector()  # any MLLP peer that records and answers AA
    listener = await start_hl7_server(dpi.handle, host="127.0.0.1", port=0, encoding="utf-8")
    dpi_port = listener.sockets[0].getsockname()[1]
    cfg = tmp_path / "relais.toml"
    cfg.write_text(servers.config(creator_port=9, extra=(
        'inbound_destination = "dpi"\ninbound_application = "DPI-X"\ninbound_facility = "HOPITAL-X"\n'
        f'\n[[destination]]\nname = "dpi"\nkind = "mllp"\nurl = "127.0.0.1:{dpi_port}"\n')), encoding="utf-8")
    try:
        proc, _ = await start_serve(cfg, tmp_path / "data")
        try:
            await asyncio.to_thread(mail_to_relais, servers, xdm(document), "CR de biologie")
            await asyncio.to_thread(mail_to_relais, servers, xdm(document, declared=document + b" "), "abime")
            await eventually(lambda: dpi.received, timeout=30)
            await asyncio.sleep(1.0)  # the damaged one must not follow
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
    finally:
        listener.close()
        servers.stop()
    [mdm] = dpi.received
    msh = mdm.segment("MSH")
    assert str(msh[9]) == "MDM^T02^MDM_T02" and str(msh[21]) == "1.1^CISIS_CDA_HL7_LPS"
    assert str(msh[5]) == "DPI-X" and str(msh[6]) == "HOPITAL-X"
    obx = mdm.segments("OBX")[0]
    assert base64.b64decode(str(obx[5][0][4])) == document  # CDA intact
    assert str(mdm.segment("PID")[3][0][0]) == "290077511204566"
    prts = {str(p[4][0][0]): str(p[15]) for p in mdm.segments("PRT")}
    assert prts["SB"].endswith(DOCTOR) and prts["RCT"].endswith(APP)

    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "exchanges", "--data-dir", str(tmp_path / "data"), "--json"],
        capture_output=True, check=True, text=True,
    )
    by_status = {e["status"]: e for e in json.loads(out.stdout)}
    assert by_status["delivered"]["message_type"] == "MAIL"
    assert by_status["rejected"]["reason_code"] == "XDM_SIZE_MISMATCH"
