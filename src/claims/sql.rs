//! Claims in SQL, once for PostgreSQL and SQLite (see `crate::sql`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Encode, Executor, Pool, Row, Type};
use uuid::Uuid;

use super::{
    kind_text, parse_kind, parse_status, status_text, Claim, ClaimStatus, ClaimStore, Resolution,
};
use crate::sql::{RowsAffected, Sql, Value};
use crate::store::StoreError;

pub struct SqlClaims<DB: Sql> {
    pool: Pool<DB>,
}

impl<DB: Sql> SqlClaims<DB> {
    pub fn new(pool: Pool<DB>) -> Self {
        SqlClaims { pool }
    }
}

const COLUMNS: &str = "id, order_id, sale_id, user_id, kind, qty_affected, description, photos, \
     status, resolution, created_at, resolved_at";

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("claim: {e}"))
}

fn claim_from_row<DB>(row: &DB::Row) -> Result<Claim, StoreError>
where
    DB: Sql,
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
    let photos: String = row.try_get("photos")?;
    let resolution: Option<String> = row.try_get("resolution")?;
    Ok(Claim {
        id: row.try_get("id")?,
        order_id: row.try_get("order_id")?,
        sale_id: row.try_get("sale_id")?,
        user_id: row.try_get("user_id")?,
        kind: parse_kind(row.try_get("kind")?)?,
        qty_affected: row.try_get("qty_affected")?,
        description: row.try_get("description")?,
        photos: serde_json::from_str(&photos).map_err(json_err)?,
        status: parse_status(row.try_get("status")?)?,
        resolution: resolution
            .map(|r| serde_json::from_str(&r).map_err(json_err))
            .transpose()?,
        created_at: row.try_get("created_at")?,
        resolved_at: row.try_get("resolved_at")?,
    })
}

#[async_trait]
impl<DB> ClaimStore for SqlClaims<DB>
where
    DB: Sql,
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
    async fn insert_open(&self, c: &Claim) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "INSERT INTO claims (id, order_id, sale_id, user_id, kind, qty_affected, description, \
               photos, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open', $9) \
             ON CONFLICT (order_id) WHERE status = 'open' DO NOTHING",
        )
        .bind(c.id)
        .bind(c.order_id)
        .bind(c.sale_id)
        .bind(&c.user_id)
        .bind(kind_text(c.kind))
        .bind(c.qty_affected)
        .bind(&c.description)
        .bind(serde_json::to_string(&c.photos).map_err(json_err)?)
        .bind(c.created_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn claim(&self, id: Uuid) -> Result<Option<Claim>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM claims WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(claim_from_row::<DB>)
            .transpose()
    }

    async fn remove(&self, id: Uuid) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM claims WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn of_order(&self, order_id: Uuid) -> Result<Vec<Claim>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM claims WHERE order_id = $1 ORDER BY created_at, id");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(order_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(claim_from_row::<DB>)
            .collect()
    }

    async fn of_sale(&self, sale_id: Uuid, limit: i64) -> Result<Vec<Claim>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM claims WHERE sale_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(sale_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(claim_from_row::<DB>)
            .collect()
    }

    async fn resolve(
        &self,
        id: Uuid,
        status: ClaimStatus,
        resolution: &Resolution,
        at: DateTime<Utc>,
    ) -> Result<Option<Claim>, StoreError> {
        let sql = format!(
            "UPDATE claims SET status = $2, resolution = $3, resolved_at = $4 \
             WHERE id = $1 AND status = 'open' RETURNING {COLUMNS}"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(status_text(status))
            .bind(serde_json::to_string(resolution).map_err(json_err)?)
            .bind(at)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(claim_from_row::<DB>)
            .transpose()
    }

    async fn open_count(&self, sale_id: Uuid) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM claims WHERE sale_id = $1 AND status = 'open'",
            )
            .bind(sale_id)
            .fetch_one(&self.pool)
            .await?,
        )
    }
}
