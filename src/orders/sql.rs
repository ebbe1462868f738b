//! Completed orders in SQL, committed in batches (group commit), once for
//! PostgreSQL and SQLite. The batch statements are the dialects' own
//! (`OrderSql`, in `sql/postgres.rs` and `sql/sqlite.rs`); the rest is shared.

mod postgres;
mod sqlite;

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Encode, Executor, Pool, Row, Transaction, Type};
use uuid::Uuid;

use super::{
    commit_batch, payment_from_row, sold_increments, Commit, CompletedOrder, GuardedInsert, Order,
    OrderStatus, OrderStore, SoldIncrements,
};
use crate::fulfilment::address::Address;
use crate::fulfilment::Fulfilment;
use crate::sql::{Sql, Value};
use crate::store::StoreError;

/// What a batch of orders needs that the dialects say differently:
/// PostgreSQL binds arrays and writes a batch in a few statements; SQLite
/// binds none and goes row by row, under its one write lock.
#[async_trait]
pub(crate) trait OrderSql: Sql {
    /// Inserts the orders not yet present; returns the ids inserted.
    async fn insert_new(
        tx: &mut Transaction<'_, Self>,
        batch: &[&CompletedOrder],
    ) -> Result<HashSet<Uuid>, StoreError>;
    /// Raises `sold` once per SKU; `false` if any guard `sold + n <= stock`
    /// (or the epoch) failed.
    async fn raise_sold(
        tx: &mut Transaction<'_, Self>,
        per_sku: &SoldIncrements<'_>,
    ) -> Result<bool, StoreError>;
    /// Which of these ids are stored.
    async fn existing(pool: &Pool<Self>, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError>;
    /// Whether an unshipped order is late at `$2`: past its product's
    /// `ships_by` day, which ends at midnight in China where the boxes
    /// leave, or `$3` hours after completion when there is none.
    const LATE: &'static str;
}

pub struct SqlOrders<DB: Sql> {
    pool: Pool<DB>,
}

impl<DB: Sql> SqlOrders<DB> {
    pub fn new(pool: Pool<DB>) -> Self {
        SqlOrders { pool }
    }
}

const ORDER_COLUMNS: &str = "id, sale_id, sku, user_id, qty, unit_price_cents, total_cents, \
     currency, created_at, expires_at, completed_at, payment_ref, payment_method, payment_id, \
     paid_cents, refunded_cents, payment_note, ship_to, fulfilment, courier, waybill, shipped_at, \
     delivered_at";

fn order_from_row<DB>(row: &DB::Row) -> Result<Order, StoreError>
where
    DB: Sql,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    for<'r> &'r str: Decode<'r, DB> + Type<DB>,
    Uuid: Value<DB>,
    Option<Uuid>: Value<DB>,
    DateTime<Utc>: Value<DB>,
    Option<DateTime<Utc>>: Value<DB>,
    i64: Value<DB>,
    Option<i64>: Value<DB>,
    String: Value<DB>,
    Option<String>: Value<DB>,
{
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

#[async_trait]
impl<DB> GuardedInsert for SqlOrders<DB>
where
    DB: OrderSql,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    Uuid: Value<DB>,
    Option<Uuid>: Value<DB>,
    DateTime<Utc>: Value<DB>,
    Option<DateTime<Utc>>: Value<DB>,
    i64: Value<DB>,
    Option<i64>: Value<DB>,
    i32: Value<DB>,
    bool: Value<DB>,
    String: Value<DB>,
    Option<String>: Value<DB>,
{
    async fn insert_guarded(
        &self,
        batch: &[&CompletedOrder],
    ) -> Result<Option<HashSet<Uuid>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = DB::insert_new(&mut tx, batch).await?;
        if !DB::raise_sold(&mut tx, &sold_increments(batch, &inserted)).await? {
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
            .map(order_from_row::<DB>)
            .transpose()
    }
}

#[async_trait]
impl<DB> OrderStore for SqlOrders<DB>
where
    DB: OrderSql,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    Uuid: Value<DB>,
    Option<Uuid>: Value<DB>,
    DateTime<Utc>: Value<DB>,
    Option<DateTime<Utc>>: Value<DB>,
    i64: Value<DB>,
    Option<i64>: Value<DB>,
    i32: Value<DB>,
    bool: Value<DB>,
    String: Value<DB>,
    Option<String>: Value<DB>,
{
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
            .map(order_from_row::<DB>)
            .transpose()
    }

    async fn existing(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        DB::existing(&self.pool, ids).await
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
            .map(order_from_row::<DB>)
            .collect()
    }

    async fn holdings(&self, sale_id: Uuid) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT sku, user_id, CAST(SUM(qty) AS BIGINT) AS qty FROM orders \
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
             AND ($2 IS NULL OR (created_at, id) > ($2, $3)) \
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
            .map(order_from_row::<DB>)
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
        let from = crate::sql::json_texts(from.iter().map(|f| f.as_str()));
        let sql = format!(
            "UPDATE orders SET fulfilment = $3, \
               courier = COALESCE($4, courier), waybill = COALESCE($5, waybill), \
               shipped_at = CASE WHEN $3 = 'shipped' THEN $6 ELSE shipped_at END, \
               delivered_at = CASE WHEN $3 = 'delivered' THEN $6 ELSE delivered_at END \
             WHERE id = $1 AND {} RETURNING {ORDER_COLUMNS}",
            DB::in_json_texts("fulfilment", "$2")
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
            .map(order_from_row::<DB>)
            .transpose()
    }

    async fn after_sales(
        &self,
        sale_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<super::AfterSales, StoreError> {
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(o.refunded_cents), 0) AS BIGINT) AS refunds, \
               CAST(COALESCE(SUM(CASE WHEN o.fulfilment IN ('unfulfilled', 'packed') AND {} \
                 THEN 1 ELSE 0 END), 0) AS BIGINT) AS late, \
               CAST(COALESCE(SUM(CASE WHEN o.total_cents = 0 THEN o.qty * p.price_cents \
                 ELSE 0 END), 0) AS BIGINT) AS free \
             FROM orders o JOIN products p ON p.sale_id = o.sale_id AND p.sku = o.sku \
             WHERE o.sale_id = $1",
            DB::LATE
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(sale_id)
            .bind(now)
            .bind(super::LATE_AFTER_HOURS as i32)
            .fetch_one(&self.pool)
            .await?;
        Ok(super::AfterSales {
            refunds_cents: row.try_get("refunds")?,
            late: row.try_get("late")?,
            free_cents: row.try_get("free")?,
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
             AND ($2 IS NULL OR (created_at, id) > ($2, $3)) \
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
            .map(order_from_row::<DB>)
            .collect()
    }

    async fn set_ship_to(&self, order_id: Uuid, ship_to: &Address) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE orders SET ship_to = $2 WHERE id = $1 AND fulfilment = 'unfulfilled' \
             RETURNING id",
        )
        .bind(order_id)
        .bind(super::ship_to_text(Some(ship_to))?)
        .fetch_optional(&self.pool)
        .await?;
        Ok(updated.is_some())
    }

    async fn gmv(&self, sale_id: Uuid) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(total_cents), 0) AS BIGINT) AS gmv FROM orders \
             WHERE sale_id = $1",
        )
        .bind(sale_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("gmv")?)
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Sqlite;

    use super::*;
    use crate::catalog::sql::tests::{at, memory_pool, new_product, sale_record};
    use crate::catalog::sql::SqlCatalog;
    use crate::catalog::CatalogStore;

    struct Fixture {
        catalog: SqlCatalog<Sqlite>,
        orders: SqlOrders<Sqlite>,
        sale_id: Uuid,
    }

    /// A sale with product "A" (stock 3) and "B" (stock 100).
    async fn fixture() -> Fixture {
        let pool = memory_pool().await;
        let catalog = SqlCatalog::new(pool.clone());
        let sale_id = Uuid::new_v4();
        catalog
            .insert_sale(&sale_record(sale_id, at(0)))
            .await
            .unwrap();
        catalog
            .insert_product(sale_id, &new_product("A", 3), 0)
            .await
            .unwrap();
        catalog
            .insert_product(sale_id, &new_product("B", 100), 0)
            .await
            .unwrap();
        Fixture {
            catalog,
            orders: SqlOrders::new(pool),
            sale_id,
        }
    }

    fn completed(
        sale_id: Uuid,
        sku: &str,
        user: &str,
        key: &str,
        qty: i64,
        secs: i64,
    ) -> CompletedOrder {
        CompletedOrder {
            order: Order {
                id: Uuid::now_v7(),
                sale_id,
                sku: sku.into(),
                qty,
                unit_price_cents: 1299,
                total_cents: 1299 * qty,
                currency: "EUR".into(),
                user_id: user.into(),
                status: OrderStatus::Completed,
                created_at: at(secs),
                expires_at: Some(at(secs + 300)),
                completed_at: Some(at(secs + 1)),
                payment_ref: Some(format!("pay-{key}")),
                payment: None,
                ship_to: None,
                fulfilment: Default::default(),
                shipment: None,
                claims: Vec::new(),
            },
            key: key.into(),
            epoch: 0,
        }
    }

    async fn sold(f: &Fixture, sku: &str) -> i64 {
        f.catalog
            .product(f.sale_id, sku)
            .await
            .unwrap()
            .unwrap()
            .sold
    }

    #[tokio::test]
    async fn batch_commits_and_raises_sold() {
        let f = fixture().await;
        let batch = vec![
            completed(f.sale_id, "A", "u1", "k1", 1, 1),
            completed(f.sale_id, "B", "u1", "k2", 4, 2),
            completed(f.sale_id, "B", "u2", "k1", 5, 3),
        ];
        let out = f.orders.commit(&batch).await.unwrap();
        assert_eq!(out, vec![Commit::Committed; 3]);
        assert_eq!(sold(&f, "A").await, 1);
        assert_eq!(sold(&f, "B").await, 9);
        assert_eq!(
            f.orders.order(batch[1].order.id).await.unwrap(),
            Some(batch[1].order.clone())
        );
        assert_eq!(f.orders.order(Uuid::new_v4()).await.unwrap(), None);
        assert!(f.orders.commit(&[]).await.unwrap().is_empty());

        let stranger = Uuid::new_v4();
        let mut found = f
            .orders
            .existing(&[batch[0].order.id, stranger, batch[2].order.id])
            .await
            .unwrap();
        found.sort();
        let mut expected = vec![batch[0].order.id, batch[2].order.id];
        expected.sort();
        assert_eq!(found, expected);
        assert!(f.orders.existing(&[]).await.unwrap().is_empty());

        let mine = f.orders.user_orders("u1", 10).await.unwrap();
        assert_eq!(
            mine.iter().map(|o| o.id).collect::<Vec<_>>(),
            [batch[1].order.id, batch[0].order.id]
        );
        assert_eq!(f.orders.user_orders("u1", 1).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn guard_refuses_only_what_does_not_fit() {
        let f = fixture().await;
        let batch = vec![
            completed(f.sale_id, "A", "u1", "k", 2, 1),
            completed(f.sale_id, "A", "u2", "k", 2, 2),
            completed(f.sale_id, "A", "u3", "k", 1, 3),
        ];
        let out = f.orders.commit(&batch).await.unwrap();
        assert_eq!(
            out,
            vec![Commit::Committed, Commit::SoldOut, Commit::Committed]
        );
        assert_eq!(sold(&f, "A").await, 3);
        assert_eq!(f.orders.order(batch[1].order.id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn same_id_or_same_key_is_existing() {
        let f = fixture().await;
        let first = completed(f.sale_id, "B", "u1", "k1", 2, 1);
        assert_eq!(
            f.orders.commit(std::slice::from_ref(&first)).await.unwrap(),
            [Commit::Committed]
        );

        let again = f.orders.commit(std::slice::from_ref(&first)).await.unwrap();
        assert_eq!(again, [Commit::Existing(Box::new(first.order.clone()))]);

        let mut same_key = completed(f.sale_id, "B", "u1", "k1", 3, 5);
        same_key.order.id = Uuid::now_v7();
        let fresh = completed(f.sale_id, "B", "u2", "k1", 1, 6);
        let out = f.orders.commit(&[same_key, fresh]).await.unwrap();
        assert_eq!(
            out,
            [
                Commit::Existing(Box::new(first.order.clone())),
                Commit::Committed
            ]
        );
        assert_eq!(sold(&f, "B").await, 3);
    }

    #[tokio::test]
    async fn existing_order_beside_a_sold_out_one() {
        let f = fixture().await;
        let first = completed(f.sale_id, "A", "u1", "k1", 1, 1);
        f.orders.commit(std::slice::from_ref(&first)).await.unwrap();
        let too_many = completed(f.sale_id, "A", "u2", "k1", 3, 2);
        let out = f.orders.commit(&[first.clone(), too_many]).await.unwrap();
        assert_eq!(
            out,
            [Commit::Existing(Box::new(first.order)), Commit::SoldOut]
        );
        assert_eq!(sold(&f, "A").await, 1);
    }

    #[tokio::test]
    async fn completed_pages_gmv_and_holdings() {
        let f = fixture().await;
        let mut batch = vec![
            completed(f.sale_id, "B", "u1", "k1", 1, 30),
            completed(f.sale_id, "B", "u2", "k1", 2, 10),
            completed(f.sale_id, "A", "u1", "k2", 1, 20),
            completed(f.sale_id, "B", "u1", "k3", 3, 20),
        ];
        f.orders.commit(&batch).await.unwrap();
        batch.sort_by_key(|c| (c.order.created_at, c.order.id));
        let expected: Vec<Uuid> = batch.iter().map(|c| c.order.id).collect();

        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = f.orders.completed_page(f.sale_id, after, 2).await.unwrap();
            let Some(last) = page.last() else { break };
            after = Some((last.created_at, last.id));
            seen.extend(page.iter().map(|o| o.id));
        }
        assert_eq!(seen, expected);
        assert!(f
            .orders
            .completed_page(Uuid::new_v4(), None, 10)
            .await
            .unwrap()
            .is_empty());

        assert_eq!(f.orders.gmv(f.sale_id).await.unwrap(), 1299 * 7);
        assert_eq!(f.orders.gmv(Uuid::new_v4()).await.unwrap(), 0);

        let mut holdings = f.orders.holdings(f.sale_id).await.unwrap();
        holdings.sort();
        assert_eq!(
            holdings,
            [
                ("A".to_string(), "u1".to_string(), 1),
                ("B".to_string(), "u1".to_string(), 4),
                ("B".to_string(), "u2".to_string(), 2),
            ]
        );
    }
}
