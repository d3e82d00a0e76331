-- The read model is written only by its projection, from events: LiveKit's webhooks, the API's
-- actions and the reconciliation's findings (docs/rooms.md).

-- A track's mute state changes back and forth from several sources; the newest fact wins.
ALTER TABLE room_tracks ADD COLUMN muted_at timestamptz;
-- What set unpublished_at: 'webhook' (authoritative) or 'reconcile' (a presumption).
ALTER TABLE room_tracks ADD COLUMN unpublished_by text NOT NULL DEFAULT '';

-- The reconciliation's memory, not a read model: when each room, participant and track sid was
-- last listed by LiveKit (whole seconds). A presumption that one is gone says it was last seen
-- then, so every replica and every pass presumes the same time (and publishes the same event).
CREATE TABLE room_sightings (
    sid text PRIMARY KEY,
    seen_at timestamptz NOT NULL
);
CREATE INDEX room_sightings_seen_at ON room_sightings (seen_at);
