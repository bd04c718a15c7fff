-- Documents carried by an exchange, the exchange's events, and the readiness probe row.

-- name: insert_document
INSERT OR REPLACE INTO documents (exchange_id, idx, unique_id, action, cda, xds, fhir)
VALUES (:exchange_id, :idx, :unique_id, :action, :cda, :xds, :fhir)

-- name: get_document
SELECT * FROM documents WHERE exchange_id = :exchange_id AND idx = :idx

-- name: documents_for
SELECT exchange_id, idx, unique_id, action FROM documents WHERE exchange_id = :exchange_id ORDER BY idx

-- name: add_event
INSERT INTO events (exchange_id, at, stage, detail) VALUES (:exchange_id, :at, :stage, :detail)

-- name: events
SELECT at, stage, detail FROM events WHERE exchange_id = :exchange_id ORDER BY id

-- name: probe
INSERT OR REPLACE INTO probe (id, at) VALUES (1, :at)
