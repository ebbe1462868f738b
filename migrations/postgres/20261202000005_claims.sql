-- After-sales claims (contract section 11): a spoiled or damaged box,
-- reported with photos, settled by a refund or rejected.
CREATE TABLE claims (
    id           UUID PRIMARY KEY,
    order_id     UUID NOT NULL,
    sale_id      UUID NOT NULL,
    -- The claim's buyer (the order's), who alone may open it.
    user_id      TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('spoiled', 'damaged', 'short_weight',
                                               'wrong_item', 'not_received')),
    qty_affected BIGINT NOT NULL CHECK (qty_affected > 0),
    description  TEXT NOT NULL,
    -- Upload ids, as a JSON array (the uploads carry the claim id too).
    photos       TEXT NOT NULL DEFAULT '[]',
    status       TEXT NOT NULL CHECK (status IN ('open', 'approved', 'rejected', 'settled')),
    -- {"action", "refund_cents"?, "note"} as JSON, once resolved.
    resolution   TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    resolved_at  TIMESTAMPTZ
);
-- One open claim per order at a time, whichever node takes it.
CREATE UNIQUE INDEX claims_one_open_per_order ON claims (order_id) WHERE status = 'open';
-- GET /sales/{id}/claims, newest first; the dashboard's open count.
CREATE INDEX claims_by_sale ON claims (sale_id, created_at DESC);
CREATE INDEX claims_by_order ON claims (order_id, created_at);
