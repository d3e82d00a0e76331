-- Each component's relay publishes only its own outbox rows: every component has its own NATS
-- user, allowed to publish only its own events (deploy/bus_users.py). The source is the event's
-- CloudEvents source (mediai/<component>), copied out of the payload for rows already there.
ALTER TABLE outbox ADD COLUMN source text;
UPDATE outbox SET source = coalesce(convert_from(payload, 'UTF8')::jsonb ->> 'source', '')
    WHERE source IS NULL AND published_at IS NULL;
UPDATE outbox SET source = '' WHERE source IS NULL;
ALTER TABLE outbox ALTER COLUMN source SET NOT NULL;
CREATE INDEX outbox_pending_by_source ON outbox (source, position) WHERE published_at IS NULL;
