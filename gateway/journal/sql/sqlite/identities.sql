-- Patient identities (PAM-FR registry), their A24 links, and encounters.

-- name: upsert_identity
-- every column named; on conflict only the columns whose set_<column> flag is true change
INSERT INTO identities (
    ipp_key, ins, ins_oid, traits, status, qualified, merged_into, updated_at
) VALUES (
    :ipp_key, :ins, :ins_oid, :traits, :status, :qualified, :merged_into, :updated_at
)
ON CONFLICT(ipp_key) DO UPDATE SET
    ins = iif(:set_ins, excluded.ins, ins),
    ins_oid = iif(:set_ins_oid, excluded.ins_oid, ins_oid),
    traits = iif(:set_traits, excluded.traits, traits),
    status = iif(:set_status, excluded.status, status),
    qualified = iif(:set_qualified, excluded.qualified, qualified),
    merged_into = iif(:set_merged_into, excluded.merged_into, merged_into),
    updated_at = iif(:set_updated_at, excluded.updated_at, updated_at)

-- name: get_identity
SELECT * FROM identities WHERE ipp_key = :ipp_key

-- name: identities_with_ins
SELECT * FROM identities WHERE ins = :ins AND merged_into IS NULL

-- name: list_identities
SELECT * FROM identities ORDER BY updated_at DESC

-- name: merge_identity
-- ADT^A40: the old record is kept, pointing at the one it was merged into
UPDATE identities SET merged_into = :into_key, updated_at = :at WHERE ipp_key = :old_key

-- name: link_identity
INSERT OR IGNORE INTO identity_links (ipp_key, linked_key, created_at, exchange_id)
VALUES (:ipp_key, :linked_key, :at, :exchange_id)

-- name: unlink_identities
DELETE FROM identity_links WHERE (ipp_key = :a AND linked_key = :b) OR (ipp_key = :b AND linked_key = :a)

-- name: linked_identities
SELECT linked_key FROM identity_links WHERE ipp_key = :ipp_key ORDER BY linked_key

-- name: upsert_encounter
-- every column named; on conflict only the columns whose set_<column> flag is true change
INSERT INTO encounters (
    visit_key, ipp_key, patient_class, trigger, cancelled, updated_at, exchange_id
) VALUES (
    :visit_key, :ipp_key, :patient_class, :trigger, :cancelled, :updated_at, :exchange_id
)
ON CONFLICT(visit_key) DO UPDATE SET
    ipp_key = iif(:set_ipp_key, excluded.ipp_key, ipp_key),
    patient_class = iif(:set_patient_class, excluded.patient_class, patient_class),
    trigger = iif(:set_trigger, excluded.trigger, trigger),
    cancelled = iif(:set_cancelled, excluded.cancelled, cancelled),
    updated_at = iif(:set_updated_at, excluded.updated_at, updated_at),
    exchange_id = iif(:set_exchange_id, excluded.exchange_id, exchange_id)

-- name: current_encounter
-- the patient's latest encounter that was not cancelled (A11 / A38 / A27)
SELECT * FROM encounters WHERE ipp_key = :ipp_key AND cancelled = 0 ORDER BY updated_at DESC LIMIT 1

-- name: get_encounter
SELECT * FROM encounters WHERE visit_key = :visit_key
