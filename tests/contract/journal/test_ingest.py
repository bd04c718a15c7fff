"""record_inbound and the other ingest operations, on every backend."""

from __future__ import annotations

from typing import Any

from gateway.journal.rows import AdtEffects, EncounterRecord, NewEvent
from tests.builders import identity_record
from tests.contract.journal.builders import delivery, exchange, store

INS = "180017512345629"


def stages(events: list[Any]) -> list[str]:
    return [e.stage for e in events]


def adt(clock: Any, key: str = "IPP1", *, ins: str | None = INS, qualified: bool = True, **effects: Any) -> Any:
    """An ADT exchange carrying ``AdtEffects`` for patient ``key``."""
    fx = AdtEffects(key=key, identity=identity_record(key, ins=ins, qualified=qualified, at=clock.stamp()),
                    trigger=effects.pop("trigger", "A28"), **effects)
    return exchange(clock, status="accepted", message_type="ADT^A28", adt=fx, patient_ipp=key, patient_ins=ins)


async def test_a_new_exchange_is_stored_with_its_documents_deliveries_and_events(journal: Any, clock: Any) -> None:
    record, out = await store(journal, clock, documents=2, deliveries=[delivery(doc_index=1, unique_id="u1")],
                              patient_ins=INS, patient_ipp="IPP1", findings={"warnings": ["W1"]}, document_id="D1")
    ex = record.exchange
    assert (out.exchange_id, out.status, out.ack_code, out.duplicate_of) == (ex.id, "queued", "AA", None)
    got = await journal.get_exchange(ex.id)
    assert got is not None
    for name in ("received_at", "listener", "sha256", "size", "sender_app", "sender_facility", "control_id",
                 "message_type", "version", "charset", "status", "ack_code", "document_id", "patient_ins",
                 "patient_ipp"):
        assert got[name] == getattr(ex, name), name
    assert got.findings == {"warnings": ["W1"]}
    assert got.raw is None  # bodies only when asked
    assert (await journal.get_exchange(ex.id, bodies=True)).raw == ex.raw
    [d] = await journal.deliveries_for(ex.id)
    assert (d.id, d.destination, d.kind, d.status, d.attempts, d.unique_id) == (
        record.deliveries[0].id, "dmp", "document", "queued", 0, "u1")
    docs = await journal.documents_for(ex.id)
    assert [(x.idx, x.unique_id, x.action) for x in docs] == [(1, f"1.2.250.{ex.id[:8]}.1", "submit"),
                                                              (2, f"1.2.250.{ex.id[:8]}.2", "submit")]
    assert stages(await journal.events(ex.id)) == ["received"]


async def test_a_rejected_exchange_keeps_its_reason_and_answer(journal: Any, clock: Any) -> None:
    record, out = await store(journal, clock, status="rejected")
    assert (out.status, out.ack_code) == ("rejected", "AE")
    got = await journal.get_exchange(record.exchange.id)
    assert (got.status, got.reason_code, got.reason) == ("rejected", "PID_MISSING", "no PID segment")
    assert await journal.deliveries_for(record.exchange.id) == []


async def test_a_duplicate_is_answered_like_the_original_and_records_nothing_else(journal: Any, clock: Any) -> None:
    raw = b"MSH|^~\\&|APP|FAC|||20260101||MDM^T02|CTRL1|P|2.5\r"
    first, _ = await store(journal, clock, raw=raw, control_id="CTRL1", dedup=True, documents=1,
                           deliveries=[delivery()], ack_code="AE")
    again = exchange(clock, raw=raw, control_id="CTRL1", dedup=True, documents=1, deliveries=[delivery()],
                     ack_code="AA", events=[NewEvent("received"), NewEvent("validated")],
                     duplicate_events=[NewEvent("received", {"again": True})],
                     remember_identity=identity_record("IPP9", at=clock.stamp()))
    out = await journal.record_inbound(again)
    dup = again.exchange.id
    assert (out.exchange_id, out.status, out.ack_code, out.duplicate_of) == (dup, "duplicate", "AE", first.exchange.id)
    got = await journal.get_exchange(dup)
    assert (got.status, got.duplicate_of, got.ack_code) == ("duplicate", first.exchange.id, "AE")
    assert await journal.deliveries_for(dup) == []
    assert await journal.documents_for(dup) == []
    assert "validated" not in stages(await journal.events(dup))
    assert stages(await journal.events(dup))[0] == "received"
    assert await journal.get_identity("IPP9") is None  # effects are not recorded either
    assert (await journal.exchange_bodies(dup)).raw == raw
    assert len(await journal.deliveries_for(first.exchange.id)) == 1


async def test_no_duplicate_without_dedup_or_with_other_bytes(journal: Any, clock: Any) -> None:
    raw = b"MSH|^~\\&|APP|FAC|||1||MDM^T02|CTRL2|P|2.5\r"
    await store(journal, clock, raw=raw, control_id="CTRL2", dedup=True)
    _, plain = await store(journal, clock, raw=raw, control_id="CTRL2")
    _, other = await store(journal, clock, raw=raw + b"PID|\r", control_id="CTRL2", dedup=True)
    _, elsewhere = await store(journal, clock, raw=raw, control_id="CTRL2", dedup=True, sender_facility="FAC2")
    assert (plain.status, other.status, elsewhere.status) == ("queued", "queued", "queued")


async def test_an_inbound_ack_is_matched_to_the_zam_it_answers(journal: Any, clock: Any) -> None:
    sent, _ = await store(journal, clock, deliveries=[delivery(kind="zam", destination="his", unique_id="ZAM-1")])
    ack, out = await store(journal, clock, status="received", message_type="ACK", ack=True, acknowledges="ZAM-1",
                           acknowledgement_code="AA", deliveries=[delivery()])
    assert (out.status, out.ack_code) == ("recorded", "")
    assert (await journal.get_exchange(ack.exchange.id)).status == "recorded"
    assert "ack:matched" in stages(await journal.events(ack.exchange.id))
    assert "zam:acknowledged" in stages(await journal.events(sent.exchange.id))
    assert await journal.deliveries_for(ack.exchange.id) == []


async def test_an_inbound_ack_that_answers_nothing_is_kept_unmatched(journal: Any, clock: Any) -> None:
    ack, out = await store(journal, clock, status="received", message_type="ACK", ack=True, acknowledges="NOPE")
    assert out.status == "recorded"
    assert "ack:unmatched" in stages(await journal.events(ack.exchange.id))
    assert (await journal.exchange_bodies(ack.exchange.id)).raw == ack.exchange.raw


async def test_a_hold_is_lifted_when_the_registry_has_the_ins_qualified(journal: Any, clock: Any) -> None:
    await journal.record_inbound(adt(clock))
    record, out = await store(journal, clock, status="held", patient_ins=INS, patient_ipp="IPP1",
                              hold_unless_qualified=INS, deliveries=[delivery(status="waiting")])
    assert out.status == "queued"
    got = await journal.get_exchange(record.exchange.id)
    assert (got.status, got.reason_code, got.held_since) == ("queued", None, None)
    assert [d.status for d in await journal.deliveries_for(record.exchange.id)] == ["queued"]
    assert "released" in stages(await journal.events(record.exchange.id))


async def test_a_hold_stays_while_the_ins_is_not_qualified(journal: Any, clock: Any) -> None:
    await journal.record_inbound(adt(clock, qualified=False))
    record, out = await store(journal, clock, status="held", patient_ins=INS, patient_ipp="IPP1",
                              hold_unless_qualified=INS, deliveries=[delivery(status="waiting")])
    assert out.status == "held"
    assert (await journal.get_exchange(record.exchange.id)).reason_code == "INS_NOT_QUALIFIED"
    assert [d.status for d in await journal.deliveries_for(record.exchange.id)] == ["waiting"]
    assert [h.id for h in await journal.held_exchanges()] == [record.exchange.id]


async def test_remember_identity_never_downgrades_what_the_registry_knows(journal: Any, clock: Any) -> None:
    await journal.record_inbound(adt(clock))
    await store(journal, clock, remember_identity=identity_record("IPP1", ins=None, qualified=False, at=clock.stamp()))
    await store(journal, clock, remember_identity=identity_record("IPP2", ins="280017512345611", at=clock.stamp()))
    kept = await journal.get_identity("IPP1")
    assert (kept.ins, kept.qualified) == (INS, 1) or (kept.ins, bool(kept.qualified)) == (INS, True)
    new = await journal.get_identity("IPP2")
    assert (new.ins, bool(new.qualified), new.traits) == ("280017512345611", False, {"family": "DUPONT"})
    assert sorted(i.ipp_key for i in await journal.identities()) == ["IPP1", "IPP2"]


async def test_a_merge_rekeys_the_open_work_of_the_old_record(journal: Any, clock: Any) -> None:
    await store(journal, clock, remember_identity=identity_record("OLD", at=clock.stamp()))
    held, _ = await store(journal, clock, status="held", patient_ipp="OLD",
                          deliveries=[delivery(status="waiting", patient_key="OLD")])
    queued, _ = await store(journal, clock, patient_ipp="OLD", deliveries=[delivery(patient_key="OLD")])
    done, _ = await store(journal, clock, status="accepted", patient_ipp="OLD")
    await journal.record_inbound(adt(clock, "NEW", trigger="A40", merged_keys=("OLD",)))
    for ex in (held, queued):
        assert (await journal.get_exchange(ex.exchange.id)).patient_ipp == "NEW"
        assert "re-keyed" in stages(await journal.events(ex.exchange.id))
        [d] = await journal.deliveries_for(ex.exchange.id)
        assert (await journal.get_delivery(d.id)).patient_key == "NEW"
    assert (await journal.get_exchange(done.exchange.id)).patient_ipp == "OLD"
    assert (await journal.get_identity("OLD")).merged_into == "NEW"
    assert (await journal.get_identity("NEW")).merged_into is None


async def test_a_rehold_puts_queued_documents_of_the_patient_back_on_hold(journal: Any, clock: Any) -> None:
    queued, _ = await store(journal, clock, patient_ins=INS, patient_ipp="IPP1",
                            deliveries=[delivery(), delivery(kind="zam", destination="his")])
    await journal.record_inbound(adt(clock, qualified=False, trigger="A47", rehold=True, rehold_ins=INS))
    got = await journal.get_exchange(queued.exchange.id)
    assert (got.status, got.reason_code) == ("held", "INS_NOT_QUALIFIED")
    assert got.held_since is not None
    statuses = {d.kind: d.status for d in await journal.deliveries_for(queued.exchange.id)}
    assert statuses == {"document": "waiting", "zam": "queued"}


async def test_links_and_unlinks_are_kept_both_ways(journal: Any, clock: Any) -> None:
    await journal.record_inbound(adt(clock, "IPP2"))
    await journal.record_inbound(adt(clock, "IPP1", trigger="A24", link_to="IPP2"))
    assert await journal.linked_identities("IPP1") == ["IPP2"]
    assert await journal.linked_identities("IPP2") == ["IPP1"]
    record = adt(clock, "IPP1", trigger="A37", unlink_from="IPP2")
    await journal.record_inbound(record)
    assert await journal.linked_identities("IPP1") == []
    assert await journal.linked_identities("IPP2") == []
    unlinked = [e for e in await journal.events(record.exchange.id) if e.detail.get("registry") == "unlinked"]
    assert unlinked[0].detail["found"] is True


async def test_an_encounter_is_recorded_and_read_back(journal: Any, clock: Any) -> None:
    enc = EncounterRecord(visit_key="V1", ipp_key="IPP1", patient_class="I", trigger="A01", cancelled=False)
    record = adt(clock, trigger="A01", encounter=enc, encounter_detail={"visit": "V1"})
    await journal.record_inbound(record)
    got = await journal.get_encounter("V1")
    assert (got.ipp_key, got.patient_class, got.trigger, bool(got.cancelled), got.exchange_id) == (
        "IPP1", "I", "A01", False, record.exchange.id)
    assert await journal.get_encounter("V2") is None
    ctx = await journal.identity_context("IPP1", INS)
    assert ctx.encounter is not None and ctx.encounter.visit_key == "V1"
    cancel = EncounterRecord(visit_key="V1", ipp_key="IPP1", patient_class="I", trigger="A11", cancelled=True)
    await journal.record_inbound(adt(clock, trigger="A11", encounter=cancel))
    assert bool((await journal.get_encounter("V1")).cancelled) is True
    assert (await journal.identity_context("IPP1", None)).encounter is None


async def test_a_qualified_identity_releases_what_waited_for_its_ins(journal: Any, clock: Any) -> None:
    waiting, _ = await store(journal, clock, status="held", patient_ins=INS, patient_ipp="IPP1",
                             deliveries=[delivery(status="waiting")])
    conflict, _ = await store(journal, clock, status="held", patient_ins=INS, patient_ipp="IPP1",
                              reason_code="INS_CONFLICT", deliveries=[delivery(status="waiting")])
    out = await journal.record_inbound(adt(clock, release=True, release_ins=INS))
    assert out.released == (waiting.exchange.id,)
    assert (await journal.get_exchange(waiting.exchange.id)).status == "queued"
    assert [d.status for d in await journal.deliveries_for(waiting.exchange.id)] == ["queued"]
    assert (await journal.get_exchange(conflict.exchange.id)).status == "held"


async def test_a_release_without_ins_frees_only_documents_without_one(journal: Any, clock: Any) -> None:
    bare, _ = await store(journal, clock, status="held", patient_ipp="IPP1", deliveries=[delivery(status="waiting")])
    with_ins, _ = await store(journal, clock, status="held", patient_ipp="IPP1", patient_ins=INS,
                              deliveries=[delivery(status="waiting")])
    out = await journal.record_inbound(adt(clock, ins=None, release=True, release_ins=None))
    assert out.released == (bare.exchange.id,)
    assert (await journal.get_exchange(with_ins.exchange.id)).status == "held"


async def test_identity_context_reads_the_registry(journal: Any, clock: Any) -> None:
    empty = await journal.identity_context("IPP1", INS)
    assert (empty.by_ipp, empty.with_ins, empty.encounter) == (None, (), None)
    await journal.record_inbound(adt(clock, "IPP1"))
    await journal.record_inbound(adt(clock, "IPP3"))
    ctx = await journal.identity_context("IPP1", INS)
    assert ctx.by_ipp is not None and ctx.by_ipp.ipp_key == "IPP1" and ctx.by_ipp.ins == INS
    assert sorted(i.ipp_key for i in ctx.with_ins) == ["IPP1", "IPP3"]
    assert (await journal.identity_context(None, None)).by_ipp is None


async def test_a_replay_is_recorded_on_both_exchanges_and_audited(journal: Any, clock: Any) -> None:
    a, _ = await store(journal, clock)
    b, _ = await store(journal, clock)
    await journal.record_replay(a.exchange.id, b.exchange.id, actor="alice", at=clock.stamp())
    assert "replayed" in stages(await journal.events(a.exchange.id))
    assert "replay-of" in stages(await journal.events(b.exchange.id))
    [row] = await journal.audit_entries()
    assert (row.actor, row.action, row.target) == ("alice", "replay", a.exchange.id)


async def test_raw_bytes_come_back_byte_for_byte(journal: Any, clock: Any) -> None:
    big = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # 3 MiB, every byte value
    not_utf8 = b"MSH|^~\\&|\xff\xfe\x00\xc3(\xa0\r\n\x00"
    for raw in (big, not_utf8, b"\x00"):
        record, _ = await store(journal, clock, raw=raw, documents=1, listener="mss")
        bodies = await journal.exchange_bodies(record.exchange.id)
        assert bodies is not None and bodies.raw == raw and bodies.listener == "mss"
        assert bodies.document == record.documents[0].cda
        assert (bodies.xds, bodies.fhir) == ({"title": "doc 1"}, {"resourceType": "Bundle"})
        assert (await journal.get_exchange(record.exchange.id, bodies=True)).raw == raw
        assert (await journal.document(record.exchange.id, 1)).cda == record.documents[0].cda
    assert await journal.exchange_bodies("missing") is None


async def test_held_exchanges_lists_only_what_is_held_oldest_first(journal: Any, clock: Any) -> None:
    a, _ = await store(journal, clock, status="held")
    await store(journal, clock)
    b, _ = await store(journal, clock, status="held", reason_code="DESTINATION_UNKNOWN")
    held = await journal.held_exchanges()
    assert [(h.id, h.reason_code) for h in held] == [(a.exchange.id, "INS_NOT_QUALIFIED"),
                                                     (b.exchange.id, "DESTINATION_UNKNOWN")]


async def test_rejudge_hold_releases_changes_or_does_nothing(journal: Any, clock: Any) -> None:
    a, _ = await store(journal, clock, status="held", deliveries=[delivery(status="waiting")])
    b, _ = await store(journal, clock, status="held")
    c, _ = await store(journal, clock)
    kw: dict[str, Any] = dict(cause="rule changed", at=clock.stamp())
    assert await journal.rejudge_hold(a.exchange.id, release=True, code=None, message=None, **kw) == "released"
    assert (await journal.get_exchange(a.exchange.id)).status == "queued"
    assert [d.status for d in await journal.deliveries_for(a.exchange.id)] == ["queued"]
    assert await journal.rejudge_hold(a.exchange.id, release=True, code=None, message=None, **kw) is None
    assert await journal.rejudge_hold(b.exchange.id, release=False, code="INS_CONFLICT", message="two", **kw) \
        == "changed"
    got = await journal.get_exchange(b.exchange.id)
    assert (got.status, got.reason_code, got.reason) == ("held", "INS_CONFLICT", "two")
    assert await journal.rejudge_hold(b.exchange.id, release=False, code="INS_CONFLICT", message="two", **kw) is None
    assert await journal.rejudge_hold(c.exchange.id, release=True, code=None, message=None, **kw) is None
    assert await journal.rejudge_hold("missing", release=True, code=None, message=None, **kw) is None


async def test_a_record_that_fails_midway_leaves_nothing_behind(journal: Any, clock: Any) -> None:
    twin = delivery(id="same-id")
    record = exchange(clock, documents=1, deliveries=[twin, delivery(id="same-id", destination="mhd")],
                      remember_identity=identity_record("IPP7", at=clock.stamp()))
    try:
        await journal.record_inbound(record)
    except Exception:  # noqa: BLE001 - the driver's own error: the contract is that nothing was written
        pass
    else:
        raise AssertionError("two deliveries with one id were both recorded")
    assert await journal.get_exchange(record.exchange.id) is None
    assert await journal.events(record.exchange.id) == []
    assert await journal.documents_for(record.exchange.id) == []
    assert await journal.get_delivery("same-id") is None
    assert await journal.get_identity("IPP7") is None
    _, out = await store(journal, clock)  # and the journal goes on
    assert out.status == "queued"


async def test_a_bundle_reads_back_as_built_though_its_binary_is_stored_once(journal: Any, clock: Any) -> None:
    import base64
    import dataclasses

    cda = "<ClinicalDocument>é</ClinicalDocument>".encode()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "DocumentReference", "id": "d"}},
        {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Binary", "contentType": "application/xml",
                                               "data": base64.b64encode(cda).decode()}},
        {"fullUrl": "urn:uuid:3", "resource": {"resourceType": "Binary", "data": "b3RoZXI="}},  # not this CDA
    ]}
    record = exchange(clock, documents=1)
    record = dataclasses.replace(record, documents=[dataclasses.replace(record.documents[0], cda=cda,
                                                                        fhir=bundle)])
    await journal.record_inbound(record)
    doc = await journal.document(record.exchange.id, 1)
    assert doc is not None and bytes(doc.cda) == cda
    assert doc.fhir == bundle
