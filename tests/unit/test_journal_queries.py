"""The journal's SQL lives in named queries under gateway/journal/sql/<dialect>/, nowhere else."""

from __future__ import annotations

import re
import sqlite3
import tokenize
from importlib import resources
from pathlib import Path

import pytest

from gateway.journal.migrate import available
from gateway.journal.queries import Queries, QueryError, parse, to_pyformat

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "gateway"
SCHEMA = "".join(m.sql for m in available("sqlite"))  # the schema the migrations build
SQL_DIR = GATEWAY / "journal" / "sql" / "sqlite"
# search.sql pieces that are not statements on their own: composed by Tx._search
HEADS_TAILS = {"page_head": "page_tail", "count_head": "count_tail"}
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def _is_piece(name: str) -> bool:
    return name.startswith("where_") or name in HEADS_TAILS or name in HEADS_TAILS.values()


def _params(sql: str) -> dict[str, None]:
    return dict.fromkeys(_PARAM.findall(sql))


@pytest.fixture(scope="module")
def conn() -> sqlite3.Connection:
    c = sqlite3.connect(":memory:")
    c.executescript(SCHEMA)
    return c


@pytest.fixture(scope="module")
def q() -> Queries:
    return Queries.load("sqlite")


def test_every_named_query_parses(conn: sqlite3.Connection, q: Queries) -> None:
    statements = [name for name in q if not _is_piece(name)]
    assert len(statements) > 45
    for name in statements:
        sql = q[name]
        try:
            conn.execute("EXPLAIN " + sql, _params(sql)).fetchall()
        except sqlite3.Error as exc:  # pragma: no cover - the message names the query
            pytest.fail(f"query {name!r} does not parse: {exc}")


def test_every_search_fragment_composes(conn: sqlite3.Connection, q: Queries) -> None:
    fragments = [name for name in q if name.startswith("where_")]
    assert "where_status" in fragments and "where_before_seq" in fragments
    for head, tail in HEADS_TAILS.items():
        for combo in [[f] for f in fragments] + [fragments]:
            sql = "\n".join([q[head], "WHERE " + " AND ".join(q[f] for f in combo), q[tail]])
            try:
                conn.execute("EXPLAIN " + sql, _params(sql)).fetchall()
            except sqlite3.Error as exc:  # pragma: no cover
                pytest.fail(f"{head} + {combo} + {tail} does not parse: {exc}")
        sql = q[head] + "\n" + q[tail]  # no filter at all
        conn.execute("EXPLAIN " + sql, _params(sql)).fetchall()


def test_fragments_cannot_swallow_what_follows(q: Queries) -> None:
    # a trailing "-- comment" would comment out the fragments joined after it
    for name in q:
        if _is_piece(name):
            assert "--" not in q[name], name


def test_no_positional_placeholder_in_sql_files() -> None:
    files = sorted(SQL_DIR.glob("*.sql"))
    assert files
    for f in files:
        for number, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("--", 1)[0]
            code = re.sub(r"'[^']*'", "''", code)  # string literals may hold anything
            assert "?" not in code, f"{f.name}:{number}: positional placeholder: {line.strip()}"


def test_every_query_is_used_by_tx_and_every_name_tx_uses_exists(q: Queries) -> None:
    source = (GATEWAY / "journal" / "tx.py").read_text(encoding="utf-8")
    quoted = set(re.findall(r'"(\w+)"', source))
    pg = Queries.load("postgres")
    for dialect in (q, pg):
        unused = sorted(set(dialect) - quoted)
        assert not unused, f"{dialect.dialect} queries nothing runs: {unused}"
    called = set(re.findall(r'self\._(?:exec|one|all)\(\s*"(\w+)"', source))
    called |= set(re.findall(r'"(where_\w+)"', source))
    # a few exist for PostgreSQL only (row and advisory locks, NOTIFY, its clock, partitions):
    # Tx runs them on that dialect only
    missing = sorted(called - set(q) - set(pg))
    assert not missing, f"tx.py names queries that do not exist: {missing}"


def test_postgres_has_every_sqlite_query_with_the_same_parameters(q: Queries) -> None:
    pg = Queries.load("postgres")
    assert sorted(set(q) - set(pg)) == []
    raw = {name: sql for f in sorted((SQL_DIR.parent / "postgres").glob("*.sql"))
           for name, sql in parse(f.read_text(encoding="utf-8"), f.name)}
    for name in q:
        assert set(_params(raw[name])) == set(_params(q[name])), name


def test_postgres_queries_take_pyformat_parameters_and_no_casts() -> None:
    pg = Queries.load("postgres")
    assert pg["find_duplicate"].count("%(sender_app)s") == 1 and ":sender_app" not in pg["find_duplicate"]
    assert "'YYYY-MM-DD\"T\"HH24:MI'" in pg["exchanges_per_minute"]  # literals untouched
    assert "LIKE %(parked_like)s" in pg["parked_for_destinations"]
    with pytest.raises(QueryError):
        to_pyformat("SELECT :x::text")  # a cast would read as a parameter: CAST(x AS t)


_SQL_WORDS = re.compile(r"SELECT |UPDATE |INSERT INTO|DELETE FROM")
_TX_CONN = re.compile(r"\btx\._?conn\b")


def _strings(path: Path) -> list[tuple[int, str]]:
    """The string literals of a module (f-strings included), with their line."""
    with path.open("rb") as f:
        return [(t.start[0], t.string) for t in tokenize.tokenize(f.readline) if t.type == tokenize.STRING]


def test_no_sql_in_gateway_outside_the_journal() -> None:
    offenders = []
    for path in sorted(GATEWAY.rglob("*.py")):
        rel = path.relative_to(GATEWAY)
        if rel.parts[0] == "journal":
            continue
        offenders += [f"gateway/{rel}:{n}: {s[:80]}" for n, s in _strings(path) if _SQL_WORDS.search(s)]
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _TX_CONN.search(line.split("#", 1)[0]):
                offenders.append(f"gateway/{rel}:{n}: {line.strip()}")
    assert not offenders, "SQL outside gateway/journal:\n" + "\n".join(offenders)


def test_no_sql_text_built_in_tx() -> None:
    tx = GATEWAY / "journal" / "tx.py"
    statement = re.compile(r"^[a-zA-Z]*(\"\"\"|\"|')\s*(SELECT|UPDATE|INSERT|DELETE|WITH|PRAGMA)\b")
    for n, s in _strings(tx):  # a docstring may name SQL, a literal may not be SQL
        assert not statement.match(s), f"tx.py:{n}: SQL in Python: {s[:80]}"
    assert "noqa: S608" not in tx.read_text(encoding="utf-8")  # the mark of SQL built from strings


def test_query_files_are_package_resources() -> None:
    folder = resources.files("gateway.journal.sql").joinpath("sqlite")
    names = {f.name for f in folder.iterdir() if f.name.endswith(".sql")}
    assert {"exchanges.sql", "deliveries.sql", "search.sql", "retention.sql"} <= names
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"*.sql"' in pyproject  # package-data: an installed wheel carries them
    assert (SQL_DIR / "__init__.py").exists()  # a package, so that package-data reaches it


def test_unknown_query_is_a_key_error_naming_it(q: Queries) -> None:
    with pytest.raises(KeyError, match="no_such_query"):
        q["no_such_query"]


def test_parse_reads_headers_and_drops_comments() -> None:
    text = "-- a file comment\n\n-- name: one\n-- what it does\nSELECT 1\n\n-- name: two\nSELECT\n  2\n"
    assert parse(text) == [("one", "SELECT 1"), ("two", "SELECT\n  2")]


def test_parse_rejects_sql_before_the_first_header_and_empty_queries() -> None:
    with pytest.raises(QueryError, match="before the first"):
        parse("SELECT 1\n-- name: one\nSELECT 1\n")
    with pytest.raises(QueryError, match="empty"):
        parse("-- name: one\n-- nothing\n-- name: two\nSELECT 2\n")


def test_a_name_defined_twice_fails_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.sql").write_text("-- name: same\nSELECT 1\n", encoding="utf-8")
    (tmp_path / "b.sql").write_text("-- name: same\nSELECT 2\n", encoding="utf-8")

    class Folder:
        def joinpath(self, _dialect: str) -> Path:
            return tmp_path

    monkeypatch.setattr("gateway.journal.queries.resources.files", lambda _package: Folder())
    Queries.load.cache_clear()
    try:
        with pytest.raises(QueryError, match="'same' defined twice"):
            Queries.load("sqlite")
    finally:
        Queries.load.cache_clear()


def test_each_column_set_update_names_exactly_its_columns(q: Queries) -> None:
    from gateway.journal.tx import _DELIVERY_UPDATES, _EXCHANGE_UPDATES

    for updates in (_EXCHANGE_UPDATES, _DELIVERY_UPDATES):
        for columns, name in updates.items():
            assert set(_params(q[name])) == set(columns) | {"updated_at", "id"}, name


# the index each IN-list query searches first, as with the old "IN (?, ?, ...)" statements: the
# planner cannot tell how short a json_each list is, so a status term could win otherwise
_IN_LIST_INDEX = {
    "parked_for_destinations": "deliveries_due",
    "open_deliveries_for_exchanges": "deliveries_exchange",
    "exchanges_for_patient": "exchanges_open_ins",  # a patient's open exchanges, not every patient's
    "prune_attempt_bodies": "attempts_delivery",
    "prune_delivery_payloads": "deliveries_exchange",
    "prune_document_bodies": "sqlite_autoindex_documents_1",
    "prune_exchange_raw": "sqlite_autoindex_exchanges_1",
    "ended_well_among": "sqlite_autoindex_exchanges_1",
    "delete_attempts_of": "attempts_delivery",
    "delete_deliveries_of": "deliveries_exchange",
    "delete_documents_of": "sqlite_autoindex_documents_1",
    "delete_events_of": "events_exchange",
    "delete_exchanges": "sqlite_autoindex_exchanges_1",
    "extend_leases": "deliveries_due",  # in flight: a handful of rows, whatever the size of the queue
}


def test_in_list_queries_keep_their_index(conn: sqlite3.Connection, q: Queries) -> None:
    assert {name for name in q if "json_each" in q[name]} == set(_IN_LIST_INDEX)
    for name, index in _IN_LIST_INDEX.items():
        plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + q[name], dict.fromkeys(_params(q[name]), "[]"))]
        first = next(step for step in plan if step.startswith("SEARCH"))
        assert f"USING INDEX {index} " in first, (name, plan)


def test_duplicate_lookup_seeks_the_dedup_index(conn: sqlite3.Connection, q: Queries) -> None:
    # a plan through exchanges_sender_seq reads every exchange of the sender: one message
    # would cost more with each one the sender sent before
    plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + q["find_duplicate"],
                                               {"sender_app": "A", "sender_facility": "F", "control_id": "C",
                                                "sha256": "S"}).fetchall())
    assert "USING INDEX exchanges_dedup " in plan, plan


def _plan(conn: sqlite3.Connection, sql: str) -> list[str]:
    return [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, dict.fromkeys(_params(sql), "x"))]


def test_the_claim_walks_due_rows_in_order_and_seeks_only_open_ones(conn: sqlite3.Connection, q: Queries) -> None:
    # through an index of every status, "is an earlier delivery of this patient still open"
    # read the patient's whole history for each candidate: a claim grew with backlog × history
    plan = _plan(conn, q["due_delivery_ids"])
    assert any("USING INDEX deliveries_ready " in step for step in plan), plan
    assert any("USING INDEX deliveries_open " in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan  # no sort of every due row


def test_search_by_control_id_seeks_the_dedup_index(conn: sqlite3.Connection, q: Queries) -> None:
    plan = _plan(conn, "SELECT id FROM exchanges WHERE " + q["where_control_id"])
    assert any("USING INDEX exchanges_dedup (control_id=?)" in step for step in plan), plan


def test_an_adt_reads_only_the_documents_waiting_for_its_ins(conn: sqlite3.Connection, q: Queries) -> None:
    # not the patient's documents held for a conflict, which an ADT cannot release
    plan = _plan(conn, q["waiting_for_ins"])
    assert plan == ["SEARCH exchanges USING INDEX exchanges_waiting_ins (patient_ins=?)"], plan
