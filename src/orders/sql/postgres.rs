//! The batch statements in PostgreSQL: each a handful of array-bound
//! statements, whatever the batch size.

use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::{Pool, Postgres, Transaction};
use uuid::Uuid;

use super::OrderSql;
use crate::orders::{CompletedOrder, SoldIncrements};
use crate::store::StoreError;

#[async_trait]
impl OrderSql for Postgres {
    const LATE: &'static str =
        "COALESCE(((p.ships_by + 1)::timestamp AT TIME ZONE 'Asia/Shanghai'), \
         o.completed_at + make_interval(hours => $3)) < $2";

    /// Inserts the orders not yet present; returns the ids inserted.
    async fn insert_new(
        tx: &mut Transaction<'_, Postgres>,
        batch: &[&CompletedOrder],
    ) -> Result<HashSet<Uuid>, StoreError> {
        let inserted: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO orders (id, sale_id, sku, user_id, qty, unit_price_cents, total_cents, \
               currency, idempotency_key, created_at, expires_at, completed_at, payment_ref, \
               payment_method, payment_id, paid_cents, payment_note, ship_to) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[], \
               $6::bigint[], $7::bigint[], $8::text[], $9::text[], $10::timestamptz[], \
               $11::timestamptz[], $12::timestamptz[], $13::text[], $14::text[], $15::uuid[], \
               $16::bigint[], $17::text[], $18::text[]) \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(batch.iter().map(|c| c.order.id).collect::<Vec<_>>())
        .bind(batch.iter().map(|c| c.order.sale_id).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|c| c.order.sku.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|c| c.order.user_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(batch.iter().map(|c| c.order.qty).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|c| c.order.unit_price_cents)
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|c| c.order.total_cents)
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|c| c.order.currency.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(batch.iter().map(|c| c.key.as_str()).collect::<Vec<_>>())
        .bind(batch.iter().map(|c| c.order.created_at).collect::<Vec<_>>())
        .bind(batch.iter().map(|c| c.order.expires_at).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|c| c.order.completed_at.unwrap_or(c.order.created_at))
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|c| c.order.payment_ref.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|c| c.order.payment.as_ref().map(|p| p.method.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|c| c.order.payment.as_ref().and_then(|p| p.payment_id))
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|c| c.order.payment.as_ref().map(|p| p.paid_cents))
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|c| c.order.payment.as_ref().and_then(|p| p.note.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|c| crate::orders::ship_to_text(c.order.ship_to.as_ref()))
                .collect::<Result<Vec<_>, _>>()?,
        )
        .fetch_all(&mut **tx)
        .await?;
        Ok(inserted.into_iter().collect())
    }

    /// Raises `sold` once per SKU; `false` if any guard `sold + n <= stock` failed.
    async fn raise_sold(
        tx: &mut Transaction<'_, Postgres>,
        per_sku: &SoldIncrements<'_>,
    ) -> Result<bool, StoreError> {
        if per_sku.is_empty() {
            return Ok(true);
        }
        let sales: Vec<Uuid> = per_sku.keys().map(|(s, _, _)| *s).collect();
        let skus: Vec<&str> = per_sku.keys().map(|(_, k, _)| *k).collect();
        let epochs: Vec<i64> = per_sku.keys().map(|(_, _, e)| *e).collect();
        let adds: Vec<i64> = per_sku.values().copied().collect();
        // Row locks in one order for every batch on every node: an UPDATE ... FROM
        // locks rows in whatever order its plan visits them, and two batches
        // over the same SKUs in opposite orders deadlock.
        sqlx::query(
            "SELECT 1 FROM products p \
             JOIN UNNEST($1::uuid[], $2::text[]) AS d(sale_id, sku) \
               ON p.sale_id = d.sale_id AND p.sku = d.sku \
             ORDER BY p.sale_id, p.sku FOR NO KEY UPDATE OF p",
        )
        .bind(&sales)
        .bind(&skus)
        .execute(&mut **tx)
        .await?;
        // The epoch condition is re-checked on the row after a rebuild's fence
        // (which holds the row lock) commits, so a fenced-out order cannot land.
        let updated = sqlx::query(
            "UPDATE products p SET sold = p.sold + d.n \
             FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::bigint[]) AS d(sale_id, sku, n, epoch) \
             WHERE p.sale_id = d.sale_id AND p.sku = d.sku AND p.sold + d.n <= p.stock \
               AND p.epoch = d.epoch",
        )
        .bind(sales)
        .bind(skus)
        .bind(adds)
        .bind(epochs)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(updated == per_sku.len() as u64)
    }

    /// Which of these ids are stored.
    async fn existing(pool: &Pool<Postgres>, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM orders WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(pool)
                .await?,
        )
    }
}
