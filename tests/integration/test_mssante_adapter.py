"""The MSSanté destination against real mail servers (aiosmtpd relay + dovecot), in process."""

from __future__ import annotations

import dataclasses

import pytest

from adapters.base import RetrySettings
from adapters.dmp.testing import sample_document, sample_metadata
from adapters.mssante.client import MssanteDestination
from adapters.mssante.config import MssanteConfig
from adapters.mssante.simulator import MssSimulator
from gateway.core.mss.orders import MailOrder
from gateway.errors import DestinationRejected, DestinationUnavailable
from gateway.ports import Payload
from tests.acceptance.mss_support import APP, DOCTOR, PASSWORD, require_dovecot

pytestmark = pytest.mark.slow


@pytest.fixture
async def sim():
    require_dovecot()
    s = MssSimulator(users=(f"{APP}:{PASSWORD}", f"{DOCTOR}:{PASSWORD}"))
    await s.start()
    yield s
    await s.stop()


def config(sim: MssSimulator, **over) -> MssanteConfig:  # type: ignore[no-untyped-def]
    base = MssanteConfig(
        mailbox=APP, smtp_host="127.0.0.1", smtp_port=sim.ports["smtp"], client_cert=str(sim.pki["client_cert"]),
        client_key=str(sim.pki["client_key"]), ca_file=str(sim.pki["ca"]), imap_host="127.0.0.1",
        imap_port=sim.ports["imaps"], imap_password=PASSWORD, lookup_wait_seconds=1.0, timeout=10,
    )
    return dataclasses.replace(base, **over)


def payload(delivery_id: str, recipient: str = DOCTOR) -> Payload:
    document = sample_document()
    return Payload(exchange_id="ex-1", delivery_id=delivery_id, kind="mail", document=document,
                   xds=sample_metadata(document),  # type: ignore[arg-type]
                   mail=MailOrder(recipient, "ps", None, "Corps", dsn=True).to_json())


def dest(cfg: MssanteConfig) -> MssanteDestination:
    return MssanteDestination("mss", cfg, retry=RetrySettings(quick_attempts=1, timeout=20))


async def test_lookup_sees_an_accepted_mail_through_our_own_copy(sim: MssSimulator) -> None:
    d = dest(config(sim))
    result = await d.send(payload("11111111-aaaa"))
    assert result.status == 250 and result.remote_id == "<11111111-aaaa@pfi.mss.test>"
    assert result.detail["dsn"] is True
    assert await d.already_delivered(payload("11111111-aaaa")) is True
    assert await d.already_delivered(payload("22222222-never-sent")) is False


async def test_implicit_tls_port_works_too(sim: MssSimulator) -> None:
    d = dest(config(sim, smtp_port=sim.ports["smtps"], smtp_security="tls"))
    assert (await d.send(payload("33333333-tls"))).status == 250


async def test_tls_without_a_client_certificate_is_refused_before_anything_is_sent(sim: MssSimulator) -> None:
    d = dest(config(sim, client_cert="", client_key=""))
    with pytest.raises(DestinationUnavailable) as err:
        await d.send(payload("44444444-nocert"))
    assert err.value.code in ("CONNECTION_REFUSED", "CONNECTION")
    assert sim.received == []


async def test_unknown_recipient_is_permanent_with_the_smtp_code(sim: MssSimulator) -> None:
    with pytest.raises(DestinationRejected) as err:
        await dest(config(sim)).send(payload("55555555-unknown", "nobody@hopital.mss.test"))
    assert err.value.code == "SMTP_550" and "5.1.1" in err.value.message


async def test_lookup_over_imap_starttls(sim: MssSimulator) -> None:
    d = dest(config(sim, imap_port=sim.ports["imap"], imap_security="starttls"))
    await d.send(payload("66666666-starttls"))
    assert await d.already_delivered(payload("66666666-starttls")) is True
