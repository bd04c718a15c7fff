-- An ADT asks for the open (held, queued, received) exchanges of its patient: to release what
-- waited for the INS it qualifies, to hold again what an A47 left without one, to re-key what
-- an A40 merged. The status index walked every open exchange of every patient for that, and
-- a held backlog (an INSi outage, identity conflicts waiting for an operator) made every ADT
-- cost more. These indexes hold only open exchanges, by patient.
CREATE INDEX IF NOT EXISTS exchanges_open_ipp ON exchanges(patient_ipp)
    WHERE status IN ('held', 'queued', 'received');
CREATE INDEX IF NOT EXISTS exchanges_open_ins ON exchanges(patient_ins)
    WHERE status IN ('held', 'queued', 'received');
