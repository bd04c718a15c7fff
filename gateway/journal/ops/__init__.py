"""The journal's operations, written once over a session of named queries.

Each function here is one :class:`gateway.journal.base.Journal` operation: it runs inside
one transaction that the backend opens (SQLite: its writer thread; PostgreSQL: a pooled
connection; memory: a lock) and reads and writes through the session's named queries
only. Decisions that must see the rows they change — is this message a duplicate, is
this the last DMP delivery of its exchange, is the hold still there — are taken here,
inside that transaction, so they stay right when several instances share the journal.
"""
