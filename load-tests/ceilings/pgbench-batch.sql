-- One batch-writer transaction of 512 completed orders on one hot SKU, as
-- orders/postgres.rs commits it: insert the rows, raise `sold` once, guarded.
-- Run by scripts/bench with pgbench against a scratch database.
BEGIN;
INSERT INTO orders (id, sale_id, sku, user_id, qty, unit_price_cents, total_cents,
                    currency, idempotency_key, created_at, expires_at, completed_at, payment_ref)
SELECT gen_random_uuid(), '00000000-0000-0000-0000-0000000000be', 'HOT', 'u' || g, 1, 16800, 16800,
       'CNY', gen_random_uuid()::text, now(), NULL, now(), NULL
FROM generate_series(1, 512) AS g
ON CONFLICT DO NOTHING;
UPDATE products SET sold = sold + 512
WHERE sale_id = '00000000-0000-0000-0000-0000000000be' AND sku = 'HOT' AND sold + 512 <= stock AND epoch = 0;
COMMIT;
