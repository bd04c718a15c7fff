-- The audit trail: a hash chain, one row per operator action (time and detail kept as text:
-- the chain hashes those exact strings).

-- name: last_audit_hash
-- FOR UPDATE: two instances appending at once chain one after the other, never both on one hash
SELECT hash FROM audit ORDER BY seq DESC LIMIT 1 FOR UPDATE

-- name: insert_audit
INSERT INTO audit (at, actor, action, target, detail, prev_hash, hash)
VALUES (:at, :actor, :action, :target, :detail, :prev_hash, :hash)

-- name: audit_rows
SELECT * FROM audit ORDER BY seq
