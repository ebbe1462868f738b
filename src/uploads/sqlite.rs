//! Uploads in SQLite (the embedded mode), their bytes in a `BLOB`: the
//! PostgreSQL statements with text uuids and times, and no locks of our own
//! (one process, and SQLite runs one writing statement at a time).

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use super::{Attach, ImageKind, Put, Quota, Upload, UploadMeta, UploadStore};
use crate::store::StoreError;

pub struct SqliteUploads {
    pool: SqlitePool,
}

impl SqliteUploads {
    pub fn new(pool: SqlitePool) -> Self {
        SqliteUploads { pool }
    }
}

/// Everything but `data`, which a metadata read need not load.
const META_COLUMNS: &str = "id, owner, content_type, bytes, width, height, created_at, \
     claim_id, sale_id";

fn meta_from_row(row: &SqliteRow) -> Result<UploadMeta, StoreError> {
    let u32_col = |col: &str| -> Result<u32, StoreError> {
        let v: i64 = row.try_get(col)?;
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

/// The ids as a JSON array of hex, for `IN (SELECT unhex(value) FROM json_each(?))`: one
/// statement whatever their number.
fn id_list(ids: &[Uuid]) -> String {
    let quoted: Vec<String> = ids
        .iter()
        .map(|id| format!("\"{}\"", id.simple()))
        .collect();
    format!("[{}]", quoted.join(","))
}

#[async_trait]
impl UploadStore for SqliteUploads {
    async fn put(&self, meta: &UploadMeta, data: &[u8], quota: Quota) -> Result<Put, StoreError> {
        // One statement: SQLite takes the write lock before it counts, so
        // no other upload can slip in between the count and the insert.
        let stored = sqlx::query(
            "INSERT INTO uploads (id, owner, content_type, bytes, width, height, data, created_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
             WHERE (SELECT count(*) FROM uploads WHERE owner = $2 AND claim_id IS NULL) < $9 \
               AND (SELECT count(*) FROM uploads WHERE owner = $2 AND created_at > $10) < $11",
        )
        .bind(meta.id)
        .bind(&meta.owner)
        .bind(meta.content_type.mime())
        .bind(i64::from(meta.bytes))
        .bind(i64::from(meta.width))
        .bind(i64::from(meta.height))
        .bind(data)
        .bind(meta.created_at)
        .bind(i64::from(quota.max_unattached))
        .bind(quota.since)
        .bind(i64::from(quota.max_recent))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if stored == 1 {
            return Ok(Put::Stored);
        }
        // Refused: which bound, and when the window frees a place.
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM uploads WHERE owner = $1 AND claim_id IS NULL) \
                      AS unattached, \
                    (SELECT min(created_at) FROM uploads WHERE owner = $1 AND created_at > $2) \
                      AS oldest",
        )
        .bind(&meta.owner)
        .bind(quota.since)
        .fetch_one(&self.pool)
        .await?;
        let unattached: i64 = row.try_get("unattached")?;
        if unattached >= i64::from(quota.max_unattached) {
            return Ok(Put::TooManyUnattached);
        }
        let oldest: Option<DateTime<Utc>> = row.try_get("oldest")?;
        Ok(Put::TooManyRecent {
            oldest: oldest.unwrap_or(meta.created_at),
        })
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
            meta: meta_from_row(&row)?,
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
            .map(meta_from_row)
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
        // Writes first: a SQLite transaction that read before writing can
        // fail to upgrade its lock.
        let mut tx = self.pool.begin().await?;
        let attached = sqlx::query(
            "UPDATE uploads SET claim_id = $3, sale_id = $4 \
             WHERE id IN (SELECT unhex(value) FROM json_each($1)) AND owner = $2 \
               AND (claim_id IS NULL OR (claim_id = $3 AND sale_id = $4))",
        )
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
        let mine: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM uploads \
             WHERE id IN (SELECT unhex(value) FROM json_each($1)) AND owner = $2",
        )
        .bind(&list)
        .bind(owner)
        .fetch_one(&self.pool)
        .await?;
        Ok(if mine == ids.len() as i64 {
            Attach::Taken
        } else {
            Attach::Unknown
        })
    }
}
