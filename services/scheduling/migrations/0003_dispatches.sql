-- The dispatches the agents' requests act for, as the scheduling service learns them from the
-- event log (services/scheduling/dispatches.py): a request names its dispatch, and is answered
-- for that dispatch's tenant while it is live (requested, not yet failed or ended), never for a
-- tenant the request itself names.
CREATE TABLE scheduling_dispatches (
    dispatch_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    requested_at timestamptz,
    ended_at timestamptz
);
