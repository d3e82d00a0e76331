-- Events about a dispatch the read model has not seen requested yet (a replayed dead letter of
-- the request arrives after them): kept here, and folded in stream order when it arrives.
CREATE TABLE dispatch_parked_events (
    dispatch_id text NOT NULL,
    stream_sequence bigint NOT NULL,
    event bytea NOT NULL,
    parked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dispatch_id, stream_sequence)
);
