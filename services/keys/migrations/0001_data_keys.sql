-- The key service's tables: the data keys, stored only wrapped by the key-encryption key (which
-- is never in the database), and the dispatches whose agent jobs may ask for their keys.

-- One live key per (tenant, patient, purpose): 'personal' and 'clinical' keys of a patient,
-- 'tenant' for data about no patient (patient_ref ''). Destroying a key nulls its wrapped bytes
-- for good (crypto-shredding); the row stays as the record of when and why.
CREATE TABLE data_keys (
    key_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    patient_ref text NOT NULL DEFAULT '',
    purpose text NOT NULL CHECK (purpose IN ('personal', 'clinical', 'tenant')),
    -- AES-256-GCM of the data key under the key-encryption key kek_id (nonce first).
    wrapped bytea,
    kek_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- When a process last fetched the key to seal with: the clinical record's retention counts
    -- from here.
    last_sealed_at timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz,
    destroy_reason text,
    CHECK ((wrapped IS NULL) = (destroyed_at IS NOT NULL))
);
CREATE UNIQUE INDEX data_keys_live ON data_keys (tenant_id, patient_ref, purpose)
    WHERE destroyed_at IS NULL;
CREATE INDEX data_keys_kek ON data_keys (kek_id) WHERE destroyed_at IS NULL;

-- Dispatches as the key service learns them from the event log: an agent job gets its
-- dispatch's keys only between its request and its end (failed or ended).
CREATE TABLE key_dispatches (
    dispatch_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    patient_ref text NOT NULL DEFAULT '',
    requested_at timestamptz,
    ended_at timestamptz
);
