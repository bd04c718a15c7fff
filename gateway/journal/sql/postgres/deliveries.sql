-- Deliveries (one per destination and document, ZAM or ACK) and their attempts (request and
-- response in attempt_bodies, partitioned by the month of the exchange's received_at).

-- name: next_delivery_seq
-- (insert_delivery takes the next value itself when no seq is given: one round trip less)
SELECT nextval(pg_get_serial_sequence('deliveries', 'seq')) AS seq

-- name: insert_delivery
INSERT INTO deliveries (
    id, seq, exchange_id, destination, kind, status, attempts, next_attempt_at, claimed_by,
    lease_until, last_error, patient_key, unique_id, doc_index, action, payload, created_at,
    updated_at
) VALUES (
    :id, COALESCE(CAST(:seq AS bigint), nextval(pg_get_serial_sequence('deliveries', 'seq'))), :exchange_id, :destination, :kind, :status, :attempts, :next_attempt_at,
    :claimed_by, :lease_until, :last_error, :patient_key, :unique_id, :doc_index, :action,
    :payload, :created_at, :updated_at
)

-- name: update_delivery
UPDATE deliveries SET
    seq = CASE WHEN :set_seq THEN CAST(:seq AS bigint) ELSE deliveries.seq END,
    exchange_id = CASE WHEN :set_exchange_id THEN :exchange_id ELSE deliveries.exchange_id END,
    destination = CASE WHEN :set_destination THEN :destination ELSE deliveries.destination END,
    kind = CASE WHEN :set_kind THEN :kind ELSE deliveries.kind END,
    status = CASE WHEN :set_status THEN :status ELSE deliveries.status END,
    attempts = CASE WHEN :set_attempts THEN CAST(:attempts AS integer) ELSE deliveries.attempts END,
    next_attempt_at = CASE WHEN :set_next_attempt_at THEN CAST(:next_attempt_at AS timestamptz) ELSE deliveries.next_attempt_at END,
    claimed_by = CASE WHEN :set_claimed_by THEN :claimed_by ELSE deliveries.claimed_by END,
    lease_until = CASE WHEN :set_lease_until THEN CAST(:lease_until AS timestamptz) ELSE deliveries.lease_until END,
    last_error = CASE WHEN :set_last_error THEN :last_error ELSE deliveries.last_error END,
    patient_key = CASE WHEN :set_patient_key THEN :patient_key ELSE deliveries.patient_key END,
    unique_id = CASE WHEN :set_unique_id THEN :unique_id ELSE deliveries.unique_id END,
    doc_index = CASE WHEN :set_doc_index THEN CAST(:doc_index AS integer) ELSE deliveries.doc_index END,
    action = CASE WHEN :set_action THEN :action ELSE deliveries.action END,
    payload = CASE WHEN :set_payload THEN CAST(:payload AS bytea) ELSE deliveries.payload END,
    created_at = CASE WHEN :set_created_at THEN CAST(:created_at AS timestamptz) ELSE deliveries.created_at END,
    updated_at = :updated_at
WHERE id = :id

-- name: update_delivery_due
UPDATE deliveries SET status = :status, next_attempt_at = :next_attempt_at, updated_at = :updated_at
WHERE id = :id

-- name: update_delivery_retry
UPDATE deliveries SET status = :status, next_attempt_at = :next_attempt_at, last_error = :last_error,
    updated_at = :updated_at
WHERE id = :id

-- name: update_delivery_outcome
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

-- name: claim_due
-- Due deliveries, oldest first, claimed in one statement. Per (destination, patient) only
-- the oldest open delivery is ever due, whoever holds it: an earlier one in any open state
-- (claimed by another instance included) blocks the rest. SKIP LOCKED: rows another
-- instance is claiming right now are left to it; the re-check of the WHERE on the locked
-- row's latest version keeps an already claimed one out. attempts + 1 under the row lock
-- is the fencing token record_attempt checks.
WITH due AS (
    SELECT d.id FROM deliveries d
    WHERE d.status IN ('queued', 'failed') AND d.next_attempt_at <= CAST(:now AS timestamptz)
      AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.destination = d.destination
        AND e.patient_key = d.patient_key AND e.seq < d.seq
        AND e.status IN ('waiting', 'queued', 'in_flight', 'failed'))
    ORDER BY d.next_attempt_at, d.seq
    LIMIT :limit
    FOR UPDATE OF d SKIP LOCKED
), claimed AS (
    UPDATE deliveries SET status = 'in_flight', claimed_by = :worker, lease_until = :lease_until,
        attempts = deliveries.attempts + 1, updated_at = :now
    FROM due WHERE deliveries.id = due.id
    RETURNING deliveries.*
)
SELECT * FROM claimed ORDER BY next_attempt_at, seq

-- name: recover_in_flight
UPDATE deliveries SET status = 'failed', next_attempt_at = :now, updated_at = :now,
    last_error = 'outcome unknown: interrupted in flight'
WHERE status = 'in_flight'

-- name: recover_expired_in_flight
UPDATE deliveries SET status = 'failed', next_attempt_at = :now, updated_at = :now,
    last_error = 'outcome unknown: interrupted in flight'
WHERE status = 'in_flight' AND lease_until < CAST(:now AS timestamptz)

-- name: parked_for_destinations
SELECT id, exchange_id FROM deliveries
WHERE status = 'waiting' AND last_error LIKE :parked_like
  AND destination IN (SELECT jsonb_array_elements_text(CAST(:names AS jsonb)))

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
SELECT * FROM deliveries
WHERE exchange_id IN (SELECT jsonb_array_elements_text(CAST(:exchange_ids AS jsonb)))
  AND status IN ('waiting', 'queued', 'failed')

-- name: open_work
SELECT destination, COUNT(*) AS n, MIN(created_at) AS oldest FROM deliveries
WHERE status IN ('queued', 'in_flight', 'failed') GROUP BY destination

-- name: zam_trouble
SELECT status, COUNT(*) AS n FROM deliveries
WHERE kind = 'zam' AND status IN ('failed', 'dead')
GROUP BY status

-- name: queue_waiting_deliveries
UPDATE deliveries SET status = 'queued', next_attempt_at = :at, updated_at = :at
WHERE exchange_id = :exchange_id AND status = 'waiting'

-- name: kill_waiting_deliveries
UPDATE deliveries SET status = 'dead', last_error = :reason, updated_at = :at
WHERE exchange_id = :exchange_id AND status = 'waiting'

-- name: hold_open_document_deliveries
UPDATE deliveries SET status = 'waiting', updated_at = :at
WHERE exchange_id = :exchange_id AND kind = 'document' AND status IN ('queued', 'failed')

-- name: rekey_open_deliveries
UPDATE deliveries SET patient_key = :new_key, updated_at = :at
WHERE patient_key = :old_key AND status IN ('waiting', 'queued', 'failed', 'in_flight')

-- name: insert_attempt
-- the attempt's bodies go to the month of its exchange; RETURNING id (no lastrowid here)
WITH a AS (
    INSERT INTO attempts (id, delivery_id, number, started_at, finished_at, outcome, error, duration)
    VALUES (COALESCE(CAST(:id AS bigint), nextval(pg_get_serial_sequence('attempts', 'id'))), :delivery_id,
        :number, :started_at, :finished_at, :outcome, :error, :duration)
    RETURNING id
), b AS (
    INSERT INTO attempt_bodies (attempt_id, exchange_id, received_at, request, response)
    SELECT a.id, e.id, e.received_at, CAST(:request AS text), CAST(:response AS text)
    FROM a, deliveries d JOIN exchanges e ON e.id = d.exchange_id
    WHERE d.id = :delivery_id AND (CAST(:request AS text) IS NOT NULL OR CAST(:response AS text) IS NOT NULL)
)
SELECT id FROM a

-- name: attempts_for
SELECT id, delivery_id, number, started_at, finished_at, outcome, error, duration
FROM attempts WHERE delivery_id = :delivery_id ORDER BY id

-- name: attempts_with_bodies_for
SELECT a.id, a.delivery_id, a.number, a.started_at, a.finished_at, a.outcome, a.error,
    b.request, b.response, a.duration
FROM attempts a LEFT JOIN attempt_bodies b ON b.attempt_id = a.id
WHERE a.delivery_id = :delivery_id ORDER BY a.id

-- name: attempt_outcomes_since
SELECT d.destination AS destination, a.outcome AS outcome,
    to_char(a.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI') AS minute,
    MAX(a.finished_at) AS finished_at, COUNT(*) AS n
FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
WHERE a.finished_at >= CAST(:since AS timestamptz)
GROUP BY d.destination, a.outcome, minute

-- name: last_success_since
SELECT d.destination AS destination, MAX(a.finished_at) AS at
FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
WHERE a.finished_at >= CAST(:since AS timestamptz) AND a.outcome IN ('delivered', 'found-existing')
GROUP BY d.destination

-- name: due_delivery_ids
-- (the SQLite claim, in two steps; PostgreSQL claims with claim_due. Kept so both dialects
-- name the same queries.)
SELECT d.id FROM deliveries d
WHERE d.status IN ('queued', 'failed') AND d.next_attempt_at <= CAST(:now AS timestamptz)
  AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.destination = d.destination
    AND e.patient_key = d.patient_key AND e.seq < d.seq
    AND e.status IN ('waiting', 'queued', 'in_flight', 'failed'))
ORDER BY d.next_attempt_at, d.seq LIMIT :limit
FOR UPDATE OF d SKIP LOCKED

-- name: claim_delivery
UPDATE deliveries SET status = 'in_flight', claimed_by = :worker, lease_until = :lease_until,
    attempts = attempts + 1, updated_at = :now
WHERE id = :id
