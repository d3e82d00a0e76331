-- The dispatcher's read model: one row per agent dispatch, built only from the event log
-- (services/dispatcher/projection.py); GET /v1/agents reads it.

CREATE TABLE agent_dispatches (
    dispatch_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    room text NOT NULL,
    role text NOT NULL,
    -- requested, dispatched, joined, ended, failed
    state text NOT NULL,
    reason text NOT NULL DEFAULT '',
    detail text NOT NULL DEFAULT '',
    language text NOT NULL,
    stt text NOT NULL DEFAULT '',
    llm text NOT NULL DEFAULT '',
    tts text NOT NULL DEFAULT '',
    realtime text NOT NULL DEFAULT '',
    livekit_dispatch_id text NOT NULL DEFAULT '',
    agent_identity text NOT NULL DEFAULT '',
    worker_id text NOT NULL DEFAULT '',
    requested_at timestamptz NOT NULL,
    deadline_at timestamptz NOT NULL,
    dispatched_at timestamptz,
    joined_at timestamptz,
    end_requested_at timestamptz,
    ended_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_dispatches_room ON agent_dispatches (tenant_id, room, requested_at);
-- The sweeper's questions: which dispatches are past their deadline, which ran on a worker.
CREATE INDEX agent_dispatches_open ON agent_dispatches (deadline_at)
    WHERE state IN ('requested', 'dispatched');
CREATE INDEX agent_dispatches_worker ON agent_dispatches (worker_id) WHERE state = 'joined';
