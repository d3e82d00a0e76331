-- Tenants (clinics) and their API keys; the consumer inbox and positions used by every
-- projection for idempotency.

CREATE TABLE tenants (
    id text PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    -- sha256 of the whole key: keys are long random secrets, so a fast hash is enough and
    -- lets the lookup be an index probe.
    key_hash text PRIMARY KEY,
    -- the first characters of the key, to tell keys apart in listings and audit events
    key_prefix text NOT NULL,
    tenant_id text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE consumer_inbox (
    consumer text NOT NULL,
    event_id text NOT NULL,
    stream_sequence bigint NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

CREATE TABLE consumer_positions (
    consumer text PRIMARY KEY,
    stream_sequence bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Events written in the same transaction as the state they announce (shared.outbox).
CREATE TABLE outbox (
    position bigserial PRIMARY KEY,
    event_id text NOT NULL UNIQUE,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_pending ON outbox (position) WHERE published_at IS NULL;
