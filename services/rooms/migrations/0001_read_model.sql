-- The rooms service's read model: rooms, participants, tracks, egress and ingress, projected
-- from the webhook events and the service's own actions, and reconciled against LiveKit.
--
-- Rooms, participants and tracks are keyed by LiveKit's sids: a sid's life only moves forward
-- (active -> finished/left), so events applied in any order, or twice, end in the same row. A
-- room name used again gets a new sid, hence a new row; "the room" of a name is its newest
-- unfinished instance.

CREATE TABLE room_instances (
    sid text PRIMARY KEY,
    tenant text NOT NULL,
    name text NOT NULL,
    livekit_name text NOT NULL,
    created_at timestamptz,
    finished_at timestamptz,
    end_reason text NOT NULL DEFAULT '',
    -- what set finished_at: 'webhook' (authoritative), 'api' or 'reconcile' (provisional)
    finished_by text NOT NULL DEFAULT '',
    empty_timeout integer NOT NULL DEFAULT 0,
    departure_timeout integer NOT NULL DEFAULT 0,
    max_participants integer NOT NULL DEFAULT 0,
    metadata text NOT NULL DEFAULT '',
    -- when this row was last written (the reconciliation leaves fresh rows alone)
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX room_instances_open ON room_instances (tenant, name, created_at DESC)
    WHERE finished_at IS NULL;

CREATE TABLE room_participants (
    sid text PRIMARY KEY,
    room_sid text NOT NULL,
    tenant text NOT NULL,
    room text NOT NULL,
    identity text NOT NULL,
    name text NOT NULL DEFAULT '',
    kind text NOT NULL DEFAULT 'standard',
    metadata text NOT NULL DEFAULT '',
    joined_at timestamptz,
    left_at timestamptz,
    aborted boolean NOT NULL DEFAULT false,
    disconnect_reason text NOT NULL DEFAULT '',
    -- what set left_at: 'webhook' (authoritative) or 'reconcile' (provisional)
    left_by text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX room_participants_present ON room_participants (room_sid) WHERE left_at IS NULL;

CREATE TABLE room_tracks (
    sid text PRIMARY KEY,
    participant_sid text NOT NULL,
    room_sid text NOT NULL,
    tenant text NOT NULL,
    type text NOT NULL DEFAULT '',
    source text NOT NULL DEFAULT 'unknown',
    name text NOT NULL DEFAULT '',
    mime_type text NOT NULL DEFAULT '',
    muted boolean NOT NULL DEFAULT false,
    published_at timestamptz,
    unpublished_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX room_tracks_published ON room_tracks (participant_sid) WHERE unpublished_at IS NULL;

CREATE TABLE room_egress (
    egress_id text PRIMARY KEY,
    tenant text NOT NULL,
    room text NOT NULL,
    room_sid text NOT NULL DEFAULT '',
    kind text NOT NULL DEFAULT '',
    outputs text[] NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'starting',
    requested_at timestamptz,
    started_at timestamptz,
    ended_at timestamptz,
    error text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX room_egress_tenant ON room_egress (tenant, room);

CREATE TABLE room_ingress (
    ingress_id text PRIMARY KEY,
    tenant text NOT NULL,
    room text NOT NULL,
    input_type text NOT NULL DEFAULT '',
    name text NOT NULL DEFAULT '',
    participant_identity text NOT NULL DEFAULT '',
    url text NOT NULL DEFAULT '',
    status text NOT NULL DEFAULT 'inactive',
    -- the time of the state last applied: an ingress starts and ends again and again
    state_at timestamptz,
    started_at timestamptz,
    ended_at timestamptz,
    error text NOT NULL DEFAULT '',
    created_at timestamptz,
    deleted_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX room_ingress_tenant ON room_ingress (tenant, room);
