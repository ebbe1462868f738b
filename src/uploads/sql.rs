//! Uploads in SQL, once for PostgreSQL (a `bytea` column) and SQLite (a
//! `BLOB`). Storing is each dialect's own (`UploadSql`, in `sql/`): the
//! quota check and the insert must not interleave with another upload of
//! the same owner, and the two databases get there differently.

mod postgres;
mod sqlite;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Encode, Executor, Pool, Row, Type};
use uuid::Uuid;

use super::{Attach, ImageKind, Put, Quota, Upload, UploadMeta, UploadStore};
use crate::sql::{RowsAffected, Sql, Value};
use crate::store::StoreError;

/// Storing an upload within its owner's quota, atomically.
#[async_trait]
pub(crate) trait UploadSql: Sql {
    async fn put(
        pool: &Pool<Self>,
        meta: &UploadMeta,
        data: &[u8],
        quota: Quota,
    ) -> Result<Put, StoreError>;
}

pub struct SqlUploads<DB: Sql> {
    pool: Pool<DB>,
}

impl<DB: Sql> SqlUploads<DB> {
    pub fn new(pool: Pool<DB>) -> Self {
        SqlUploads { pool }
    }
}

/// Everything but `data`, which a metadata read must not load (or detoast).
const META_COLUMNS: &str = "id, owner, content_type, bytes, width, height, created_at, \
     claim_id, sale_id";

fn meta_from_row<DB>(row: &DB::Row) -> Result<UploadMeta, StoreError>
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
    let u32_col = |col: &str| -> Result<u32, StoreError> {
        let v: i32 = row.try_get(col)?;
        u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("upload {col} {v}")))
    };
    Ok(UploadMeta {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        content_type: ImageKind::parse(row.try_get("content_type")?)?,
        bytes: u32_col("bytes")?,
        width: u32_col("width")?,
        height: u32_col("height")?,
        created_at: row.try_get("created_at")?,
        claim_id: row.try_get("claim_id")?,
        sale_id: row.try_get("sale_id")?,
    })
}

/// The ids as a JSON array of hex, for `Sql::in_json_ids`: one statement
/// whatever their number.
fn id_list(ids: &[Uuid]) -> String {
    let quoted: Vec<String> = ids
        .iter()
        .map(|id| format!("\"{}\"", id.simple()))
        .collect();
    format!("[{}]", quoted.join(","))
}

#[async_trait]
impl<DB> UploadStore for SqlUploads<DB>
where
    DB: UploadSql,
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
    Vec<u8>: Value<DB>,
{
    async fn put(&self, meta: &UploadMeta, data: &[u8], quota: Quota) -> Result<Put, StoreError> {
        DB::put(&self.pool, meta, data, quota).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Upload>, StoreError> {
        let sql = format!("SELECT {META_COLUMNS}, data FROM uploads WHERE id = $1");
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let data: Vec<u8> = row.try_get("data")?;
        Ok(Some(Upload {
            meta: meta_from_row::<DB>(&row)?,
            data: Bytes::from(data),
        }))
    }

    async fn meta(&self, id: Uuid) -> Result<Option<UploadMeta>, StoreError> {
        let sql = format!("SELECT {META_COLUMNS} FROM uploads WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(meta_from_row::<DB>)
            .transpose()
    }

    async fn attach(
        &self,
        owner: &str,
        ids: &[Uuid],
        claim_id: Uuid,
        sale_id: Uuid,
    ) -> Result<Attach, StoreError> {
        let list = id_list(ids);
        // A write first: in PostgreSQL a concurrent attach of the same row
        // waits for this one, then re-reads the row and no longer matches
        // `claim_id IS NULL` (one claim gets it, the other sees fewer rows
        // and rolls back whole); a SQLite transaction that read before
        // writing could fail to upgrade its lock.
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE uploads SET claim_id = $3, sale_id = $4 \
             WHERE {} AND owner = $2 \
               AND (claim_id IS NULL OR (claim_id = $3 AND sale_id = $4))",
            DB::in_json_ids("id", "$1")
        );
        let attached = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&list)
            .bind(owner)
            .bind(claim_id)
            .bind(sale_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if attached == ids.len() as u64 {
            tx.commit().await?;
            return Ok(Attach::Attached);
        }
        tx.rollback().await?;
        // Only which refusal to give: a race here changes the words, not
        // what was stored.
        let sql = format!(
            "SELECT count(*) AS n FROM uploads WHERE {} AND owner = $2",
            DB::in_json_ids("id", "$1")
        );
        let mine: i64 = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&list)
            .bind(owner)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(if mine == ids.len() as i64 {
            Attach::Taken
        } else {
            Attach::Unknown
        })
    }
}
