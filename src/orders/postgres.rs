//! Completed orders in PostgreSQL, committed in batches (group commit).

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::{
    commit_batch, payment_from_row, sold_increments, Commit, CompletedOrder, GuardedInsert, Order,
    OrderStatus, OrderStore, SoldIncrements,
};
use crate::fulfilment::address::Address;
use crate::fulfilment::Fulfilment;
use crate::store::StoreError;

pub struct PgOrders {
    pool: PgPool,
}

impl PgOrders {
    pub fn new(pool: PgPool) -> Self {
        PgOrders { pool }
    }
}

const ORDER_COLUMNS: &str = "id, sale_id, sku, user_id, qty, unit_price_cents, total_cents, \
     currency, created_at, expires_at, completed_at, payment_ref, payment_method, payment_id, \
     paid_cents, refunded_cents, payment_note, ship_to, fulfilment, courier, waybill, shipped_at, \
     delivered_at";

fn order_from_row(row: &sqlx::postgres::PgRow) -> Result<Order, StoreError> {
    Ok(Order {
        id: row.try_get("id")?,
        sale_id: row.try_get("sale_id")?,
        sku: row.try_get("sku")?,
        qty: row.try_get("qty")?,
        unit_price_cents: row.try_get("unit_price_cents")?,
        total_cents: row.try_get("total_cents")?,
        currency: row.try_get("currency")?,
        user_id: row.try_get("user_id")?,
        status: OrderStatus::Completed,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        completed_at: row.try_get("completed_at")?,
        payment_ref: row.try_get("payment_ref")?,
        payment: payment_from_row(
            row.try_get("payment_method")?,
            row.try_get("payment_id")?,
            row.try_get("paid_cents")?,
            row.try_get("refunded_cents")?,
            row.try_get("payment_note")?,
        ),
        ship_to: super::ship_to_from_text(row.try_get("ship_to")?)?,
        fulfilment: crate::fulfilment::Fulfilment::parse(row.try_get("fulfilment")?)?,
        shipment: super::shipment_from_row(
            row.try_get("courier")?,
            row.try_get("waybill")?,
            row.try_get("shipped_at")?,
            row.try_get("delivered_at")?,
        ),
        claims: Vec::new(),
    })
}

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
            .map(|c| super::ship_to_text(c.order.ship_to.as_ref()))
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

#[async_trait]
impl GuardedInsert for PgOrders {
    async fn insert_guarded(
        &self,
        batch: &[&CompletedOrder],
    ) -> Result<Option<HashSet<Uuid>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = insert_new(&mut tx, batch).await?;
        if !raise_sold(&mut tx, &sold_increments(batch, &inserted)).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(inserted))
    }

    /// The product's current epoch: another than the order's means a rebuild
    /// fenced the order out.
    async fn epoch_of(&self, c: &CompletedOrder) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT epoch FROM products WHERE sale_id = $1 AND sku = $2")
                .bind(c.order.sale_id)
                .bind(&c.order.sku)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// What is already there for an order that was not inserted: the same id,
    /// or another order made with the same key.
    async fn existing_for(&self, c: &CompletedOrder) -> Result<Option<Order>, StoreError> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 \
             OR (sale_id = $2 AND user_id = $3 AND idempotency_key = $4) LIMIT 1"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(c.order.id)
            .bind(c.order.sale_id)
            .bind(&c.order.user_id)
            .bind(&c.key)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(order_from_row)
            .transpose()
    }
}

#[async_trait]
impl OrderStore for PgOrders {
    async fn commit(&self, batch: &[CompletedOrder]) -> Result<Vec<Commit>, StoreError> {
        commit_batch(self, batch).await
    }

    async fn order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(order_from_row)
            .transpose()
    }

    async fn existing(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM orders WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn user_orders(&self, user_id: &str, limit: i64) -> Result<Vec<Order>, StoreError> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(order_from_row)
            .collect()
    }

    async fn holdings(&self, sale_id: Uuid) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT sku, user_id, SUM(qty)::bigint AS qty FROM orders \
             WHERE sale_id = $1 GROUP BY sku, user_id",
        )
        .bind(sale_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("sku")?, r.try_get("user_id")?, r.try_get("qty")?)))
            .collect()
    }

    async fn completed_page(
        &self,
        sale_id: Uuid,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Order>, StoreError> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE sale_id = $1 \
             AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3)) \
             ORDER BY created_at, id LIMIT $4"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(sale_id)
            .bind(after.map(|a| a.0))
            .bind(after.map(|a| a.1).unwrap_or_default())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(order_from_row)
            .collect()
    }

    async fn move_fulfilment(
        &self,
        order_id: Uuid,
        from: &[Fulfilment],
        to: Fulfilment,
        shipment: Option<(&str, &str)>,
        at: DateTime<Utc>,
    ) -> Result<Option<Order>, StoreError> {
        let from: Vec<&str> = from.iter().map(|f| f.as_str()).collect();
        let sql = format!(
            "UPDATE orders SET fulfilment = $3, \
               courier = COALESCE($4, courier), waybill = COALESCE($5, waybill), \
               shipped_at = CASE WHEN $3 = 'shipped' THEN $6 ELSE shipped_at END, \
               delivered_at = CASE WHEN $3 = 'delivered' THEN $6 ELSE delivered_at END \
             WHERE id = $1 AND fulfilment = ANY($2) RETURNING {ORDER_COLUMNS}"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(order_id)
            .bind(from)
            .bind(to.as_str())
            .bind(shipment.map(|s| s.0))
            .bind(shipment.map(|s| s.1))
            .bind(at)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(order_from_row)
            .transpose()
    }

    async fn after_sales(
        &self,
        sale_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<super::AfterSales, StoreError> {
        // A `ships_by` day ends at midnight in China, where the boxes leave.
        let (refunds_cents, late, free_cents): (i64, i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(o.refunded_cents), 0)::BIGINT, \
               COUNT(*) FILTER (WHERE o.fulfilment IN ('unfulfilled', 'packed') AND \
                 COALESCE(((p.ships_by + 1)::timestamp AT TIME ZONE 'Asia/Shanghai'), \
                          o.completed_at + make_interval(hours => $3)) < $2), \
               COALESCE(SUM(o.qty * p.price_cents) FILTER (WHERE o.total_cents = 0), 0)::BIGINT \
             FROM orders o JOIN products p ON p.sale_id = o.sale_id AND p.sku = o.sku \
             WHERE o.sale_id = $1",
        )
        .bind(sale_id)
        .bind(now)
        .bind(super::LATE_AFTER_HOURS as i32)
        .fetch_one(&self.pool)
        .await?;
        Ok(super::AfterSales {
            refunds_cents,
            late,
            free_cents,
        })
    }

    async fn to_pack_page(
        &self,
        sale_id: Uuid,
        with_address: bool,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Order>, StoreError> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE sale_id = $1 \
             AND fulfilment IN ('unfulfilled', 'packed') AND (ship_to IS NOT NULL) = $5 \
             AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3)) \
             ORDER BY created_at, id LIMIT $4"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(sale_id)
            .bind(after.map(|a| a.0))
            .bind(after.map(|a| a.1).unwrap_or_default())
            .bind(limit)
            .bind(with_address)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(order_from_row)
            .collect()
    }

    async fn set_ship_to(&self, order_id: Uuid, ship_to: &Address) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE orders SET ship_to = $2 WHERE id = $1 AND fulfilment = 'unfulfilled'",
        )
        .bind(order_id)
        .bind(super::ship_to_text(Some(ship_to))?)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn gmv(&self, sale_id: Uuid) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(SUM(total_cents), 0)::bigint FROM orders WHERE sale_id = $1",
        )
        .bind(sale_id)
        .fetch_one(&self.pool)
        .await?)
    }
}
