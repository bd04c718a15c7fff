-- Claims and leases: what lets an instance own a delivery or a periodic duty for a while.
-- Lease times come from the database clock (PostgresJournal._now), so instances agree.

-- name: extend_leases
UPDATE deliveries SET lease_until = :until
WHERE status = 'in_flight' AND claimed_by = :worker
  AND id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)))

-- name: recover_worker_in_flight
UPDATE deliveries SET status = 'failed', next_attempt_at = :now, updated_at = :now,
    last_error = 'outcome unknown: interrupted in flight'
WHERE status = 'in_flight' AND claimed_by = :worker

-- name: hold_lease
-- taken when free or run out, renewed by its holder; the token changes with the holder.
-- A concurrent taker waits on the row and re-checks the condition on what committed.
INSERT INTO leases (name, holder, token, expires_at) VALUES (:name, :holder, 1, :until)
ON CONFLICT (name) DO UPDATE SET
    token = CASE WHEN leases.holder = excluded.holder THEN leases.token ELSE leases.token + 1 END,
    holder = excluded.holder, expires_at = excluded.expires_at
WHERE leases.holder = excluded.holder OR leases.expires_at < CAST(:now AS timestamptz)

-- name: lock_key
-- transaction-scoped: released at commit, safe behind a transaction-pooling proxy
SELECT pg_advisory_xact_lock(hashtextextended(:key, 0)) AS locked

-- name: lock_exchange
SELECT id FROM exchanges WHERE id = :id FOR UPDATE

-- name: lock_delivery
-- after the wait, the next statement reads the version the other transaction committed
SELECT id FROM deliveries WHERE id = :id FOR UPDATE

-- name: notify_work
-- delivered to the listeners at commit, not before (and not at all on rollback)
SELECT pg_notify('relais_work', '') AS notified

-- name: server_now
-- the clock leases are measured on: the database's, the same for every instance
SELECT now() AS now
