-- Delivery (contract section 10): where a product ships, and where an order goes.

-- Province codes a product ships to, as JSON {"include"?: [...], "exclude"?: [...]};
-- NULL: everywhere. Read with the product's other facts, so the buy path
-- checks an address without another query.
ALTER TABLE products ADD COLUMN ships_to TEXT;
-- Claims are taken this long after delivery (or shipping).
ALTER TABLE products ADD COLUMN claim_window_hours INTEGER NOT NULL DEFAULT 48
    CHECK (claim_window_hours BETWEEN 1 AND 720);

-- The address the order ships to, copied when attached (JSON, the
-- contract's Address): later edits of the buyer's address book leave it be.
ALTER TABLE orders ADD COLUMN ship_to TEXT;

-- Where the box is: unfulfilled -> packed -> shipped -> delivered | returned
-- | lost (contract section 10). Changed by the host, one order at a time
-- or by a shipments upload, never by the buy path.
ALTER TABLE orders ADD COLUMN fulfilment TEXT NOT NULL DEFAULT 'unfulfilled'
    CHECK (fulfilment IN ('unfulfilled', 'packed', 'shipped', 'delivered', 'returned', 'lost'));
ALTER TABLE orders ADD COLUMN courier TEXT;
ALTER TABLE orders ADD COLUMN waybill TEXT;
ALTER TABLE orders ADD COLUMN shipped_at TIMESTAMPTZ;
ALTER TABLE orders ADD COLUMN delivered_at TIMESTAMPTZ;
-- The packing list: a sale's completed orders not shipped yet.
CREATE INDEX orders_to_pack ON orders (sale_id, created_at, id)
    WHERE fulfilment IN ('unfulfilled', 'packed');
