-- UUIDs in sqlx's native SQLite form, 16-byte BLOBs, so both backends bind
-- and read the same Rust types and share their SQL. SQLite cannot change a
-- column's declared type; a TEXT column keeps a BLOB as it is, so the
-- declarations stay and only the values change.
--
-- Times need no rewrite: sqlx reads the RFC 3339 text written before, and
-- what it writes now ("+00:00", trailing zeros dropped) still sorts as text
-- in time order; an old value and a new one compare out of order only when
-- they are less than a microsecond apart.

-- Keys change under their references: check them at commit, not per row.
PRAGMA defer_foreign_keys = ON;

UPDATE sales SET id = unhex(id, '-') WHERE typeof(id) = 'text';
UPDATE products SET sale_id = unhex(sale_id, '-') WHERE typeof(sale_id) = 'text';
UPDATE orders SET id = unhex(id, '-') WHERE typeof(id) = 'text';
UPDATE orders SET sale_id = unhex(sale_id, '-') WHERE typeof(sale_id) = 'text';
UPDATE orders SET payment_id = unhex(payment_id, '-') WHERE typeof(payment_id) = 'text';
UPDATE payments SET id = unhex(id, '-') WHERE typeof(id) = 'text';
UPDATE payments SET order_id = unhex(order_id, '-') WHERE typeof(order_id) = 'text';
UPDATE payments SET sale_id = unhex(sale_id, '-') WHERE typeof(sale_id) = 'text';
UPDATE refunds SET id = unhex(id, '-') WHERE typeof(id) = 'text';
UPDATE refunds SET order_id = unhex(order_id, '-') WHERE typeof(order_id) = 'text';
UPDATE refunds SET payment_id = unhex(payment_id, '-') WHERE typeof(payment_id) = 'text';
UPDATE sandbox_charges SET payment_id = unhex(payment_id, '-') WHERE typeof(payment_id) = 'text';
UPDATE sandbox_refunds SET refund_id = unhex(refund_id, '-') WHERE typeof(refund_id) = 'text';
UPDATE sandbox_refunds SET payment_id = unhex(payment_id, '-') WHERE typeof(payment_id) = 'text';
UPDATE addresses SET id = unhex(id, '-') WHERE typeof(id) = 'text';
UPDATE uploads SET id = unhex(id, '-') WHERE typeof(id) = 'text';
UPDATE uploads SET claim_id = unhex(claim_id, '-') WHERE typeof(claim_id) = 'text';
UPDATE uploads SET sale_id = unhex(sale_id, '-') WHERE typeof(sale_id) = 'text';
UPDATE claims SET id = unhex(id, '-') WHERE typeof(id) = 'text';
UPDATE claims SET order_id = unhex(order_id, '-') WHERE typeof(order_id) = 'text';
UPDATE claims SET sale_id = unhex(sale_id, '-') WHERE typeof(sale_id) = 'text';
