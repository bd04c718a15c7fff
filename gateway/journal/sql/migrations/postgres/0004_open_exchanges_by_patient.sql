-- An ADT asks for the open (held, queued, received) exchanges of its patient: to release what
-- waited for the INS it qualifies, to hold again what an A47 left without one, to re-key what
-- an A40 merged. The status index walked every open exchange of every patient for that, and
-- a held backlog (an INSi outage, identity conflicts waiting for an operator) made every ADT
-- cost more. These indexes hold only open exchanges, by patient.
CREATE INDEX IF NOT EXISTS exchanges_open_ipp ON exchanges(patient_ipp)
    WHERE status IN ('held', 'queued', 'received');
CREATE INDEX IF NOT EXISTS exchanges_open_ins ON exchanges(patient_ins)
    WHERE status IN ('held', 'queued', 'received');
-- and the documents an ADT qualifying this INS releases: held for want of exactly that. The
-- INS index above also brings those held for a conflict (INS_TRAITS_MISMATCH and the like),
-- which only an operator lifts, and an ADT stream of their patient would read them all again
CREATE INDEX IF NOT EXISTS exchanges_waiting_ins ON exchanges(patient_ins, seq)
    WHERE status = 'held' AND reason_code = 'INS_NOT_QUALIFIED';
