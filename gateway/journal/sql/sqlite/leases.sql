-- Claims and leases: what lets an instance own a delivery or a periodic duty for a while.

-- name: extend_leases
-- :ids is a JSON array of delivery ids; only the ones this worker still holds move
UPDATE deliveries SET lease_until = :until
WHERE status = 'in_flight' AND claimed_by = :worker AND id IN (SELECT value FROM json_each(:ids))

-- name: recover_worker_in_flight
UPDATE deliveries SET status = 'failed', next_attempt_at = :now, updated_at = :now,
    last_error = 'outcome unknown: interrupted in flight'
WHERE status = 'in_flight' AND claimed_by = :worker

-- name: hold_lease
-- taken when free or run out, renewed by its holder; the token changes with the holder
INSERT INTO leases (name, holder, token, expires_at) VALUES (:name, :holder, 1, :until)
ON CONFLICT (name) DO UPDATE SET
    token = CASE WHEN leases.holder = excluded.holder THEN leases.token ELSE leases.token + 1 END,
    holder = excluded.holder, expires_at = excluded.expires_at
WHERE leases.holder = excluded.holder OR leases.expires_at < :now
