//! The catalog in PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{
    CatalogStore, NewProduct, ProductRecord, ProductStatus, SaleRecord, SaleStatus, Transition,
};
use crate::store::StoreError;

pub struct PgCatalog {
    pool: PgPool,
}

impl PgCatalog {
    pub fn new(pool: PgPool) -> Self {
        PgCatalog { pool }
    }
}

const SALE_COLUMNS: &str =
    "id, title, description, host_id, status, checkout, reservation_ttl_secs, \
     scheduled_at, created_at, started_at, ended_at, pinned_sku, stream_url";

fn sale_from_row(row: &sqlx::postgres::PgRow) -> Result<SaleRecord, StoreError> {
    Ok(SaleRecord {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        host_id: row.try_get("host_id")?,
        status: row.try_get::<&str, _>("status")?.parse()?,
        checkout: row.try_get::<&str, _>("checkout")?.parse()?,
        reservation_ttl_secs: row.try_get("reservation_ttl_secs")?,
        scheduled_at: row.try_get("scheduled_at")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        pinned_sku: row.try_get("pinned_sku")?,
        stream_url: row.try_get("stream_url")?,
    })
}

fn product_from_row(row: &sqlx::postgres::PgRow) -> Result<ProductRecord, StoreError> {
    Ok(ProductRecord {
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        price_cents: row.try_get("price_cents")?,
        currency: row.try_get("currency")?,
        stock: row.try_get("stock")?,
        per_user_limit: row.try_get("per_user_limit")?,
        ships_by: row.try_get("ships_by")?,
        status: row.try_get::<&str, _>("status")?.parse()?,
        sold: row.try_get("sold")?,
        ships_to: super::ships_to_from_text(row.try_get("ships_to")?)?,
        claim_window_hours: row.try_get("claim_window_hours")?,
    })
}

const PRODUCT_COLUMNS: &str =
    "sku, name, price_cents, currency, stock, per_user_limit, ships_by, status, sold, ships_to, \
     claim_window_hours";

#[async_trait]
impl CatalogStore for PgCatalog {
    async fn insert_sale(&self, s: &SaleRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sales (id, title, description, host_id, status, checkout, \
             reservation_ttl_secs, scheduled_at, created_at, stream_url) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(s.id)
        .bind(&s.title)
        .bind(&s.description)
        .bind(&s.host_id)
        .bind(s.status.as_str())
        .bind(s.checkout.as_str())
        .bind(s.reservation_ttl_secs)
        .bind(s.scheduled_at)
        .bind(s.created_at)
        .bind(&s.stream_url)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn sale(&self, id: Uuid) -> Result<Option<SaleRecord>, StoreError> {
        let sql = format!("SELECT {SALE_COLUMNS} FROM sales WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(sale_from_row)
            .transpose()
    }

    async fn sales(
        &self,
        status: Option<SaleStatus>,
        limit: i64,
    ) -> Result<Vec<SaleRecord>, StoreError> {
        let sql = format!(
            "SELECT {SALE_COLUMNS} FROM sales WHERE ($1::text IS NULL OR status = $1) \
             ORDER BY created_at DESC LIMIT $2"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(status.map(SaleStatus::as_str))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(sale_from_row)
            .collect()
    }

    async fn transition(
        &self,
        id: Uuid,
        t: Transition,
        at: DateTime<Utc>,
    ) -> Result<Option<SaleRecord>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE sales SET status = $3, \
               started_at = CASE WHEN $3 = 'live' THEN $4 ELSE started_at END, \
               ended_at = CASE WHEN $3 = 'ended' THEN $4 ELSE ended_at END \
             WHERE id = $1 AND status = $2 RETURNING {SALE_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(t.from.as_str())
            .bind(t.to.as_str())
            .bind(at)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        if t.to == SaleStatus::Ended {
            sqlx::query("UPDATE products SET status = 'closed' WHERE sale_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        sale_from_row(&row).map(Some)
    }

    async fn set_pinned(&self, id: Uuid, sku: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE sales SET pinned_sku = $2 WHERE id = $1")
            .bind(id)
            .bind(sku)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_product(
        &self,
        sale_id: Uuid,
        p: &NewProduct,
        epoch: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO products (sale_id, sku, name, price_cents, currency, stock, \
             per_user_limit, ships_by, status, epoch, ships_to, claim_window_hours) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'scheduled', $9, $10, $11)",
        )
        .bind(sale_id)
        .bind(&p.sku)
        .bind(&p.name)
        .bind(p.price_cents)
        .bind(&p.currency)
        .bind(p.stock)
        .bind(p.per_user_limit)
        .bind(p.ships_by)
        .bind(epoch)
        .bind(super::ships_to_text(p.ships_to.as_ref())?)
        .bind(p.claim_window_hours)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn fence(&self, sale_id: Uuid, epoch: i64) -> Result<Vec<ProductRecord>, StoreError> {
        // The UPDATE takes each row's lock: it waits for batches in progress,
        // and batches after it re-check their epoch against the new one.
        let sql = format!(
            "UPDATE products SET epoch = $2 WHERE sale_id = $1 RETURNING {PRODUCT_COLUMNS}"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(sale_id)
            .bind(epoch)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(product_from_row)
            .collect()
    }

    async fn products(&self, sale_id: Uuid) -> Result<Vec<ProductRecord>, StoreError> {
        let sql =
            format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE sale_id = $1 ORDER BY position");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(sale_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(product_from_row)
            .collect()
    }

    async fn product(&self, sale_id: Uuid, sku: &str) -> Result<Option<ProductRecord>, StoreError> {
        let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE sale_id = $1 AND sku = $2");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(sale_id)
            .bind(sku)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(product_from_row)
            .transpose()
    }

    async fn set_product_status(
        &self,
        sale_id: Uuid,
        sku: &str,
        status: ProductStatus,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE products SET status = $3 WHERE sale_id = $1 AND sku = $2")
            .bind(sale_id)
            .bind(sku)
            .bind(status.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn restock(&self, sale_id: Uuid, sku: &str, add: i64) -> Result<i64, StoreError> {
        let stock: Option<i64> = sqlx::query_scalar(
            "UPDATE products SET stock = stock + $3 WHERE sale_id = $1 AND sku = $2 RETURNING stock",
        )
        .bind(sale_id)
        .bind(sku)
        .bind(add)
        .fetch_optional(&self.pool)
        .await?;
        stock.ok_or_else(|| StoreError::Corrupt(format!("restock of unknown product {sku}")))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
