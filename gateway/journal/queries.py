"""Named SQL queries, kept in ``.sql`` files beside the schema, one dialect per folder.

Each file under ``gateway/journal/sql/<dialect>/`` holds queries introduced by a header line::

    -- name: find_duplicate
    SELECT id FROM exchanges WHERE ...

The text up to the next header is the query (comments and blank lines around it dropped).
Queries take named parameters only (``:name``). Files are read once, through
``importlib.resources``, so an installed wheel finds them as package data.

PostgreSQL's driver (psycopg) takes ``%(name)s``: for that dialect each ``:name`` outside
string literals becomes ``%(name)s`` at load time and every literal ``%`` is doubled. The
PostgreSQL files therefore write ``CAST(x AS t)``, never ``x::t``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources

__all__ = ["Queries", "QueryError"]

_HEADER = re.compile(r"^--\s*name:\s*(\S+)\s*$")
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
#: dialects whose driver takes pyformat parameters (``%(name)s``)
_PYFORMAT = {"postgres"}


class QueryError(Exception):
    """The query files are malformed (a duplicate name, text before the first header, an empty query)."""


class Queries(Mapping[str, str]):
    """The named queries of one dialect: ``Queries.load("sqlite")["find_duplicate"]``."""

    def __init__(self, dialect: str, queries: dict[str, str]) -> None:
        self.dialect = dialect
        self._queries = queries

    @classmethod
    @cache
    def load(cls, dialect: str) -> Queries:
        folder = resources.files("gateway.journal.sql").joinpath(dialect)
        queries: dict[str, str] = {}
        origin: dict[str, str] = {}
        files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
        if not files:
            raise QueryError(f"no query files for dialect {dialect!r}")
        for f in files:
            for name, sql in parse(f.read_text(encoding="utf-8"), f.name):
                if name in queries:
                    raise QueryError(f"query {name!r} defined twice ({origin[name]} and {f.name})")
                queries[name] = to_pyformat(sql) if dialect in _PYFORMAT else sql
                origin[name] = f.name
        return cls(dialect, queries)

    def __getitem__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            raise KeyError(f"no query named {name!r} for {self.dialect}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._queries)

    def __len__(self) -> int:
        return len(self._queries)


def parse(text: str, source: str = "<sql>") -> list[tuple[str, str]]:
    """The ``(name, sql)`` pairs of one file, in order."""
    out: list[tuple[str, str]] = []
    name: str | None = None
    body: list[str] = []

    def flush() -> None:
        if name is None:
            return
        sql = "\n".join(line for line in body if line.strip() and not line.lstrip().startswith("--")).strip()
        if not sql:
            raise QueryError(f"query {name!r} in {source} is empty")
        out.append((name, sql))

    for line in text.splitlines():
        m = _HEADER.match(line.strip())
        if m:
            flush()
            name, body = m.group(1), []
        elif name is not None:
            body.append(line)
        elif line.strip() and not line.lstrip().startswith("--"):
            raise QueryError(f"{source}: SQL before the first '-- name:' header")
    flush()
    return out


def to_pyformat(sql: str) -> str:
    """``:name`` → ``%(name)s`` outside string literals, ``%`` → ``%%`` (psycopg's paramstyle).

    A ``::`` cast is refused: write ``CAST(x AS t)`` so that no cast can be taken for a parameter.
    """
    out: list[str] = []
    for i, part in enumerate(re.split(r"('(?:[^']|'')*')", sql)):
        part = part.replace("%", "%%")
        if i % 2 == 0:  # outside a literal
            if "::" in part:
                raise QueryError(f"'::' cast in {sql[:60]!r}: write CAST(x AS t)")
            part = _PARAM.sub(lambda m: f"%({m.group(1)})s", part)
        out.append(part)
    return "".join(out)
