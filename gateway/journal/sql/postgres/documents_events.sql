-- Documents carried by an exchange (their bodies in document_bodies, partitioned by the
-- exchange's month), the exchange's events, and the readiness probe row.

-- name: insert_document
WITH d AS (
    INSERT INTO documents (exchange_id, idx, unique_id, action)
    VALUES (:exchange_id, :idx, :unique_id, :action)
    ON CONFLICT (exchange_id, idx) DO UPDATE SET unique_id = excluded.unique_id, action = excluded.action
    RETURNING exchange_id, idx
)
INSERT INTO document_bodies (exchange_id, idx, received_at, cda, xds, fhir)
SELECT d.exchange_id, d.idx, e.received_at, CAST(:cda AS bytea), CAST(:xds AS jsonb), CAST(:fhir AS jsonb)
FROM d JOIN exchanges e ON e.id = d.exchange_id
ON CONFLICT (exchange_id, idx, received_at) DO UPDATE
    SET cda = excluded.cda, xds = excluded.xds, fhir = excluded.fhir

-- name: get_document
SELECT d.exchange_id, d.idx, d.unique_id, d.action, b.cda, b.xds, b.fhir
FROM documents d
JOIN exchanges e ON e.id = d.exchange_id
LEFT JOIN document_bodies b ON b.exchange_id = d.exchange_id AND b.idx = d.idx AND b.received_at = e.received_at
WHERE d.exchange_id = :exchange_id AND d.idx = :idx

-- name: documents_for
SELECT exchange_id, idx, unique_id, action FROM documents WHERE exchange_id = :exchange_id ORDER BY idx

-- name: add_event
INSERT INTO events (exchange_id, at, stage, detail) VALUES (:exchange_id, :at, :stage, CAST(:detail AS jsonb))

-- name: events
SELECT at, stage, detail FROM events WHERE exchange_id = :exchange_id ORDER BY id

-- name: probe
INSERT INTO probe (id, at) VALUES (1, :at) ON CONFLICT (id) DO UPDATE SET at = excluded.at
