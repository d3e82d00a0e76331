-- The patient a dispatch is about (AgentDispatchRequested.patient_ref, appointment_id): shown by
-- GET /v1/agents, and carried onto the commands sent to the dispatch's agent. Dispatches made
-- before the fields existed name no patient ('').

ALTER TABLE agent_dispatches
    ADD COLUMN patient_ref text NOT NULL DEFAULT '',
    ADD COLUMN appointment_id text NOT NULL DEFAULT '';
