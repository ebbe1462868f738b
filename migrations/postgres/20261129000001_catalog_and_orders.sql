-- Sales, products and completed orders: the record a packing house ships from.
-- Live counters and reservations are in Redis; this schema is the final word.

CREATE TABLE sales (
    id                   UUID PRIMARY KEY,
    title                TEXT NOT NULL,
    description          TEXT,
    host_id              TEXT NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('scheduled', 'live', 'ended')),
    checkout             TEXT NOT NULL CHECK (checkout IN ('reserve', 'instant')),
    reservation_ttl_secs INTEGER NOT NULL CHECK (reservation_ttl_secs BETWEEN 30 AND 3600),
    scheduled_at         TIMESTAMPTZ,
    stream_url           TEXT,
    pinned_sku           TEXT,
    created_at           TIMESTAMPTZ NOT NULL,
    started_at           TIMESTAMPTZ,
    ended_at             TIMESTAMPTZ
);
-- The public list filters by status, newest first.
CREATE INDEX sales_by_status ON sales (status, created_at DESC);

CREATE TABLE products (
    sale_id        UUID NOT NULL REFERENCES sales (id) ON DELETE CASCADE,
    sku            TEXT NOT NULL,
    -- Keeps the host's order of products on every page.
    position       BIGSERIAL NOT NULL,
    name           TEXT NOT NULL,
    price_cents    BIGINT NOT NULL CHECK (price_cents > 0),
    currency       TEXT NOT NULL,
    stock          BIGINT NOT NULL CHECK (stock >= 0),
    -- Raised once per batch and SKU by the batch writer.
    sold           BIGINT NOT NULL DEFAULT 0 CHECK (sold >= 0),
    per_user_limit INTEGER NOT NULL CHECK (per_user_limit BETWEEN 1 AND 1000),
    ships_by       DATE,
    -- What the host set; sold_out is derived from the counters, never stored.
    status         TEXT NOT NULL CHECK (status IN ('scheduled', 'on_sale', 'closed')),
    -- The epoch of the live state in Redis this product's orders were admitted
    -- under. A rebuild raises it in the same statement that reads `sold`, so an
    -- order admitted before the rebuild cannot commit after it unseen (a fence).
    epoch          BIGINT NOT NULL DEFAULT 0,
    -- A SKU is unique within its sale: duplicate_sku.
    PRIMARY KEY (sale_id, sku),
    -- Never oversold, whatever Redis believed: the batch writer's guard
    -- `sold + n <= stock` avoids tripping this, and this catches any path that doesn't.
    CONSTRAINT products_never_oversold CHECK (sold <= stock)
);

-- Only completed orders: reservations live in Redis until paid.
CREATE TABLE orders (
    id               UUID PRIMARY KEY,
    sale_id          UUID NOT NULL,
    sku              TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    qty              BIGINT NOT NULL CHECK (qty > 0),
    unit_price_cents BIGINT NOT NULL,
    total_cents      BIGINT NOT NULL,
    currency         TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    expires_at       TIMESTAMPTZ,
    completed_at     TIMESTAMPTZ NOT NULL,
    payment_ref      TEXT,
    FOREIGN KEY (sale_id, sku) REFERENCES products (sale_id, sku),
    -- One order per idempotency key even if Redis lost the key (invariant 4).
    CONSTRAINT orders_one_per_key UNIQUE (sale_id, user_id, idempotency_key)
);
-- GET /me/orders, newest first.
CREATE INDEX orders_by_user ON orders (user_id, created_at DESC);
-- CSV export pages through a sale's orders in creation order.
CREATE INDEX orders_by_sale ON orders (sale_id, created_at, id);
