-- The audit trail: a hash chain, one row per operator action (time and detail kept as text:
-- the chain hashes those exact strings).

-- name: last_audit_hash
-- read under the "audit-chain" advisory lock (Tx.append_audit): READ COMMITTED then sees
-- the previous appender's row, so two instances never chain onto one hash
SELECT hash FROM audit ORDER BY seq DESC LIMIT 1

-- name: insert_audit
INSERT INTO audit (at, actor, action, target, detail, prev_hash, hash)
VALUES (:at, :actor, :action, :target, :detail, :prev_hash, :hash)

-- name: audit_rows
SELECT * FROM audit ORDER BY seq
