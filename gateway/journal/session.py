"""The session the journal's operations run on: one transaction's named queries.

``gateway.journal.tx.Tx`` is the SQL implementation (SQLite and PostgreSQL, with the
dialect's query files); ``gateway.journal.memory`` has the in-memory one. Only the
journal package sees a session: callers use :class:`gateway.journal.base.Journal`.
"""

from __future__ import annotations

from gateway.journal.tx import Tx as Session

__all__ = ["Session"]
