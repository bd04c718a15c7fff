-- Leases on periodic duties (hold expiry and lease recovery, retention): one holder at a time.
-- A holder renews its lease before it runs out; another may take it only once it has. The
-- token counts the changes of holder, so a log line can tell two tenures apart.
-- (The SQLite 0002 also indexes deliveries(seq) for MAX(seq) + 1: here seq is an identity
-- column, and 0001 already made it UNIQUE.)
CREATE TABLE IF NOT EXISTS leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    token      BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
-- claims skip what another instance holds: the due walk reads in_flight leases by expiry
CREATE INDEX IF NOT EXISTS deliveries_lease ON deliveries(lease_until) WHERE status = 'in_flight';
