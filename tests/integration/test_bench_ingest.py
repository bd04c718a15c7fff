"""The ingest benchmark's own machinery: reference servers, load client accounting, report.

A second of load per server, so the benchmark cannot rot unnoticed; nothing about speed
is asserted (speed is measured in bench/, not in tests).
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from pathlib import Path

from lxml import etree

from bench.ingest import (
    ECHO,
    LARGE_BYTES,
    LARGE_MAX_MESSAGE,
    STORE,
    Load,
    Settings,
    drive,
    large_mdm,
    load_messages,
    render,
    run_row,
)
from bench.servers import MllpFramer, build_ack

CFG = Settings(connections=3, warmup_s=0.2, window_s=0.8, pin=False, big_journal=0)


def _adt() -> Load:
    messages, _notes = load_messages()
    return Load("ADT", messages[0], 3)


async def test_echo_server_answers_every_message_with_its_own_ack(tmp_path: Path) -> None:
    row = await run_row(ECHO, "empty", tmp_path, [_adt()], CFG, "T")
    s = row.main
    assert s.sent > 0 and s.sent == s.acked and s.mismatched == 0 and not s.errors
    assert s.codes == {"AA": s.sent}
    assert 0 < len(s.window_ns) <= s.acked  # only the ACKs received inside the window are timed
    assert row.extra["messages"] == s.sent  # the server counted what the client sent
    assert row.rss_mib > 0 and row.lag_ms is not None


async def test_store_server_keeps_two_rows_per_acknowledged_message(tmp_path: Path) -> None:
    messages, _notes = load_messages()
    loads = [_adt(), Load("MDM", messages[1], 1)]
    row = await run_row(STORE, "empty", tmp_path, loads, CFG, "T")
    assert all(s.balanced and s.codes == {"AA": s.sent} for s in row.stats.values())
    sent = sum(s.sent for s in row.stats.values())
    with sqlite3.connect(tmp_path / "store.db") as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == sent
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == sent
        stored = {r[0] for r in db.execute("SELECT DISTINCT type FROM messages")}
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert stored == {"ADT^A01^ADT_A01", "MDM^T02^MDM_T02"}  # MSH-9 as sent
    assert row.extra["messages"] == sent and 0 < row.extra["commits"] <= sent
    text = render([row], [], CFG, {"date": "now"}, 1.0, "test")
    assert "| (b) store | empty | ADT + 1 MDM: ADT (MDM " in text and "| ok |" in text


async def test_client_counts_acks_that_name_another_message() -> None:
    # A peer that always acknowledges the same MSH-10: the accounting must not call it balanced.
    async def wrong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = MllpFramer()
        while data := await reader.read(65536):
            for _payload in framer.feed(data):
                writer.write(build_ack(b"MSH|^~\\&|A|B|C|D|x||ADT^A01|NOT-YOURS|P|2.5"))

    server = await asyncio.start_server(wrong, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        stats, window = await drive("127.0.0.1", port, [_adt()], warmup_s=0.1, window_s=0.3)
    finally:
        server.close()
    s = stats["ADT"]
    assert s.sent == s.acked > 0 and s.mismatched == s.acked and not s.balanced
    assert window.seconds > 0


def test_framer_cuts_glued_and_split_frames() -> None:
    framer = MllpFramer()
    assert framer.feed(b"\x0bMSH|one\r\x1c\r\x0bMSH|tw") == [b"MSH|one\r"]
    assert framer.feed(b"o\r\x1c") == []
    assert framer.feed(b"\r") == [b"MSH|two\r"]


def test_large_mdm_is_twenty_megabytes_of_a_cda_libxml2_parses() -> None:
    mdm = next(m for m in load_messages()[0] if m.kind == "MDM").raw
    big = large_mdm(mdm)
    assert LARGE_BYTES * 0.98 <= len(big) <= LARGE_BYTES < LARGE_MAX_MESSAGE
    obx = next(s for s in big.split(b"\r") if s.startswith(b"OBX|1|"))
    cda = base64.b64decode(obx.split(b"|")[5].split(b"^")[4], validate=True)
    root = etree.fromstring(cda)  # no huge_tree: every text node stays under libxml2's 10 MB limit
    assert root.tag == "{urn:hl7-org:v3}ClinicalDocument"
    assert root.find(".//{urn:hl7-org:v3}nonXMLBody") is not None
