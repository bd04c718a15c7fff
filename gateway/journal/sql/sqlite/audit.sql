-- The audit trail: a hash chain, one row per operator action.

-- name: last_audit_hash
SELECT hash FROM audit ORDER BY seq DESC LIMIT 1

-- name: insert_audit
INSERT INTO audit (at, actor, action, target, detail, prev_hash, hash)
VALUES (:at, :actor, :action, :target, :detail, :prev_hash, :hash)

-- name: audit_rows
SELECT * FROM audit ORDER BY seq
