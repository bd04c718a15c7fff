-- Patient identities (PAM-FR registry), their A24 links, and encounters.

-- name: upsert_identity
-- every column named; on conflict only the columns whose set_<column> flag is true change
INSERT INTO identities (
    ipp_key, ins, ins_oid, traits, status, qualified, merged_into, updated_at
) VALUES (
    :ipp_key, :ins, :ins_oid, CAST(:traits AS jsonb), :status, CAST(:qualified AS integer), :merged_into, :updated_at
)
ON CONFLICT (ipp_key) DO UPDATE SET
    ins = CASE WHEN :set_ins THEN excluded.ins ELSE identities.ins END,
    ins_oid = CASE WHEN :set_ins_oid THEN excluded.ins_oid ELSE identities.ins_oid END,
    traits = CASE WHEN :set_traits THEN excluded.traits ELSE identities.traits END,
    status = CASE WHEN :set_status THEN excluded.status ELSE identities.status END,
    qualified = CASE WHEN :set_qualified THEN excluded.qualified ELSE identities.qualified END,
    merged_into = CASE WHEN :set_merged_into THEN excluded.merged_into ELSE identities.merged_into END,
    updated_at = CASE WHEN :set_updated_at THEN excluded.updated_at ELSE identities.updated_at END

-- name: get_identity
SELECT * FROM identities WHERE ipp_key = :ipp_key

-- name: identities_with_ins
SELECT * FROM identities WHERE ins = :ins AND merged_into IS NULL

-- name: list_identities
SELECT * FROM identities ORDER BY updated_at DESC

-- name: merge_identity
UPDATE identities SET merged_into = :into_key, updated_at = :at WHERE ipp_key = :old_key

-- name: link_identity
INSERT INTO identity_links (ipp_key, linked_key, created_at, exchange_id)
VALUES (:ipp_key, :linked_key, :at, :exchange_id)
ON CONFLICT DO NOTHING

-- name: unlink_identities
DELETE FROM identity_links WHERE (ipp_key = :a AND linked_key = :b) OR (ipp_key = :b AND linked_key = :a)

-- name: linked_identities
SELECT linked_key FROM identity_links WHERE ipp_key = :ipp_key ORDER BY linked_key

-- name: upsert_encounter
INSERT INTO encounters (
    visit_key, ipp_key, patient_class, trigger, cancelled, updated_at, exchange_id
) VALUES (
    :visit_key, :ipp_key, :patient_class, :trigger, CAST(:cancelled AS integer), :updated_at, :exchange_id
)
ON CONFLICT (visit_key) DO UPDATE SET
    ipp_key = CASE WHEN :set_ipp_key THEN excluded.ipp_key ELSE encounters.ipp_key END,
    patient_class = CASE WHEN :set_patient_class THEN excluded.patient_class ELSE encounters.patient_class END,
    trigger = CASE WHEN :set_trigger THEN excluded.trigger ELSE encounters.trigger END,
    cancelled = CASE WHEN :set_cancelled THEN excluded.cancelled ELSE encounters.cancelled END,
    updated_at = CASE WHEN :set_updated_at THEN excluded.updated_at ELSE encounters.updated_at END,
    exchange_id = CASE WHEN :set_exchange_id THEN excluded.exchange_id ELSE encounters.exchange_id END

-- name: current_encounter
SELECT * FROM encounters WHERE ipp_key = :ipp_key AND cancelled = 0 ORDER BY updated_at DESC LIMIT 1

-- name: get_encounter
SELECT * FROM encounters WHERE visit_key = :visit_key
