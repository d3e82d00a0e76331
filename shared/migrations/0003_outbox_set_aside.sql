-- An outbox row the relay cannot decode is set aside (with the reason) instead of stalling the
-- relay; every relay process retries set-aside rows once when it starts (shared.outbox).
ALTER TABLE outbox ADD COLUMN set_aside_at timestamptz;
ALTER TABLE outbox ADD COLUMN set_aside_reason text;

-- Published outbox rows and consumer inbox rows are pruned by age (shared.pruning).
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX consumer_inbox_processed_at ON consumer_inbox (processed_at);
