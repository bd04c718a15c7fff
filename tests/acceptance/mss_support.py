"""Real mail servers for the MSSanté acceptance tests: `relais simulate mss` (aiosmtpd + dovecot) as a process."""

from __future__ import annotations

import asyncio
import email
import email.policy
import imaplib
import os
import re
import shutil
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import hl7
import pytest

APP = "relais@pfi.mss.test"
DOCTOR = "dr.martin@hopital.mss.test"
FULL = "full@hopital.mss.test"
PASSWORD = "secret-for-tests"


def require_dovecot() -> None:
    """Skip without dovecot (or root to run it) — except under CI, where a skip would hide the MSSanté path."""
    missing = None
    if not shutil.which("dovecot"):
        missing = "dovecot is not installed (apt-get install dovecot-imapd dovecot-lmtpd)"
    elif os.geteuid() != 0:
        missing = "the MSSanté simulator starts dovecot, which needs root"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {missing}")
        pytest.skip(missing)


@dataclass
class MailServers:
    proc: subprocess.Popen[bytes]
    smtp: int
    smtps: int
    imaps: int
    directory: Path

    @property
    def pki(self) -> Path:
        return self.directory / "pki"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def imap(self, user: str) -> imaplib.IMAP4_SSL:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.pem"))
        conn = imaplib.IMAP4_SSL("127.0.0.1", self.imaps, ssl_context=ctx, timeout=10)
        conn.login(user, PASSWORD)
        return conn

    def messages(self, user: str) -> list[email.message.EmailMessage]:
        """Every message in ``user``'s INBOX, read over IMAP (without changing flags)."""
        conn = self.imap(user)
        try:
            conn.select("INBOX", readonly=True)
            _, data = conn.search(None, "ALL")
            out = []
            for n in data[0].split():
                _, parts = conn.fetch(n, "(BODY.PEEK[])")
                raw = next(bytes(p[1]) for p in parts if isinstance(p, tuple))
                out.append(email.message_from_bytes(raw, policy=email.policy.default))
            return out  # type: ignore[return-value]
        finally:
            conn.logout()

    def config(self, *, creator_port: int, extra: str = "", creator: tuple[str, str] = ("DPI-RELAIS", "CLINIQUE-RELAIS"),
               tail: str = "") -> str:
        return f"""
[identity]
allow_test_ins = true
[dispatcher]
backoff_base = 0.05
backoff_cap = 0.3
poll_interval = 0.05

[[destination]]
name = "mss"
kind = "mssante"
mailbox = "{APP}"
smtp_host = "127.0.0.1"
smtp_port = {self.smtp}
smtp_security = "starttls"
client_cert = "{self.pki / 'client.pem'}"
client_key = "{self.pki / 'client.key'}"
ca_file = "{self.pki / 'ca.pem'}"
imap_host = "127.0.0.1"
imap_port = {self.imaps}
imap_password_env = "RELAIS_TEST_MSS_PASSWORD"
poll_seconds = 0.3
lookup_wait_seconds = 2
{extra}
{tail}
[[creator]]
application = "{creator[0]}"
facility = "{creator[1]}"
address = "127.0.0.1:{creator_port}"
"""


def start_mail_servers(tmp_path: Path, *, readers: tuple[str, ...] = (), users: tuple[str, ...] = ()) -> MailServers:
    require_dovecot()
    args = [sys.executable, "-m", "gateway.cli", "simulate", "mss", "--port", "0", "--dir", str(tmp_path / "mss")]
    for user in (APP, DOCTOR, *users):
        args += ["--user", f"{user}:{PASSWORD}"]
    args += ["--full", FULL]
    for r in readers:
        args += ["--reader", r]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if "listening" not in line:
        err = proc.stderr.read().decode() if proc.stderr else ""
        proc.kill()
        raise AssertionError(f"mss simulator did not start: {line} {err}")
    ports = dict(re.findall(r"(smtps?|imaps)://127\.0\.0\.1:(\d+)", line))
    directory = Path(re.search(r"dir=(\S+)", line).group(1))  # type: ignore[union-attr]
    return MailServers(proc, int(ports["smtp"]), int(ports["smtps"]), int(ports["imaps"]), directory)


class ZamCollector:
    """The creator's MLLP listener (python-hl7): records every ZAM and acknowledges it AA."""

    def __init__(self) -> None:
        self.received: list[hl7.Message] = []

    async def handle(self, reader, writer) -> None:  # type: ignore[no-untyped-def]
        try:
            while not writer.is_closing():
                msg = await reader.readmessage()
                self.received.append(msg)
                writer.writemessage(msg.create_ack("AA"))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    def of(self, trigger: str) -> list[hl7.Message]:
        return [m for m in self.received if str(m.segment("MSH")[9]).startswith(f"ZAM^{trigger}")]


async def start_serve(config: Path, data: Path) -> tuple[asyncio.subprocess.Process, int]:
    env = dict(os.environ, RELAIS_TEST_MSS_PASSWORD=PASSWORD)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--data-dir", str(data),
        "--mllp-port", "0", "--http-port", "0", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )
    assert proc.stdout is not None
    line = (await proc.stdout.readline()).decode()
    assert line.startswith("relais ready"), line
    return proc, int(re.search(r"mllp=mllp://[^:]+:(\d+)", line).group(1))  # type: ignore[union-attr]


async def eventually(predicate, timeout: float = 30.0, step: float = 0.2):  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value or loop.time() > deadline:
            return value
        await asyncio.sleep(step)
