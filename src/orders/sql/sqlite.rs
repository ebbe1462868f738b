//! The batch statements in SQLite: row by row, which costs little under its
//! one write lock and binds no arrays.

use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::{Pool, Row, Sqlite, Transaction};
use uuid::Uuid;

use super::OrderSql;
use crate::orders::{CompletedOrder, SoldIncrements};
use crate::store::StoreError;

/// Ids per `IN (...)` query, well under SQLite's bound-variable limit.
const IDS_PER_QUERY: usize = 500;

#[async_trait]
impl OrderSql for Sqlite {
    // China is UTC+8 with no DST; times compare as SQLite datetimes.
    const LATE: &'static str = "COALESCE(datetime(p.ships_by, '+1 day', '-8 hours'), \
         datetime(o.completed_at, '+' || $3 || ' hours')) < datetime($2)";

    /// Inserts the orders not yet present; returns the ids inserted.
    async fn insert_new(
        tx: &mut Transaction<'_, Sqlite>,
        batch: &[&CompletedOrder],
    ) -> Result<HashSet<Uuid>, StoreError> {
        let mut inserted = HashSet::new();
        for c in batch {
            let o = &c.order;
            let rows = sqlx::query(
                "INSERT INTO orders (id, sale_id, sku, user_id, qty, unit_price_cents, total_cents, \
                   currency, idempotency_key, created_at, expires_at, completed_at, payment_ref, \
                   payment_method, payment_id, paid_cents, payment_note, ship_to) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                   $18) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(o.id)
            .bind(o.sale_id)
            .bind(&o.sku)
            .bind(&o.user_id)
            .bind(o.qty)
            .bind(o.unit_price_cents)
            .bind(o.total_cents)
            .bind(&o.currency)
            .bind(&c.key)
            .bind(o.created_at)
            .bind(o.expires_at)
            .bind(o.completed_at.unwrap_or(o.created_at))
            .bind(o.payment_ref.as_deref())
            .bind(o.payment.as_ref().map(|p| p.method.as_str()))
            .bind(o.payment.as_ref().and_then(|p| p.payment_id))
            .bind(o.payment.as_ref().map(|p| p.paid_cents))
            .bind(o.payment.as_ref().and_then(|p| p.note.as_deref()))
            .bind(crate::orders::ship_to_text(o.ship_to.as_ref())?)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if rows == 1 {
                inserted.insert(o.id);
            }
        }
        Ok(inserted)
    }

    /// Raises `sold` once per SKU; `false` if any guard `sold + n <= stock` failed.
    async fn raise_sold(
        tx: &mut Transaction<'_, Sqlite>,
        per_sku: &SoldIncrements<'_>,
    ) -> Result<bool, StoreError> {
        for (&(sale_id, sku, epoch), &n) in per_sku {
            let updated = sqlx::query(
                "UPDATE products SET sold = sold + $3 \
                 WHERE sale_id = $1 AND sku = $2 AND sold + $3 <= stock AND epoch = $4",
            )
            .bind(sale_id)
            .bind(sku)
            .bind(n)
            .bind(epoch)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if updated != 1 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Which of these ids are stored.
    async fn existing(pool: &Pool<Sqlite>, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let mut found = Vec::new();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let placeholders = vec!["?"; chunk.len()].join(", ");
            let sql = format!("SELECT id FROM orders WHERE id IN ({placeholders})");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(pool).await? {
                found.push(row.try_get("id")?);
            }
        }
        Ok(found)
    }
}
