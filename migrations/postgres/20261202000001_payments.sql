-- Payments and refunds (contract section 9): a reserved order is completed
-- only by a provider's verified success or a host's manual confirmation.

-- How each completed order was paid. Rows from before payments keep NULLs
-- (their JSON `payment` is null).
ALTER TABLE orders
    -- 'cod' (instant checkout), 'manual' (the host saw the money), or the
    -- provider's name ('sandbox', 'wechatpay', 'alipay').
    ADD COLUMN payment_method    TEXT,
    -- The payment that completed it (NULL for cod and manual).
    ADD COLUMN payment_id        UUID,
    ADD COLUMN paid_cents        BIGINT CHECK (paid_cents >= 0),
    -- The host's note on a manual confirmation.
    ADD COLUMN payment_note      TEXT,
    -- Sum of succeeded refunds: the JSON's `payment.refunded_cents`.
    ADD COLUMN refunded_cents    BIGINT NOT NULL DEFAULT 0,
    -- Sum of pending and succeeded refunds: raised, guarded, in the same
    -- statement that records a refund, so concurrent refunds can never add
    -- up to more than was paid.
    ADD COLUMN refund_held_cents BIGINT NOT NULL DEFAULT 0,
    ADD CONSTRAINT orders_refunds_within_paid
        CHECK (refunded_cents <= refund_held_cents AND refund_held_cents <= COALESCE(paid_cents, 0));

CREATE TABLE payments (
    id              UUID PRIMARY KEY,
    -- No foreign key: a reserved order has no row until it completes (it
    -- lives in Redis), and a late payment's order never gets one.
    order_id        UUID NOT NULL,
    sale_id         UUID NOT NULL,
    user_id         TEXT NOT NULL,
    provider        TEXT NOT NULL,
    amount_cents    BIGINT NOT NULL CHECK (amount_cents > 0),
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'expired',
                                                    'refunded', 'partially_refunded')),
    -- What the buyer follows to pay (URL, wallet SDK parameters), as JSON.
    checkout        TEXT NOT NULL DEFAULT '{}',
    -- Set once, from the first verified success; a second payment claiming
    -- the same provider transaction is refused by this constraint.
    provider_txn_id TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    paid_at         TIMESTAMPTZ,
    -- Reconciliation: when a node should next ask the provider about it
    -- (NULL: nothing left to ask). A node claims a due payment by moving
    -- this forward, so one node at a time asks about each payment.
    next_check_at   TIMESTAMPTZ,
    CONSTRAINT payments_one_per_txn UNIQUE (provider, provider_txn_id)
);
-- One live payment per order: a second start while one is pending finds it.
CREATE UNIQUE INDEX payments_one_pending_per_order ON payments (order_id) WHERE status = 'pending';
CREATE INDEX payments_by_order ON payments (order_id, created_at);
CREATE INDEX payments_due ON payments (next_check_at) WHERE next_check_at IS NOT NULL;

CREATE TABLE refunds (
    id                 UUID PRIMARY KEY,
    order_id           UUID NOT NULL,
    -- NULL for a manual refund (cod and manual orders: the host pays back).
    payment_id         UUID REFERENCES payments (id),
    -- 'manual' or the payment's provider.
    provider           TEXT NOT NULL,
    amount_cents       BIGINT NOT NULL CHECK (amount_cents > 0),
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
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    next_check_at      TIMESTAMPTZ,
    CONSTRAINT refunds_one_per_key UNIQUE (order_id, requested_by, idempotency_key),
    CONSTRAINT refunds_one_per_provider_id UNIQUE (provider, provider_refund_id)
);
CREATE INDEX refunds_by_order ON refunds (order_id, created_at);
CREATE INDEX refunds_due ON refunds (next_check_at) WHERE next_check_at IS NOT NULL;

-- The sandbox provider's own side (what a real gateway keeps): what the
-- buyer did on the sandbox checkout page, so queries and reconciliation
-- have a gateway to ask, whichever node asks.
CREATE TABLE sandbox_charges (
    payment_id   UUID PRIMARY KEY,
    -- 'paid', 'failed', or 'closed' (closed by us: it can no longer be paid).
    state        TEXT NOT NULL CHECK (state IN ('paid', 'failed', 'closed')),
    txn_id       TEXT NOT NULL UNIQUE,
    amount_cents BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    -- A rehearsal of a refund the gateway refuses.
    refunds_fail BOOLEAN NOT NULL DEFAULT FALSE,
    at           TIMESTAMPTZ NOT NULL
);
CREATE TABLE sandbox_refunds (
    refund_id    UUID PRIMARY KEY,
    payment_id   UUID NOT NULL,
    amount_cents BIGINT NOT NULL,
    succeeded    BOOLEAN NOT NULL,
    at           TIMESTAMPTZ NOT NULL
);
