//! The catalog in SQL, once for PostgreSQL and SQLite (see `crate::sql`).

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{ColumnIndex, Decode, Encode, Executor, Pool, Row, Type};
use uuid::Uuid;

use super::{
    CatalogStore, NewProduct, ProductRecord, ProductStatus, SaleRecord, SaleStatus, Transition,
};
use crate::sql::{Sql, Value};
use crate::store::StoreError;

pub struct SqlCatalog<DB: Sql> {
    pool: Pool<DB>,
}

impl<DB: Sql> SqlCatalog<DB> {
    pub fn new(pool: Pool<DB>) -> Self {
        SqlCatalog { pool }
    }
}

/// Rows as records.
impl<DB> SqlCatalog<DB>
where
    DB: Sql,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    for<'r> &'r str: Decode<'r, DB> + Type<DB>,
    Uuid: Value<DB>,
    DateTime<Utc>: Value<DB>,
    Option<DateTime<Utc>>: Value<DB>,
    Option<NaiveDate>: Value<DB>,
    i64: Value<DB>,
    i32: Value<DB>,
    String: Value<DB>,
    Option<String>: Value<DB>,
{
    fn sale_from_row(row: &DB::Row) -> Result<SaleRecord, StoreError> {
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

    fn product_from_row(row: &DB::Row) -> Result<ProductRecord, StoreError> {
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
}

const SALE_COLUMNS: &str =
    "id, title, description, host_id, status, checkout, reservation_ttl_secs, \
     scheduled_at, created_at, started_at, ended_at, pinned_sku, stream_url";

const PRODUCT_COLUMNS: &str =
    "sku, name, price_cents, currency, stock, per_user_limit, ships_by, status, sold, ships_to, \
     claim_window_hours";

#[async_trait]
impl<DB> CatalogStore for SqlCatalog<DB>
where
    DB: Sql,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    Uuid: Value<DB>,
    DateTime<Utc>: Value<DB>,
    Option<DateTime<Utc>>: Value<DB>,
    Option<NaiveDate>: Value<DB>,
    i64: Value<DB>,
    i32: Value<DB>,
    String: Value<DB>,
    Option<String>: Value<DB>,
{
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
            .map(Self::sale_from_row)
            .transpose()
    }

    async fn sales(
        &self,
        status: Option<SaleStatus>,
        limit: i64,
    ) -> Result<Vec<SaleRecord>, StoreError> {
        let sql = format!(
            "SELECT {SALE_COLUMNS} FROM sales WHERE (CAST($1 AS TEXT) IS NULL OR status = $1) \
             ORDER BY created_at DESC LIMIT $2"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(status.map(SaleStatus::as_str))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(Self::sale_from_row)
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
        Self::sale_from_row(&row).map(Some)
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
        let sql = format!(
            "INSERT INTO products (sale_id, sku, position, name, price_cents, currency, stock, \
             per_user_limit, ships_by, status, epoch, ships_to, claim_window_hours) \
             VALUES ($1, $2, {}, $3, $4, $5, $6, $7, $8, 'scheduled', $9, $10, $11)",
            DB::NEXT_POSITION
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
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
        // The UPDATE takes each row's lock (PostgreSQL) or the write lock
        // (SQLite): it waits for batches in progress, and batches after it
        // re-check their epoch against the new one.
        let sql = format!(
            "UPDATE products SET epoch = $2 WHERE sale_id = $1 RETURNING {PRODUCT_COLUMNS}"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(sale_id)
            .bind(epoch)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(Self::product_from_row)
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
            .map(Self::product_from_row)
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
            .map(Self::product_from_row)
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
        let row = sqlx::query(
            "UPDATE products SET stock = stock + $3 WHERE sale_id = $1 AND sku = $2 RETURNING stock",
        )
        .bind(sale_id)
        .bind(sku)
        .bind(add)
        .fetch_optional(&self.pool)
        .await?;
        let stock: Option<i64> = row.map(|r| r.try_get("stock")).transpose()?;
        stock.ok_or_else(|| StoreError::Corrupt(format!("restock of unknown product {sku}")))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::TimeZone;
    use sqlx::sqlite::SqlitePoolOptions;
    use sqlx::SqlitePool;

    use super::*;
    use crate::catalog::Checkout;

    pub(crate) async fn memory_pool() -> SqlitePool {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("in-memory database");
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .expect("migrations");
        pool
    }

    pub(crate) fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_790_000_000 + secs, 123_456_000)
            .single()
            .expect("valid time")
    }

    pub(crate) fn sale_record(id: Uuid, created_at: DateTime<Utc>) -> SaleRecord {
        SaleRecord {
            id,
            title: "Lychee drop".into(),
            description: Some("Fresh from the orchard".into()),
            host_id: "host-1".into(),
            status: SaleStatus::Scheduled,
            checkout: Checkout::Reserve,
            reservation_ttl_secs: 300,
            scheduled_at: Some(at(3600)),
            created_at,
            started_at: None,
            ended_at: None,
            pinned_sku: None,
            stream_url: None,
        }
    }

    pub(crate) fn new_product(sku: &str, stock: i64) -> NewProduct {
        NewProduct {
            sku: sku.into(),
            name: format!("Box {sku}"),
            price_cents: 1299,
            currency: "EUR".into(),
            stock,
            per_user_limit: 5,
            ships_by: NaiveDate::from_ymd_opt(2026, 12, 24),
            ships_to: Some(crate::catalog::ShipsTo {
                include: Some(vec!["440000".into()]),
                exclude: None,
            }),
            claim_window_hours: 48,
        }
    }

    #[tokio::test]
    async fn sale_and_products_round_trip() {
        let store = SqlCatalog::new(memory_pool().await);
        store.ping().await.unwrap();
        let sale = sale_record(Uuid::new_v4(), at(0));
        store.insert_sale(&sale).await.unwrap();
        assert_eq!(store.sale(sale.id).await.unwrap(), Some(sale.clone()));
        assert_eq!(store.sale(Uuid::new_v4()).await.unwrap(), None);

        let newer = sale_record(Uuid::new_v4(), at(10));
        store.insert_sale(&newer).await.unwrap();
        let all = store.sales(None, 10).await.unwrap();
        assert_eq!(
            all.iter().map(|s| s.id).collect::<Vec<_>>(),
            [newer.id, sale.id]
        );
        assert_eq!(
            store
                .sales(Some(SaleStatus::Scheduled), 1)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(store
            .sales(Some(SaleStatus::Live), 10)
            .await
            .unwrap()
            .is_empty());

        for sku in ["B", "A", "C"] {
            store
                .insert_product(sale.id, &new_product(sku, 10), 0)
                .await
                .unwrap();
        }
        store
            .insert_product(newer.id, &new_product("A", 1), 0)
            .await
            .unwrap();
        let products = store.products(sale.id).await.unwrap();
        assert_eq!(
            products.iter().map(|p| p.sku.as_str()).collect::<Vec<_>>(),
            ["B", "A", "C"]
        );
        let a = store.product(sale.id, "A").await.unwrap().unwrap();
        assert_eq!(
            a,
            ProductRecord {
                sku: "A".into(),
                name: "Box A".into(),
                price_cents: 1299,
                currency: "EUR".into(),
                stock: 10,
                per_user_limit: 5,
                ships_by: NaiveDate::from_ymd_opt(2026, 12, 24),
                status: ProductStatus::Scheduled,
                sold: 0,
                ships_to: Some(crate::catalog::ShipsTo {
                    include: Some(vec!["440000".into()]),
                    exclude: None,
                }),
                claim_window_hours: 48,
            }
        );
        assert_eq!(store.product(sale.id, "Z").await.unwrap(), None);

        store
            .set_product_status(sale.id, "A", ProductStatus::OnSale)
            .await
            .unwrap();
        assert_eq!(
            store.product(sale.id, "A").await.unwrap().unwrap().status,
            ProductStatus::OnSale
        );
        assert_eq!(store.restock(sale.id, "A", 5).await.unwrap(), 15);
        assert!(matches!(
            store.restock(sale.id, "Z", 5).await,
            Err(StoreError::Corrupt(_))
        ));
        store.set_pinned(sale.id, "A").await.unwrap();
        assert_eq!(
            store
                .sale(sale.id)
                .await
                .unwrap()
                .unwrap()
                .pinned_sku
                .as_deref(),
            Some("A")
        );
    }

    #[tokio::test]
    async fn duplicate_sku_is_refused() {
        let store = SqlCatalog::new(memory_pool().await);
        let sale = sale_record(Uuid::new_v4(), at(0));
        store.insert_sale(&sale).await.unwrap();
        store
            .insert_product(sale.id, &new_product("A", 1), 0)
            .await
            .unwrap();
        assert!(matches!(
            store.insert_product(sale.id, &new_product("A", 2), 0).await,
            Err(StoreError::Duplicate)
        ));
        assert!(matches!(
            store.insert_sale(&sale).await,
            Err(StoreError::Duplicate)
        ));
    }

    #[tokio::test]
    async fn transitions_and_ending_closes_products() {
        let store = SqlCatalog::new(memory_pool().await);
        let sale = sale_record(Uuid::new_v4(), at(0));
        store.insert_sale(&sale).await.unwrap();
        store
            .insert_product(sale.id, &new_product("A", 1), 0)
            .await
            .unwrap();
        store
            .insert_product(sale.id, &new_product("B", 1), 0)
            .await
            .unwrap();
        let to_ended = Transition {
            from: SaleStatus::Live,
            to: SaleStatus::Ended,
        };
        let to_live = Transition {
            from: SaleStatus::Scheduled,
            to: SaleStatus::Live,
        };

        assert_eq!(
            store.transition(sale.id, to_ended, at(5)).await.unwrap(),
            None
        );
        assert_eq!(
            store.product(sale.id, "A").await.unwrap().unwrap().status,
            ProductStatus::Scheduled
        );

        let live = store
            .transition(sale.id, to_live, at(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(live.status, SaleStatus::Live);
        assert_eq!(live.started_at, Some(at(5)));
        assert_eq!(live.ended_at, None);
        assert_eq!(
            store.transition(sale.id, to_live, at(6)).await.unwrap(),
            None
        );

        let ended = store
            .transition(sale.id, to_ended, at(9))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ended.status, SaleStatus::Ended);
        assert_eq!(ended.started_at, Some(at(5)));
        assert_eq!(ended.ended_at, Some(at(9)));
        assert_eq!(store.sale(sale.id).await.unwrap(), Some(ended));
        for p in store.products(sale.id).await.unwrap() {
            assert_eq!(p.status, ProductStatus::Closed);
        }
    }

    /// A database written before ids were native BLOBs: the migration turns
    /// its text ids into BLOBs and the stores read its old times as written.
    #[tokio::test]
    async fn a_database_from_before_native_ids_reads_back_after_migrating() {
        let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        let older = std::env::temp_dir().join(format!("lychee-mig-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&older).unwrap();
        for entry in std::fs::read_dir(&source).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.as_str() < "20261207000001" {
                std::fs::copy(&path, older.join(&name)).unwrap();
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::migrate::Migrator::new(older.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        std::fs::remove_dir_all(&older).unwrap();

        let sale = Uuid::new_v4();
        let order = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO sales (id, title, host_id, status, checkout, reservation_ttl_secs, \
               created_at, started_at) \
             VALUES ($1, 'Old', 'host-1', 'live', 'instant', 300, \
               '2026-11-30T10:00:00.123456Z', '2026-11-30T10:05:00.000000Z')",
        )
        .bind(sale.hyphenated())
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO products (sale_id, sku, position, name, price_cents, currency, stock, \
               sold, per_user_limit, ships_by, status) \
             VALUES ($1, 'A', 1, 'Box', 1299, 'CNY', 10, 1, 5, '2026-12-24', 'on_sale')",
        )
        .bind(sale.hyphenated())
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO orders (id, sale_id, sku, user_id, qty, unit_price_cents, total_cents, \
               currency, idempotency_key, created_at, completed_at) \
             VALUES ($1, $2, 'A', 'mei', 1, 1299, 1299, 'CNY', 'k1', \
               '2026-11-30T10:06:00.000001Z', '2026-11-30T10:06:00.000001Z')",
        )
        .bind(order.hyphenated())
        .bind(sale.hyphenated())
        .execute(&pool)
        .await
        .unwrap();

        crate::migrations::SQLITE.run(&pool).await.unwrap();
        let store = SqlCatalog::new(pool.clone());
        let read = store.sale(sale).await.unwrap().expect("the old sale");
        assert_eq!(
            (read.created_at, read.started_at),
            (
                Utc.timestamp_opt(1_796_032_800, 123_456_000).unwrap(),
                Some(Utc.timestamp_opt(1_796_033_100, 0).unwrap())
            )
        );
        let products = store.products(sale).await.unwrap();
        assert_eq!(
            products
                .iter()
                .map(|p| (p.sku.as_str(), p.sold, p.ships_by))
                .collect::<Vec<_>>(),
            [("A", 1, NaiveDate::from_ymd_opt(2026, 12, 24))]
        );
        let orders = crate::orders::sql::SqlOrders::new(pool);
        let o = crate::orders::OrderStore::order(&orders, order)
            .await
            .unwrap()
            .expect("the old order");
        assert_eq!((o.id, o.sale_id, o.user_id.as_str()), (order, sale, "mei"));
        // New rows beside the old ones: the same sale takes a second product.
        store
            .insert_product(sale, &new_product("B", 3), 0)
            .await
            .unwrap();
        assert_eq!(store.products(sale).await.unwrap().len(), 2);
    }
}
