-- Billing: the usage projection (per-minute rows and the intervals behind durations), monthly
-- totals for limits, versioned price books, plan assignments, invoices, usage limits, audits.
-- Quantities are integers in each meter's base unit; money is integer cents.

CREATE SCHEMA billing;

-- One row per (tenant, minute window, meter, room, dispatch). first/last_sequence are the
-- MEDIAI_EVENTS stream sequences of the events that produced the row (an invoice's range).
CREATE TABLE billing.usage (
    tenant text NOT NULL,
    window_start timestamptz NOT NULL,
    meter text NOT NULL,
    room text NOT NULL,
    dispatch text NOT NULL,
    quantity bigint NOT NULL,
    first_sequence bigint NOT NULL,
    last_sequence bigint NOT NULL,
    PRIMARY KEY (tenant, window_start, meter, room, dispatch)
);

-- What is known of each duration (a participant's stay, an egress): earliest start, latest end.
CREATE TABLE billing.intervals (
    tenant text NOT NULL,
    meter text NOT NULL,
    key text NOT NULL,
    room text NOT NULL,
    started_at timestamptz,
    ended_at timestamptz,
    start_sequence bigint NOT NULL DEFAULT 0,
    end_sequence bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, meter, key)
);
CREATE INDEX intervals_open ON billing.intervals (tenant, started_at)
    WHERE started_at IS NULL OR ended_at IS NULL;

-- Totals per billing month (in the billing time zone), kept with the rows: limits read them.
CREATE TABLE billing.monthly_usage (
    tenant text NOT NULL,
    month_start timestamptz NOT NULL,
    meter text NOT NULL,
    quantity bigint NOT NULL,
    PRIMARY KEY (tenant, month_start, meter)
);

-- Price books are immutable versions: a change is a new version.
CREATE TABLE billing.price_books (
    plan text NOT NULL,
    version integer NOT NULL CHECK (version >= 1),
    effective_from timestamptz NOT NULL,
    currency text NOT NULL DEFAULT 'BRL' CHECK (currency ~ '^[A-Z]{3}$'),
    note text NOT NULL DEFAULT '',
    published_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plan, version)
);

CREATE TABLE billing.prices (
    plan text NOT NULL,
    version integer NOT NULL,
    meter text NOT NULL,
    cents bigint NOT NULL CHECK (cents >= 0),
    per bigint NOT NULL CHECK (per >= 1),
    PRIMARY KEY (plan, version, meter),
    FOREIGN KEY (plan, version) REFERENCES billing.price_books (plan, version)
);

-- A tenant without an assignment is on the "standard" plan.
CREATE TABLE billing.plan_assignments (
    tenant text NOT NULL,
    effective_from timestamptz NOT NULL,
    plan text NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, effective_from)
);

CREATE TABLE billing.invoices (
    tenant text NOT NULL,
    id text NOT NULL,
    month text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    currency text NOT NULL,
    total_cents bigint NOT NULL,
    first_sequence bigint NOT NULL,
    last_sequence bigint NOT NULL,
    -- The live projection's stream position when the invoice was issued.
    projected_through bigint NOT NULL,
    issued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, month)
);

CREATE TABLE billing.invoice_lines (
    tenant text NOT NULL,
    invoice_id text NOT NULL,
    line integer NOT NULL,
    meter text NOT NULL,
    unit text NOT NULL,
    quantity bigint NOT NULL,
    unit_price_cents bigint NOT NULL,
    per bigint NOT NULL,
    amount_cents bigint NOT NULL,
    plan text NOT NULL,
    version integer NOT NULL,
    first_sequence bigint NOT NULL,
    last_sequence bigint NOT NULL,
    PRIMARY KEY (tenant, invoice_id, line),
    FOREIGN KEY (tenant, invoice_id) REFERENCES billing.invoices (tenant, id)
);

CREATE TABLE billing.usage_limits (
    tenant text NOT NULL,
    meter text NOT NULL,
    monthly_quantity bigint NOT NULL CHECK (monthly_quantity >= 1),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, meter)
);

-- Which thresholds of a cap are reached in a month, as last announced (UsageLimitReached /
-- UsageLimitCleared); revision orders the announcements of one (tenant, meter, month, threshold).
CREATE TABLE billing.limit_states (
    tenant text NOT NULL,
    meter text NOT NULL,
    month_start timestamptz NOT NULL,
    threshold integer NOT NULL,
    month_end timestamptz NOT NULL,
    reached boolean NOT NULL,
    quantity bigint NOT NULL,
    monthly_quantity bigint,
    revision integer NOT NULL,
    PRIMARY KEY (tenant, meter, month_start, threshold)
);

CREATE TABLE billing.audits (
    id text PRIMARY KEY,
    tenant text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    mode text NOT NULL,
    price_book text NOT NULL DEFAULT '',
    matches boolean NOT NULL,
    report jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audits_tenant ON billing.audits (tenant, created_at DESC);

-- Replays write here, never into the live tables: an audit's rebuilt rows (kept for
-- inspection, removable: the stream can always rebuild them) and the staging tables of runs.
CREATE SCHEMA billing_replay;

CREATE UNLOGGED TABLE billing_replay.audit_usage (
    audit_id text NOT NULL,
    window_start timestamptz NOT NULL,
    meter text NOT NULL,
    room text NOT NULL,
    dispatch text NOT NULL,
    quantity bigint NOT NULL,
    first_sequence bigint NOT NULL,
    last_sequence bigint NOT NULL,
    PRIMARY KEY (audit_id, window_start, meter, room, dispatch)
);
