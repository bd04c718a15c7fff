"""The journal's transaction object: every read and write the gateway makes, as plain SQL.

A ``Tx`` wraps one connection. Writes only ever run inside the journal's writer
thread (see ``sqlite.py``), reads on a read-only connection. Rows come back as
dicts. Times are ISO 8601 UTC strings, which sort like the instants they name.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

__all__ = ["Tx", "EXCHANGE_SUMMARY_COLUMNS", "OPEN_DELIVERY_STATUSES", "DESTINATION_UNKNOWN", "iso", "like_escape"]

EXCHANGE_SUMMARY_COLUMNS = (
    "id, seq, received_at, listener, peer, sha256, size, sender_app, sender_facility, control_id, "
    "message_type, version, charset, status, reason_code, reason, ack_code, duplicate_of, document_id, "
    "dmp_bound, ack_reception, held_since, pruned_at, updated_at"
)
OPEN_DELIVERY_STATUSES = ("waiting", "queued", "in_flight", "failed")
#: hold / last_error code of work whose destination is no longer configured
DESTINATION_UNKNOWN = "DESTINATION_UNKNOWN"
GENESIS_HASH = "0" * 64


def like_escape(value: str) -> str:
    """``value`` with LIKE's wildcards taken literally (use with ``ESCAPE '\\'``)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def iso(dt: datetime) -> str:
    """The journal's time format: ISO 8601 with microseconds, so strings sort like instants."""
    return dt.isoformat(timespec="microseconds")


def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
    return dict(row) if row is not None else None


class Tx:
    """Named operations on the journal tables."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    # -- generic ------------------------------------------------------------------
    def _one(self, sql: str, args: Sequence[Any] = ()) -> dict[str, Any] | None:
        return _row(self.conn.execute(sql, args).fetchone())

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute(sql, args).fetchall()]

    def _next_seq(self, table: str) -> int:
        row = self.conn.execute(f"SELECT COALESCE(MAX(seq), 0) + 1 FROM {table}").fetchone()  # noqa: S608
        return int(row[0])

    # -- exchanges ------------------------------------------------------------------
    def insert_exchange(self, rec: dict[str, Any]) -> None:
        rec = dict(rec)
        rec.setdefault("seq", self._next_seq("exchanges"))
        rec.setdefault("updated_at", rec["received_at"])
        if rec.get("findings") is not None and not isinstance(rec["findings"], str):
            rec["findings"] = json.dumps(rec["findings"], ensure_ascii=False)
        cols = ", ".join(rec)
        marks = ", ".join("?" for _ in rec)
        self.conn.execute(f"INSERT INTO exchanges ({cols}) VALUES ({marks})", list(rec.values()))  # noqa: S608

    def update_exchange(self, exchange_id: str, at: str, **fields: Any) -> None:
        if fields.get("findings") is not None and not isinstance(fields["findings"], str):
            fields["findings"] = json.dumps(fields["findings"], ensure_ascii=False)
        fields["updated_at"] = at
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.conn.execute(
            f"UPDATE exchanges SET {sets} WHERE id = ?",  # noqa: S608
            [*fields.values(), exchange_id],
        )

    def find_duplicate(self, sender_app: str, sender_facility: str, control_id: str, sha256: str) -> str | None:
        row = self.conn.execute(
            "SELECT id FROM exchanges WHERE sender_app = ? AND sender_facility = ? AND control_id = ? "
            "AND sha256 = ? AND status != 'duplicate' ORDER BY seq LIMIT 1",
            (sender_app, sender_facility, control_id, sha256),
        ).fetchone()
        return row[0] if row else None

    def get_exchange(self, exchange_id: str, *, bodies: bool = False) -> dict[str, Any] | None:
        cols = "*" if bodies else EXCHANGE_SUMMARY_COLUMNS + ", findings, patient_ins, patient_ipp"
        row = self._one(f"SELECT {cols} FROM exchanges WHERE id = ?", (exchange_id,))  # noqa: S608
        if row is None:
            # let operators use a unique prefix of the id
            rows = self._all(
                f"SELECT {cols} FROM exchanges WHERE id LIKE ? ESCAPE '\\' LIMIT 2",  # noqa: S608
                (like_escape(exchange_id) + "%",),
            )
            row = rows[0] if len(rows) == 1 else None
        if row is None:
            return None
        if row.get("findings"):
            row["findings"] = json.loads(row["findings"])
        return row

    def list_exchanges(
        self,
        *,
        status: str | None = None,
        message_type: str | None = None,
        sender: str | None = None,
        control_id: str | None = None,
        q: str | None = None,
        since: str | None = None,
        until: str | None = None,
        patient: str | None = None,
        document: str | None = None,
        control_or_id: str | None = None,
        before_seq: int | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Newest first. ``patient`` is an INS or an IPP (``AUTHORITY|IPP`` uses the index; a bare
        IPP is matched on any authority); ``document`` a document uniqueId; ``control_or_id`` a
        control id or an exchange id prefix; ``before_seq`` the keyset cursor of the next page."""
        filters = dict(status=status, control_id=control_id, q=q, since=since, until=until,
                       patient=patient, document=document, control_or_id=control_or_id, message_type=message_type)
        alternatives = self._alternatives(filters, sender)
        if len(alternatives) == 1:
            return self._page(alternatives[0], before_seq, limit, offset)
        # several exact senders or event types: one indexed page each, merged. One query over
        # all of them would make SQLite sort every match to honour ORDER BY seq.
        pages = [self._page(f, before_seq, limit + offset, 0) for f in alternatives]
        merged = sorted((r for page in pages for r in page), key=lambda r: r["seq"], reverse=True)
        return merged[offset : offset + limit]

    def _alternatives(self, filters: dict[str, Any], sender: str | None) -> list[dict[str, Any]]:
        """The filter as disjoint exact cases, each of which an index serves in seq order."""
        types: list[str | None] = [filters.pop("message_type")]
        t = types[0]
        if t and "*" not in t and "^" not in t:
            types = list(self._types_with_prefix(t)) or ["\x00none"]  # "ADT": every ADT event type
        pairs: list[tuple[str | None, str | None] | None] = [None]
        if sender:
            pairs = list(self._sender_pairs(sender)) or [("\x00none", "\x00none")]
        return [dict(filters, message_type=t, sender_pair=p) for t in types for p in pairs]
    def _page(self, filters: dict[str, Any], before_seq: int | None, limit: int, offset: int) -> list[dict[str, Any]]:
        clause, args = self._exchange_filter(**filters)
        if before_seq is not None:
            clause = f"{clause} AND seq < ?" if clause else "WHERE seq < ?"
            args.append(before_seq)
        return self._all(
            f"SELECT {EXCHANGE_SUMMARY_COLUMNS} FROM exchanges {clause} ORDER BY seq DESC LIMIT ? OFFSET ?",  # noqa: S608
            [*args, limit, offset],
        )

    def _sender_pairs(self, sender: str) -> list[tuple[str | None, str | None]]:
        """The (MSH-3, MSH-4) pairs ``sender`` names: ``APP|FACILITY``, or an application or a facility."""
        if "|" in sender:
            app, _, facility = sender.partition("|")
            return [(app, facility)]
        out: list[tuple[str | None, str | None]] = []
        for app in self._distinct_after("sender_app", "1", ()):
            for facility in self._distinct_after("sender_facility", "sender_app IS ?", (app,)):
                if app == sender or facility == sender:
                    out.append((app, facility))
        return out

    def _distinct_after(self, column: str, where: str, args: tuple[Any, ...]) -> list[Any]:
        """Distinct non-null values of an indexed column: a skip-scan, one index seek per value."""
        rows = self._all(
            f"WITH RECURSIVE t(x) AS ("  # noqa: S608 - column and where are ours, not input
            f" SELECT (SELECT MIN({column}) FROM exchanges WHERE {where})"
            f" UNION ALL SELECT (SELECT MIN({column}) FROM exchanges WHERE {where} AND {column} > t.x)"
            f" FROM t WHERE t.x IS NOT NULL) SELECT x FROM t WHERE x IS NOT NULL",
            (*args, *args),
        )
        return [r["x"] for r in rows]

    def _types_with_prefix(self, prefix: str) -> list[str]:
        """The distinct message types starting with ``prefix``: an index skip-scan, a few lookups per type."""
        rows = self._all(
            "WITH RECURSIVE t(x) AS ("
            " SELECT (SELECT MIN(message_type) FROM exchanges WHERE message_type >= ?1 AND message_type < ?2)"
            " UNION ALL"
            " SELECT (SELECT MIN(message_type) FROM exchanges WHERE message_type > t.x AND message_type < ?2)"
            " FROM t WHERE t.x IS NOT NULL"
            ") SELECT x FROM t WHERE x IS NOT NULL",
            (prefix, prefix + "\uffff"),
        )
        return [r["x"] for r in rows]

    def count_exchanges(self, *, cap: int = 10_000, **filters: Any) -> tuple[int, bool]:
        """How many exchanges match, counting at most ``cap`` (so a count stays cheap at any size).

        Returns ``(count, capped)``: ``capped`` is true when there are more than ``cap``.
        """
        sender = filters.pop("sender", None)
        filters.setdefault("message_type", None)
        n = 0
        for alt in self._alternatives(dict(filters), sender):  # disjoint cases: their counts add up
            clause, args = self._exchange_filter(**alt)
            row = self._one(
                f"SELECT COUNT(*) AS n FROM (SELECT 1 FROM exchanges {clause} LIMIT ?)",  # noqa: S608
                [*args, cap + 1 - n],
            )
            n += int(row["n"]) if row else 0
            if n > cap:
                break
        return min(n, cap), n > cap

    def _exchange_filter(
        self,
        *,
        status: str | None = None,
        message_type: str | None = None,
        sender_pair: tuple[str | None, str | None] | None = None,
        control_id: str | None = None,
        q: str | None = None,
        since: str | None = None,
        until: str | None = None,
        patient: str | None = None,
        document: str | None = None,
        control_or_id: str | None = None,
    ) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if status:
            where.append("status = ?")
            args.append(status)
        if message_type:
            if "*" in message_type:
                where.append("message_type LIKE ? ESCAPE '\\'")
                args.append(like_escape(message_type).replace("*", "%"))
            else:  # exact: a prefix was resolved to its event types by _alternatives
                where.append("message_type = ?")
                args.append(message_type)
        if sender_pair is not None:
            where.append("sender_app IS ? AND sender_facility IS ?")
            args += list(sender_pair)
        if control_id:
            where.append("control_id = ?")
            args.append(control_id)
        if q:
            where.append("(control_id = ? OR id LIKE ? ESCAPE '\\' OR document_id = ?)")
            args += [q, like_escape(q) + "%", q]  # q=% must not match every row
        if since:
            where.append("received_at >= ?")
            where.append(f"seq >= COALESCE(({_FIRST_SEQ_AT}), 9223372036854775807)")
            args += [since, since]
        if until:
            where.append("received_at < ?")
            args.append(until)
            # seq and received_at both grow in arrival order: bounding seq lets the newest-first
            # walk start at `until` instead of reading every newer row first
            where.append(f"seq < COALESCE(({_FIRST_SEQ_AT}), 9223372036854775807)")
            args.append(until)
        if patient:
            if "|" in patient:
                where.append("patient_ipp = ?")
                args.append(patient)
            elif _INS.fullmatch(patient):
                where.append("patient_ins = ?")
                args.append(patient)
            else:  # an IPP without its authority (exchanges_ipp_value index)
                where.append("substr(patient_ipp, instr(patient_ipp, '|') + 1) = ?")
                args.append(patient)
        if document:
            where.append("id IN (SELECT exchange_id FROM documents WHERE unique_id = ?)")
            args.append(document)
        if control_or_id:
            # a range on the primary key, not LIKE: LIKE is case-insensitive and cannot use the index
            where.append("(control_id = ? OR (id >= ? AND id < ?))")
            args += [control_or_id, control_or_id.lower(), control_or_id.lower() + "\uffff"]
        return (("WHERE " + " AND ".join(where)) if where else ""), args

    def count_exchanges_by_status(self) -> dict[str, int]:
        return {r["status"]: r["n"] for r in self._all("SELECT status, COUNT(*) AS n FROM exchanges GROUP BY status")}

    def exchanges_for_patient(
        self, *, ins: str | None, ipp: str | None, statuses: Iterable[str]
    ) -> list[dict[str, Any]]:
        statuses = list(statuses)
        marks = ", ".join("?" for _ in statuses)
        keys: list[str] = []
        args: list[Any] = list(statuses)
        if ins:
            keys.append("patient_ins = ?")
            args.append(ins)
        if ipp:
            keys.append("patient_ipp = ?")
            args.append(ipp)
        if not keys:
            return []
        return self._all(
            f"SELECT id, status, reason_code, patient_ins, patient_ipp, held_since, dmp_bound FROM exchanges "  # noqa: S608
            f"WHERE status IN ({marks}) AND ({' OR '.join(keys)}) ORDER BY seq",
            args,
        )

    def held_exchanges(self) -> list[dict[str, Any]]:
        return self._all(
            "SELECT id, control_id, message_type, reason_code, reason, held_since, patient_ins, patient_ipp "
            "FROM exchanges WHERE status = 'held' ORDER BY seq"
        )

    def exchange_bodies(self, exchange_id: str) -> dict[str, Any] | None:
        """Raw bytes and listener of an exchange, with its first document's CDA, Bundle and metadata."""
        row = self._one("SELECT raw, listener FROM exchanges WHERE id = ?", (exchange_id,))
        if row is None:
            return None
        doc = self.get_document(exchange_id, 1) or {}
        row.update(document=doc.get("cda"), fhir=doc.get("fhir"), xds=doc.get("xds"))
        return row

    # -- documents -------------------------------------------------------------------------
    def insert_document(self, exchange_id: str, idx: int, unique_id: str, action: str, cda: bytes,
                        xds: dict[str, Any], fhir: dict[str, Any] | None) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO documents (exchange_id, idx, unique_id, action, cda, xds, fhir) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (exchange_id, idx, unique_id, action, cda, json.dumps(xds, ensure_ascii=False),
             json.dumps(fhir, ensure_ascii=False) if fhir is not None else None),
        )

    def get_document(self, exchange_id: str, idx: int) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM documents WHERE exchange_id = ? AND idx = ?", (exchange_id, idx))
        if row:
            for key in ("xds", "fhir"):
                row[key] = json.loads(row[key]) if row.get(key) else None
        return row

    def documents_for(self, exchange_id: str) -> list[dict[str, Any]]:
        return self._all(
            "SELECT exchange_id, idx, unique_id, action FROM documents WHERE exchange_id = ? ORDER BY idx",
            (exchange_id,),
        )

    # -- events -------------------------------------------------------------------------
    def probe(self, at: str) -> None:
        """Rewrite the readiness probe row: proves that a transaction can still commit."""
        self.conn.execute("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (at,))

    def add_event(self, exchange_id: str, at: str, stage: str, detail: dict[str, Any] | None = None) -> None:
        self.conn.execute(
            "INSERT INTO events (exchange_id, at, stage, detail) VALUES (?, ?, ?, ?)",
            (exchange_id, at, stage, json.dumps(detail or {}, ensure_ascii=False)),
        )

    def events(self, exchange_id: str) -> list[dict[str, Any]]:
        rows = self._all("SELECT at, stage, detail FROM events WHERE exchange_id = ? ORDER BY id", (exchange_id,))
        for r in rows:
            r["detail"] = json.loads(r["detail"] or "{}")
        return rows

    # -- deliveries ------------------------------------------------------------------------
    def insert_delivery(self, rec: dict[str, Any]) -> None:
        rec = dict(rec)
        rec.setdefault("seq", self._next_seq("deliveries"))
        rec.setdefault("updated_at", rec["created_at"])
        cols = ", ".join(rec)
        marks = ", ".join("?" for _ in rec)
        self.conn.execute(f"INSERT INTO deliveries ({cols}) VALUES ({marks})", list(rec.values()))  # noqa: S608

    def outbound_by_control_id(self, control_id: str) -> dict[str, Any] | None:
        """The ZAM or application ACK we sent with this MSH-10 (kept in ``unique_id``)."""
        return self._one(
            "SELECT id, exchange_id, kind, status FROM deliveries WHERE kind IN ('zam', 'ack') AND unique_id = ? "
            "ORDER BY seq DESC LIMIT 1",
            (control_id,),
        )

    def claim_due(self, *, now: str, worker: str, lease_until: str, limit: int) -> list[dict[str, Any]]:
        """Claim due deliveries, oldest first, at most one in flight per (destination, patient).

        Per-patient ordering: a delivery is due only when no earlier delivery of the same
        patient to the same destination is still open, so a replacement or a deletion
        never overtakes the submission it refers to. PostgreSQL does the same with
        ``FOR UPDATE SKIP LOCKED``; here the single writer thread serialises claims.
        """
        rows = self._all(
            "SELECT d.id FROM deliveries d "
            "WHERE d.status IN ('queued', 'failed') AND d.next_attempt_at <= ? "
            "AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.destination = d.destination "
            "  AND e.patient_key = d.patient_key AND e.seq < d.seq "
            "  AND e.status IN ('waiting', 'queued', 'in_flight', 'failed')) "
            "ORDER BY d.next_attempt_at, d.seq LIMIT ?",
            (now, limit),
        )
        claimed: list[dict[str, Any]] = []
        for r in rows:
            self.conn.execute(
                "UPDATE deliveries SET status = 'in_flight', claimed_by = ?, lease_until = ?, "
                "attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (worker, lease_until, now, r["id"]),
            )
            row = self._one("SELECT * FROM deliveries WHERE id = ?", (r["id"],))
            assert row is not None
            claimed.append(row)
        return claimed

    def recover_in_flight(self, *, now: str, expired_only: bool = False) -> int:
        """Put in-flight deliveries back in the queue (after a crash or an expired lease).

        Their outcome is unknown, so the next attempt asks the destination first.
        """
        cond = "status = 'in_flight'" + (" AND lease_until < ?" if expired_only else "")
        args: list[Any] = [now, now] + ([now] if expired_only else [])
        cur = self.conn.execute(
            f"UPDATE deliveries SET status = 'failed', next_attempt_at = ?, updated_at = ?, "  # noqa: S608
            f"last_error = 'outcome unknown: interrupted in flight' WHERE {cond}",
            args,
        )
        return cur.rowcount

    def park_for_unknown_destination(self, delivery: dict[str, Any], *, at: str) -> None:
        """A delivery whose destination left the configuration: kept (``waiting``), its exchange
        held with ``DESTINATION_UNKNOWN`` until the destination comes back or an operator re-routes."""
        reason = f"destination {delivery['destination']!r} is not in the configuration"
        self.update_delivery(delivery["id"], at, status="waiting", claimed_by=None, lease_until=None,
                             last_error=f"{DESTINATION_UNKNOWN}: {reason}")
        ex = self.get_exchange(delivery["exchange_id"])
        if ex is not None and ex["status"] != "held":
            self.update_exchange(ex["id"], at, status="held", reason_code=DESTINATION_UNKNOWN, reason=reason,
                                 held_since=at)
        self.add_event(delivery["exchange_id"], at, "held", {"code": DESTINATION_UNKNOWN, "delivery": delivery["id"],
                                                              "destination": delivery["destination"]})

    def requeue_known_destinations(self, names: Sequence[str], *, at: str) -> int:
        """Deliveries parked for a destination that is configured again go back in the queue."""
        if not names:
            return 0
        marks = ", ".join("?" for _ in names)
        rows = self._all(
            f"SELECT id, exchange_id FROM deliveries WHERE status = 'waiting' AND last_error LIKE ? "  # noqa: S608
            f"AND destination IN ({marks})",
            [f"{DESTINATION_UNKNOWN}:%", *names],
        )
        for r in rows:
            self.update_delivery(r["id"], at, status="queued", next_attempt_at=at, last_error=None)
            self._unhold_for_destination(r["exchange_id"], at)
        return len(rows)

    def reroute(self, source: str, target: str, *, at: str) -> list[dict[str, Any]]:
        """Move the unfinished and dead document work of ``source`` to ``target``; returns what moved.

        A delivery held by the identity gate stays waiting (only its destination changes); the
        rest is due now, with its attempt count reset: ``target`` never saw these documents.
        """
        rows = self._all(
            "SELECT id, exchange_id, status, last_error FROM deliveries WHERE destination = ? "
            "AND kind IN ('document', 'mail', 'hl7') AND status IN ('waiting', 'queued', 'failed', 'dead') "
            "ORDER BY seq",
            (source,),
        )
        for r in rows:
            parked = str(r["last_error"] or "").startswith(DESTINATION_UNKNOWN)
            identity_hold = r["status"] == "waiting" and not parked
            self.update_delivery(
                r["id"], at, destination=target, attempts=0, last_error=None, next_attempt_at=at,
                status="waiting" if identity_hold else "queued",
            )
            if not identity_hold:
                self._unhold_for_destination(r["exchange_id"], at, also_dead=True)
        return rows

    def _unhold_for_destination(self, exchange_id: str, at: str, *, also_dead: bool = False) -> None:
        ex = self.get_exchange(exchange_id)
        if ex is None:
            return
        if (ex["status"] == "held" and ex["reason_code"] == DESTINATION_UNKNOWN) or (also_dead and ex["status"] == "dead"):
            self.update_exchange(exchange_id, at, status="queued", reason_code=None, reason=None, held_since=None)

    def update_delivery(self, delivery_id: str, at: str, **fields: Any) -> None:
        fields["updated_at"] = at
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.conn.execute(f"UPDATE deliveries SET {sets} WHERE id = ?", [*fields.values(), delivery_id])  # noqa: S608

    def held_worklist(self, limit: int = 20) -> tuple[list[dict[str, Any]], int]:
        """The oldest held exchanges (first ``limit``) and how many are held."""
        rows = self._all(
            "SELECT id, control_id, message_type, reason_code, reason, held_since FROM exchanges "
            "WHERE status = 'held' ORDER BY seq LIMIT ?",
            (limit,),
        )
        total = self._one("SELECT COUNT(*) AS n FROM exchanges WHERE status = 'held'")
        return rows, int(total["n"]) if total else 0

    def dead_worklist(self, limit: int = 20) -> tuple[list[dict[str, Any]], int]:
        """The oldest dead deliveries (first ``limit``) with their exchange, and how many are dead."""
        rows = self._all(
            "SELECT d.id, d.exchange_id, d.destination, d.kind, d.attempts, d.last_error, d.updated_at, "
            "e.control_id, e.message_type FROM deliveries d JOIN exchanges e ON e.id = d.exchange_id "
            "WHERE d.status = 'dead' ORDER BY d.seq LIMIT ?",
            (limit,),
        )
        total = self._one("SELECT COUNT(*) AS n FROM deliveries WHERE status = 'dead'")
        return rows, int(total["n"]) if total else 0

    def dead_delivery_ids(self, *, destination: str | None = None) -> list[str]:
        """Dead deliveries, oldest first (the ``deliveries_due`` index leads with status)."""
        sql = "SELECT id FROM deliveries WHERE status = 'dead'"
        args: list[Any] = []
        if destination:
            sql += " AND destination = ?"
            args.append(destination)
        return [r["id"] for r in self._all(sql + " ORDER BY seq", args)]

    def get_delivery(self, delivery_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM deliveries WHERE id = ?", (delivery_id,))

    def deliveries_for(self, exchange_id: str) -> list[dict[str, Any]]:
        return self._all(
            "SELECT id, exchange_id, destination, kind, status, attempts, next_attempt_at, last_error, "
            "unique_id, created_at, updated_at FROM deliveries WHERE exchange_id = ? ORDER BY seq",
            (exchange_id,),
        )

    def open_deliveries_for_exchanges(self, exchange_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not exchange_ids:
            return []
        marks = ", ".join("?" for _ in exchange_ids)
        return self._all(
            f"SELECT * FROM deliveries WHERE exchange_id IN ({marks}) "  # noqa: S608
            "AND status IN ('waiting', 'queued', 'failed')",
            list(exchange_ids),
        )

    def open_work(self) -> dict[str, tuple[int, str]]:
        """Per destination: how many deliveries are not yet done, and when the oldest was created."""
        return {
            r["destination"]: (r["n"], r["oldest"])
            for r in self._all(
                "SELECT destination, COUNT(*) AS n, MIN(created_at) AS oldest FROM deliveries "
                "WHERE status IN ('queued', 'in_flight', 'failed') GROUP BY destination"
            )
        }

    def attempt_outcomes_since(self, since: str) -> list[dict[str, Any]]:
        """Attempts finished since ``since`` by destination, outcome and minute (``attempts_finished`` index)."""
        return self._all(
            "SELECT d.destination AS destination, a.outcome AS outcome, substr(a.finished_at, 1, 16) AS minute, "
            "MAX(a.finished_at) AS finished_at, COUNT(*) AS n FROM attempts a JOIN deliveries d ON d.id = a.delivery_id "
            "WHERE a.finished_at >= ? GROUP BY d.destination, a.outcome, minute",
            (since,),
        )

    def last_success_since(self, since: str) -> dict[str, str]:
        """Per destination, the last attempt since ``since`` that reached it."""
        return {
            r["destination"]: r["at"]
            for r in self._all(
                "SELECT d.destination AS destination, MAX(a.finished_at) AS at FROM attempts a "
                "JOIN deliveries d ON d.id = a.delivery_id "
                "WHERE a.finished_at >= ? AND a.outcome IN ('delivered', 'found-existing') GROUP BY d.destination",
                (since,),
            )
        }

    def oldest_held_since(self) -> str | None:
        row = self._one("SELECT MIN(held_since) AS oldest FROM exchanges WHERE status = 'held'")
        return row["oldest"] if row else None

    def zam_trouble(self) -> dict[str, int]:
        """Business acknowledgements being retried (``failed``) or given up (``dead``)."""
        return {
            r["status"]: r["n"]
            for r in self._all(
                "SELECT status, COUNT(*) AS n FROM deliveries WHERE kind = 'zam' AND status IN ('failed', 'dead') "
                "GROUP BY status"
            )
        }

    def insert_attempt(self, rec: dict[str, Any]) -> int:
        cols = ", ".join(rec)
        marks = ", ".join("?" for _ in rec)
        cur = self.conn.execute(f"INSERT INTO attempts ({cols}) VALUES ({marks})", list(rec.values()))  # noqa: S608
        return int(cur.lastrowid or 0)

    def attempts_for(self, delivery_id: str, *, bodies: bool = False) -> list[dict[str, Any]]:
        cols = "*" if bodies else "id, delivery_id, number, started_at, finished_at, outcome, error, duration"
        return self._all(
            f"SELECT {cols} FROM attempts WHERE delivery_id = ? ORDER BY id",  # noqa: S608
            (delivery_id,),
        )

    # -- identities --------------------------------------------------------------------------
    def link_identities(self, a: str, b: str, at: str, exchange_id: str) -> None:
        """ADT^A24: both records stay, known as the same person (stored both ways)."""
        for x, y in ((a, b), (b, a)):
            self.conn.execute(
                "INSERT OR IGNORE INTO identity_links (ipp_key, linked_key, created_at, exchange_id) VALUES (?, ?, ?, ?)",
                (x, y, at, exchange_id),
            )

    def unlink_identities(self, a: str, b: str) -> int:
        """ADT^A37: undo an A24; returns how many link rows went."""
        cur = self.conn.execute(
            "DELETE FROM identity_links WHERE (ipp_key = ? AND linked_key = ?) OR (ipp_key = ? AND linked_key = ?)",
            (a, b, b, a),
        )
        return cur.rowcount

    def linked_identities(self, ipp_key: str) -> list[str]:
        return [r["linked_key"] for r in self._all(
            "SELECT linked_key FROM identity_links WHERE ipp_key = ? ORDER BY linked_key", (ipp_key,))]

    def upsert_encounter(self, rec: dict[str, Any]) -> None:
        cols = ", ".join(rec)
        marks = ", ".join("?" for _ in rec)
        updates = ", ".join(f"{k} = excluded.{k}" for k in rec if k != "visit_key")
        self.conn.execute(
            f"INSERT INTO encounters ({cols}) VALUES ({marks}) ON CONFLICT(visit_key) DO UPDATE SET {updates}",  # noqa: S608
            list(rec.values()),
        )

    def current_encounter(self, ipp_key: str) -> dict[str, Any] | None:
        """The patient's latest encounter that was not cancelled (A11 / A38 / A27)."""
        return self._one(
            "SELECT * FROM encounters WHERE ipp_key = ? AND cancelled = 0 ORDER BY updated_at DESC LIMIT 1",
            (ipp_key,),
        )

    def get_encounter(self, visit_key: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM encounters WHERE visit_key = ?", (visit_key,))

    def get_identity(self, ipp_key: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM identities WHERE ipp_key = ?", (ipp_key,))
        if row and row.get("traits"):
            row["traits"] = json.loads(row["traits"])
        return row

    def identities_with_ins(self, ins: str) -> list[dict[str, Any]]:
        rows = self._all("SELECT * FROM identities WHERE ins = ? AND merged_into IS NULL", (ins,))
        for r in rows:
            r["traits"] = json.loads(r["traits"] or "{}")
        return rows

    def upsert_identity(self, rec: dict[str, Any]) -> None:
        rec = dict(rec)
        if not isinstance(rec.get("traits"), str):
            rec["traits"] = json.dumps(rec.get("traits") or {}, ensure_ascii=False)
        cols = ", ".join(rec)
        marks = ", ".join("?" for _ in rec)
        updates = ", ".join(f"{k} = excluded.{k}" for k in rec if k != "ipp_key")
        self.conn.execute(
            f"INSERT INTO identities ({cols}) VALUES ({marks}) ON CONFLICT(ipp_key) DO UPDATE SET {updates}",  # noqa: S608
            list(rec.values()),
        )

    def list_identities(self) -> list[dict[str, Any]]:
        rows = self._all("SELECT * FROM identities ORDER BY updated_at DESC")
        for r in rows:
            r["traits"] = json.loads(r["traits"] or "{}")
        return rows

    # -- audit ----------------------------------------------------------------------------------
    @staticmethod
    def audit_hash(prev_hash: str, at: str, actor: str, action: str, target: str | None, detail: str) -> str:
        material = json.dumps([prev_hash, at, actor, action, target, detail], ensure_ascii=False)
        return hashlib.sha256(material.encode("utf-8")).hexdigest()

    def append_audit(self, *, at: str, actor: str, action: str, target: str | None, detail: dict[str, Any]) -> str:
        row = self.conn.execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        prev = row[0] if row else GENESIS_HASH
        detail_text = json.dumps(detail, ensure_ascii=False, sort_keys=True)
        digest = self.audit_hash(prev, at, actor, action, target, detail_text)
        self.conn.execute(
            "INSERT INTO audit (at, actor, action, target, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (at, actor, action, target, detail_text, prev, digest),
        )
        return digest

    def audit_rows(self) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM audit ORDER BY seq")

    # -- retention ---------------------------------------------------------------------------------
    def prune_batch(self, *, before: str, at: str, limit: int, errors_only: bool = False) -> int:
        """Retention for up to ``limit`` finished exchanges received before ``before``; how many it did.

        Their bodies go (raw bytes, CDA, Bundle, metadata, attempt request/response, ZAM payload);
        summaries, events and audit rows stay. With ``errors_only`` the exchanges that ended
        well (accepted, delivered, duplicate) go entirely, so only errors keep a summary.
        The ``exchanges_unpruned`` partial index keeps this cheap however much was pruned before.
        """
        ids = [
            r["id"]
            for r in self._all(
                "SELECT id FROM exchanges WHERE pruned_at IS NULL AND received_at < ? "
                # never held/queued/dead work: it may still be sent (a dead delivery can be retried)
                "AND status IN ('delivered', 'accepted', 'rejected', 'duplicate') ORDER BY received_at LIMIT ?",
                (before, limit),
            )
        ]
        if not ids:
            return 0
        marks = ", ".join("?" for _ in ids)
        in_deliveries = f"SELECT id FROM deliveries WHERE exchange_id IN ({marks})"  # noqa: S608
        self.conn.execute(
            f"UPDATE attempts SET request = NULL, response = NULL WHERE delivery_id IN ({in_deliveries})", ids  # noqa: S608
        )
        self.conn.execute(f"UPDATE deliveries SET payload = NULL WHERE exchange_id IN ({marks})", ids)  # noqa: S608
        self.conn.execute(
            f"UPDATE documents SET cda = NULL, xds = NULL, fhir = NULL WHERE exchange_id IN ({marks})", ids  # noqa: S608
        )
        self.conn.execute(
            f"UPDATE exchanges SET raw = NULL, pruned_at = ?, updated_at = ? WHERE id IN ({marks})",  # noqa: S608
            [at, at, *ids],
        )
        if errors_only:
            ok = ("accepted", "delivered", "duplicate")
            gone = [
                r["id"]
                for r in self._all(
                    f"SELECT id FROM exchanges WHERE id IN ({marks}) AND status IN (?, ?, ?)", [*ids, *ok]  # noqa: S608
                )
            ]
            if gone:
                g = ", ".join("?" for _ in gone)
                self.conn.execute(
                    f"DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE exchange_id IN ({g}))",  # noqa: S608
                    gone,
                )
                for table in ("deliveries", "documents", "events"):
                    self.conn.execute(f"DELETE FROM {table} WHERE exchange_id IN ({g})", gone)  # noqa: S608
                self.conn.execute(f"DELETE FROM exchanges WHERE id IN ({g})", gone)  # noqa: S608
        return len(ids)

    def incremental_vacuum(self, pages: int) -> int:
        """Give up to ``pages`` free pages back to the file system (journals created with auto_vacuum).

        The pragma frees one page per step and the sqlite3 module steps a statement without
        result columns only once, so each call frees one page (executescript would, but it
        commits the writer's transaction first). Returns the pages freed.
        """
        free = int(self.conn.execute("PRAGMA freelist_count").fetchone()[0])
        for _ in range(min(free, pages)):
            self.conn.execute("PRAGMA incremental_vacuum(1)")
        return min(free, pages)


# the first exchange received at or after a time, found through the received_at index; its seq
# bounds a range scan of (status, seq), (message_type, seq) or seq itself
_FIRST_SEQ_AT = "SELECT seq FROM exchanges WHERE received_at >= ? ORDER BY received_at LIMIT 1"
_INS = re.compile(r"\d{13}(\d{2})?")  # a NIR/NIA with or without its key: 13 or 15 digits
