-- The session timeline: a projection of the log (services/sessions/core.py) that the clinic's
-- console reads. Written only by the sessions service's consumers, each event once; rebuilt by
-- replaying the streams into empty tables.

-- One row per LiveKit room session (room names are reused; the SID is not).
CREATE TABLE session_rooms (
    tenant_id text NOT NULL,
    room_sid text NOT NULL,
    room text NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    PRIMARY KEY (tenant_id, room_sid)
);
CREATE INDEX session_rooms_recent ON session_rooms (tenant_id, started_at DESC);

-- One row per dispatch (a consultation of an agent), linked to the room session its agent
-- joined (room_sid '' until, or unless, it joins).
CREATE TABLE session_dispatches (
    tenant_id text NOT NULL,
    dispatch_id text NOT NULL,
    room text NOT NULL,
    role text NOT NULL DEFAULT '',
    state text NOT NULL DEFAULT '',
    state_rank integer NOT NULL DEFAULT 0,
    patient_ref text NOT NULL DEFAULT '',
    agent_identity text NOT NULL DEFAULT '',
    room_sid text NOT NULL DEFAULT '',
    requested_at timestamptz,
    ended_at timestamptz,
    PRIMARY KEY (tenant_id, dispatch_id)
);
CREATE INDEX session_dispatches_room_sid ON session_dispatches (tenant_id, room_sid);
CREATE INDEX session_dispatches_agent ON session_dispatches (tenant_id, agent_identity)
    WHERE agent_identity <> '';

-- Agents' participants seen in a room session: what links a dispatch to its session when the
-- join arrives before the agent's own session_started.
CREATE TABLE session_agents (
    tenant_id text NOT NULL,
    identity text NOT NULL,
    room_sid text NOT NULL,
    room text NOT NULL,
    PRIMARY KEY (tenant_id, identity, room_sid)
);

-- The entries. ``seq`` grows with every write (an entry completed by a second event, a hint's
-- text, gets a new one), so a reader that follows ``seq`` sees every change once.
CREATE SEQUENCE timeline_seq;
CREATE TABLE timeline_entries (
    tenant_id text NOT NULL,
    key text NOT NULL,
    seq bigint NOT NULL DEFAULT nextval('timeline_seq'),
    kind text NOT NULL,
    at timestamptz NOT NULL,
    room_sid text NOT NULL DEFAULT '',
    dispatch_id text NOT NULL DEFAULT '',
    patient_ref text NOT NULL DEFAULT '',
    trace_id text NOT NULL DEFAULT '',
    data jsonb NOT NULL,
    -- What only callers allowed to read personal data get (NULL: nothing personal).
    personal jsonb,
    PRIMARY KEY (tenant_id, key)
);
CREATE UNIQUE INDEX timeline_entries_seq ON timeline_entries (seq);
CREATE INDEX timeline_entries_room ON timeline_entries (tenant_id, room_sid, seq)
    WHERE room_sid <> '';
CREATE INDEX timeline_entries_dispatch ON timeline_entries (tenant_id, dispatch_id, seq)
    WHERE dispatch_id <> '';
