-- Payments and refunds (contract section 9): a reserved order is completed
-- only by a provider's verified success or a host's manual confirmation.
-- The same schema as PostgreSQL's; SQLite adds one column per ALTER and no
-- table constraint, so the refund guard lives in the UPDATE that raises
-- refund_held_cents (the same statement PostgreSQL runs).

-- 'cod', 'manual' or the provider's name; NULL for rows from before payments.
ALTER TABLE orders ADD COLUMN payment_method TEXT;
-- The payment that completed it (NULL for cod and manual).
ALTER TABLE orders ADD COLUMN payment_id TEXT;
ALTER TABLE orders ADD COLUMN paid_cents INTEGER CHECK (paid_cents >= 0);
-- The host's note on a manual confirmation.
ALTER TABLE orders ADD COLUMN payment_note TEXT;
-- Sum of succeeded refunds: the JSON's `payment.refunded_cents`.
ALTER TABLE orders ADD COLUMN refunded_cents INTEGER NOT NULL DEFAULT 0;
-- Sum of pending and succeeded refunds, raised with a guard.
ALTER TABLE orders ADD COLUMN refund_held_cents INTEGER NOT NULL DEFAULT 0;

CREATE TABLE payments (
    id              TEXT PRIMARY KEY,
    -- No foreign key: a reserved order has no row until it completes (it
    -- lives in Redis), and a late payment's order never gets one.
    order_id        TEXT NOT NULL,
    sale_id         TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    provider        TEXT NOT NULL,
    amount_cents    INTEGER NOT NULL CHECK (amount_cents > 0),
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'expired',
                                                    'refunded', 'partially_refunded')),
    -- What the buyer follows to pay (URL, wallet SDK parameters), as JSON.
    checkout        TEXT NOT NULL DEFAULT '{}',
    -- Set once, from the first verified success; a second payment claiming
    -- the same provider transaction is refused by this constraint.
    provider_txn_id TEXT,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    paid_at         TEXT,
    -- Reconciliation: when a node should next ask the provider about it
    -- (NULL: nothing left to ask). A node claims a due payment by moving
    -- this forward, so one node at a time asks about each payment.
    next_check_at   TEXT,
    CONSTRAINT payments_one_per_txn UNIQUE (provider, provider_txn_id)
);
-- One live payment per order: a second start while one is pending finds it.
CREATE UNIQUE INDEX payments_one_pending_per_order ON payments (order_id) WHERE status = 'pending';
CREATE INDEX payments_by_order ON payments (order_id, created_at);
CREATE INDEX payments_due ON payments (next_check_at) WHERE next_check_at IS NOT NULL;

CREATE TABLE refunds (
    id                 TEXT PRIMARY KEY,
    order_id           TEXT NOT NULL,
    -- NULL for a manual refund (cod and manual orders: the host pays back).
    payment_id         TEXT REFERENCES payments (id),
    -- 'manual' or the payment's provider.
    provider           TEXT NOT NULL,
    amount_cents       INTEGER NOT NULL CHECK (amount_cents > 0),
    currency           TEXT NOT NULL,
    reason             TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    provider_refund_id TEXT,
    -- Who asked ('system' for automatic late-payment refunds) and with which
    -- Idempotency-Key: the same request again finds this row.
    requested_by       TEXT NOT NULL,
    idempotency_key    TEXT NOT NULL,
    -- The request body's digest: the same key with another body is 422.
    fingerprint        TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    next_check_at      TEXT,
    CONSTRAINT refunds_one_per_key UNIQUE (order_id, requested_by, idempotency_key),
    CONSTRAINT refunds_one_per_provider_id UNIQUE (provider, provider_refund_id)
);
CREATE INDEX refunds_by_order ON refunds (order_id, created_at);
CREATE INDEX refunds_due ON refunds (next_check_at) WHERE next_check_at IS NOT NULL;

-- The sandbox provider's own side (what a real gateway keeps): what the
-- buyer did on the sandbox checkout page, so queries and reconciliation
-- have a gateway to ask, whichever node asks.
CREATE TABLE sandbox_charges (
    payment_id   TEXT PRIMARY KEY,
    -- 'paid', 'failed', or 'closed' (closed by us: it can no longer be paid).
    state        TEXT NOT NULL CHECK (state IN ('paid', 'failed', 'closed')),
    txn_id       TEXT NOT NULL UNIQUE,
    amount_cents INTEGER NOT NULL,
    currency     TEXT NOT NULL,
    -- A rehearsal of a refund the gateway refuses.
    refunds_fail INTEGER NOT NULL DEFAULT 0,
    at           TEXT NOT NULL
);
CREATE TABLE sandbox_refunds (
    refund_id    TEXT PRIMARY KEY,
    payment_id   TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    succeeded    INTEGER NOT NULL,
    at           TEXT NOT NULL
);
