-- Retention: bodies of finished exchanges go, summaries stay (see Tx.prune_batch).
-- :ids is a JSON array of exchange ids.

-- name: prune_candidates
-- never held/queued/dead work: it may still be sent (a dead delivery can be retried);
-- the exchanges_unpruned partial index keeps this cheap however much was pruned before
SELECT id FROM exchanges
WHERE pruned_at IS NULL AND received_at < :before
  AND status IN ('delivered', 'accepted', 'rejected', 'duplicate')
ORDER BY received_at LIMIT :limit

-- name: prune_attempt_bodies
UPDATE attempts SET request = NULL, response = NULL
WHERE delivery_id IN (SELECT id FROM deliveries WHERE exchange_id IN (SELECT value FROM json_each(:ids)))

-- name: prune_delivery_payloads
UPDATE deliveries SET payload = NULL WHERE exchange_id IN (SELECT value FROM json_each(:ids))

-- name: prune_document_bodies
UPDATE documents SET cda = NULL, xds = NULL, fhir = NULL WHERE exchange_id IN (SELECT value FROM json_each(:ids))

-- name: prune_exchange_raw
UPDATE exchanges SET raw = NULL, pruned_at = :at, updated_at = :at WHERE id IN (SELECT value FROM json_each(:ids))

-- name: ended_well_among
-- "+status": look the batch up by id, not every accepted/delivered exchange by status
SELECT id FROM exchanges
WHERE id IN (SELECT value FROM json_each(:ids)) AND +status IN ('accepted', 'delivered', 'duplicate')

-- name: delete_attempts_of
DELETE FROM attempts
WHERE delivery_id IN (SELECT id FROM deliveries WHERE exchange_id IN (SELECT value FROM json_each(:ids)))

-- name: delete_deliveries_of
DELETE FROM deliveries WHERE exchange_id IN (SELECT value FROM json_each(:ids))

-- name: delete_documents_of
DELETE FROM documents WHERE exchange_id IN (SELECT value FROM json_each(:ids))

-- name: delete_events_of
DELETE FROM events WHERE exchange_id IN (SELECT value FROM json_each(:ids))

-- name: delete_exchanges
DELETE FROM exchanges WHERE id IN (SELECT value FROM json_each(:ids))

-- name: freelist_count
PRAGMA freelist_count

-- name: incremental_vacuum_step
-- one page per call: the sqlite3 module steps a statement without result columns only once
PRAGMA incremental_vacuum(1)
