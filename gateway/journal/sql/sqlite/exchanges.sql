-- Exchanges: one row per message received, its summary and its status.
-- Named queries for gateway/journal/tx.py (loaded by gateway/journal/queries.py).

-- name: next_exchange_seq
SELECT COALESCE(MAX(seq), 0) + 1 AS seq FROM exchanges

-- name: insert_exchange
-- every column named; tx.py fills the ones a caller leaves out with their defaults
INSERT INTO exchanges (
    id, seq, received_at, listener, peer, raw, sha256, size, sender_app, sender_facility,
    control_id, message_type, version, charset, status, reason_code, reason, ack_code,
    duplicate_of, patient_ins, patient_ipp, document_id, dmp_bound, ack_reception, held_since,
    findings, pruned_at, updated_at
) VALUES (
    :id, :seq, :received_at, :listener, :peer, :raw, :sha256, :size, :sender_app, :sender_facility,
    :control_id, :message_type, :version, :charset, :status, :reason_code, :reason, :ack_code,
    :duplicate_of, :patient_ins, :patient_ipp, :document_id, :dmp_bound, :ack_reception,
    :held_since, :findings, :pruned_at, :updated_at
)

-- name: update_exchange
-- the columns whose set_<column> flag is true take the new value, the others keep theirs
UPDATE exchanges SET
    seq = iif(:set_seq, :seq, seq),
    received_at = iif(:set_received_at, :received_at, received_at),
    listener = iif(:set_listener, :listener, listener),
    peer = iif(:set_peer, :peer, peer),
    raw = iif(:set_raw, :raw, raw),
    sha256 = iif(:set_sha256, :sha256, sha256),
    size = iif(:set_size, :size, size),
    sender_app = iif(:set_sender_app, :sender_app, sender_app),
    sender_facility = iif(:set_sender_facility, :sender_facility, sender_facility),
    control_id = iif(:set_control_id, :control_id, control_id),
    message_type = iif(:set_message_type, :message_type, message_type),
    version = iif(:set_version, :version, version),
    charset = iif(:set_charset, :charset, charset),
    status = iif(:set_status, :status, status),
    reason_code = iif(:set_reason_code, :reason_code, reason_code),
    reason = iif(:set_reason, :reason, reason),
    ack_code = iif(:set_ack_code, :ack_code, ack_code),
    duplicate_of = iif(:set_duplicate_of, :duplicate_of, duplicate_of),
    patient_ins = iif(:set_patient_ins, :patient_ins, patient_ins),
    patient_ipp = iif(:set_patient_ipp, :patient_ipp, patient_ipp),
    document_id = iif(:set_document_id, :document_id, document_id),
    dmp_bound = iif(:set_dmp_bound, :dmp_bound, dmp_bound),
    ack_reception = iif(:set_ack_reception, :ack_reception, ack_reception),
    held_since = iif(:set_held_since, :held_since, held_since),
    findings = iif(:set_findings, :findings, findings),
    pruned_at = iif(:set_pruned_at, :pruned_at, pruned_at),
    updated_at = :updated_at
WHERE id = :id

-- The updates the gateway makes all the time, one statement per column set: naming only
-- those columns keeps SQLite from rewriting the entries of every index of the table
-- (the generic update_exchange names them all). Tx.update_exchange picks one by its fields.

-- name: update_exchange_status
UPDATE exchanges SET status = :status, updated_at = :updated_at WHERE id = :id

-- name: update_exchange_hold
-- held, released or re-queued: the hold's code, message and start go with the status
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
-- "+seq": ordering by the bare column made SQLite walk every exchange of the sender through
-- exchanges_sender_seq (a scan that grows with the journal); the dedup index finds the few
-- exchanges with this control id and hash, and those are sorted
SELECT id FROM exchanges
WHERE sender_app = :sender_app AND sender_facility = :sender_facility AND control_id = :control_id
  AND sha256 = :sha256 AND status != 'duplicate'
ORDER BY +seq LIMIT 1

-- name: get_exchange
SELECT id, seq, received_at, listener, peer, sha256, size, sender_app, sender_facility, control_id,
    message_type, version, charset, status, reason_code, reason, ack_code, duplicate_of, document_id,
    dmp_bound, ack_reception, held_since, pruned_at, updated_at,
    findings, patient_ins, patient_ipp
FROM exchanges WHERE id = :id

-- name: get_exchange_with_bodies
SELECT * FROM exchanges WHERE id = :id

-- name: get_exchange_by_prefix
-- operators may type a unique prefix of the id; two rows back mean it is ambiguous
SELECT id, seq, received_at, listener, peer, sha256, size, sender_app, sender_facility, control_id,
    message_type, version, charset, status, reason_code, reason, ack_code, duplicate_of, document_id,
    dmp_bound, ack_reception, held_since, pruned_at, updated_at,
    findings, patient_ins, patient_ipp
FROM exchanges WHERE id LIKE :id_like ESCAPE '\' LIMIT 2

-- name: get_exchange_with_bodies_by_prefix
SELECT * FROM exchanges WHERE id LIKE :id_like ESCAPE '\' LIMIT 2

-- name: count_exchanges_by_status
SELECT status, COUNT(*) AS n FROM exchanges GROUP BY status

-- name: exchanges_for_patient
-- :statuses is a JSON array, some of held, queued, received; a NULL :ins or :ipp matches nothing.
-- The literal status list lets the planner use the indexes of open exchanges by patient (0004):
-- a patient has few of those, whereas the status index holds every patient's
SELECT id, status, reason_code, patient_ins, patient_ipp, held_since, dmp_bound FROM exchanges
WHERE status IN ('held', 'queued', 'received') AND (patient_ins = :ins OR patient_ipp = :ipp)
  AND status IN (SELECT value FROM json_each(:statuses))
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
SELECT raw, listener FROM exchanges WHERE id = :id

-- name: held_worklist
SELECT id, control_id, message_type, reason_code, reason, held_since FROM exchanges
WHERE status = 'held' ORDER BY seq LIMIT :limit

-- name: held_count
SELECT COUNT(*) AS n FROM exchanges WHERE status = 'held'

-- name: oldest_held_since
SELECT MIN(held_since) AS oldest FROM exchanges WHERE status = 'held'

-- name: exchanges_per_minute
-- bounded by seq (indexed) rather than a scan of received_at; 500k/hour is far above our load
SELECT substr(received_at, 1, 16) AS minute, COUNT(*) AS n
FROM (SELECT received_at FROM exchanges ORDER BY seq DESC LIMIT 500000)
WHERE received_at >= :since
GROUP BY minute
