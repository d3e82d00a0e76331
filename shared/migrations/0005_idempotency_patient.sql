-- The patient an idempotency record's answer is about (shared.idempotency: a handler names it
-- with RequestIds.about): the kept answer may repeat the patient's name and contact, so erasing
-- the patient deletes these rows ('' for answers about no patient).
ALTER TABLE idempotency_keys ADD COLUMN patient_ref text NOT NULL DEFAULT '';
CREATE INDEX idempotency_keys_patient ON idempotency_keys (tenant_id, patient_ref)
    WHERE patient_ref <> '';
