-- The embedded mode's copy of the PostgreSQL schema (migrations/postgres):
-- same tables and guards; UUIDs and times are stored as text.

CREATE TABLE sales (
    id                   TEXT PRIMARY KEY,
    title                TEXT NOT NULL,
    description          TEXT,
    host_id              TEXT NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('scheduled', 'live', 'ended')),
    checkout             TEXT NOT NULL CHECK (checkout IN ('reserve', 'instant')),
    reservation_ttl_secs INTEGER NOT NULL CHECK (reservation_ttl_secs BETWEEN 30 AND 3600),
    scheduled_at         TEXT,
    stream_url           TEXT,
    pinned_sku           TEXT,
    created_at           TEXT NOT NULL,
    started_at           TEXT,
    ended_at             TEXT
);
-- The public list filters by status, newest first.
CREATE INDEX sales_by_status ON sales (status, created_at DESC);

CREATE TABLE products (
    sale_id        TEXT NOT NULL REFERENCES sales (id) ON DELETE CASCADE,
    sku            TEXT NOT NULL,
    -- Keeps the host's order of products on every page.
    position       INTEGER NOT NULL,
    name           TEXT NOT NULL,
    price_cents    INTEGER NOT NULL CHECK (price_cents > 0),
    currency       TEXT NOT NULL,
    stock          INTEGER NOT NULL CHECK (stock >= 0),
    sold           INTEGER NOT NULL DEFAULT 0 CHECK (sold >= 0),
    per_user_limit INTEGER NOT NULL CHECK (per_user_limit BETWEEN 1 AND 1000),
    ships_by       TEXT,
    status         TEXT NOT NULL CHECK (status IN ('scheduled', 'on_sale', 'closed')),
    -- The live state's epoch, as in PostgreSQL: a fence for rebuilds.
    epoch          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sale_id, sku),
    -- Never oversold, whatever the in-memory counters believed.
    CHECK (sold <= stock)
);

CREATE TABLE orders (
    id               TEXT PRIMARY KEY,
    sale_id          TEXT NOT NULL,
    sku              TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    qty              INTEGER NOT NULL CHECK (qty > 0),
    unit_price_cents INTEGER NOT NULL,
    total_cents      INTEGER NOT NULL,
    currency         TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    expires_at       TEXT,
    completed_at     TEXT NOT NULL,
    payment_ref      TEXT,
    FOREIGN KEY (sale_id, sku) REFERENCES products (sale_id, sku),
    -- One order per idempotency key.
    UNIQUE (sale_id, user_id, idempotency_key)
);
-- GET /me/orders, newest first.
CREATE INDEX orders_by_user ON orders (user_id, created_at DESC);
-- CSV export pages through a sale's orders in creation order.
CREATE INDEX orders_by_sale ON orders (sale_id, created_at, id);
