"""The journal's transaction object: every read and write the gateway makes, as named SQL.

A ``Tx`` wraps one connection. SQLite writes only ever run inside the journal's writer
thread (see ``sqlite.py``), reads on a read-only connection; PostgreSQL runs each
transaction on a pooled connection from a thread (see ``postgres.py``). Rows come back as
dicts. Times are ISO 8601 UTC strings, which sort like the instants they name.

The SQL lives in ``sql/<dialect>/*.sql`` as named queries (see ``queries.py``), with named
parameters only. Nothing here builds SQL text except the exchange search, which joins
WHERE fragments that are themselves named queries of ``search.sql``.

Two dialects: SQLite (``sqlite3``) and PostgreSQL (a psycopg 3 connection with dict rows,
see ``postgres.py``). The differences are in the SQL files; the few Python must see are in
small helpers here (``_out``: timestamptz → ISO string in UTC, memoryview → bytes;
``_json``: jsonb arrives decoded; ``RETURNING id`` for lastrowid; row locks, advisory locks
and NOTIFY, which a single SQLite writer does not need).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.journal.audit_chain import GENESIS_HASH, audit_hash
from gateway.journal.bodies import full_bundle, stored_bundle
from gateway.journal.queries import Queries

__all__ = [
    "Tx", "EXCHANGE_SUMMARY_COLUMNS", "OPEN_DELIVERY_STATUSES", "DESTINATION_UNKNOWN", "EXCHANGE_FILTERS",
    "exchange_alternatives", "exchange_where", "iso", "like_escape",
]

EXCHANGE_SUMMARY_COLUMNS = (
    "id, seq, received_at, listener, peer, sha256, size, sender_app, sender_facility, control_id, "
    "message_type, version, charset, status, reason_code, reason, ack_code, duplicate_of, document_id, "
    "dmp_bound, ack_reception, held_since, pruned_at, updated_at"
)
OPEN_DELIVERY_STATUSES = ("waiting", "queued", "in_flight", "failed")
#: hold / last_error code of work whose destination is no longer configured
DESTINATION_UNKNOWN = "DESTINATION_UNKNOWN"

# the columns the explicit INSERT / UPDATE statements name, with the schema's defaults
_EXCHANGE_COLUMNS = (
    "id", "seq", "received_at", "listener", "peer", "raw", "sha256", "size", "sender_app", "sender_facility",
    "control_id", "message_type", "version", "charset", "status", "reason_code", "reason", "ack_code",
    "duplicate_of", "patient_ins", "patient_ipp", "document_id", "dmp_bound", "ack_reception", "held_since",
    "findings", "pruned_at", "updated_at",
)
_EXCHANGE_DEFAULTS = {"dmp_bound": 0, "ack_reception": 0}
_DELIVERY_COLUMNS = (
    "id", "seq", "exchange_id", "destination", "kind", "status", "attempts", "next_attempt_at", "claimed_by",
    "lease_until", "last_error", "patient_key", "unique_id", "doc_index", "action", "payload", "created_at",
    "updated_at",
)
_DELIVERY_DEFAULTS = {"attempts": 0}
_ATTEMPT_COLUMNS = (
    "id", "delivery_id", "number", "started_at", "finished_at", "outcome", "error", "request", "response", "duration",
)
_IDENTITY_COLUMNS = ("ipp_key", "ins", "ins_oid", "traits", "status", "qualified", "merged_into", "updated_at")
_IDENTITY_DEFAULTS = {"qualified": 0}
_ENCOUNTER_COLUMNS = ("visit_key", "ipp_key", "patient_class", "trigger", "cancelled", "updated_at", "exchange_id")
_ENCOUNTER_DEFAULTS = {"cancelled": 0}
# the field sets the gateway updates all the time, each with a statement naming only those
# columns (so SQLite touches only their indexes); any other set takes the generic statement
_EXCHANGE_UPDATES = {
    frozenset({"status"}): "update_exchange_status",
    frozenset({"status", "reason_code", "reason", "held_since"}): "update_exchange_hold",
    frozenset({"status", "reason_code", "reason"}): "update_exchange_outcome",
    frozenset({"status", "reason"}): "update_exchange_status_reason",
    frozenset({"reason_code", "reason"}): "update_exchange_reason",
    frozenset({"patient_ipp"}): "update_exchange_patient_ipp",
}
_DELIVERY_UPDATES = {
    frozenset({"status", "next_attempt_at"}): "update_delivery_due",
    frozenset({"status", "next_attempt_at", "last_error"}): "update_delivery_retry",
    frozenset({"status", "next_attempt_at", "last_error", "claimed_by", "lease_until"}): "update_delivery_outcome",
    frozenset({"status", "last_error", "claimed_by", "lease_until"}): "update_delivery_park",
    frozenset({"destination", "status", "attempts", "next_attempt_at", "last_error"}): "update_delivery_reroute",
}


def like_escape(value: str) -> str:
    """``value`` with LIKE's wildcards taken literally (use with ``ESCAPE '\\'``)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def iso(dt: datetime) -> str:
    """The journal's time format: ISO 8601 with microseconds, so strings sort like instants."""
    return dt.isoformat(timespec="microseconds")


def _out(row: Any) -> dict[str, Any]:
    """A row as the journal hands it on: times as ISO strings in UTC, bytes as bytes."""
    out = dict(row)
    for key, value in out.items():
        if isinstance(value, datetime):
            out[key] = iso(value.astimezone(UTC))
        elif isinstance(value, memoryview):
            out[key] = value.tobytes()
    return out


def _check_columns(table: str, rec: Mapping[str, Any], columns: Sequence[str]) -> None:
    for key in rec:
        if key not in columns:  # what SQLite said when the column list came from the dict
            raise sqlite3.OperationalError(f"table {table} has no column named {key}")


def _insert_params(
    table: str, rec: Mapping[str, Any], columns: Sequence[str], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """Every column of an explicit insert: the record's value, else the column's default."""
    _check_columns(table, rec, columns)
    return {c: rec[c] if c in rec else defaults.get(c) for c in columns}


def _event_params(exchange_id: str, at: str, stage: str, detail: dict[str, Any] | None) -> dict[str, Any]:
    return {"exchange_id": exchange_id, "at": at, "stage": stage, "detail": json.dumps(detail or {}, ensure_ascii=False)}


def _flags(rec: Mapping[str, Any], columns: Sequence[str]) -> dict[str, bool]:
    """``set_<column>``: whether the explicit update (or upsert) changes that column."""
    return {f"set_{c}": c in rec for c in columns}


# -- the exchange search: each filter's WHERE fragment of search.sql and its parameters ---------
_INS = re.compile(r"\d{13}(\d{2})?")  # a NIR/NIA with or without its key: 13 or 15 digits
_SenderPair = tuple[str | None, str | None]


def _where_message_type(message_type: str) -> tuple[str, dict[str, Any]]:
    if "*" in message_type:
        return "where_message_type_like", {"message_type_like": like_escape(message_type).replace("*", "%")}
    # exact: a prefix was resolved to its event types by exchange_alternatives
    return "where_message_type", {"message_type": message_type}


def _where_patient(patient: str) -> tuple[str, dict[str, Any]]:
    if "|" in patient:
        return "where_patient_ipp", {"patient": patient}
    if _INS.fullmatch(patient):
        return "where_patient_ins", {"patient": patient}
    return "where_patient_ipp_value", {"patient": patient}  # an IPP without its authority


def _where_control_or_id(control_or_id: str) -> tuple[str, dict[str, Any]]:
    low = control_or_id.lower()
    return "where_control_or_id", {"control_or_id": control_or_id, "id_low": low, "id_high": low + "\uffff"}


#: every filter of an exchange search (one case of ``exchange_alternatives``), in the order its
#: fragment joins the WHERE clause: keyword → its value's (search.sql fragment, parameters).
#: The memory journal evaluates the same fragments in Python, so both read this one table.
EXCHANGE_FILTERS: dict[str, Callable[[Any], tuple[str, dict[str, Any]]]] = {
    "status": lambda status: ("where_status", {"status": status}),
    "message_type": _where_message_type,
    "sender_pair": lambda pair: ("where_sender_pair", {"sender_app": pair[0], "sender_facility": pair[1]}),
    "control_id": lambda control_id: ("where_control_id", {"control_id": control_id}),
    # q=% must not match every row: the id prefix is a LIKE with its wildcards escaped
    "q": lambda q: ("where_q", {"q": q, "q_like": like_escape(q.lower()) + "%"}),
    "since": lambda since: ("where_since", {"since": since}),
    "until": lambda until: ("where_until", {"until": until}),
    "patient": _where_patient,
    "document": lambda document: ("where_document", {"document": document}),
    "control_or_id": _where_control_or_id,
}


def exchange_where(filters: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The names of the search.sql WHERE fragments for these filters, and their parameters.

    ``filters`` is one case of :func:`exchange_alternatives`; an empty value is no filter.
    """
    unknown = sorted(set(filters) - set(EXCHANGE_FILTERS))
    if unknown:
        raise TypeError(f"unknown exchange filter: {unknown[0]!r}")
    where: list[str] = []
    params: dict[str, Any] = {}
    for keyword, fragment_for in EXCHANGE_FILTERS.items():
        value = filters.get(keyword)
        if value:
            fragment, values = fragment_for(value)
            where.append(fragment)
            params.update(values)
    return where, params


def exchange_alternatives(
    filters: Mapping[str, Any],
    sender: str | None,
    *,
    types_with_prefix: Callable[[str], Iterable[str]],
    senders_named: Callable[[str], Iterable[_SenderPair]],
    nothing: str,
) -> list[dict[str, Any]]:
    """The filter as disjoint exact cases: a type prefix ("ADT") as each type it starts
    (``types_with_prefix``), a sender as each (MSH-3, MSH-4) pair it names (``APP|FACILITY``,
    or an application or a facility: ``senders_named``). ``nothing`` matches no row."""
    rest = dict(filters)
    t = rest.pop("message_type", None)
    types: list[str | None] = [t]
    if t and "*" not in t and "^" not in t:
        types = list(types_with_prefix(t)) or [nothing]
    pairs: list[_SenderPair | None] = [None]
    if sender and "|" in sender:
        app, _, facility = sender.partition("|")
        pairs = [(app, facility)]
    elif sender:
        pairs = list(senders_named(sender)) or [(nothing, nothing)]
    return [dict(rest, message_type=t, sender_pair=p) for t in types for p in pairs]


class Tx:
    """Named operations on the journal tables."""

    def __init__(self, conn: Any, queries: Queries | None = None) -> None:
        self._conn = conn
        self._q = queries or Queries.load("sqlite" if isinstance(conn, sqlite3.Connection) else "postgres")
        self._pg = self._q.dialect == "postgres"
        # matches no message type or sender (PostgreSQL text cannot hold NUL)
        self._nothing = "\ufffe\ufffenone" if self._pg else "\x00none"

    @property
    def dialect(self) -> str:
        return self._q.dialect

    @property
    def conn(self) -> Any:
        """The connection, for the backend's own transaction control (``sqlite.py``: BEGIN / COMMIT).

        Everything else goes through a named method: no SQL outside ``gateway/journal``.
        """
        return self._conn

    # -- generic ------------------------------------------------------------------
    def _exec(self, name: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._conn.execute(self._q[name], params or {})

    def _one(self, name: str, params: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        row = self._exec(name, params).fetchone()
        return _out(row) if row is not None else None

    def _all(self, name: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return [_out(r) for r in self._exec(name, params).fetchall()]

    def _json(self, value: Any) -> Any:
        """A JSON column's value: jsonb comes decoded from PostgreSQL, text from SQLite."""
        if self._pg or value is None or not isinstance(value, str | bytes):
            return value
        return json.loads(value)

    def _update(
        self, table: str, row_id: str, fields: dict[str, Any], columns: Sequence[str],
        specific: Mapping[frozenset[str], str], generic: str,
    ) -> None:
        """``fields`` (``updated_at`` included) of row ``row_id``: the statement for exactly these
        columns if there is one, else the generic one (every column, ``set_<column>`` flags)."""
        _check_columns(table, fields, columns[1:])  # the id is not updatable
        name = specific.get(frozenset(fields) - {"updated_at"})
        if name is None:
            name = generic
            params = {c: fields.get(c) for c in columns} | _flags(fields, columns)
        else:
            params = dict(fields)
        params["id"] = row_id
        self._exec(name, params)

    def _next_seq(self, name: str) -> int:
        row = self._one(name)
        assert row is not None
        return int(row["seq"])

    # -- exchanges ------------------------------------------------------------------
    def insert_exchange(self, rec: dict[str, Any]) -> None:
        rec = dict(rec)
        if "seq" not in rec and not self._pg:  # PostgreSQL: the identity sequence, in the INSERT
            rec["seq"] = self._next_seq("next_exchange_seq")
        rec.setdefault("updated_at", rec["received_at"])
        if rec.get("findings") is not None and not isinstance(rec["findings"], str):
            rec["findings"] = json.dumps(rec["findings"], ensure_ascii=False)
        self._exec("insert_exchange", _insert_params("exchanges", rec, _EXCHANGE_COLUMNS, _EXCHANGE_DEFAULTS))

    def update_exchange(self, exchange_id: str, at: str, **fields: Any) -> None:
        if fields.get("findings") is not None and not isinstance(fields["findings"], str):
            fields["findings"] = json.dumps(fields["findings"], ensure_ascii=False)
        fields["updated_at"] = at
        self._update("exchanges", exchange_id, fields, _EXCHANGE_COLUMNS, _EXCHANGE_UPDATES, "update_exchange")

    def find_duplicate(self, sender_app: str, sender_facility: str, control_id: str, sha256: str) -> str | None:
        row = self._one(
            "find_duplicate",
            {"sender_app": sender_app, "sender_facility": sender_facility, "control_id": control_id, "sha256": sha256},
        )
        return str(row["id"]) if row else None

    def get_exchange(self, exchange_id: str, *, bodies: bool = False) -> dict[str, Any] | None:
        exact, by_prefix = (
            ("get_exchange_with_bodies", "get_exchange_with_bodies_by_prefix") if bodies
            else ("get_exchange", "get_exchange_by_prefix")
        )
        row = self._one(exact, {"id": exchange_id})
        if row is None:
            # let operators use a unique prefix of the id
            # ids are lower-case UUIDs; what an operator types may not be (SQLite's LIKE ignores
            # case, PostgreSQL's does not)
            rows = self._all(by_prefix, {"id_like": like_escape(exchange_id.lower()) + "%"})
            row = rows[0] if len(rows) == 1 else None
        if row is None:
            return None
        if row.get("findings"):
            row["findings"] = self._json(row["findings"])
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

    def _alternatives(self, filters: Mapping[str, Any], sender: str | None) -> list[dict[str, Any]]:
        """The filter as disjoint exact cases, each of which an index serves in seq order."""
        return exchange_alternatives(filters, sender, types_with_prefix=self._types_with_prefix,
                                     senders_named=self._sender_pairs, nothing=self._nothing)

    def _search(self, head: str, fragments: list[str], tail: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """``head [WHERE f1 AND f2 ...] tail``: every piece a named query of search.sql."""
        parts = [self._q[head]]
        if fragments:
            parts.append("WHERE " + " AND ".join(self._q[f] for f in fragments))
        parts.append(self._q[tail])
        return [_out(r) for r in self._conn.execute("\n".join(parts), params).fetchall()]

    def _page(self, filters: dict[str, Any], before_seq: int | None, limit: int, offset: int) -> list[dict[str, Any]]:
        fragments, params = exchange_where(filters)
        if before_seq is not None:
            fragments.append("where_before_seq")
            params["before_seq"] = before_seq
        return self._search("page_head", fragments, "page_tail", params | {"limit": limit, "offset": offset})

    def _sender_pairs(self, sender: str) -> list[tuple[str | None, str | None]]:
        """The (MSH-3, MSH-4) pairs where ``sender`` is the application or the facility."""
        out: list[tuple[str | None, str | None]] = []
        # distinct values by skip-scans of exchanges_sender_seq, one index seek per value
        for app in [r["x"] for r in self._all("distinct_sender_apps")]:
            for facility in [r["x"] for r in self._all("distinct_sender_facilities", {"sender_app": app})]:
                if app == sender or facility == sender:
                    out.append((app, facility))
        return out

    def _types_with_prefix(self, prefix: str) -> list[str]:
        """The distinct message types starting with ``prefix``: an index skip-scan, a few lookups per type."""
        return [r["x"] for r in self._all("types_with_prefix", {"low": prefix, "high": prefix + "\uffff"})]

    def count_exchanges(self, *, cap: int = 10_000, **filters: Any) -> tuple[int, bool]:
        """How many exchanges match, counting at most ``cap`` (so a count stays cheap at any size).

        Returns ``(count, capped)``: ``capped`` is true when there are more than ``cap``.
        """
        sender = filters.pop("sender", None)
        n = 0
        for alt in self._alternatives(filters, sender):  # disjoint cases: their counts add up
            fragments, params = exchange_where(alt)
            rows = self._search("count_head", fragments, "count_tail", params | {"cap": cap + 1 - n})
            n += int(rows[0]["n"]) if rows else 0
            if n > cap:
                break
        return min(n, cap), n > cap

    def count_exchanges_by_status(self) -> dict[str, int]:
        return {r["status"]: r["n"] for r in self._all("count_exchanges_by_status")}

    def exchanges_for_patient(
        self, *, ins: str | None, ipp: str | None, statuses: Iterable[str]
    ) -> list[dict[str, Any]]:
        if not ins and not ipp:
            return []
        return self._all(
            "exchanges_for_patient",
            {"statuses": json.dumps(list(statuses)), "ins": ins or None, "ipp": ipp or None},
        )

    def waiting_for_ins(self, ins: str) -> list[dict[str, Any]]:
        """Held exchanges waiting for ``ins`` to be qualified (``INS_NOT_QUALIFIED``), oldest first."""
        return self._all("waiting_for_ins", {"ins": ins})

    def held_exchanges(self) -> list[dict[str, Any]]:
        return self._all("held_exchanges")

    def exchanges_per_minute(self, since: str) -> dict[str, int]:
        """Exchanges received since ``since`` per minute (``YYYY-MM-DDTHH:MM``), among the latest 500,000."""
        return {r["minute"]: r["n"] for r in self._all("exchanges_per_minute", {"since": since})}

    def exchange_bodies(self, exchange_id: str) -> dict[str, Any] | None:
        """Raw bytes and listener of an exchange, with its first document's CDA, Bundle and metadata."""
        row = self._one("exchange_raw", {"id": exchange_id})
        if row is None:
            return None
        doc = self.get_document(exchange_id, 1) or {}
        row.update(document=doc.get("cda"), fhir=doc.get("fhir"), xds=doc.get("xds"))
        return row

    # -- documents -------------------------------------------------------------------------
    def insert_document(self, exchange_id: str, idx: int, unique_id: str, action: str, cda: bytes,
                        xds: dict[str, Any], fhir: dict[str, Any] | None) -> None:
        self._exec("insert_document", {
            "exchange_id": exchange_id, "idx": idx, "unique_id": unique_id, "action": action, "cda": cda,
            "xds": json.dumps(xds, ensure_ascii=False),
            "fhir": json.dumps(stored_bundle(fhir, cda), ensure_ascii=False) if fhir is not None else None,
        })

    def get_document(self, exchange_id: str, idx: int) -> dict[str, Any] | None:
        row = self._one("get_document", {"exchange_id": exchange_id, "idx": idx})
        if row:
            for key in ("xds", "fhir"):
                row[key] = self._json(row[key]) if row.get(key) else None
            if row["fhir"] is not None:
                row["fhir"] = full_bundle(row["fhir"], row.get("cda"))
        return row

    def documents_for(self, exchange_id: str) -> list[dict[str, Any]]:
        return self._all("documents_for", {"exchange_id": exchange_id})

    # -- events -------------------------------------------------------------------------
    def probe(self, at: str) -> None:
        """Rewrite the readiness probe row: proves that a transaction can still commit."""
        self._exec("probe", {"at": at})

    def add_event(self, exchange_id: str, at: str, stage: str, detail: dict[str, Any] | None = None) -> None:
        self._exec("add_event", _event_params(exchange_id, at, stage, detail))

    def add_events(self, events: Sequence[tuple[str, str, str, dict[str, Any] | None]]) -> None:
        """Several events (exchange id, at, stage, detail) in one ``executemany``."""
        if events:
            run = self._conn.cursor().executemany if self._pg else self._conn.executemany  # psycopg: cursors only
            run(self._q["add_event"], [_event_params(*e) for e in events])

    def events(self, exchange_id: str) -> list[dict[str, Any]]:
        rows = self._all("events", {"exchange_id": exchange_id})
        for r in rows:
            r["detail"] = self._json(r["detail"] or "{}")
        return rows

    # -- deliveries ------------------------------------------------------------------------
    def insert_delivery(self, rec: dict[str, Any]) -> None:
        rec = dict(rec)
        if "seq" not in rec and not self._pg:  # PostgreSQL: the identity sequence, in the INSERT
            rec["seq"] = self._next_seq("next_delivery_seq")
        rec.setdefault("updated_at", rec["created_at"])
        self._exec("insert_delivery", _insert_params("deliveries", rec, _DELIVERY_COLUMNS, _DELIVERY_DEFAULTS))

    def outbound_by_control_id(self, control_id: str) -> dict[str, Any] | None:
        """The ZAM or application ACK we sent with this MSH-10 (kept in ``unique_id``)."""
        return self._one("outbound_by_control_id", {"control_id": control_id})

    def zam_exists(self, unique_id: str) -> bool:
        """Whether a ZAM delivery with this ``unique_id`` was already recorded (sent or to send)."""
        return self._exec("zam_exists", {"unique_id": unique_id}).fetchone() is not None

    def claim_due(self, *, now: str, worker: str, lease_until: str, limit: int) -> list[dict[str, Any]]:
        """Claim due deliveries, oldest first, at most one in flight per (destination, patient).

        Per-patient ordering: a delivery is due only when no earlier delivery of the same
        patient to the same destination is still open, so a replacement or a deletion
        never overtakes the submission it refers to. PostgreSQL claims in one statement
        with ``FOR UPDATE SKIP LOCKED`` (instances claim side by side); in SQLite the
        single writer thread serialises claims.
        """
        if self._pg:
            return self._all("claim_due", {"now": now, "worker": worker, "lease_until": lease_until, "limit": limit})
        rows = self._all("due_delivery_ids", {"now": now, "limit": limit})
        claimed: list[dict[str, Any]] = []
        for r in rows:
            self._exec("claim_delivery", {"worker": worker, "lease_until": lease_until, "now": now, "id": r["id"]})
            row = self._one("get_delivery", {"id": r["id"]})
            assert row is not None
            claimed.append(row)
        return claimed

    def recover_in_flight(self, *, now: str, expired_only: bool = False, worker: str | None = None) -> int:
        """Put in-flight deliveries back in the queue (after a crash or an expired lease).

        Their outcome is unknown, so the next attempt asks the destination first.
        """
        if worker is not None:
            return self._exec("recover_worker_in_flight", {"now": now, "worker": worker}).rowcount
        cur = self._exec("recover_expired_in_flight" if expired_only else "recover_in_flight", {"now": now})
        return cur.rowcount

    def extend_leases(self, worker: str, ids: Sequence[str], until: str) -> int:
        """Heartbeat: the leases of ``ids`` that ``worker`` still holds now run until ``until``."""
        return self._exec("extend_leases", {"worker": worker, "ids": json.dumps(list(ids)), "until": until}).rowcount

    def hold_lease(self, name: str, holder: str, now: str, until: str) -> bool:
        """Take the lease ``name`` (free or run out) or renew it (ours); False while another holds it."""
        cur = self._exec("hold_lease", {"name": name, "holder": holder, "now": now, "until": until})
        return cur.rowcount > 0

    def lock_key(self, key: str) -> None:
        """Serialise transactions about ``key`` (a patient, a sender's control id). One SQLite
        writer: nothing to do; PostgreSQL: a transaction-scoped advisory lock."""
        if self._pg:
            self._exec("lock_key", {"key": key})

    def lock_exchange(self, exchange_id: str) -> None:
        """Serialise outcomes of one exchange. One SQLite writer: nothing to do; PostgreSQL: its row lock."""
        if self._pg:
            self._exec("lock_exchange", {"id": exchange_id})

    def lock_delivery(self, delivery_id: str) -> None:
        """Wait for, then hold, the delivery's row (a claim by another instance commits first)."""
        if self._pg:
            self._exec("lock_delivery", {"id": delivery_id})

    def notify_work(self) -> None:
        """Tell other instances, at commit, that deliveries may be due. One SQLite instance:
        nothing to do; PostgreSQL: ``pg_notify('relais_work')``, delivered at commit."""
        if self._pg:
            self._exec("notify_work")

    def server_now(self) -> datetime:
        """The database's clock (PostgreSQL: ``now()``, the transaction's start), for leases."""
        if not self._pg:
            return datetime.now(UTC)
        row = self._exec("server_now").fetchone()
        value = row["now"]
        assert isinstance(value, datetime)
        return value.astimezone(UTC)

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
        rows = self._all(
            "parked_for_destinations", {"parked_like": f"{DESTINATION_UNKNOWN}:%", "names": json.dumps(list(names))}
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
        rows = self._all("reroute_candidates", {"source": source})
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
        self._update("deliveries", delivery_id, fields, _DELIVERY_COLUMNS, _DELIVERY_UPDATES, "update_delivery")

    def queue_waiting_deliveries(self, exchange_id: str, at: str) -> None:
        """The exchange's deliveries held by the identity gate (``waiting``) are due now."""
        self._exec("queue_waiting_deliveries", {"exchange_id": exchange_id, "at": at})

    def kill_waiting_deliveries(self, exchange_id: str, reason: str, at: str) -> None:
        """The exchange's held deliveries give up (``dead``, ``reason`` as their last error)."""
        self._exec("kill_waiting_deliveries", {"exchange_id": exchange_id, "reason": reason, "at": at})

    def hold_open_document_deliveries(self, exchange_id: str, at: str) -> None:
        """The exchange's queued or failed document deliveries wait again (an in-flight one cannot be recalled)."""
        self._exec("hold_open_document_deliveries", {"exchange_id": exchange_id, "at": at})

    def rekey_open_deliveries(self, old_key: str, new_key: str, at: str) -> None:
        """Unfinished deliveries ordered under patient ``old_key`` move to ``new_key`` (ADT^A40 merge)."""
        self._exec("rekey_open_deliveries", {"old_key": old_key, "new_key": new_key, "at": at})

    def held_worklist(self, limit: int = 20) -> tuple[list[dict[str, Any]], int]:
        """The oldest held exchanges (first ``limit``) and how many are held."""
        rows = self._all("held_worklist", {"limit": limit})
        total = self._one("held_count")
        return rows, int(total["n"]) if total else 0

    def dead_worklist(self, limit: int = 20) -> tuple[list[dict[str, Any]], int]:
        """The oldest dead deliveries (first ``limit``) with their exchange, and how many are dead."""
        rows = self._all("dead_worklist", {"limit": limit})
        total = self._one("dead_count")
        return rows, int(total["n"]) if total else 0

    def dead_delivery_ids(self, *, destination: str | None = None) -> list[str]:
        """Dead deliveries, oldest first (the ``deliveries_due`` index leads with status)."""
        if destination:
            rows = self._all("dead_delivery_ids_for_destination", {"destination": destination})
        else:
            rows = self._all("dead_delivery_ids")
        return [r["id"] for r in rows]

    def get_delivery(self, delivery_id: str) -> dict[str, Any] | None:
        return self._one("get_delivery", {"id": delivery_id})

    def deliveries_for(self, exchange_id: str) -> list[dict[str, Any]]:
        return self._all("deliveries_for", {"exchange_id": exchange_id})

    def open_deliveries_for_exchanges(self, exchange_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not exchange_ids:
            return []
        return self._all("open_deliveries_for_exchanges", {"exchange_ids": json.dumps(list(exchange_ids))})

    def open_work(self) -> dict[str, tuple[int, str]]:
        """Per destination: how many deliveries are not yet done, and when the oldest was created."""
        return {r["destination"]: (r["n"], r["oldest"]) for r in self._all("open_work")}

    def attempt_outcomes_since(self, since: str) -> list[dict[str, Any]]:
        """Attempts finished since ``since`` by destination, outcome and minute (``attempts_finished`` index)."""
        return self._all("attempt_outcomes_since", {"since": since})

    def last_success_since(self, since: str) -> dict[str, str]:
        """Per destination, the last attempt since ``since`` that reached it."""
        return {r["destination"]: r["at"] for r in self._all("last_success_since", {"since": since})}

    def oldest_held_since(self) -> str | None:
        row = self._one("oldest_held_since")
        return row["oldest"] if row else None

    def zam_trouble(self) -> dict[str, int]:
        """Business acknowledgements being retried (``failed``) or given up (``dead``)."""
        return {r["status"]: r["n"] for r in self._all("zam_trouble")}

    def insert_attempt(self, rec: dict[str, Any]) -> int:
        cur = self._exec("insert_attempt", _insert_params("attempts", rec, _ATTEMPT_COLUMNS, {}))
        if self._pg:  # RETURNING id
            return int(cur.fetchone()["id"])
        return int(cur.lastrowid or 0)

    def attempts_for(self, delivery_id: str, *, bodies: bool = False) -> list[dict[str, Any]]:
        return self._all("attempts_with_bodies_for" if bodies else "attempts_for", {"delivery_id": delivery_id})

    # -- identities --------------------------------------------------------------------------
    def link_identities(self, a: str, b: str, at: str, exchange_id: str) -> None:
        """ADT^A24: both records stay, known as the same person (stored both ways)."""
        for x, y in ((a, b), (b, a)):
            self._exec("link_identity", {"ipp_key": x, "linked_key": y, "at": at, "exchange_id": exchange_id})

    def unlink_identities(self, a: str, b: str) -> int:
        """ADT^A37: undo an A24; returns how many link rows went."""
        return self._exec("unlink_identities", {"a": a, "b": b}).rowcount

    def linked_identities(self, ipp_key: str) -> list[str]:
        return [r["linked_key"] for r in self._all("linked_identities", {"ipp_key": ipp_key})]

    def merge_identity(self, old_key: str, into_key: str, at: str) -> None:
        """ADT^A40: the record ``old_key`` is merged into ``into_key`` (kept, pointing at it)."""
        self._exec("merge_identity", {"old_key": old_key, "into_key": into_key, "at": at})

    def upsert_encounter(self, rec: dict[str, Any]) -> None:
        params = _insert_params("encounters", rec, _ENCOUNTER_COLUMNS, _ENCOUNTER_DEFAULTS)
        self._exec("upsert_encounter", params | _flags(rec, _ENCOUNTER_COLUMNS))

    def current_encounter(self, ipp_key: str) -> dict[str, Any] | None:
        """The patient's latest encounter that was not cancelled (A11 / A38 / A27)."""
        return self._one("current_encounter", {"ipp_key": ipp_key})

    def get_encounter(self, visit_key: str) -> dict[str, Any] | None:
        return self._one("get_encounter", {"visit_key": visit_key})

    def get_identity(self, ipp_key: str) -> dict[str, Any] | None:
        row = self._one("get_identity", {"ipp_key": ipp_key})
        if row and row.get("traits"):
            row["traits"] = self._json(row["traits"])
        return row

    def identities_with_ins(self, ins: str) -> list[dict[str, Any]]:
        rows = self._all("identities_with_ins", {"ins": ins})
        for r in rows:
            r["traits"] = self._json(r["traits"] or "{}")
        return rows

    def upsert_identity(self, rec: dict[str, Any]) -> None:
        rec = dict(rec)
        if not isinstance(rec.get("traits"), str):
            rec["traits"] = json.dumps(rec.get("traits") or {}, ensure_ascii=False)
        params = _insert_params("identities", rec, _IDENTITY_COLUMNS, _IDENTITY_DEFAULTS)
        self._exec("upsert_identity", params | _flags(rec, _IDENTITY_COLUMNS))

    def list_identities(self) -> list[dict[str, Any]]:
        rows = self._all("list_identities")
        for r in rows:
            r["traits"] = self._json(r["traits"] or "{}")
        return rows

    # -- audit ----------------------------------------------------------------------------------
    audit_hash = staticmethod(audit_hash)

    def append_audit(self, *, at: str, actor: str, action: str, target: str | None, detail: dict[str, Any]) -> str:
        # instances append one after the other: each reads the last hash once the previous
        # appender committed (a row lock on the last row would hand back the row it waited for)
        self.lock_key("audit-chain")
        row = self._one("last_audit_hash")
        prev = row["hash"] if row else GENESIS_HASH
        detail_text = json.dumps(detail, ensure_ascii=False, sort_keys=True)
        digest = self.audit_hash(prev, at, actor, action, target, detail_text)
        self._exec("insert_audit", {"at": at, "actor": actor, "action": action, "target": target,
                                    "detail": detail_text, "prev_hash": prev, "hash": digest})
        return digest

    def audit_rows(self) -> list[dict[str, Any]]:
        return self._all("audit_rows")

    # -- retention ---------------------------------------------------------------------------------
    def prune_batch(self, *, before: str, at: str, limit: int, errors_only: bool = False) -> int:
        """Retention for up to ``limit`` finished exchanges received before ``before``; how many it did.

        Their bodies go (raw bytes, CDA, Bundle, metadata, attempt request/response, ZAM payload);
        summaries, events and audit rows stay. With ``errors_only`` the exchanges that ended
        well (accepted, delivered, duplicate) go entirely, so only errors keep a summary.
        The ``exchanges_unpruned`` partial index keeps this cheap however much was pruned before.
        """
        ids = [r["id"] for r in self._all("prune_candidates", {"before": before, "limit": limit})]
        if not ids:
            return 0
        batch = {"ids": json.dumps(ids)}
        self._exec("prune_attempt_bodies", batch)
        self._exec("prune_delivery_payloads", batch)
        self._exec("prune_document_bodies", batch)
        self._exec("prune_exchange_raw", batch | {"at": at})
        if errors_only:
            gone = [r["id"] for r in self._all("ended_well_among", batch)]
            if gone:
                these = {"ids": json.dumps(gone)}
                for name in ("delete_attempts_of", "delete_deliveries_of", "delete_documents_of",
                             "delete_events_of", "delete_exchanges"):
                    self._exec(name, these)
        return len(ids)

    def incremental_vacuum(self, pages: int) -> int:
        """Give up to ``pages`` free pages back to the file system (journals created with auto_vacuum).

        The pragma frees one page per step and the sqlite3 module steps a statement without
        result columns only once, so each call frees one page (executescript would, but it
        commits the writer's transaction first). Returns the pages freed.
        """
        row = self._one("freelist_count")
        free = int(row["freelist_count"]) if row else 0
        for _ in range(min(free, pages)):
            self._exec("incremental_vacuum_step")
        return min(free, pages)

    # -- PostgreSQL body partitions (see sql/migrations/postgres/0001_initial.sql) ---------------------
    def ensure_body_partitions(self, from_month: str, months: int) -> int:
        """Monthly partitions of the body tables for ``months`` months from ``from_month``; how many were made."""
        row = self._one("ensure_body_partitions", {"from_month": from_month, "months": months})
        return int(row["made"]) if row else 0

    def drop_body_partitions(self, before: str) -> int:
        """Drop the months of bodies wholly before ``before`` that no unpruned exchange uses; how many went."""
        row = self._one("drop_body_partitions", {"before": before})
        return int(row["dropped"]) if row else 0

