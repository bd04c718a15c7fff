-- Retention: bodies of finished exchanges go, summaries stay (see Tx.prune_batch). :ids is a
-- JSON array of exchange ids. Deleted body rows leave space PostgreSQL reuses; whole months
-- give it back to the disk with drop_body_partitions (PostgresJournal.prune).

-- name: prune_candidates
-- never held/queued/dead work: it may still be sent (a dead delivery can be retried)
SELECT id FROM exchanges
WHERE pruned_at IS NULL AND received_at < CAST(:before AS timestamptz)
  AND status IN ('delivered', 'accepted', 'rejected', 'duplicate')
ORDER BY received_at LIMIT :limit

-- name: prune_attempt_bodies
DELETE FROM attempt_bodies WHERE exchange_id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)))

-- name: prune_delivery_payloads
UPDATE deliveries SET payload = NULL WHERE exchange_id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)))

-- name: prune_document_bodies
DELETE FROM document_bodies WHERE exchange_id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)))

-- name: prune_exchange_raw
WITH gone AS (
    DELETE FROM exchange_raw WHERE exchange_id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)))
)
UPDATE exchanges SET pruned_at = :at, updated_at = :at
WHERE id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)))

-- name: ended_well_among
SELECT id FROM exchanges
WHERE id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb))) AND status IN ('accepted', 'delivered', 'duplicate')

-- name: delete_attempts_of
DELETE FROM attempts
WHERE delivery_id IN (SELECT id FROM deliveries
    WHERE exchange_id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb))))

-- name: delete_deliveries_of
DELETE FROM deliveries WHERE exchange_id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)))

-- name: delete_documents_of
DELETE FROM documents WHERE exchange_id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)))

-- name: delete_events_of
DELETE FROM events WHERE exchange_id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)))

-- name: delete_exchanges
DELETE FROM exchanges WHERE id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)))

-- name: freelist_count
-- no file to shrink: whole months of bodies are dropped instead (can_vacuum is false)
SELECT 0 AS freelist_count

-- name: incremental_vacuum_step
SELECT 0 AS freed

-- name: ensure_body_partitions
-- monthly partitions of the body tables from :from_month on (see 0001_initial.sql)
SELECT relais_ensure_body_partitions(CAST(:from_month AS date), CAST(:months AS integer)) AS made

-- name: drop_body_partitions
SELECT relais_drop_body_partitions(CAST(:before AS timestamptz)) AS dropped
