-- Relais journal schema (SQLite). PostgreSQL uses the same tables with native types.
-- Exchanges keep the raw bytes exactly as received; everything else is derived and
-- can be rebuilt by replaying the raw bytes.

CREATE TABLE IF NOT EXISTS exchanges (
    id              TEXT PRIMARY KEY,
    seq             INTEGER NOT NULL,            -- arrival order (monotonic)
    received_at     TEXT NOT NULL,               -- ISO 8601 UTC
    listener        TEXT NOT NULL,               -- mllp | http-hl7v2 | http-cda | replay
    peer            TEXT,
    raw             BLOB,                        -- NULL only after retention pruning
    sha256          TEXT NOT NULL,
    size            INTEGER NOT NULL,
    sender_app      TEXT,
    sender_facility TEXT,
    control_id      TEXT,
    message_type    TEXT,
    version         TEXT,
    charset         TEXT,
    status          TEXT NOT NULL,               -- received|accepted|rejected|held|queued|delivered|dead|duplicate
    reason_code     TEXT,
    reason          TEXT,
    ack_code        TEXT,
    duplicate_of    TEXT,
    patient_ins     TEXT,                        -- keys for the identity gate (never logged)
    patient_ipp     TEXT,
    document_id     TEXT,
    dmp_bound       INTEGER NOT NULL DEFAULT 0,
    ack_reception   INTEGER NOT NULL DEFAULT 0,
    held_since      TEXT,
    findings        TEXT,                        -- JSON {"errors": [...], "warnings": [...]}
    pruned_at       TEXT,
    updated_at      TEXT NOT NULL
);
-- (status, seq): the first page of a status filter is an index walk, not a sort of every match
DROP INDEX IF EXISTS exchanges_status;
CREATE INDEX IF NOT EXISTS exchanges_status_seq ON exchanges(status, seq);
CREATE INDEX IF NOT EXISTS exchanges_type_seq ON exchanges(message_type, seq);
CREATE INDEX IF NOT EXISTS exchanges_sender_seq ON exchanges(sender_app, sender_facility, seq);
CREATE INDEX IF NOT EXISTS exchanges_seq ON exchanges(seq);
CREATE INDEX IF NOT EXISTS exchanges_received ON exchanges(received_at);
CREATE INDEX IF NOT EXISTS exchanges_control ON exchanges(control_id);
CREATE INDEX IF NOT EXISTS exchanges_dedup ON exchanges(sender_app, sender_facility, control_id, sha256);
CREATE INDEX IF NOT EXISTS exchanges_patient_ins ON exchanges(patient_ins);
CREATE INDEX IF NOT EXISTS exchanges_patient_ipp ON exchanges(patient_ipp);
-- an IPP typed without its assigning authority (what an operator usually has at hand)
CREATE INDEX IF NOT EXISTS exchanges_ipp_value ON exchanges(substr(patient_ipp, instr(patient_ipp, '|') + 1));
-- retention walks only what it has not pruned yet (the pruned rows drop out of this index)
CREATE INDEX IF NOT EXISTS exchanges_unpruned ON exchanges(received_at) WHERE pruned_at IS NULL;

CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    exchange_id TEXT NOT NULL,
    at          TEXT NOT NULL,
    stage       TEXT NOT NULL,
    detail      TEXT                              -- JSON, never patient data
);
CREATE INDEX IF NOT EXISTS events_exchange ON events(exchange_id);

CREATE TABLE IF NOT EXISTS deliveries (
    id              TEXT PRIMARY KEY,
    seq             INTEGER NOT NULL,
    exchange_id     TEXT NOT NULL,
    destination     TEXT NOT NULL,
    kind            TEXT NOT NULL,               -- document | zam | ack (enhanced-mode application ACK)
    status          TEXT NOT NULL,               -- waiting|queued|in_flight|delivered|failed|dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    claimed_by      TEXT,
    lease_until     TEXT,
    last_error      TEXT,
    patient_key     TEXT,                        -- per-patient ordering
    unique_id       TEXT,
    doc_index       INTEGER,                     -- which document of the exchange (1-based)
    action          TEXT,                        -- submit | replace | delete
    payload         BLOB,                        -- for zam deliveries: the HL7 bytes
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(status, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_exchange ON deliveries(exchange_id);
CREATE INDEX IF NOT EXISTS deliveries_patient ON deliveries(destination, patient_key, seq);

-- One row per CDA document carried by an exchange (an ORU may carry two).
CREATE TABLE IF NOT EXISTS documents (
    exchange_id TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    unique_id   TEXT NOT NULL,
    action      TEXT NOT NULL,
    cda         BLOB,
    xds         TEXT,
    fhir        TEXT,
    PRIMARY KEY (exchange_id, idx)
);
CREATE INDEX IF NOT EXISTS documents_unique ON documents(unique_id);

CREATE TABLE IF NOT EXISTS attempts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id  TEXT NOT NULL,
    number       INTEGER NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    outcome      TEXT,                           -- delivered|failed|dead|found-existing|unknown
    error        TEXT,
    request      TEXT,
    response     TEXT,
    duration     REAL
);
CREATE INDEX IF NOT EXISTS attempts_delivery ON attempts(delivery_id);
-- destination health (failure rates, last success) reads recent attempts only
CREATE INDEX IF NOT EXISTS attempts_finished ON attempts(finished_at);

CREATE TABLE IF NOT EXISTS identities (
    ipp_key     TEXT PRIMARY KEY,                -- authority|value (or ins:<INS> without IPP)
    ins         TEXT,
    ins_oid     TEXT,
    traits      TEXT,                            -- JSON, stored exactly as received
    status      TEXT,                            -- PID-32 as received (VALI~FICT ...)
    qualified   INTEGER NOT NULL DEFAULT 0,
    merged_into TEXT,
    updated_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS identities_ins ON identities(ins);

-- ADT^A24 links two patient records (same person, both kept); ADT^A37 removes the link.
CREATE TABLE IF NOT EXISTS identity_links (
    ipp_key     TEXT NOT NULL,
    linked_key  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    exchange_id TEXT NOT NULL,                   -- the A24 that made the link
    PRIMARY KEY (ipp_key, linked_key)
);

-- The patient's encounter as the last PAM-FR ITI-31 event left it (PV1), for DMP metadata.
CREATE TABLE IF NOT EXISTS encounters (
    visit_key     TEXT PRIMARY KEY,              -- PV1-19 (or the IPP when PV1-19 is empty)
    ipp_key       TEXT,
    patient_class TEXT,                          -- PV1-2: drives the DMP contentTypeCode
    trigger       TEXT NOT NULL,                 -- last event applied (A01, A02, Z99 ...)
    cancelled     INTEGER NOT NULL DEFAULT 0,    -- A11 / A38 / A27 cancelled the admission
    updated_at    TEXT NOT NULL,
    exchange_id   TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS audit (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT,
    detail    TEXT,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);

-- One row rewritten by the readiness probe: /readyz is 200 only if a commit goes through.
CREATE TABLE IF NOT EXISTS probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at TEXT NOT NULL
);
