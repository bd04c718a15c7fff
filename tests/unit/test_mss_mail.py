"""Which mails a document message asks for, and the MIME message each one becomes."""

from __future__ import annotations

import email
import email.policy
import io
import uuid
import zipfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from adapters.dmp.testing import sample_document, sample_metadata
from adapters.mssante.mime import XDM_ATTACHMENT, build_mail, delivery_of_message_id, message_id_for
from adapters.mssante.xdm import XDM_DOCUMENT_PATH, build_xdm
from gateway.core.mss.orders import DEFAULT_BODY_PATIENT, MailOrder, mail_orders, patient_mailbox
from gateway.core.pipeline import Ids, PipelineOptions, analyse_hl7v2

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2" / "mdm_t02_mss.hl7"
NOW = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)
BOX = "relais@pfi.mss.test"


def doc_message(raw: bytes | None = None):
    an = analyse_hl7v2(raw or FIXTURE.read_bytes(), PipelineOptions(allow_test_ins=True),
                       Ids(now=NOW, new_uuid=lambda: str(uuid.uuid4())))
    assert an.ack_code == "AA", an.errors
    return an.doc_message, an.identity.ins


def test_fixture_asks_one_ps_mail_with_reply_to_body_and_both_acks() -> None:
    dm, ins = doc_message()
    orders, findings = mail_orders(dm, ins)
    assert findings == []
    assert orders == [MailOrder("dr.martin@hopital.mss.test", "ps", "secretariat@clinique.mss.test",
                                "Bonjour,\nvoici le compte rendu de consultation.\nCordialement", True, True)]


def test_patient_mailbox_comes_from_the_ins_never_from_a_prt() -> None:
    dm, ins = doc_message()
    dm = replace(dm, flags=dm.flags | {"DESTMSSANTEPAT": True},
                 recipients=(*dm.recipients, "123456789012345@patient.mssante.fr"), patient_no_reply=True)
    orders, findings = mail_orders(dm, ins)
    patient = [o for o in orders if o.audience == "patient"]
    assert [o.recipient for o in patient] == [patient_mailbox(ins)] == ["279035121518989@patient.mssante.fr"]
    assert patient[0].no_reply and patient[0].body == DEFAULT_BODY_PATIENT
    assert [f.code for f in findings] == ["MSS_PATIENT_ADDRESS_IGNORED"]
    assert mail_orders(dm, None)[1][-1].code == "MSS_PATIENT_NO_INS"


def test_a_document_invisible_to_the_patient_is_never_mailed_to_them() -> None:
    dm, ins = doc_message()
    dm = replace(dm, flags=dm.flags | {"DESTMSSANTEPAT": True, "INVISIBLE_PATIENT": True})
    orders, findings = mail_orders(dm, ins)
    assert [o.audience for o in orders] == ["ps"]
    assert [f.code for f in findings] == ["MSS_PATIENT_INVISIBLE"]


def test_order_round_trips_through_json() -> None:
    order = MailOrder("a@b.test", "patient", None, "x", True, False, True)
    assert MailOrder.from_json(order.to_json()) == order


def parsed(order: MailOrder) -> email.message.EmailMessage:
    document = sample_document()
    xdm = build_xdm(sample_metadata(document), document, now=NOW)
    raw = build_mail(order, xdm, mailbox=BOX, delivery_id="d-1", title="CR de biologie", now=NOW).as_bytes()
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def test_mime_headers_and_xdm_attachment() -> None:
    msg = parsed(MailOrder("dr.martin@hopital.mss.test", "ps", "sec@clinique.mss.test", "Corps", True, True))
    assert msg["From"] == BOX and msg["To"] == "dr.martin@hopital.mss.test"
    assert msg["Reply-To"] == "sec@clinique.mss.test"
    assert msg["Subject"] == "XDM/1.0/DDM+CR de biologie"
    assert msg["Message-ID"] == "<d-1@pfi.mss.test>"
    assert msg["Disposition-Notification-To"] == BOX
    assert msg["X-MSS-MES"] is None
    body = msg.get_body(("plain",))
    assert body is not None and body.get_content().strip() == "Corps"
    [att] = list(msg.iter_attachments())
    assert att.get_filename() == XDM_ATTACHMENT and att.get_content_type() == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(att.get_content()))
    assert zf.read(XDM_DOCUMENT_PATH) == sample_document()


def test_patient_no_reply_header_and_no_mdn_unless_asked() -> None:
    msg = parsed(MailOrder("279035121518989@patient.mssante.fr", "patient", None, "x", False, False, True))
    assert msg["X-MSS-MES"] == "FIN"
    assert msg["Disposition-Notification-To"] is None and msg["Reply-To"] is None


def test_message_id_maps_back_to_its_delivery_only_for_our_domain() -> None:
    mid = message_id_for("abc-1", BOX)
    assert delivery_of_message_id(mid, BOX) == "abc-1"
    assert delivery_of_message_id("<abc-1@elsewhere.test>", BOX) is None
    assert delivery_of_message_id(None, BOX) is None
