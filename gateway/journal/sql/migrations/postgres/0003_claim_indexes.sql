-- The claim asks, for every due delivery, whether an earlier delivery of the same patient to
-- the same destination is still open. Through deliveries_patient (every status) that walked
-- all the deliveries the patient ever had, delivered ones included, once per candidate: a
-- backlog of one patient cost backlog × history (on SQLite, 5 s for 2 000 queued behind
-- 20 000 delivered). Holding only open deliveries, this index answers with one seek.
CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries(destination, patient_key, seq)
    WHERE status IN ('waiting', 'queued', 'in_flight', 'failed');
-- the candidates already in claim order: the walk stops at LIMIT instead of sorting all due rows
CREATE INDEX IF NOT EXISTS deliveries_ready ON deliveries(next_attempt_at, seq)
    WHERE status IN ('queued', 'failed');
-- nothing else reads deliveries by (destination, patient_key)
DROP INDEX IF EXISTS deliveries_patient;

-- One index fewer to update per message: led by MSH-10, the duplicate lookup's index also
-- serves the search by control id, which had an index of its own.
DROP INDEX IF EXISTS exchanges_dedup;
CREATE INDEX IF NOT EXISTS exchanges_dedup ON exchanges(control_id, sender_app, sender_facility, sha256);
DROP INDEX IF EXISTS exchanges_control;
