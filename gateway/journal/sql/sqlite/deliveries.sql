-- Deliveries (one per destination and document, ZAM or ACK) and their attempts.

-- name: next_delivery_seq
SELECT COALESCE(MAX(seq), 0) + 1 AS seq FROM deliveries

-- name: insert_delivery
-- every column named; tx.py fills the ones a caller leaves out with their defaults
INSERT INTO deliveries (
    id, seq, exchange_id, destination, kind, status, attempts, next_attempt_at, claimed_by,
    lease_until, last_error, patient_key, unique_id, doc_index, action, payload, created_at,
    updated_at
) VALUES (
    :id, :seq, :exchange_id, :destination, :kind, :status, :attempts, :next_attempt_at,
    :claimed_by, :lease_until, :last_error, :patient_key, :unique_id, :doc_index, :action,
    :payload, :created_at, :updated_at
)

-- name: update_delivery
-- the columns whose set_<column> flag is true take the new value, the others keep theirs
UPDATE deliveries SET
    seq = iif(:set_seq, :seq, seq),
    exchange_id = iif(:set_exchange_id, :exchange_id, exchange_id),
    destination = iif(:set_destination, :destination, destination),
    kind = iif(:set_kind, :kind, kind),
    status = iif(:set_status, :status, status),
    attempts = iif(:set_attempts, :attempts, attempts),
    next_attempt_at = iif(:set_next_attempt_at, :next_attempt_at, next_attempt_at),
    claimed_by = iif(:set_claimed_by, :claimed_by, claimed_by),
    lease_until = iif(:set_lease_until, :lease_until, lease_until),
    last_error = iif(:set_last_error, :last_error, last_error),
    patient_key = iif(:set_patient_key, :patient_key, patient_key),
    unique_id = iif(:set_unique_id, :unique_id, unique_id),
    doc_index = iif(:set_doc_index, :doc_index, doc_index),
    action = iif(:set_action, :action, action),
    payload = iif(:set_payload, :payload, payload),
    created_at = iif(:set_created_at, :created_at, created_at),
    updated_at = :updated_at
WHERE id = :id

-- The updates the dispatcher makes all the time, one statement per column set (see
-- update_exchange_status in exchanges.sql for why). Tx.update_delivery picks one by its fields.

-- name: update_delivery_due
UPDATE deliveries SET status = :status, next_attempt_at = :next_attempt_at, updated_at = :updated_at
WHERE id = :id

-- name: update_delivery_retry
UPDATE deliveries SET status = :status, next_attempt_at = :next_attempt_at, last_error = :last_error,
    updated_at = :updated_at
WHERE id = :id

-- name: update_delivery_outcome
-- an attempt ended: the claim goes, the next attempt (if any) is scheduled
UPDATE deliveries SET status = :status, next_attempt_at = :next_attempt_at, last_error = :last_error,
    claimed_by = :claimed_by, lease_until = :lease_until, updated_at = :updated_at
WHERE id = :id

-- name: update_delivery_park
UPDATE deliveries SET status = :status, last_error = :last_error, claimed_by = :claimed_by,
    lease_until = :lease_until, updated_at = :updated_at
WHERE id = :id

-- name: update_delivery_reroute
UPDATE deliveries SET destination = :destination, status = :status, attempts = :attempts,
    next_attempt_at = :next_attempt_at, last_error = :last_error, updated_at = :updated_at
WHERE id = :id

-- name: get_delivery
SELECT * FROM deliveries WHERE id = :id

-- name: outbound_by_control_id
SELECT id, exchange_id, kind, status FROM deliveries
WHERE kind IN ('zam', 'ack') AND unique_id = :control_id
ORDER BY seq DESC LIMIT 1

-- name: zam_exists
SELECT 1 AS found FROM deliveries WHERE kind = 'zam' AND unique_id = :unique_id

-- name: due_delivery_ids
-- at most one open delivery per (destination, patient): an earlier open one blocks the rest.
-- INDEXED BY: without statistics the planner takes deliveries_due, whose two status ranges
-- must then be sorted whole; deliveries_ready yields the candidates in claim order
SELECT d.id FROM deliveries d INDEXED BY deliveries_ready
WHERE d.status IN ('queued', 'failed') AND d.next_attempt_at <= :now
  AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.destination = d.destination
    AND e.patient_key = d.patient_key AND e.seq < d.seq
    AND e.status IN ('waiting', 'queued', 'in_flight', 'failed'))
ORDER BY d.next_attempt_at, d.seq LIMIT :limit

-- name: claim_delivery
UPDATE deliveries SET status = 'in_flight', claimed_by = :worker, lease_until = :lease_until,
    attempts = attempts + 1, updated_at = :now
WHERE id = :id

-- name: recover_in_flight
UPDATE deliveries SET status = 'failed', next_attempt_at = :now, updated_at = :now,
    last_error = 'outcome unknown: interrupted in flight'
WHERE status = 'in_flight'

-- name: recover_expired_in_flight
UPDATE deliveries SET status = 'failed', next_attempt_at = :now, updated_at = :now,
    last_error = 'outcome unknown: interrupted in flight'
WHERE status = 'in_flight' AND lease_until < :now

-- name: parked_for_destinations
-- :names is a JSON array of destination names
SELECT id, exchange_id FROM deliveries
WHERE status = 'waiting' AND last_error LIKE :parked_like
  AND destination IN (SELECT value FROM json_each(:names))

-- name: reroute_candidates
SELECT id, exchange_id, status, last_error FROM deliveries
WHERE destination = :source
  AND kind IN ('document', 'mail', 'hl7') AND status IN ('waiting', 'queued', 'failed', 'dead')
ORDER BY seq

-- name: dead_worklist
SELECT d.id, d.exchange_id, d.destination, d.kind, d.attempts, d.last_error, d.updated_at,
    e.control_id, e.message_type
FROM deliveries d JOIN exchanges e ON e.id = d.exchange_id
WHERE d.status = 'dead' ORDER BY d.seq LIMIT :limit

-- name: dead_count
SELECT COUNT(*) AS n FROM deliveries WHERE status = 'dead'

-- name: dead_delivery_ids
SELECT id FROM deliveries WHERE status = 'dead' ORDER BY seq

-- name: dead_delivery_ids_for_destination
SELECT id FROM deliveries WHERE status = 'dead' AND destination = :destination ORDER BY seq

-- name: deliveries_for
SELECT id, exchange_id, destination, kind, status, attempts, next_attempt_at, last_error,
    unique_id, created_at, updated_at
FROM deliveries WHERE exchange_id = :exchange_id ORDER BY seq

-- name: open_deliveries_for_exchanges
-- :exchange_ids is a JSON array. "+status": the deliveries_exchange index, not deliveries_due
-- (the planner cannot tell how short the json_each list is)
SELECT * FROM deliveries
WHERE exchange_id IN (SELECT value FROM json_each(:exchange_ids))
  AND +status IN ('waiting', 'queued', 'failed')

-- name: open_work
SELECT destination, COUNT(*) AS n, MIN(created_at) AS oldest FROM deliveries
WHERE status IN ('queued', 'in_flight', 'failed') GROUP BY destination

-- name: zam_trouble
SELECT status, COUNT(*) AS n FROM deliveries
WHERE kind = 'zam' AND status IN ('failed', 'dead')
GROUP BY status

-- name: queue_waiting_deliveries
-- the exchange's deliveries held by the identity gate are due now
UPDATE deliveries SET status = 'queued', next_attempt_at = :at, updated_at = :at
WHERE exchange_id = :exchange_id AND status = 'waiting'

-- name: kill_waiting_deliveries
UPDATE deliveries SET status = 'dead', last_error = :reason, updated_at = :at
WHERE exchange_id = :exchange_id AND status = 'waiting'

-- name: hold_open_document_deliveries
-- an attempt already in flight cannot be recalled: only queued and failed work waits again
UPDATE deliveries SET status = 'waiting', updated_at = :at
WHERE exchange_id = :exchange_id AND kind = 'document' AND status IN ('queued', 'failed')

-- name: rekey_open_deliveries
UPDATE deliveries SET patient_key = :new_key, updated_at = :at
WHERE patient_key = :old_key AND status IN ('waiting', 'queued', 'failed', 'in_flight')

-- name: insert_attempt
INSERT INTO attempts (
    id, delivery_id, number, started_at, finished_at, outcome, error, request, response, duration
) VALUES (
    :id, :delivery_id, :number, :started_at, :finished_at, :outcome, :error, :request, :response, :duration
)

-- name: attempts_for
SELECT id, delivery_id, number, started_at, finished_at, outcome, error, duration
FROM attempts WHERE delivery_id = :delivery_id ORDER BY id

-- name: attempts_with_bodies_for
SELECT * FROM attempts WHERE delivery_id = :delivery_id ORDER BY id

-- name: attempt_outcomes_since
SELECT d.destination AS destination, a.outcome AS outcome, substr(a.finished_at, 1, 16) AS minute,
    MAX(a.finished_at) AS finished_at, COUNT(*) AS n
FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
WHERE a.finished_at >= :since
GROUP BY d.destination, a.outcome, minute

-- name: last_success_since
SELECT d.destination AS destination, MAX(a.finished_at) AS at
FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
WHERE a.finished_at >= :since AND a.outcome IN ('delivered', 'found-existing')
GROUP BY d.destination
