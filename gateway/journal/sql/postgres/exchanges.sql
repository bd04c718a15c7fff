-- Exchanges: one row per message received, its summary and its status. The raw bytes are
-- in exchange_raw, partitioned by the month of received_at (see 0001_initial.sql).

-- name: next_exchange_seq
-- (insert_exchange takes the next value itself when no seq is given: one round trip less)
SELECT nextval(pg_get_serial_sequence('exchanges', 'seq')) AS seq

-- name: insert_exchange
-- every column named; tx.py fills the ones a caller leaves out with their defaults
WITH ex AS (
    INSERT INTO exchanges (
        id, seq, received_at, listener, peer, sha256, size, sender_app, sender_facility,
        control_id, message_type, version, charset, status, reason_code, reason, ack_code,
        duplicate_of, patient_ins, patient_ipp, document_id, dmp_bound, ack_reception, held_since,
        findings, pruned_at, updated_at
    ) VALUES (
        :id, COALESCE(CAST(:seq AS bigint), nextval(pg_get_serial_sequence('exchanges', 'seq'))), :received_at, :listener, :peer, :sha256, :size, :sender_app, :sender_facility,
        :control_id, :message_type, :version, :charset, :status, :reason_code, :reason, :ack_code,
        :duplicate_of, :patient_ins, :patient_ipp, :document_id, CAST(:dmp_bound AS integer),
        CAST(:ack_reception AS integer), :held_since, CAST(:findings AS jsonb), :pruned_at, :updated_at
    ) RETURNING id, received_at
)
INSERT INTO exchange_raw (exchange_id, received_at, raw)
SELECT id, received_at, CAST(:raw AS bytea) FROM ex WHERE CAST(:raw AS bytea) IS NOT NULL

-- name: update_exchange
-- the columns whose set_<column> flag is true take the new value, the others keep theirs
WITH u AS (
UPDATE exchanges SET
    seq = CASE WHEN :set_seq THEN CAST(:seq AS bigint) ELSE exchanges.seq END,
    received_at = CASE WHEN :set_received_at THEN CAST(:received_at AS timestamptz) ELSE exchanges.received_at END,
    listener = CASE WHEN :set_listener THEN :listener ELSE exchanges.listener END,
    peer = CASE WHEN :set_peer THEN :peer ELSE exchanges.peer END,
    sha256 = CASE WHEN :set_sha256 THEN :sha256 ELSE exchanges.sha256 END,
    size = CASE WHEN :set_size THEN CAST(:size AS bigint) ELSE exchanges.size END,
    sender_app = CASE WHEN :set_sender_app THEN :sender_app ELSE exchanges.sender_app END,
    sender_facility = CASE WHEN :set_sender_facility THEN :sender_facility ELSE exchanges.sender_facility END,
    control_id = CASE WHEN :set_control_id THEN :control_id ELSE exchanges.control_id END,
    message_type = CASE WHEN :set_message_type THEN :message_type ELSE exchanges.message_type END,
    version = CASE WHEN :set_version THEN :version ELSE exchanges.version END,
    charset = CASE WHEN :set_charset THEN :charset ELSE exchanges.charset END,
    status = CASE WHEN :set_status THEN :status ELSE exchanges.status END,
    reason_code = CASE WHEN :set_reason_code THEN :reason_code ELSE exchanges.reason_code END,
    reason = CASE WHEN :set_reason THEN :reason ELSE exchanges.reason END,
    ack_code = CASE WHEN :set_ack_code THEN :ack_code ELSE exchanges.ack_code END,
    duplicate_of = CASE WHEN :set_duplicate_of THEN :duplicate_of ELSE exchanges.duplicate_of END,
    patient_ins = CASE WHEN :set_patient_ins THEN :patient_ins ELSE exchanges.patient_ins END,
    patient_ipp = CASE WHEN :set_patient_ipp THEN :patient_ipp ELSE exchanges.patient_ipp END,
    document_id = CASE WHEN :set_document_id THEN :document_id ELSE exchanges.document_id END,
    dmp_bound = CASE WHEN :set_dmp_bound THEN CAST(:dmp_bound AS integer) ELSE exchanges.dmp_bound END,
    ack_reception = CASE WHEN :set_ack_reception THEN CAST(:ack_reception AS integer) ELSE exchanges.ack_reception END,
    held_since = CASE WHEN :set_held_since THEN CAST(:held_since AS timestamptz) ELSE exchanges.held_since END,
    findings = CASE WHEN :set_findings THEN CAST(:findings AS jsonb) ELSE exchanges.findings END,
    pruned_at = CASE WHEN :set_pruned_at THEN CAST(:pruned_at AS timestamptz) ELSE exchanges.pruned_at END,
    updated_at = :updated_at
WHERE id = :id
RETURNING id, received_at
)
INSERT INTO exchange_raw (exchange_id, received_at, raw)
SELECT id, received_at, CAST(:raw AS bytea) FROM u WHERE CAST(:set_raw AS boolean)
ON CONFLICT (exchange_id, received_at) DO UPDATE SET raw = excluded.raw

-- name: update_exchange_status
UPDATE exchanges SET status = :status, updated_at = :updated_at WHERE id = :id

-- name: update_exchange_hold
UPDATE exchanges SET status = :status, reason_code = :reason_code, reason = :reason, held_since = :held_since,
    updated_at = :updated_at
WHERE id = :id

-- name: update_exchange_outcome
UPDATE exchanges SET status = :status, reason_code = :reason_code, reason = :reason, updated_at = :updated_at
WHERE id = :id

-- name: update_exchange_status_reason
UPDATE exchanges SET status = :status, reason = :reason, updated_at = :updated_at WHERE id = :id

-- name: update_exchange_reason
UPDATE exchanges SET reason_code = :reason_code, reason = :reason, updated_at = :updated_at WHERE id = :id

-- name: update_exchange_patient_ipp
UPDATE exchanges SET patient_ipp = :patient_ipp, updated_at = :updated_at WHERE id = :id

-- name: find_duplicate
SELECT id FROM exchanges
WHERE sender_app = :sender_app AND sender_facility = :sender_facility AND control_id = :control_id
  AND sha256 = :sha256 AND status != 'duplicate'
ORDER BY seq LIMIT 1

-- name: get_exchange
SELECT id, seq, received_at, listener, peer, sha256, size, sender_app, sender_facility, control_id,
    message_type, version, charset, status, reason_code, reason, ack_code, duplicate_of, document_id,
    dmp_bound, ack_reception, held_since, pruned_at, updated_at,
    findings, patient_ins, patient_ipp
FROM exchanges WHERE id = :id

-- name: get_exchange_with_bodies
SELECT e.id, e.seq, e.received_at, e.listener, e.peer, r.raw, e.sha256, e.size, e.sender_app, e.sender_facility,
    e.control_id, e.message_type, e.version, e.charset, e.status, e.reason_code, e.reason, e.ack_code,
    e.duplicate_of, e.patient_ins, e.patient_ipp, e.document_id, e.dmp_bound, e.ack_reception, e.held_since,
    e.findings, e.pruned_at, e.updated_at
FROM exchanges e LEFT JOIN exchange_raw r ON r.exchange_id = e.id AND r.received_at = e.received_at
WHERE e.id = :id

-- name: get_exchange_by_prefix
SELECT id, seq, received_at, listener, peer, sha256, size, sender_app, sender_facility, control_id,
    message_type, version, charset, status, reason_code, reason, ack_code, duplicate_of, document_id,
    dmp_bound, ack_reception, held_since, pruned_at, updated_at,
    findings, patient_ins, patient_ipp
FROM exchanges WHERE id LIKE :id_like ESCAPE '\' LIMIT 2

-- name: get_exchange_with_bodies_by_prefix
SELECT e.id, e.seq, e.received_at, e.listener, e.peer, r.raw, e.sha256, e.size, e.sender_app, e.sender_facility,
    e.control_id, e.message_type, e.version, e.charset, e.status, e.reason_code, e.reason, e.ack_code,
    e.duplicate_of, e.patient_ins, e.patient_ipp, e.document_id, e.dmp_bound, e.ack_reception, e.held_since,
    e.findings, e.pruned_at, e.updated_at
FROM exchanges e LEFT JOIN exchange_raw r ON r.exchange_id = e.id AND r.received_at = e.received_at
WHERE e.id LIKE :id_like ESCAPE '\' LIMIT 2

-- name: count_exchanges_by_status
SELECT status, COUNT(*) AS n FROM exchanges GROUP BY status

-- name: exchanges_for_patient
-- :statuses: some of held, queued, received (the literal list matches the partial indexes of 0004)
SELECT id, status, reason_code, patient_ins, patient_ipp, held_since, dmp_bound FROM exchanges
WHERE status IN ('held', 'queued', 'received') AND (patient_ins = :ins OR patient_ipp = :ipp)
  AND status IN (SELECT jsonb_array_elements_text(CAST(:statuses AS jsonb)))
ORDER BY seq

-- name: waiting_for_ins
-- held for want of a qualified INS, this one (index exchanges_waiting_ins)
SELECT id, status, reason_code, patient_ins, patient_ipp, held_since, dmp_bound FROM exchanges
WHERE status = 'held' AND reason_code = 'INS_NOT_QUALIFIED' AND patient_ins = :ins
ORDER BY seq

-- name: held_exchanges
SELECT id, control_id, message_type, reason_code, reason, held_since, patient_ins, patient_ipp
FROM exchanges WHERE status = 'held' ORDER BY seq

-- name: exchange_raw
SELECT r.raw, e.listener
FROM exchanges e LEFT JOIN exchange_raw r ON r.exchange_id = e.id AND r.received_at = e.received_at
WHERE e.id = :id

-- name: held_worklist
SELECT id, control_id, message_type, reason_code, reason, held_since FROM exchanges
WHERE status = 'held' ORDER BY seq LIMIT :limit

-- name: held_count
SELECT COUNT(*) AS n FROM exchanges WHERE status = 'held'

-- name: oldest_held_since
SELECT MIN(held_since) AS oldest FROM exchanges WHERE status = 'held'

-- name: exchanges_per_minute
SELECT to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI') AS minute, COUNT(*) AS n
FROM exchanges
WHERE received_at >= CAST(:since AS timestamptz)
GROUP BY minute
