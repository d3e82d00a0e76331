-- Anamnesis records are found by consultation, never by room: a room name is reused, so "the
-- newest record of a room" can be another patient's. Each record keeps the dispatch's patient
-- (patient_ref) and the appointment the dispatch came from; records stored before these
-- columns existed have '' (their dispatch still finds them).

ALTER TABLE anamnesis_records
    ADD COLUMN patient_ref text NOT NULL DEFAULT '',
    ADD COLUMN appointment_id text NOT NULL DEFAULT '';

DROP INDEX anamnesis_records_room;
CREATE INDEX anamnesis_records_dispatch
    ON anamnesis_records (tenant_id, dispatch_id, recorded_at DESC);
CREATE INDEX anamnesis_records_appointment
    ON anamnesis_records (tenant_id, appointment_id, recorded_at DESC)
    WHERE appointment_id <> '';
