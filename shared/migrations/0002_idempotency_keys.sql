-- Idempotency keys of the POSTs that create something (shared.idempotency): one row per
-- (tenant, route, key), 'running' while a request runs, then 'done' with the answer to replay,
-- or 'failed' (a 5xx: no answer kept, the next retry runs again). Kept 24 hours (JetStream's
-- duplicate window is only one), then pruned.

CREATE TABLE idempotency_keys (
    tenant_id text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- method and route template, e.g. 'POST /v1/agents': a key is scoped to one operation
    route text NOT NULL,
    key text NOT NULL,
    -- sha256 of the path, query and canonical JSON body: the same key with another request is
    -- refused
    request_hash text NOT NULL,
    state text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'failed')),
    -- the seed of the ids the request gives what it creates: kept by every retry of a failed or
    -- abandoned run (they name the same things), new once the key has expired
    seed uuid NOT NULL,
    -- who runs the request now: a takeover changes it, so the run that was given up on cannot
    -- overwrite the new runner's row
    claim uuid NOT NULL,
    status_code integer,
    -- the answer's headers worth replaying (Content-Type, Location), as [name, value] pairs
    headers jsonb,
    body bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, route, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
