-- Billing's usage caps as the dispatcher needs them: per tenant, meter and billing month, the
-- last 100% notice (UsageLimitReached: in force; UsageLimitCleared: lifted), the highest
-- revision winning. Built only from the event log (services/dispatcher/limits.py);
-- POST /v1/agents answers 402 while a row is in force and the clock is inside its month.

CREATE TABLE dispatch_usage_limits (
    tenant_id text NOT NULL,
    meter text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    in_force boolean NOT NULL,
    revision integer NOT NULL,
    monthly_quantity bigint,
    quantity bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, meter, period_start)
);
-- Each POST /v1/agents asks for its tenant's caps in force.
CREATE INDEX dispatch_usage_limits_in_force ON dispatch_usage_limits (tenant_id, period_end)
    WHERE in_force;
