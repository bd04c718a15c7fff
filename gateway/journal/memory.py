"""The journal in memory: the :class:`~gateway.journal.session.Session` in plain Python, for tests and tools.

:class:`MemorySession` answers every named query of :class:`gateway.journal.tx.Tx` over the
dicts of a :class:`MemoryStore`, with the SQL's semantics: the same columns in each row, the
same ordering, the same counts, SQL ``NULL`` rules (``=`` never matches ``NULL``, ``LIKE`` is
case-insensitive for ASCII), SQLite's column affinities (a ``True`` stored in an ``INTEGER``
column reads back as ``1``), and JSON columns kept as JSON text exactly as ``Tx`` writes them
(so a row read back is decoded the same way, and every read is a fresh copy).

:class:`MemoryJournal` runs one write at a time under a lock; a write is atomic: the store
keeps an undo log of every row it changes, and a function that raises is rolled back to the
exact state before it (row order included). Reads take the same lock, so they see committed
data only. Nothing is durable: ``memory://`` is for ``relais check``-like tools and tests.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any, TypeVar

from gateway.errors import JournalError
from gateway.journal.bodies import full_bundle, stored_bundle
from gateway.journal.engine import SessionJournal
from gateway.journal.migrate import SchemaStatus, available, plan
from gateway.journal.rows import JournalStats
from gateway.journal.session import Session
from gateway.journal.tx import (
    DESTINATION_UNKNOWN,
    GENESIS_HASH,
    Tx,
    exchange_alternatives,
    exchange_where,
    like_escape,
)
from gateway.ports import Clock

__all__ = ["MemoryStore", "MemorySession", "MemoryJournal", "latest_schema"]

T = TypeVar("T")

# -- the schema (0001 + 0002): column, affinity, NOT NULL -----------------------------------------
_SCHEMA: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "exchanges": (
        ("id", "TEXT", False), ("seq", "INTEGER", True), ("received_at", "TEXT", True),
        ("listener", "TEXT", True), ("peer", "TEXT", False), ("raw", "BLOB", False), ("sha256", "TEXT", True),
        ("size", "INTEGER", True), ("sender_app", "TEXT", False), ("sender_facility", "TEXT", False),
        ("control_id", "TEXT", False), ("message_type", "TEXT", False), ("version", "TEXT", False),
        ("charset", "TEXT", False), ("status", "TEXT", True), ("reason_code", "TEXT", False),
        ("reason", "TEXT", False), ("ack_code", "TEXT", False), ("duplicate_of", "TEXT", False),
        ("patient_ins", "TEXT", False), ("patient_ipp", "TEXT", False), ("document_id", "TEXT", False),
        ("dmp_bound", "INTEGER", True), ("ack_reception", "INTEGER", True), ("held_since", "TEXT", False),
        ("findings", "TEXT", False), ("pruned_at", "TEXT", False), ("updated_at", "TEXT", True),
    ),
    "events": (
        ("id", "INTEGER", False), ("exchange_id", "TEXT", True), ("at", "TEXT", True), ("stage", "TEXT", True),
        ("detail", "TEXT", False),
    ),
    "deliveries": (
        ("id", "TEXT", False), ("seq", "INTEGER", True), ("exchange_id", "TEXT", True),
        ("destination", "TEXT", True), ("kind", "TEXT", True), ("status", "TEXT", True),
        ("attempts", "INTEGER", True), ("next_attempt_at", "TEXT", True), ("claimed_by", "TEXT", False),
        ("lease_until", "TEXT", False), ("last_error", "TEXT", False), ("patient_key", "TEXT", False),
        ("unique_id", "TEXT", False), ("doc_index", "INTEGER", False), ("action", "TEXT", False),
        ("payload", "BLOB", False), ("created_at", "TEXT", True), ("updated_at", "TEXT", True),
    ),
    "documents": (
        ("exchange_id", "TEXT", True), ("idx", "INTEGER", True), ("unique_id", "TEXT", True),
        ("action", "TEXT", True), ("cda", "BLOB", False), ("xds", "TEXT", False), ("fhir", "TEXT", False),
    ),
    "attempts": (
        ("id", "INTEGER", False), ("delivery_id", "TEXT", True), ("number", "INTEGER", True),
        ("started_at", "TEXT", True), ("finished_at", "TEXT", False), ("outcome", "TEXT", False),
        ("error", "TEXT", False), ("request", "TEXT", False), ("response", "TEXT", False),
        ("duration", "REAL", False),
    ),
    "identities": (
        ("ipp_key", "TEXT", False), ("ins", "TEXT", False), ("ins_oid", "TEXT", False), ("traits", "TEXT", False),
        ("status", "TEXT", False), ("qualified", "INTEGER", True), ("merged_into", "TEXT", False),
        ("updated_at", "TEXT", True),
    ),
    "identity_links": (
        ("ipp_key", "TEXT", True), ("linked_key", "TEXT", True), ("created_at", "TEXT", True),
        ("exchange_id", "TEXT", True),
    ),
    "encounters": (
        ("visit_key", "TEXT", False), ("ipp_key", "TEXT", False), ("patient_class", "TEXT", False),
        ("trigger", "TEXT", True), ("cancelled", "INTEGER", True), ("updated_at", "TEXT", True),
        ("exchange_id", "TEXT", True),
    ),
    "audit": (
        ("seq", "INTEGER", False), ("at", "TEXT", True), ("actor", "TEXT", True), ("action", "TEXT", True),
        ("target", "TEXT", False), ("detail", "TEXT", False), ("prev_hash", "TEXT", True), ("hash", "TEXT", True),
    ),
    "leases": (
        ("name", "TEXT", False), ("holder", "TEXT", True), ("token", "INTEGER", True),
        ("expires_at", "TEXT", True),
    ),
}
_COLUMNS = {table: tuple(c for c, _a, _n in cols) for table, cols in _SCHEMA.items()}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "exchanges": {"dmp_bound": 0, "ack_reception": 0},
    "deliveries": {"attempts": 0},
    "identities": {"qualified": 0},
    "encounters": {"cancelled": 0},
}
_UPDATABLE = {"exchanges": _COLUMNS["exchanges"][1:], "deliveries": _COLUMNS["deliveries"][1:]}
#: the tables whose key is an INTEGER PRIMARY KEY AUTOINCREMENT column
_AUTOINCREMENT = {"events": "id", "attempts": "id", "audit": "seq"}

_EXCHANGE_SUMMARY = (
    "id", "seq", "received_at", "listener", "peer", "sha256", "size", "sender_app", "sender_facility", "control_id",
    "message_type", "version", "charset", "status", "reason_code", "reason", "ack_code", "duplicate_of",
    "document_id", "dmp_bound", "ack_reception", "held_since", "pruned_at", "updated_at",
)
_EXCHANGE_ONE = _EXCHANGE_SUMMARY + ("findings", "patient_ins", "patient_ipp")
_DELIVERIES_FOR = ("id", "exchange_id", "destination", "kind", "status", "attempts", "next_attempt_at",
                   "last_error", "unique_id", "created_at", "updated_at")
_ATTEMPT_SUMMARY = ("id", "delivery_id", "number", "started_at", "finished_at", "outcome", "error", "duration")
_HELD = ("id", "control_id", "message_type", "reason_code", "reason", "held_since", "patient_ins", "patient_ipp")
_HELD_WORKLIST = ("id", "control_id", "message_type", "reason_code", "reason", "held_since")
_FOR_PATIENT = ("id", "status", "reason_code", "patient_ins", "patient_ipp", "held_since", "dmp_bound")

_OPEN = ("waiting", "queued", "in_flight", "failed")
_INTERRUPTED = "outcome unknown: interrupted in flight"
_MAX_INT = 9223372036854775807
_MISSING: Any = object()


# -- SQL value semantics ----------------------------------------------------------------------------
_INT_TEXT = re.compile(r"\s*[+-]?\d+\s*")
_REAL_TEXT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _as_text(value: Any) -> Any:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return value


def _as_integer(value: Any) -> Any:
    if isinstance(value, str):
        if _INT_TEXT.fullmatch(value):
            n = int(value)
            return n if -_MAX_INT - 1 <= n <= _MAX_INT else float(n)
        if not _REAL_TEXT.fullmatch(value):
            return value
        value = float(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


def _as_real(value: Any) -> Any:
    if isinstance(value, str) and _REAL_TEXT.fullmatch(value):
        return float(value)
    if isinstance(value, int):
        return float(value)
    return value


#: the schema's column affinities: how each converts a value it is given (BLOB keeps it as it is)
_AFFINITIES: dict[str, Callable[[Any], Any]] = {
    "TEXT": _as_text, "INTEGER": _as_integer, "REAL": _as_real, "BLOB": lambda value: value,
}


def _affinity(value: Any, affinity: str) -> Any:
    """``value`` as SQLite stores it in a column of that affinity (bools are integers to SQLite)."""
    if isinstance(value, bool):
        value = int(value)
    return None if value is None else _AFFINITIES[affinity](value)


@lru_cache(maxsize=256)
def _like_regex(pattern: str, escape: str | None) -> re.Pattern[str]:
    out: list[str] = []
    chars = iter(pattern)
    for ch in chars:
        if escape is not None and ch == escape:
            nxt = next(chars, None)
            out.append(re.escape(nxt) if nxt is not None else "")
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        elif ch.isascii() and ch.isalpha():
            out.append(f"[{ch.lower()}{ch.upper()}]")  # LIKE folds ASCII case only
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _like(value: Any, pattern: str, escape: str | None = None) -> bool:
    """SQLite's ``value LIKE pattern [ESCAPE escape]`` (NULL is not like anything)."""
    if value is None:
        return False
    if not isinstance(value, str):
        value = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return _like_regex(pattern, escape).fullmatch(value) is not None


def _eq(a: Any, b: Any) -> bool:
    """SQL ``a = b``: never true when either is NULL."""
    return a is not None and b is not None and a == b


def _pick(row: Mapping[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    return {c: row[c] for c in columns}


def _null_first(value: Any) -> tuple[bool, Any]:
    """A sort key that puts NULL first, as SQLite's ORDER BY / GROUP BY do."""
    return (value is not None, value if value is not None else 0)


def _after_bar(value: str) -> str:
    """``substr(value, instr(value, '|') + 1)``: what follows the first ``|`` (all of it without one)."""
    return value.partition("|")[2] if "|" in value else value


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# -- the store ------------------------------------------------------------------------------------------
class _Table:
    """Rows by primary key, iterated in rowid (insertion) order, as a SQLite table scan is."""

    __slots__ = ("rows", "rowids", "next_rowid")

    def __init__(self) -> None:
        self.rows: dict[Any, dict[str, Any]] = {}
        self.rowids: dict[Any, int] = {}
        self.next_rowid = 1


class MemoryStore:
    """The journal's tables and sequences; every change goes through :meth:`put` / :meth:`delete`,
    which keep an undo log while a transaction is open."""

    def __init__(self) -> None:
        self.tables: dict[str, _Table] = {name: _Table() for name in _SCHEMA}
        self.autoincrement: dict[str, int] = {name: 0 for name in _AUTOINCREMENT}  # sqlite_sequence
        self.probe_at: str | None = None
        self._undo: list[tuple[Any, ...]] | None = None

    # -- transactions ------------------------------------------------------------------------
    def begin(self) -> None:
        self._undo = []

    def commit(self) -> None:
        self._undo = None

    def rollback(self) -> None:
        undo, self._undo = self._undo or [], None
        reorder: set[str] = set()
        for entry in reversed(undo):
            kind = entry[0]
            if kind == "row":
                _kind, table, key, old, old_rowid, next_rowid = entry
                t = self.tables[table]
                t.next_rowid = next_rowid
                if old is _MISSING:
                    t.rows.pop(key, None)
                    t.rowids.pop(key, None)
                else:
                    if key not in t.rows or t.rowids.get(key) != old_rowid:
                        reorder.add(table)
                    t.rows[key] = old
                    t.rowids[key] = old_rowid
            elif kind == "autoincrement":
                self.autoincrement[entry[1]] = entry[2]
            elif kind == "probe":
                self.probe_at = entry[1]
        for table in reorder:  # a row deleted then restored goes back to its place
            t = self.tables[table]
            t.rows = dict(sorted(t.rows.items(), key=lambda kv: t.rowids[kv[0]]))

    # -- changes -----------------------------------------------------------------------------
    def put(self, table: str, key: Any, row: dict[str, Any], *, new_rowid: bool = False) -> None:
        """Store ``row`` (a new dict: stored rows are never changed in place) under ``key``.

        An existing row keeps its rowid (UPDATE, upsert) unless ``new_rowid`` (INSERT OR REPLACE).
        """
        t = self.tables[table]
        old = t.rows.get(key, _MISSING)
        if self._undo is not None:
            self._undo.append(("row", table, key, old, t.rowids.get(key), t.next_rowid))
        if old is _MISSING or new_rowid:
            t.rows.pop(key, None)
            t.rowids[key] = t.next_rowid
            t.next_rowid += 1
        t.rows[key] = row

    def delete(self, table: str, key: Any) -> None:
        t = self.tables[table]
        old = t.rows.get(key, _MISSING)
        if old is _MISSING:
            return
        if self._undo is not None:
            self._undo.append(("row", table, key, old, t.rowids.get(key), t.next_rowid))
        del t.rows[key]
        del t.rowids[key]

    def bump_autoincrement(self, table: str, value: int) -> None:
        if self._undo is not None:
            self._undo.append(("autoincrement", table, self.autoincrement[table]))
        self.autoincrement[table] = value

    def set_probe(self, at: str) -> None:
        if self._undo is not None:
            self._undo.append(("probe", self.probe_at))
        self.probe_at = at

    # -- reads -------------------------------------------------------------------------------
    def scan(self, table: str) -> Iterator[dict[str, Any]]:
        """The stored rows (not copies: callers copy what they return)."""
        return iter(list(self.tables[table].rows.values()))

    def get(self, table: str, key: Any) -> dict[str, Any] | None:
        return self.tables[table].rows.get(key)

    def count(self, table: str) -> int:
        return len(self.tables[table].rows)


# -- the exchange search: search.sql's WHERE fragments in Python ------------------------------------------
_RowTest = Callable[[dict[str, Any]], bool]
#: matches no message type or sender (as ``Tx``'s on SQLite)
_NOTHING = "\x00none"


def _where_since(p: dict[str, Any], s: MemorySession) -> _RowTest:
    since, first = p["since"], s._first_seq_received_from(p["since"])
    return lambda r: r["received_at"] >= since and r["seq"] >= first


def _where_until(p: dict[str, Any], s: MemorySession) -> _RowTest:
    until, first = p["until"], s._first_seq_received_from(p["until"])
    return lambda r: r["received_at"] < until and r["seq"] < first


def _where_document(p: dict[str, Any], s: MemorySession) -> _RowTest:
    ids = s._exchanges_with_document(p["document"])
    return lambda r: r["id"] in ids


#: fragment name → (its parameters, the session for subqueries) → the row test; the fragments
#: and their parameters come from ``tx.EXCHANGE_FILTERS``, as for SQL
_WHERE: dict[str, Callable[[dict[str, Any], MemorySession], _RowTest]] = {
    "where_status": lambda p, _s: lambda r: _eq(r["status"], p["status"]),
    "where_message_type_like": lambda p, _s: lambda r: _like(r["message_type"], p["message_type_like"], "\\"),
    "where_message_type": lambda p, _s: lambda r: _eq(r["message_type"], p["message_type"]),
    # IS, not =: NULL is NULL
    "where_sender_pair": lambda p, _s: lambda r: (r["sender_app"] == p["sender_app"]
                                                   and r["sender_facility"] == p["sender_facility"]),
    "where_control_id": lambda p, _s: lambda r: _eq(r["control_id"], p["control_id"]),
    "where_q": lambda p, _s: lambda r: (_eq(r["control_id"], p["q"]) or _like(r["id"], p["q_like"], "\\")
                                        or _eq(r["document_id"], p["q"])),
    "where_since": _where_since,
    "where_until": _where_until,
    "where_patient_ipp": lambda p, _s: lambda r: _eq(r["patient_ipp"], p["patient"]),
    "where_patient_ins": lambda p, _s: lambda r: _eq(r["patient_ins"], p["patient"]),
    # substr(patient_ipp, instr(patient_ipp, '|') + 1): the value after the authority
    "where_patient_ipp_value": lambda p, _s: lambda r: (isinstance(r["patient_ipp"], str)
                                                         and _after_bar(r["patient_ipp"]) == p["patient"]),
    "where_document": _where_document,
    # a byte range on the id, not LIKE
    "where_control_or_id": lambda p, _s: lambda r: (_eq(r["control_id"], p["control_or_id"])
                                                     or (isinstance(r["id"], str)
                                                         and p["id_low"] <= r["id"] < p["id_high"])),
}


# -- the session ------------------------------------------------------------------------------------------
def _check_columns(table: str, rec: Mapping[str, Any], columns: Sequence[str]) -> None:
    for key in rec:
        if key not in columns:  # what SQLite (and so Tx) says
            raise sqlite3.OperationalError(f"table {table} has no column named {key}")


class MemorySession:
    """Every :class:`~gateway.journal.session.Session` query over a :class:`MemoryStore`, as ``Tx`` means it."""

    def __init__(self, store: MemoryStore, *, readonly: bool = False) -> None:
        self._store = store
        self._readonly = readonly

    # -- generic -----------------------------------------------------------------------------
    def _writing(self) -> MemoryStore:
        if self._readonly:
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return self._store

    def _row(self, table: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """A full row of ``table`` from ``values`` (every column), with affinities and NOT NULL applied."""
        row: dict[str, Any] = {}
        for col, affinity, notnull in _SCHEMA[table]:
            value = _affinity(values.get(col), affinity)
            if notnull and value is None:
                raise sqlite3.IntegrityError(f"NOT NULL constraint failed: {table}.{col}")
            row[col] = value
        return row

    def _insert(self, table: str, key_of: Callable[[dict[str, Any]], Any], values: Mapping[str, Any]) -> None:
        row = self._row(table, values)
        key = key_of(row)
        if self._store.get(table, key) is not None:
            cols = ", ".join(f"{table}.{c}" for c in _primary_key(table))
            raise sqlite3.IntegrityError(f"UNIQUE constraint failed: {cols}")
        self._writing().put(table, key, row)

    def _set(self, table: str, key: Any, changes: Mapping[str, Any]) -> bool:
        """UPDATE one row by key; False if there is none."""
        store = self._writing()  # a read-only session refuses any UPDATE, matching or not
        old = store.get(table, key)
        if old is None:
            return False
        store.put(table, key, self._row(table, {**old, **changes}))
        return True

    def _set_where(self, table: str, pred: Callable[[dict[str, Any]], bool],
                   changes: Callable[[dict[str, Any]], Mapping[str, Any]]) -> int:
        """UPDATE ... WHERE ``pred``; the number of rows it matched (SQLite's ``rowcount``)."""
        key_of = _key_fn(table)
        self._writing()
        matched = [r for r in self._store.scan(table) if pred(r)]
        for r in matched:
            self._set(table, key_of(r), changes(r))
        return len(matched)

    def _delete_where(self, table: str, pred: Callable[[dict[str, Any]], bool]) -> int:
        key_of = _key_fn(table)
        store = self._writing()
        gone = [key_of(r) for r in store.scan(table) if pred(r)]
        for key in gone:
            store.delete(table, key)
        return len(gone)

    def _next_seq(self, table: str) -> int:
        """``COALESCE(MAX(seq), 0) + 1``: over the rows there are now, as the SQL takes it."""
        seqs = [r["seq"] for r in self._store.scan(table) if isinstance(r["seq"], int)]
        return max(seqs, default=0) + 1

    def _autoincrement(self, table: str, explicit: Any) -> int:
        """The id of a new row of an AUTOINCREMENT table: ``explicit``, else one past the largest ever used."""
        store = self._writing()
        col = _AUTOINCREMENT[table]
        if explicit is None:
            largest = max((r[col] for r in store.scan(table)), default=0)
            new = max(store.autoincrement[table], largest) + 1
        else:
            new = _affinity(explicit, "INTEGER")
            if not isinstance(new, int):
                raise sqlite3.IntegrityError("datatype mismatch")
        if new > store.autoincrement[table]:
            store.bump_autoincrement(table, new)
        return new

    def _update(self, table: str, row_id: str, fields: dict[str, Any]) -> None:
        _check_columns(table, fields, _UPDATABLE[table])
        self._set(table, row_id, fields)

    # -- exchanges --------------------------------------------------------------------------
    def insert_exchange(self, rec: dict[str, Any]) -> None:
        rec = dict(rec)
        if "seq" not in rec:
            rec["seq"] = self._next_seq("exchanges")
        rec.setdefault("updated_at", rec["received_at"])
        if rec.get("findings") is not None and not isinstance(rec["findings"], str):
            rec["findings"] = _dumps(rec["findings"])
        _check_columns("exchanges", rec, _COLUMNS["exchanges"])
        self._insert("exchanges", _key_fn("exchanges"), {**_DEFAULTS["exchanges"], **rec})

    def update_exchange(self, exchange_id: str, at: str, **fields: Any) -> None:
        if fields.get("findings") is not None and not isinstance(fields["findings"], str):
            fields["findings"] = _dumps(fields["findings"])
        fields["updated_at"] = at
        self._update("exchanges", exchange_id, fields)

    def find_duplicate(self, sender_app: str, sender_facility: str, control_id: str, sha256: str) -> str | None:
        for r in self._by_seq(self._store.scan("exchanges")):
            if (_eq(r["sender_app"], sender_app) and _eq(r["sender_facility"], sender_facility)
                    and _eq(r["control_id"], control_id) and _eq(r["sha256"], sha256) and r["status"] != "duplicate"):
                return str(r["id"])
        return None

    def get_exchange(self, exchange_id: str, *, bodies: bool = False) -> dict[str, Any] | None:
        columns = _COLUMNS["exchanges"] if bodies else _EXCHANGE_ONE
        found = self._store.get("exchanges", exchange_id)
        if found is None:
            # a unique prefix of the id (LIKE: ASCII case folded), as operators type it
            pattern = like_escape(exchange_id) + "%"
            rows = [r for r in self._store.scan("exchanges") if _like(r["id"], pattern, "\\")][:2]
            found = rows[0] if len(rows) == 1 else None
        if found is None:
            return None
        row = _pick(found, columns)
        if row.get("findings"):
            row["findings"] = json.loads(row["findings"])
        return row

    def list_exchanges(
        self, *, before_seq: int | None = None, limit: int = 50, offset: int = 0, **filters: Any
    ) -> list[dict[str, Any]]:
        match = self._exchange_filter(**filters)
        rows = [r for r in self._store.scan("exchanges")
                if match(r) and (before_seq is None or (r["seq"] is not None and r["seq"] < before_seq))]
        rows = sorted(rows, key=lambda r: r["seq"], reverse=True)
        start = max(offset, 0)
        page = rows[start:] if limit < 0 else rows[start : start + limit]
        return [_pick(r, _EXCHANGE_SUMMARY) for r in page]

    def count_exchanges(self, *, cap: int = 10_000, **filters: Any) -> tuple[int, bool]:
        match = self._exchange_filter(**filters)
        total = sum(1 for r in self._store.scan("exchanges") if match(r))
        n = total if cap + 1 < 0 else min(total, cap + 1)  # LIMIT :cap + 1 (a negative LIMIT is none)
        return min(n, cap), n > cap

    def _exchange_filter(self, *, sender: str | None = None, **filters: Any) -> _RowTest:
        """The predicate of ``Tx``'s search: its disjoint cases, each the search.sql fragments it joins."""
        cases = exchange_alternatives(filters, sender, types_with_prefix=self._types_with_prefix,
                                      senders_named=self._sender_pairs, nothing=_NOTHING)
        tests = [self._where(case) for case in cases]
        return lambda r: any(test(r) for test in tests)

    def _where(self, filters: Mapping[str, Any]) -> _RowTest:
        fragments, params = exchange_where(filters)
        tests = [_WHERE[fragment](params, self) for fragment in fragments]
        return lambda r: all(test(r) for test in tests)

    def _types_with_prefix(self, prefix: str) -> list[str]:
        """The distinct message types starting with ``prefix`` (binary, case-sensitive: an index range)."""
        high = prefix + "\uffff"
        return sorted({t for r in self._store.scan("exchanges")
                       if isinstance(t := r["message_type"], str) and prefix <= t < high})

    def _sender_pairs(self, sender: str) -> list[tuple[str | None, str | None]]:
        """The non-null (application, facility) pairs where either is ``sender``."""
        pairs = {(r["sender_app"], r["sender_facility"]) for r in self._store.scan("exchanges")}
        return sorted((app, facility) for app, facility in pairs
                      if app is not None and facility is not None and sender in (app, facility))

    def _exchanges_with_document(self, unique_id: str) -> set[str]:
        """``SELECT exchange_id FROM documents WHERE unique_id = :document``."""
        return {d["exchange_id"] for d in self._store.scan("documents") if _eq(d["unique_id"], unique_id)}

    def _first_seq_received_from(self, at: str) -> int:
        """``COALESCE((SELECT seq FROM exchanges WHERE received_at >= :at ORDER BY received_at LIMIT 1), max)``."""
        later = [r for r in self._store.scan("exchanges") if r["received_at"] >= at]
        if not later:
            return _MAX_INT
        return int(min(later, key=lambda r: r["received_at"])["seq"])  # min: the first of equals (rowid order)

    @staticmethod
    def _by_seq(rows: Iterable[dict[str, Any]], *, reverse: bool = False) -> list[dict[str, Any]]:
        return sorted(rows, key=lambda r: r["seq"], reverse=reverse)

    def count_exchanges_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self._store.scan("exchanges"):
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        return dict(sorted(counts.items()))

    def exchanges_for_patient(
        self, *, ins: str | None, ipp: str | None, statuses: Iterable[str]
    ) -> list[dict[str, Any]]:
        if not ins and not ipp:
            return []
        wanted = set(statuses)
        ins, ipp = ins or None, ipp or None
        rows = [r for r in self._store.scan("exchanges")
                if r["status"] in wanted and (_eq(r["patient_ins"], ins) or _eq(r["patient_ipp"], ipp))]
        return [_pick(r, _FOR_PATIENT) for r in self._by_seq(rows)]

    def waiting_for_ins(self, ins: str) -> list[dict[str, Any]]:
        rows = [r for r in self._store.scan("exchanges") if r["status"] == "held"
                and r["reason_code"] == "INS_NOT_QUALIFIED" and _eq(r["patient_ins"], ins)]
        return [_pick(r, _FOR_PATIENT) for r in self._by_seq(rows)]

    def held_exchanges(self) -> list[dict[str, Any]]:
        rows = [r for r in self._store.scan("exchanges") if r["status"] == "held"]
        return [_pick(r, _HELD) for r in self._by_seq(rows)]

    def exchanges_per_minute(self, since: str) -> dict[str, int]:
        latest = self._by_seq(self._store.scan("exchanges"), reverse=True)[:500_000]
        counts: dict[str, int] = {}
        for r in latest:
            if r["received_at"] >= since:
                minute = r["received_at"][:16]
                counts[minute] = counts.get(minute, 0) + 1
        return dict(sorted(counts.items()))

    def exchange_bodies(self, exchange_id: str) -> dict[str, Any] | None:
        ex = self._store.get("exchanges", exchange_id)
        if ex is None:
            return None
        row = _pick(ex, ("raw", "listener"))
        doc = self.get_document(exchange_id, 1) or {}
        row.update(document=doc.get("cda"), fhir=doc.get("fhir"), xds=doc.get("xds"))
        return row

    # -- documents ------------------------------------------------------------------------
    def insert_document(self, exchange_id: str, idx: int, unique_id: str, action: str, cda: bytes,
                        xds: dict[str, Any], fhir: dict[str, Any] | None) -> None:
        row = self._row("documents", {
            "exchange_id": exchange_id, "idx": idx, "unique_id": unique_id, "action": action, "cda": cda,
            "xds": _dumps(xds), "fhir": _dumps(stored_bundle(fhir, cda)) if fhir is not None else None,
        })
        # INSERT OR REPLACE: the old row goes, the new one takes a new rowid
        self._writing().put("documents", (row["exchange_id"], row["idx"]), row, new_rowid=True)

    def get_document(self, exchange_id: str, idx: int) -> dict[str, Any] | None:
        found = self._store.get("documents", (exchange_id, _affinity(idx, "INTEGER")))
        if found is None:
            return None
        row = dict(found)
        for key in ("xds", "fhir"):
            row[key] = json.loads(row[key]) if row.get(key) else None
        if row["fhir"] is not None:
            row["fhir"] = full_bundle(row["fhir"], row.get("cda"))
        return row

    def documents_for(self, exchange_id: str) -> list[dict[str, Any]]:
        rows = [r for r in self._store.scan("documents") if _eq(r["exchange_id"], exchange_id)]
        rows.sort(key=lambda r: r["idx"])
        return [_pick(r, ("exchange_id", "idx", "unique_id", "action")) for r in rows]

    # -- events -----------------------------------------------------------------------------
    def probe(self, at: str) -> None:
        if at is None:
            raise sqlite3.IntegrityError("NOT NULL constraint failed: probe.at")
        self._writing().set_probe(at)

    def add_event(self, exchange_id: str, at: str, stage: str, detail: dict[str, Any] | None = None) -> None:
        row = self._row("events", {"exchange_id": exchange_id, "at": at, "stage": stage,
                                   "detail": _dumps(detail or {})})
        row["id"] = self._autoincrement("events", None)
        self._writing().put("events", row["id"], row)

    def add_events(self, events: Sequence[tuple[str, str, str, dict[str, Any] | None]]) -> None:
        for exchange_id, at, stage, detail in events:
            self.add_event(exchange_id, at, stage, detail)

    def events(self, exchange_id: str) -> list[dict[str, Any]]:
        rows = sorted((r for r in self._store.scan("events") if _eq(r["exchange_id"], exchange_id)),
                      key=lambda r: r["id"])
        return [{"at": r["at"], "stage": r["stage"], "detail": json.loads(r["detail"] or "{}")} for r in rows]

    # -- deliveries ------------------------------------------------------------------------
    def insert_delivery(self, rec: dict[str, Any]) -> None:
        rec = dict(rec)
        if "seq" not in rec:
            rec["seq"] = self._next_seq("deliveries")
        rec.setdefault("updated_at", rec["created_at"])
        _check_columns("deliveries", rec, _COLUMNS["deliveries"])
        self._insert("deliveries", _key_fn("deliveries"), {**_DEFAULTS["deliveries"], **rec})

    def outbound_by_control_id(self, control_id: str) -> dict[str, Any] | None:
        rows = [r for r in self._store.scan("deliveries")
                if r["kind"] in ("zam", "ack") and _eq(r["unique_id"], control_id)]
        if not rows:
            return None
        return _pick(self._by_seq(rows, reverse=True)[0], ("id", "exchange_id", "kind", "status"))

    def zam_exists(self, unique_id: str) -> bool:
        return any(r["kind"] == "zam" and _eq(r["unique_id"], unique_id) for r in self._store.scan("deliveries"))

    def claim_due(self, *, now: str, worker: str, lease_until: str, limit: int) -> list[dict[str, Any]]:
        """Due deliveries, oldest first, none behind an earlier open one of its (destination, patient)."""
        rows = list(self._store.scan("deliveries"))
        open_rows: dict[tuple[str, str], list[int]] = {}
        for e in rows:
            if e["status"] in _OPEN and e["patient_key"] is not None:
                open_rows.setdefault((e["destination"], e["patient_key"]), []).append(e["seq"])

        def blocked(d: dict[str, Any]) -> bool:
            if d["patient_key"] is None:
                return False
            return any(seq < d["seq"] for seq in open_rows.get((d["destination"], d["patient_key"]), ()))

        due = [d for d in rows
               if d["status"] in ("queued", "failed") and d["next_attempt_at"] <= now and not blocked(d)]
        due.sort(key=lambda d: (d["next_attempt_at"], d["seq"]))
        if limit >= 0:
            due = due[:limit]
        claimed: list[dict[str, Any]] = []
        for d in due:
            self._set("deliveries", d["id"], {"status": "in_flight", "claimed_by": worker,
                                              "lease_until": lease_until, "attempts": d["attempts"] + 1,
                                              "updated_at": now})
            row = self.get_delivery(d["id"])
            assert row is not None
            claimed.append(row)
        return claimed

    def recover_in_flight(self, *, now: str, expired_only: bool = False, worker: str | None = None) -> int:
        def pred(d: dict[str, Any]) -> bool:
            if d["status"] != "in_flight":
                return False
            if worker is not None:
                return _eq(d["claimed_by"], worker)
            if expired_only:
                return d["lease_until"] is not None and d["lease_until"] < now
            return True

        return self._set_where("deliveries", pred, lambda d: {
            "status": "failed", "next_attempt_at": now, "updated_at": now, "last_error": _INTERRUPTED})

    def extend_leases(self, worker: str, ids: Sequence[str], until: str) -> int:
        wanted = set(ids)
        return self._set_where(
            "deliveries",
            lambda d: d["status"] == "in_flight" and _eq(d["claimed_by"], worker) and d["id"] in wanted,
            lambda d: {"lease_until": until},
        )

    def hold_lease(self, name: str, holder: str, now: str, until: str) -> bool:
        lease = self._store.get("leases", name)
        if lease is None:
            self._insert("leases", _key_fn("leases"), {"name": name, "holder": holder, "token": 1,
                                                       "expires_at": until})
            return True
        if lease["holder"] == holder or lease["expires_at"] < now:
            token = lease["token"] if lease["holder"] == holder else lease["token"] + 1
            self._set("leases", name, {"token": token, "holder": holder, "expires_at": until})
            return True
        return False

    def lock_key(self, key: str) -> None:
        """One writer at a time: nothing to do."""

    def lock_exchange(self, exchange_id: str) -> None:
        """One writer at a time: nothing to do."""

    def lock_delivery(self, delivery_id: str) -> None:
        """One writer at a time: nothing to do."""

    def notify_work(self) -> None:
        """One process: nothing to tell."""

    def park_for_unknown_destination(self, delivery: dict[str, Any], *, at: str) -> None:
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
        if not names:
            return 0
        wanted = set(names)
        parked_like = f"{DESTINATION_UNKNOWN}:%"  # as the SQL has it ("_" is a LIKE wildcard there too)
        rows = [_pick(d, ("id", "exchange_id")) for d in self._store.scan("deliveries")
                if d["status"] == "waiting" and _like(d["last_error"], parked_like) and d["destination"] in wanted]
        for r in rows:
            self.update_delivery(r["id"], at, status="queued", next_attempt_at=at, last_error=None)
            self._unhold_for_destination(r["exchange_id"], at)
        return len(rows)

    def reroute(self, source: str, target: str, *, at: str) -> list[dict[str, Any]]:
        rows = [_pick(d, ("id", "exchange_id", "status", "last_error"))
                for d in self._by_seq(self._store.scan("deliveries"))
                if _eq(d["destination"], source) and d["kind"] in ("document", "mail", "hl7")
                and d["status"] in ("waiting", "queued", "failed", "dead")]
        for r in rows:
            parked = str(r["last_error"] or "").startswith(DESTINATION_UNKNOWN)
            identity_hold = r["status"] == "waiting" and not parked
            self.update_delivery(
                r["id"], at, destination=target, attempts=0, last_error=None, next_attempt_at=at,
                status="waiting" if identity_hold else "queued",
            )
            if not identity_hold:
                self._unhold_for_destination(r["exchange_id"], at, also_dead=True)
        return [dict(r) for r in rows]

    def _unhold_for_destination(self, exchange_id: str, at: str, *, also_dead: bool = False) -> None:
        ex = self.get_exchange(exchange_id)
        if ex is None:
            return
        if (ex["status"] == "held" and ex["reason_code"] == DESTINATION_UNKNOWN) or (also_dead and ex["status"] == "dead"):
            self.update_exchange(exchange_id, at, status="queued", reason_code=None, reason=None, held_since=None)

    def update_delivery(self, delivery_id: str, at: str, **fields: Any) -> None:
        fields["updated_at"] = at
        self._update("deliveries", delivery_id, fields)

    def queue_waiting_deliveries(self, exchange_id: str, at: str) -> None:
        self._set_where("deliveries", lambda d: _eq(d["exchange_id"], exchange_id) and d["status"] == "waiting",
                        lambda d: {"status": "queued", "next_attempt_at": at, "updated_at": at})

    def kill_waiting_deliveries(self, exchange_id: str, reason: str, at: str) -> None:
        self._set_where("deliveries", lambda d: _eq(d["exchange_id"], exchange_id) and d["status"] == "waiting",
                        lambda d: {"status": "dead", "last_error": reason, "updated_at": at})

    def hold_open_document_deliveries(self, exchange_id: str, at: str) -> None:
        self._set_where(
            "deliveries",
            lambda d: _eq(d["exchange_id"], exchange_id) and d["kind"] == "document"
            and d["status"] in ("queued", "failed"),
            lambda d: {"status": "waiting", "updated_at": at},
        )

    def rekey_open_deliveries(self, old_key: str, new_key: str, at: str) -> None:
        self._set_where("deliveries", lambda d: _eq(d["patient_key"], old_key) and d["status"] in _OPEN,
                        lambda d: {"patient_key": new_key, "updated_at": at})

    def held_worklist(self, limit: int = 20) -> tuple[list[dict[str, Any]], int]:
        held = self._by_seq(r for r in self._store.scan("exchanges") if r["status"] == "held")
        page = held if limit < 0 else held[:limit]
        return [_pick(r, _HELD_WORKLIST) for r in page], len(held)

    def dead_worklist(self, limit: int = 20) -> tuple[list[dict[str, Any]], int]:
        dead = self._by_seq(d for d in self._store.scan("deliveries") if d["status"] == "dead")
        rows: list[dict[str, Any]] = []
        for d in dead:  # JOIN exchanges: a dead delivery without its exchange is counted, not listed
            ex = self._store.get("exchanges", d["exchange_id"])
            if ex is not None:
                rows.append(_pick(d, ("id", "exchange_id", "destination", "kind", "attempts", "last_error",
                                      "updated_at")) | {"control_id": ex["control_id"],
                                                        "message_type": ex["message_type"]})
        return (rows if limit < 0 else rows[:limit]), len(dead)

    def dead_delivery_ids(self, *, destination: str | None = None) -> list[str]:
        return [d["id"] for d in self._by_seq(self._store.scan("deliveries"))
                if d["status"] == "dead" and (not destination or _eq(d["destination"], destination))]

    def get_delivery(self, delivery_id: str) -> dict[str, Any] | None:
        found = self._store.get("deliveries", delivery_id)
        return dict(found) if found is not None else None

    def deliveries_for(self, exchange_id: str) -> list[dict[str, Any]]:
        return [_pick(d, _DELIVERIES_FOR) for d in self._by_seq(self._store.scan("deliveries"))
                if _eq(d["exchange_id"], exchange_id)]

    def open_deliveries_for_exchanges(self, exchange_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not exchange_ids:
            return []
        wanted = set(exchange_ids)
        rows = [dict(d) for d in self._store.scan("deliveries")
                if d["exchange_id"] in wanted and d["status"] in ("waiting", "queued", "failed")]
        # no ORDER BY in the SQL; SQLite walks the deliveries_exchange index: by exchange, then table order
        rows.sort(key=lambda d: d["exchange_id"])
        return rows

    def open_work(self) -> dict[str, tuple[int, str]]:
        out: dict[str, tuple[int, str]] = {}
        for d in self._store.scan("deliveries"):
            if d["status"] in ("queued", "in_flight", "failed"):
                n, oldest = out.get(d["destination"], (0, d["created_at"]))
                out[d["destination"]] = (n + 1, min(oldest, d["created_at"]))
        return dict(sorted(out.items()))

    def _finished_since(self, since: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(attempt, its delivery) for attempts finished at or after ``since`` (the JOIN drops orphans)."""
        for a in self._store.scan("attempts"):
            if a["finished_at"] is not None and a["finished_at"] >= since:
                d = self._store.get("deliveries", a["delivery_id"])
                if d is not None:
                    yield a, d

    def attempt_outcomes_since(self, since: str) -> list[dict[str, Any]]:
        groups: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
        for a, d in self._finished_since(since):
            minute = a["finished_at"][:16]
            key = (d["destination"], a["outcome"], minute)
            g = groups.get(key)
            if g is None:
                groups[key] = {"destination": d["destination"], "outcome": a["outcome"], "minute": minute,
                               "finished_at": a["finished_at"], "n": 1}
            else:
                g["finished_at"] = max(g["finished_at"], a["finished_at"])
                g["n"] += 1
        return [groups[k] for k in sorted(groups, key=lambda k: tuple(_null_first(v) for v in k))]

    def last_success_since(self, since: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for a, d in self._finished_since(since):
            if a["outcome"] in ("delivered", "found-existing"):
                dest = d["destination"]
                out[dest] = max(out.get(dest, a["finished_at"]), a["finished_at"])
        return dict(sorted(out.items()))

    def oldest_held_since(self) -> str | None:
        values = [r["held_since"] for r in self._store.scan("exchanges")
                  if r["status"] == "held" and r["held_since"] is not None]
        return min(values, default=None)

    def zam_trouble(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self._store.scan("deliveries"):
            if d["kind"] == "zam" and d["status"] in ("failed", "dead"):
                out[d["status"]] = out.get(d["status"], 0) + 1
        return dict(sorted(out.items()))

    def insert_attempt(self, rec: dict[str, Any]) -> int:
        _check_columns("attempts", rec, _COLUMNS["attempts"])
        row = self._row("attempts", {**rec, "id": 0})
        if rec.get("id") is not None and self._store.get("attempts", _affinity(rec["id"], "INTEGER")) is not None:
            raise sqlite3.IntegrityError("UNIQUE constraint failed: attempts.id")
        row["id"] = self._autoincrement("attempts", rec.get("id"))
        self._writing().put("attempts", row["id"], row)
        return int(row["id"])

    def attempts_for(self, delivery_id: str, *, bodies: bool = False) -> list[dict[str, Any]]:
        rows = sorted((a for a in self._store.scan("attempts") if _eq(a["delivery_id"], delivery_id)),
                      key=lambda a: a["id"])
        return [dict(a) if bodies else _pick(a, _ATTEMPT_SUMMARY) for a in rows]

    # -- identities --------------------------------------------------------------------------
    def link_identities(self, a: str, b: str, at: str, exchange_id: str) -> None:
        for x, y in ((a, b), (b, a)):
            row = self._row("identity_links", {"ipp_key": x, "linked_key": y, "created_at": at,
                                               "exchange_id": exchange_id})
            key = (row["ipp_key"], row["linked_key"])
            if self._store.get("identity_links", key) is None:  # INSERT OR IGNORE
                self._writing().put("identity_links", key, row)

    def unlink_identities(self, a: str, b: str) -> int:
        return self._delete_where(
            "identity_links",
            lambda r: (_eq(r["ipp_key"], a) and _eq(r["linked_key"], b)) or (_eq(r["ipp_key"], b)
                                                                               and _eq(r["linked_key"], a)),
        )

    def linked_identities(self, ipp_key: str) -> list[str]:
        return sorted(r["linked_key"] for r in self._store.scan("identity_links") if _eq(r["ipp_key"], ipp_key))

    def merge_identity(self, old_key: str, into_key: str, at: str) -> None:
        self._set("identities", old_key, {"merged_into": into_key, "updated_at": at})

    def _upsert(self, table: str, rec: dict[str, Any]) -> None:
        """INSERT ... ON CONFLICT DO UPDATE of the columns ``rec`` names (NOT NULL checked on the new row first)."""
        _check_columns(table, rec, _COLUMNS[table])
        row = self._row(table, {**_DEFAULTS[table], **rec})
        key = _key_fn(table)(row)
        old = self._store.get(table, key)
        if old is None:
            self._writing().put(table, key, row)
        else:
            self._set(table, key, {c: row[c] for c in rec if c != _COLUMNS[table][0]})

    def upsert_encounter(self, rec: dict[str, Any]) -> None:
        self._upsert("encounters", rec)

    def current_encounter(self, ipp_key: str) -> dict[str, Any] | None:
        rows = [r for r in self._store.scan("encounters") if _eq(r["ipp_key"], ipp_key) and r["cancelled"] == 0]
        if not rows:
            return None
        return dict(max(rows, key=lambda r: r["updated_at"]))  # the first of equals in table order

    def get_encounter(self, visit_key: str) -> dict[str, Any] | None:
        found = self._store.get("encounters", visit_key)
        return dict(found) if found is not None else None

    def get_identity(self, ipp_key: str) -> dict[str, Any] | None:
        found = self._store.get("identities", ipp_key)
        if found is None:
            return None
        row = dict(found)
        if row.get("traits"):
            row["traits"] = json.loads(row["traits"])
        return row

    def identities_with_ins(self, ins: str) -> list[dict[str, Any]]:
        rows = [dict(r) for r in self._store.scan("identities") if _eq(r["ins"], ins) and r["merged_into"] is None]
        for r in rows:
            r["traits"] = json.loads(r["traits"] or "{}")
        return rows

    def upsert_identity(self, rec: dict[str, Any]) -> None:
        rec = dict(rec)
        if not isinstance(rec.get("traits"), str):
            rec["traits"] = json.dumps(rec.get("traits") or {}, ensure_ascii=False)
        self._upsert("identities", rec)

    def list_identities(self) -> list[dict[str, Any]]:
        rows = [dict(r) for r in self._store.scan("identities")]
        rows.sort(key=lambda r: r["updated_at"], reverse=True)  # stable: equals stay in table order
        for r in rows:
            r["traits"] = json.loads(r["traits"] or "{}")
        return rows

    # -- audit ----------------------------------------------------------------------------------
    def append_audit(self, *, at: str, actor: str, action: str, target: str | None, detail: dict[str, Any]) -> str:
        last = max(self._store.scan("audit"), key=lambda r: r["seq"], default=None)
        prev = last["hash"] if last is not None else GENESIS_HASH
        detail_text = json.dumps(detail, ensure_ascii=False, sort_keys=True)
        digest = Tx.audit_hash(prev, at, actor, action, target, detail_text)
        row = self._row("audit", {"at": at, "actor": actor, "action": action, "target": target,
                                  "detail": detail_text, "prev_hash": prev, "hash": digest})
        row["seq"] = self._autoincrement("audit", None)
        self._writing().put("audit", row["seq"], row)
        return digest

    def audit_rows(self) -> list[dict[str, Any]]:
        return [dict(r) for r in sorted(self._store.scan("audit"), key=lambda r: r["seq"])]

    # -- retention ---------------------------------------------------------------------------------
    def prune_batch(self, *, before: str, at: str, limit: int, errors_only: bool = False) -> int:
        candidates = [r for r in self._store.scan("exchanges")
                      if r["pruned_at"] is None and r["received_at"] < before
                      and r["status"] in ("delivered", "accepted", "rejected", "duplicate")]
        # equal times in the order SQLite's plan reads them (exchanges_status_seq: status, then seq)
        candidates.sort(key=lambda r: (r["received_at"], r["status"], r["seq"]))
        ids = {r["id"] for r in (candidates if limit < 0 else candidates[:limit])}
        if not ids:
            return 0
        delivery_ids = {d["id"] for d in self._store.scan("deliveries") if d["exchange_id"] in ids}
        self._set_where("attempts", lambda a: a["delivery_id"] in delivery_ids,
                        lambda a: {"request": None, "response": None})
        self._set_where("deliveries", lambda d: d["id"] in delivery_ids, lambda d: {"payload": None})
        self._set_where("documents", lambda d: d["exchange_id"] in ids,
                        lambda d: {"cda": None, "xds": None, "fhir": None})
        self._set_where("exchanges", lambda r: r["id"] in ids,
                        lambda r: {"raw": None, "pruned_at": at, "updated_at": at})
        if errors_only:
            gone = {r["id"] for r in self._store.scan("exchanges")
                    if r["id"] in ids and r["status"] in ("accepted", "delivered", "duplicate")}
            if gone:
                gone_deliveries = {d["id"] for d in self._store.scan("deliveries") if d["exchange_id"] in gone}
                self._delete_where("attempts", lambda a: a["delivery_id"] in gone_deliveries)
                self._delete_where("deliveries", lambda d: d["exchange_id"] in gone)
                self._delete_where("documents", lambda d: d["exchange_id"] in gone)
                self._delete_where("events", lambda e: e["exchange_id"] in gone)
                self._delete_where("exchanges", lambda r: r["id"] in gone)
        return len(ids)

    def incremental_vacuum(self, pages: int) -> int:
        """Nothing to give back: memory is not a file."""
        return 0


def _primary_key(table: str) -> tuple[str, ...]:
    return {"documents": ("exchange_id", "idx"), "identity_links": ("ipp_key", "linked_key")}.get(
        table, (_COLUMNS[table][0],))


def _key_fn(table: str) -> Callable[[dict[str, Any]], Any]:
    cols = _primary_key(table)
    if len(cols) == 1:
        col = cols[0]
        return lambda r: r[col]
    return lambda r: tuple(r[c] for c in cols)


# -- the journal ----------------------------------------------------------------------------------------------
class MemoryJournal(SessionJournal):
    """A journal that lives in this process: atomic writes, one at a time; reads see committed data."""

    backend = "memory"
    shared = False

    def __init__(self, *, clock: Clock | None = None) -> None:
        if clock is not None:
            self.clock = clock
        self.store = MemoryStore()
        self.schema: SchemaStatus | None = latest_schema()
        self._lock = threading.Lock()
        self._writer: int | None = None  # the thread inside write_sync, if any
        self._closed = False
        self.commits = 0
        self.commit_errors = 0
        self.writes = 0

    @classmethod
    def open(cls, *, clock: Clock | None = None) -> MemoryJournal:
        return cls(clock=clock)

    # -- lifecycle -----------------------------------------------------------------------------
    async def close(self) -> None:
        self._closed = True

    def close_sync(self) -> None:
        self._closed = True

    def stats(self) -> JournalStats:
        return JournalStats(self.commits, self.commit_errors)

    # -- the port's needs -------------------------------------------------------------------------
    async def _write(self, fn: Callable[[Session], T], *, large: bool = False) -> T:
        result = self.write_sync(fn)
        await asyncio.sleep(0)  # as a real journal would, let other tasks run at a commit
        return result

    async def _read(self, fn: Callable[[Session], T]) -> T:
        return self.read_sync(fn)

    async def write(self, fn: Callable[[Session], T], *, large: bool = False) -> T:
        return await self._write(fn, large=large)

    async def read(self, fn: Callable[[Session], T]) -> T:
        return self.read_sync(fn)

    def write_sync(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` as one transaction: all of its changes, or none if it raises."""
        if self._closed:
            raise JournalError("journal is closed", code="JOURNAL_CLOSED")
        self._not_inside_a_write()
        with self._lock:
            self._writer = threading.get_ident()
            self.store.begin()
            try:
                value = fn(MemorySession(self.store))
            except BaseException:
                self.store.rollback()
                raise
            else:
                self.store.commit()
                self.commits += 1
                self.writes += 1
                return value
            finally:
                self._writer = None

    def read_sync(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` on committed data (a read-only session: a write raises, as on SQLite's reader)."""
        self._not_inside_a_write()
        with self._lock:
            return fn(MemorySession(self.store, readonly=True))

    def _not_inside_a_write(self) -> None:
        """A journal call from inside a write function would see (or make) uncommitted changes, or deadlock."""
        if self._writer == threading.get_ident():
            raise JournalError("a journal call inside a write function", code="JOURNAL_REENTRANT")


def latest_schema() -> SchemaStatus:
    """The schema a memory journal stands for: every SQLite migration applied."""
    return plan("sqlite", {m.version: m.checksum for m in available("sqlite")})


_session_check: type[Session] = MemorySession  # mypy: the memory session is a whole Session
