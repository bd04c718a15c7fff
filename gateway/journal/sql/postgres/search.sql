-- Exchange search (Tx.list_exchanges / count_exchanges). A search is a head, the WHERE
-- fragments of the filters given (joined with AND by tx.py; fragments are SQL from this
-- file only, every value a parameter), and a tail. Fragment names start with "where_".

-- name: page_head
SELECT id, seq, received_at, listener, peer, sha256, size, sender_app, sender_facility, control_id,
    message_type, version, charset, status, reason_code, reason, ack_code, duplicate_of, document_id,
    dmp_bound, ack_reception, held_since, pruned_at, updated_at
FROM exchanges

-- name: page_tail
ORDER BY seq DESC LIMIT :limit OFFSET :offset

-- name: count_head
SELECT COUNT(*) AS n FROM (SELECT 1 FROM exchanges

-- name: count_tail
LIMIT :cap) AS c

-- name: where_status
status = :status

-- name: where_message_type_like
message_type LIKE :message_type_like ESCAPE '\'

-- name: where_message_type
message_type = :message_type

-- name: where_sender_pair
sender_app IS NOT DISTINCT FROM CAST(:sender_app AS text) AND sender_facility IS NOT DISTINCT FROM CAST(:sender_facility AS text)

-- name: where_control_id
control_id = :control_id

-- name: where_q
-- a control id, an exchange id prefix (:q_like, wildcards escaped) or a document uniqueId
(control_id = :q OR id LIKE :q_like ESCAPE '\' OR document_id = :q)

-- name: where_since
-- the first exchange received at or after a time, found through the received_at index; its seq
-- bounds a range scan of (status, seq), (message_type, seq) or seq itself
received_at >= CAST(:since AS timestamptz)
AND seq >= COALESCE((SELECT seq FROM exchanges WHERE received_at >= CAST(:since AS timestamptz) ORDER BY received_at LIMIT 1), 9223372036854775807)

-- name: where_until
-- seq and received_at both grow in arrival order: bounding seq lets the newest-first
-- walk start at :until instead of reading every newer row first
received_at < CAST(:until AS timestamptz)
AND seq < COALESCE((SELECT seq FROM exchanges WHERE received_at >= CAST(:until AS timestamptz) ORDER BY received_at LIMIT 1), 9223372036854775807)

-- name: where_patient_ipp
patient_ipp = :patient

-- name: where_patient_ins
patient_ins = :patient

-- name: where_patient_ipp_value
-- an IPP without its authority (exchanges_ipp_value index)
substr(patient_ipp, strpos(patient_ipp, '|') + 1) = :patient

-- name: where_document
id IN (SELECT exchange_id FROM documents WHERE unique_id = :document)

-- name: where_control_or_id
-- a range on the primary key, not LIKE: LIKE is case-insensitive and cannot use the index
-- byte order (COLLATE "C", index exchanges_id_bytes), whatever the database's locale: see types_with_prefix
(control_id = :control_or_id OR (id COLLATE "C" >= :id_low AND id COLLATE "C" < :id_high))

-- name: where_before_seq
seq < :before_seq

-- name: distinct_sender_apps
-- distinct non-null values of an indexed column: a skip-scan, one index seek per value
WITH RECURSIVE t(x) AS (
    SELECT (SELECT MIN(sender_app) FROM exchanges)
    UNION ALL
    SELECT (SELECT MIN(sender_app) FROM exchanges WHERE sender_app > t.x) FROM t WHERE t.x IS NOT NULL
) SELECT x FROM t WHERE x IS NOT NULL

-- name: distinct_sender_facilities
WITH RECURSIVE t(x) AS (
    SELECT (SELECT MIN(sender_facility) FROM exchanges WHERE sender_app IS NOT DISTINCT FROM CAST(:sender_app AS text))
    UNION ALL
    SELECT (SELECT MIN(sender_facility) FROM exchanges WHERE sender_app IS NOT DISTINCT FROM CAST(:sender_app AS text) AND sender_facility > t.x)
    FROM t WHERE t.x IS NOT NULL
) SELECT x FROM t WHERE x IS NOT NULL

-- name: types_with_prefix
-- the distinct message types starting with a prefix (:low <= type < :high): a few lookups per type.
-- Compared byte by byte (COLLATE "C", index exchanges_type_bytes): in a glibc locale "-" and "^"
-- weigh nothing at first and the "\uffff" upper bound sorts before the very values it should cap
WITH RECURSIVE t(x) AS (
    SELECT (SELECT MIN(message_type COLLATE "C") FROM exchanges
            WHERE message_type COLLATE "C" >= :low AND message_type COLLATE "C" < :high)
    UNION ALL
    SELECT (SELECT MIN(message_type COLLATE "C") FROM exchanges
            WHERE message_type COLLATE "C" > t.x AND message_type COLLATE "C" < :high)
    FROM t WHERE t.x IS NOT NULL
) SELECT x FROM t WHERE x IS NOT NULL
