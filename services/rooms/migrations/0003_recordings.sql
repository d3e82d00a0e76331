-- Egress made by MediAI's recorder (docs/recording.md): which backend, and the file it kept,
-- listed with its consultation (dispatch) and patient until the clinic's retention ends.
ALTER TABLE room_egress
    ADD COLUMN backend text NOT NULL DEFAULT 'livekit',
    ADD COLUMN dispatch_id text NOT NULL DEFAULT '',
    ADD COLUMN patient_ref text NOT NULL DEFAULT '',
    ADD COLUMN file text NOT NULL DEFAULT '',
    ADD COLUMN file_size bigint NOT NULL DEFAULT 0,
    ADD COLUMN duration_ms bigint NOT NULL DEFAULT 0,
    ADD COLUMN retain_until timestamptz;
CREATE INDEX room_egress_consultation ON room_egress (tenant, dispatch_id) WHERE dispatch_id <> '';
