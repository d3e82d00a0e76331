-- Scheduling: doctors and their weekly schedules, appointments, and the anamnesis records the
-- intake agent produces. Slots are computed from the schedule, never stored; an appointment is
-- the only row, and the exclusion constraint below is what makes double booking impossible.

-- btree_gist lets one exclusion constraint combine "same doctor" (=) with "overlapping time" (&&).
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE doctors (
    tenant_id text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id text NOT NULL,
    name text NOT NULL,
    specialty text NOT NULL,
    city text NOT NULL,
    crm text,
    insurances text[] NOT NULL DEFAULT '{}',
    -- Folded copies (lower case, no accents) that searches match against.
    name_key text NOT NULL,
    specialty_key text NOT NULL,
    city_key text NOT NULL,
    insurance_keys text[] NOT NULL DEFAULT '{}',
    -- The weekly schedule: IANA zone, slot length, and [{day, start, end}] in local time.
    timezone text NOT NULL,
    slot_minutes integer NOT NULL CHECK (slot_minutes BETWEEN 5 AND 480),
    weekly jsonb NOT NULL DEFAULT '[]',
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (id)
);
CREATE INDEX doctors_specialty ON doctors (tenant_id, specialty_key);
CREATE INDEX doctors_city ON doctors (tenant_id, city_key);

CREATE TABLE appointments (
    tenant_id text NOT NULL,
    id text NOT NULL,
    doctor_id text NOT NULL,
    -- Opaque, chosen by the clinic; the only patient data that leaves this table in events.
    patient_ref text NOT NULL,
    patient_name text,
    patient_contact text,
    reason text,
    room text,
    status text NOT NULL CHECK (status IN ('booked', 'cancelled')),
    starts_at timestamptz NOT NULL,
    ends_at timestamptz NOT NULL,
    channel text NOT NULL,
    -- The caller's idempotency key: a retried booking returns the first one's appointment.
    request_key text,
    cancel_reason text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    cancelled_at timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (id),
    FOREIGN KEY (tenant_id, doctor_id) REFERENCES doctors (tenant_id, id),
    CHECK (ends_at > starts_at),
    UNIQUE (tenant_id, request_key),
    -- Two booked appointments of one doctor never overlap, whatever the slot lengths were
    -- when each was booked; concurrent bookings of one slot: the first commits, the rest fail.
    CONSTRAINT appointments_no_double_booking EXCLUDE USING gist (
        doctor_id WITH =, tstzrange(starts_at, ends_at) WITH &&
    ) WHERE (status = 'booked')
);
CREATE INDEX appointments_doctor ON appointments (doctor_id, starts_at);
CREATE INDEX appointments_patient ON appointments (tenant_id, patient_ref, starts_at);

-- The intake agent's records (AnamnesisRecorded, from the PHI stream); the newest per room is
-- what the doctor reads.
CREATE TABLE anamnesis_records (
    event_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    room text NOT NULL,
    dispatch_id text NOT NULL,
    recorded_at timestamptz NOT NULL,
    questionnaire_response jsonb NOT NULL,
    summary_pt_br text NOT NULL,
    transcript_refs jsonb NOT NULL DEFAULT '[]',
    stored_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX anamnesis_records_room ON anamnesis_records (tenant_id, room, recorded_at DESC);
