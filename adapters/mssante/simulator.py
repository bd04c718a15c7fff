"""``relais simulate mss``: a real mail system on loopback — an ESMTP relay (aiosmtpd) delivering
over LMTP into mailboxes of a real IMAP server (Debian's dovecot), with DSNs and MDNs.

Why these pieces: dovecot is the IMAP server Debian ships and most MSSanté operators run
some equivalent of; it delivers over LMTP (RFC 2033) with per-recipient replies and enforces
quotas, so "unknown user" and "mailbox full" come from a real server, not from us. The SMTP
side is aiosmtpd (pure Python, maintained by the aio-libs team): it gives us a correct
ESMTP state machine and STARTTLS, and we add on top, from the RFCs, the MTA behaviour an
MSSanté operator's relay has. Postfix would do it too but needs a system-wide install and a
queue run by root daemons; a generated dovecot config in a temporary directory is enough.

The rules, each from its source (written from the RFCs, sharing nothing with Relais's client):

* TLS: STARTTLS (RFC 3207) on the submission port and implicit TLS (RFC 8314 §3) on a
  second port; ``MAIL`` before STARTTLS gets ``530 5.7.0`` (RFC 3207 §4); the TLS context
  requires a client certificate signed by the simulator's CA, as MSSanté operators
  authenticate client software by certificate — a handshake without one fails.
* IMAP: implicit TLS and STARTTLS (RFC 2595) listeners; dovecot's ``ssl = required`` refuses
  LOGIN before TLS (RFC 2595 §3.1 / RFC 3501 §6.2.3 LOGINDISABLED).
* Recipients are checked at ``RCPT`` by asking dovecot's LMTP (``RCPT`` in a throw-away LMTP
  session): an unknown user is refused at once with dovecot's ``550 5.1.1`` (RFC 5321
  §3.3, RFC 3463 X.1.1) — the SMTP client sees the failure synchronously, no DSN.
* DSN extension (RFC 3461): ``DSN`` is advertised after TLS; ``MAIL FROM`` takes
  ``RET=FULL|HDRS`` and ``ENVID=<xtext>`` (§4.3, §4.4), ``RCPT TO`` takes
  ``NOTIFY=NEVER|SUCCESS,FAILURE,DELAY`` and ``ORCPT=<type>;<xtext>`` (§4.1, §4.2); without
  NOTIFY a failure is reported (§4.1: the default is FAILURE, DELAY at the MTA's choice: off).
* After the final ``250`` the relay delivers each recipient over LMTP (RFC 2033 §4.2: one
  reply per recipient). ``2yz`` → ``delivered`` DSN if SUCCESS was asked; ``4yz`` (dovecot's
  quota: ``452 4.2.2``) → ``delayed`` DSN if DELAY was asked, then retried every
  ``retry_seconds`` up to ``max_retries`` times and finally ``failed``; ``5yz`` → ``failed``.
* A DSN (RFC 3464) is ``multipart/report; report-type=delivery-status`` (RFC 6522) with a
  human part, ``message/delivery-status`` (per-message fields ``Reporting-MTA``,
  ``Original-Envelope-Id``, ``Arrival-Date``; per-recipient ``Original-Recipient``,
  ``Final-Recipient``, ``Action``, ``Status``, ``Diagnostic-Code``, ``Remote-MTA``), and the
  returned headers (``text/rfc822-headers``, RET=HDRS) or message (``message/rfc822``). It is
  sent from the null reverse path (RFC 5321 §4.5.5) to the original envelope sender.
* Readers (``--reader ADDR``) act as that user's mail client: they poll their INBOX over
  IMAP, mark new mail ``\\Seen`` and, when it carries ``Disposition-Notification-To``, answer
  with an MDN (RFC 8098 §3: ``multipart/report; report-type=disposition-notification``,
  ``Reporting-UA``, ``Original-Recipient``, ``Final-Recipient``, ``Original-Message-ID``,
  ``Disposition: manual-action/MDN-sent-manually; displayed``) submitted through this relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import imaplib
import logging
import re
import shutil
import smtplib
import ssl
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from email.message import Message
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["MssSimulator", "make_pki"]

_DSN_MAIL = re.compile(r"\s+(RET|ENVID)=(\S+)", re.IGNORECASE)
_DSN_RCPT = re.compile(r"\s+(NOTIFY|ORCPT)=(\S+)", re.IGNORECASE)
_NOTIFY = {"NEVER", "SUCCESS", "FAILURE", "DELAY"}


# --------------------------------------------------------------------------- PKI


def make_pki(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost, and a client certificate (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o644)  # dovecot reads it after dropping privileges; test material only

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("MSS simulator CA")).issuer_name(name("MSS simulator CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    paths = {"ca": directory / "ca.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    import ipaddress

    for role, cn, usage in (("server", "localhost", ExtendedKeyUsageOID.SERVER_AUTH),
                            ("client", "relais-bal-applicative", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if role == "server":
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        paths[f"{role}_cert"] = directory / f"{role}.pem"
        paths[f"{role}_key"] = directory / f"{role}.key"
        paths[f"{role}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key, paths[f"{role}_key"])
    return paths


# --------------------------------------------------------------------------- dovecot


_DOVECOT_CONF = """\
# generated by relais simulate mss
base_dir = {base}/run
state_dir = {base}/state
instance_name = relais-mss-{tag}
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = required
ssl_cert = <{pki}/server.pem
ssl_key = <{pki}/server.key
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:{base}/mail/%d/%n
mail_plugins = quota
quota_full_tempfail = yes
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {base}/users
}}
plugin {{
  quota = maildir:User quota
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
}}
protocol lmtp {{
  mail_plugins = quota
}}
"""


def _traversable(path: Path) -> bool:
    for parent in [path.resolve(), *path.resolve().parents]:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            return False
    return True


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class _Queued:
    """A recipient whose delivery got a 4yz and is waiting for the next try."""

    envelope_from: str
    data: bytes
    recipient: str
    notify: set[str]
    orcpt: str | None
    envid: str | None
    ret: str
    tries: int = 0


@dataclass
class _Dsn:
    envid: str | None = None
    ret: str = "FULL"
    rcpt: dict[str, tuple[set[str], str | None]] = field(default_factory=dict)


class _Smtp(SMTP):
    """aiosmtpd's ESMTP state machine plus the RFC 3461 parameters (stripped and kept per envelope)."""

    async def smtp_MAIL(self, arg: str | None) -> None:
        dsn = _Dsn()
        if arg and self._tls_protocol is not None:
            for key, value in _DSN_MAIL.findall(arg):
                if key.upper() == "RET":
                    dsn.ret = value.upper()
                else:
                    dsn.envid = _xtext_decode(value)
            arg = _DSN_MAIL.sub("", arg)
        await super().smtp_MAIL(arg)
        if self.envelope is not None and self.envelope.mail_from is not None:
            self.envelope.dsn = dsn  # type: ignore[attr-defined]

    async def smtp_RCPT(self, arg: str | None) -> None:
        notify: set[str] = set()
        orcpt: str | None = None
        if arg and self._tls_protocol is not None:
            for key, value in _DSN_RCPT.findall(arg):
                if key.upper() == "NOTIFY":
                    notify = {v.upper() for v in value.split(",")}
                    if not notify <= _NOTIFY or ("NEVER" in notify and len(notify) > 1):
                        await self.push("501 5.5.4 invalid NOTIFY parameter (RFC 3461 4.1)")
                        return
                else:
                    orcpt = _xtext_decode(value)
            arg = _DSN_RCPT.sub("", arg)
        before = len(self.envelope.rcpt_tos) if self.envelope is not None else 0
        await super().smtp_RCPT(arg)
        env = self.envelope
        if env is not None and len(env.rcpt_tos) > before:
            dsn: _Dsn = getattr(env, "dsn", None) or _Dsn()
            dsn.rcpt[env.rcpt_tos[-1]] = (notify or {"FAILURE"}, orcpt)
            env.dsn = dsn  # type: ignore[attr-defined]


def _xtext_decode(value: str) -> str:
    """RFC 3461 §4: xtext, ``+XX`` hexadecimal escapes."""
    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)


class _Relay:
    """aiosmtpd handler: recipient check and delivery over dovecot's LMTP, DSN generation."""

    def __init__(self, sim: MssSimulator) -> None:
        self.sim = sim

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname  # type: ignore[attr-defined]
        if server._tls_protocol is not None:  # RFC 3461 §3: offer DSN once the channel is protected
            responses.insert(len(responses) - 1, "250-DSN")
        return responses

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        code, text = await asyncio.to_thread(self.sim.lmtp_check, address)
        if code >= 400:
            return f"{code} {text}"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        dsn: _Dsn = getattr(envelope, "dsn", None) or _Dsn()
        sender = envelope.mail_from or ""
        items = []
        for rcpt in envelope.rcpt_tos:
            notify, orcpt = dsn.rcpt.get(rcpt, ({"FAILURE"}, None))
            items.append(_Queued(sender, data, rcpt, notify, orcpt, dsn.envid, dsn.ret))
        # aiosmtpd's controller runs its own loop in a thread: hand over thread-safely.
        self.sim.loop.call_soon_threadsafe(self.sim.enqueue, items)
        self.sim.received.append({"from": sender, "to": list(envelope.rcpt_tos), "envid": dsn.envid,
                                  "size": len(data)})
        return "250 2.0.0 OK: queued"


class MssSimulator:
    """Owns the dovecot process, the two SMTP listeners, the delivery queue and the readers."""

    def __init__(
        self, *, directory: str | None = None, users: tuple[str, ...] = (), full: tuple[str, ...] = (),
        readers: tuple[str, ...] = (), retry_seconds: float = 2.0, max_retries: int = 2,
        hostname: str = "mss-simulator.test", **_ignored: Any,
    ) -> None:
        if not shutil.which("dovecot"):
            raise OSError("dovecot is not installed (apt-get install dovecot-imapd dovecot-lmtpd)")
        # dovecot's auth and mail processes drop root: every parent of the working directory
        # must be traversable by them, which a pytest tmp_path (0700) is not.
        self._own_dir = directory is None or not _traversable(Path(directory))
        self.base = Path(tempfile.mkdtemp(prefix="relais-mss-")) if self._own_dir else Path(directory or "")
        self.users: dict[str, str] = {}
        for spec in users:
            addr, _, password = spec.partition(":")
            self.users[addr.lower()] = password or "secret"
        self.full = {a.lower() for a in full}
        for addr in self.full:
            self.users.setdefault(addr, "secret")
        self.readers = [r.lower() for r in readers]
        self.retry_seconds = retry_seconds
        self.max_retries = max_retries
        self.hostname = hostname
        self.queue: list[_Queued] = []
        self.kick = asyncio.Event()
        self.received: list[dict[str, Any]] = []
        self._dovecot: asyncio.subprocess.Process | None = None
        self._controllers: list[Controller] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.pki: dict[str, Path] = {}
        self.ports: dict[str, int] = {}

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self.loop = asyncio.get_running_loop()
        # aiosmtpd warns that CERT_REQUIRED "might cause client problems": that is the point here.
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        self.pki = make_pki(self.base / "pki")
        for sub in ("run", "state", "mail"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        import pwd

        mail = pwd.getpwnam("mail")
        (self.base / "mail").chmod(0o777)
        self.base.chmod(0o755)
        lines = []
        for addr, password in self.users.items():
            local, _, domain = addr.partition("@")
            extra = "userdb_quota_rule=*:storage=1B" if addr in self.full else ""
            home = self.base / "mail" / domain / local
            lines.append(f"{addr}:{{PLAIN}}{password}:{mail.pw_uid}:{mail.pw_gid}::{home}::{extra}")
        (self.base / "users").write_text("\n".join(lines) + "\n")
        self.ports["imaps"] = _free_port(host)
        self.ports["imap"] = _free_port(host)  # STARTTLS; ssl = required refuses LOGIN before it
        conf = self.base / "dovecot.conf"
        conf.write_text(_DOVECOT_CONF.format(base=self.base, pki=self.base / "pki", uid=mail.pw_uid,
                                             gid=mail.pw_gid, imaps_port=self.ports["imaps"], imap_port=self.ports["imap"],
                                             tag=uuid.uuid4().hex[:8]))
        self._dovecot = await asyncio.create_subprocess_exec(
            "dovecot", "-F", "-c", str(conf), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        await self._wait_dovecot(host)
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.pki["ca"]))
        server_ctx.load_cert_chain(str(self.pki["server_cert"]), str(self.pki["server_key"]))
        server_ctx.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no session
        handler = _Relay(self)

        def factory(implicit: bool) -> Any:
            def make() -> SMTP:
                return _Smtp(handler, hostname=self.hostname, require_starttls=not implicit,
                             tls_context=None if implicit else server_ctx, data_size_limit=30 * 1024 * 1024,
                             auth_require_tls=True)
            return make

        starttls = Controller(handler, hostname=host, port=port or _free_port(host), server_hostname=self.hostname)
        starttls.factory = factory(False)  # type: ignore[method-assign]
        implicit = Controller(handler, hostname=host, port=_free_port(host), ssl_context=server_ctx,
                              server_hostname=self.hostname)
        implicit.factory = factory(True)  # type: ignore[method-assign]
        for c in (starttls, implicit):
            c.ready_timeout = 10
            await asyncio.to_thread(c.start)
            self._controllers.append(c)
        self.ports["smtp"], self.ports["smtps"] = starttls.port, implicit.port
        self._tasks.append(asyncio.create_task(self._deliver_loop()))
        for reader in self.readers:
            self._tasks.append(asyncio.create_task(self._reader_loop(reader)))
        return (f"smtp://{host}:{self.ports['smtp']} smtps://{host}:{self.ports['smtps']} "
                f"imaps://{host}:{self.ports['imaps']} imap://{host}:{self.ports['imap']} dir={self.base}")

    async def _wait_dovecot(self, host: str) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._dovecot is not None and self._dovecot.returncode is not None:
                err = (await self._dovecot.stderr.read()).decode() if self._dovecot.stderr else ""
                log = (self.base / "dovecot.log")
                raise OSError(f"dovecot exited: {err.strip()} {log.read_text()[-500:] if log.exists() else ''}")
            if (self.base / "run" / "lmtp").exists():
                with contextlib.suppress(OSError):
                    import socket

                    with socket.create_connection((host, self.ports["imaps"]), timeout=1):
                        return
            await asyncio.sleep(0.1)
        raise OSError("dovecot did not start in time")

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for c in self._controllers:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(c.stop)
        if self._dovecot is not None and self._dovecot.returncode is None:
            self._dovecot.terminate()
            try:
                await asyncio.wait_for(self._dovecot.wait(), 10)
            except TimeoutError:
                self._dovecot.kill()
        if self._own_dir:
            shutil.rmtree(self.base, ignore_errors=True)

    # -- LMTP (RFC 2033) -------------------------------------------------------------------
    def _lmtp(self) -> smtplib.LMTP:
        return smtplib.LMTP(str(self.base / "run" / "lmtp"))

    def lmtp_check(self, address: str) -> tuple[int, str]:
        with self._lmtp() as lmtp:
            lmtp.ehlo(self.hostname)
            lmtp.mail("")
            code, text = lmtp.rcpt(address)
            lmtp.rset()
        return code, text.decode("utf-8", "replace")

    def lmtp_deliver(self, envelope_from: str, recipient: str, data: bytes) -> tuple[int, str]:
        """One recipient over LMTP: its own reply (RFC 2033 §4.2)."""
        with self._lmtp() as lmtp:
            lmtp.ehlo(self.hostname)
            code, text = lmtp.mail(envelope_from)
            if code != 250:
                return code, text.decode("utf-8", "replace")
            code, text = lmtp.rcpt(recipient)
            if code not in (250, 251):
                return code, text.decode("utf-8", "replace")
            try:
                code, text = lmtp.data(data)
            except smtplib.SMTPDataError as exc:
                err = exc.smtp_error
                return exc.smtp_code, err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err)
        return code, text.decode("utf-8", "replace")

    # -- delivery queue and DSNs -----------------------------------------------------------------
    async def _deliver_loop(self) -> None:
        while True:
            await self.kick.wait()
            self.kick.clear()
            batch, self.queue = self.queue, []
            for item in batch:
                code, text = await asyncio.to_thread(self.lmtp_deliver, item.envelope_from, item.recipient,
                                                     item.data)
                await self._outcome(item, code, text)

    async def _outcome(self, item: _Queued, code: int, text: str) -> None:
        if code < 300:
            if "SUCCESS" in item.notify:
                await self._dsn(item, "delivered", "2.0.0", f"{code} {text}")
            return
        if code < 500 and item.tries < self.max_retries:
            if "DELAY" in item.notify and item.tries == 0:
                await self._dsn(item, "delayed", _status(text, "4.0.0"), f"{code} {text}")
            item.tries += 1
            asyncio.get_running_loop().call_later(self.retry_seconds, self._requeue, item)
            return
        if "FAILURE" in item.notify:
            status = _status(text, "5.0.0")
            if status.startswith("4"):
                status = "5" + status[1:]  # gave up: the failure is now permanent (RFC 3463 §3.1)
            await self._dsn(item, "failed", status, f"{code} {text}")

    def enqueue(self, items: list[_Queued]) -> None:
        self.queue.extend(items)
        self.kick.set()

    def _requeue(self, item: _Queued) -> None:
        self.queue.append(item)
        self.kick.set()

    async def _dsn(self, item: _Queued, action: str, status: str, diagnostic: str) -> None:
        if not item.envelope_from:
            return  # never a DSN about a DSN (RFC 3461 §6.2)
        original = email.message_from_bytes(item.data, policy=email.policy.compat32)
        report = _build_dsn(self.hostname, item, action, status, diagnostic, original)
        await asyncio.to_thread(self.lmtp_deliver, "", item.envelope_from, report)

    # -- readers: the recipient's mail client sending MDNs ---------------------------------------
    def _imap(self, user: str) -> imaplib.IMAP4_SSL:
        ctx = ssl.create_default_context(cafile=str(self.pki["ca"]))
        conn = imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"], ssl_context=ctx, timeout=10)
        conn.login(user, self.users[user])
        return conn

    async def _reader_loop(self, user: str) -> None:
        while True:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._read_once, user)
            await asyncio.sleep(0.5)

    def _read_once(self, user: str) -> None:
        conn = self._imap(user)
        try:
            conn.select("INBOX")
            typ, data = conn.uid("SEARCH", None, "UNSEEN")  # type: ignore[arg-type]
            for uid in (data[0].split() if typ == "OK" and data and data[0] else []):
                typ, parts = conn.uid("FETCH", uid, "(BODY[])")  # type: ignore[arg-type]  # sets \\Seen
                raw = next((bytes(p[1]) for p in parts if isinstance(p, tuple)), b"")
                msg = email.message_from_bytes(raw, policy=email.policy.compat32)
                notify_to = msg.get("Disposition-Notification-To")
                if notify_to and msg.get_content_type() != "multipart/report":
                    self._send_mdn(user, msg, notify_to)
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def _send_mdn(self, user: str, original: Message, notify_to: str) -> None:
        mdn = _build_mdn(user, original, notify_to, self.hostname)
        to = email.utils.parseaddr(notify_to)[1]
        # The reader's client submits like any client: STARTTLS with its certificate.
        ctx = ssl.create_default_context(cafile=str(self.pki["ca"]))
        ctx.load_cert_chain(str(self.pki["client_cert"]), str(self.pki["client_key"]))
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as smtp:
            smtp.starttls(context=ctx)
            smtp.sendmail(user, [to], mdn)


def _status(text: str, default: str) -> str:
    m = re.search(r"\b([245]\.\d{1,3}\.\d{1,3})\b", text)
    return m.group(1) if m else default


def _multipart_report(headers: list[str], report_type: str, parts: list[tuple[str, str]]) -> bytes:
    """RFC 6522 ``multipart/report`` written out by hand: the email package's generator insists on
    re-parsing ``message/delivery-status`` bodies, and a report is simple enough to write plainly."""
    boundary = "=_report_" + uuid.uuid4().hex
    lines = [*headers, "MIME-Version: 1.0",
             f'Content-Type: multipart/report; report-type={report_type}; boundary="{boundary}"', ""]
    for content_type, body in parts:
        lines += [f"--{boundary}", f"Content-Type: {content_type}", "", body.rstrip("\r\n"), ""]
    lines += [f"--{boundary}--", ""]
    return "\r\n".join(lines).encode("utf-8")


def _build_dsn(host: str, item: _Queued, action: str, status: str, diagnostic: str, original: Message) -> bytes:
    """RFC 3464 delivery status notification."""
    now = format_datetime(dt.datetime.now(dt.UTC))
    subject = {"delivered": "Successful Mail Delivery Report", "delayed": "Delayed Mail (still being retried)",
               "failed": "Undelivered Mail Returned to Sender"}[action]
    headers = [f"From: Mail Delivery System <MAILER-DAEMON@{host}>", f"To: {item.envelope_from}",
               f"Subject: {subject}", f"Date: {now}", f"Message-ID: {make_msgid(domain=host)}",
               "Auto-Submitted: auto-replied"]  # RFC 3834 §5
    per_message = [f"Reporting-MTA: dns; {host}"]
    if item.envid:
        per_message.append(f"Original-Envelope-Id: {item.envid}")
    per_message.append(f"Arrival-Date: {now}")
    per_rcpt = [f"Original-Recipient: {item.orcpt}"] if item.orcpt else []
    per_rcpt += [f"Final-Recipient: rfc822; {item.recipient}", f"Action: {action}", f"Status: {status}",
                 f"Remote-MTA: dns; {host}", f"Diagnostic-Code: smtp; {' '.join(diagnostic.split())}"]
    text = item.data.decode("utf-8", "replace").replace("\r\n", "\n")
    head, _, _body = text.partition("\n\n")
    returned = ("text/rfc822-headers", head.replace("\n", "\r\n")) if item.ret == "HDRS" else (
        "message/rfc822", text.replace("\n", "\r\n"))
    return _multipart_report(headers, "delivery-status", [
        ("text/plain; charset=us-ascii", f"This is the mail system at {host}.\r\n\r\n"
                                         f"Your message to <{item.recipient}> was {action}."),
        ("message/delivery-status", "\r\n".join(per_message) + "\r\n\r\n" + "\r\n".join(per_rcpt)),
        returned,
    ])


def _build_mdn(user: str, original: Message, notify_to: str, host: str) -> bytes:
    """RFC 8098 message disposition notification, ``displayed``."""
    mid = original.get("Message-ID")
    headers = [f"From: {user}", f"To: {notify_to}", "Subject: =?utf-8?q?Lu_:?= " + str(original.get("Subject", "")),
               f"Date: {format_datetime(dt.datetime.now(dt.UTC))}",
               f"Message-ID: {make_msgid(domain=user.partition('@')[2] or host)}"]
    if mid:
        headers += [f"In-Reply-To: {mid}", f"References: {mid}"]
    fields = [f"Reporting-UA: {host}; relais-mss-simulator", f"Original-Recipient: rfc822;{user}",
              f"Final-Recipient: rfc822;{user}"]
    if mid:
        fields.append(f"Original-Message-ID: {mid}")
    fields.append("Disposition: manual-action/MDN-sent-manually; displayed")
    return _multipart_report(headers, "disposition-notification", [
        ("text/plain; charset=utf-8", "Le message a été affiché par son destinataire."),
        ("message/disposition-notification", "\r\n".join(fields)),
    ])
