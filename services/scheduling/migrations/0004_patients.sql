-- Patients' rights (LGPD Arts. 18 and 37; services/scheduling/patients): erasures and what each
-- service erased for them, where in the event log the events about each patient are (for the
-- export), and the access log, a hash chain per tenant. Pseudonyms, ids and counts only: nothing
-- here is personal data. (Version 0003 is left to the dispatches table of another branch.)

CREATE TABLE patient_erasures (
    erasure_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    patient_ref text NOT NULL,
    -- The database's clock: the key service compares its destruction times with it.
    requested_at timestamptz NOT NULL DEFAULT now(),
    -- Who asked (an API key's prefix) and what for (the X-Purpose code).
    requested_by text NOT NULL DEFAULT '',
    purpose text NOT NULL DEFAULT '',
    -- The personal-data keys destroyed, and when: NULL until then (the erasure is in progress).
    destroyed_keys text[] NOT NULL DEFAULT '{}',
    keys_destroyed_at timestamptz
);
-- At most one erasure of a patient in progress; a request finds it and carries it on.
CREATE UNIQUE INDEX patient_erasures_in_progress ON patient_erasures (tenant_id, patient_ref)
    WHERE keys_destroyed_at IS NULL;
CREATE INDEX patient_erasures_patient ON patient_erasures (tenant_id, patient_ref, requested_at);

-- What each service erased for an erasure (PatientDataErased): counts by table.column.
CREATE TABLE patient_erasure_holders (
    erasure_id text NOT NULL REFERENCES patient_erasures (erasure_id) ON DELETE CASCADE,
    holder text NOT NULL,
    erased jsonb NOT NULL,
    erased_at timestamptz NOT NULL,
    PRIMARY KEY (erasure_id, holder)
);

-- Where the events about a patient are in the log (stream and sequence): the export reads them
-- there, opened with the patient's keys, rather than keeping copies.
CREATE TABLE patient_events (
    stream text NOT NULL,
    stream_sequence bigint NOT NULL,
    tenant_id text NOT NULL,
    patient_ref text NOT NULL,
    event_type text NOT NULL,
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (stream, stream_sequence)
);
CREATE INDEX patient_events_patient ON patient_events (tenant_id, patient_ref, occurred_at);

-- The access log: one entry per read of a patient's personal data (PersonalDataRead), numbered
-- per tenant; each holds the hash of the previous one and its own (shared.access).
CREATE TABLE access_log (
    tenant_id text NOT NULL,
    position bigint NOT NULL,
    event_id text NOT NULL UNIQUE,
    patient_ref text NOT NULL,
    resource text NOT NULL,
    resource_id text NOT NULL,
    reader text NOT NULL,
    purpose text NOT NULL,
    service text NOT NULL,
    read_at timestamptz NOT NULL,
    previous_hash text NOT NULL,
    hash text NOT NULL,
    PRIMARY KEY (tenant_id, position)
);
CREATE INDEX access_log_patient ON access_log (tenant_id, patient_ref, position);
