-- Leases on periodic duties (hold expiry and lease recovery, retention): one holder at a time.
-- A holder renews its lease before it runs out; another may take it only once it has. The
-- token counts the changes of holder, so a log line can tell two tenures apart.
CREATE TABLE IF NOT EXISTS leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    token      INTEGER NOT NULL,
    expires_at TEXT NOT NULL
);

-- seq is taken as MAX(seq) + 1 by the single writer: an index makes that one seek
CREATE INDEX IF NOT EXISTS deliveries_seq ON deliveries(seq);
