//! Uploads in PostgreSQL, their bytes in a `bytea` column.

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{Attach, ImageKind, Put, Quota, Upload, UploadMeta, UploadStore};
use crate::store::StoreError;

pub struct PgUploads {
    pool: PgPool,
}

impl PgUploads {
    pub fn new(pool: PgPool) -> Self {
        PgUploads { pool }
    }
}

/// Everything but `data`, which a metadata read must not detoast.
const META_COLUMNS: &str = "id, owner, content_type, bytes, width, height, created_at, \
     claim_id, sale_id";

/// The first key of the two-key advisory locks that serialize one owner's
/// uploads ("upld"), apart from any other lock of the database.
const OWNER_LOCK_SPACE: i32 = 0x7570_6c64;

fn meta_from_row(row: &PgRow) -> Result<UploadMeta, StoreError> {
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

fn int(v: u32) -> Result<i32, StoreError> {
    i32::try_from(v).map_err(|_| StoreError::Corrupt(format!("upload field {v} out of range")))
}

#[async_trait]
impl UploadStore for PgUploads {
    async fn put(&self, meta: &UploadMeta, data: &[u8], quota: Quota) -> Result<Put, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Under READ COMMITTED two uploads of one owner would each count
        // the other's row as absent and both pass: one owner's uploads take
        // turns (on every node), everyone else's go on in parallel.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(OWNER_LOCK_SPACE)
            .bind(&meta.owner)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE claim_id IS NULL) AS unattached, \
                    count(*) FILTER (WHERE created_at > $2) AS recent, \
                    min(created_at) FILTER (WHERE created_at > $2) AS oldest \
             FROM uploads WHERE owner = $1",
        )
        .bind(&meta.owner)
        .bind(quota.since)
        .fetch_one(&mut *tx)
        .await?;
        let unattached: i64 = row.try_get("unattached")?;
        let recent: i64 = row.try_get("recent")?;
        let oldest: Option<DateTime<Utc>> = row.try_get("oldest")?;
        if unattached >= i64::from(quota.max_unattached) {
            return Ok(Put::TooManyUnattached);
        }
        if recent >= i64::from(quota.max_recent) {
            return Ok(Put::TooManyRecent {
                oldest: oldest.unwrap_or(meta.created_at),
            });
        }
        sqlx::query(
            "INSERT INTO uploads (id, owner, content_type, bytes, width, height, data, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(meta.id)
        .bind(&meta.owner)
        .bind(meta.content_type.mime())
        .bind(int(meta.bytes)?)
        .bind(int(meta.width)?)
        .bind(int(meta.height)?)
        .bind(data)
        .bind(meta.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Put::Stored)
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
        let mut tx = self.pool.begin().await?;
        // A concurrent attach of the same row waits for this one, then
        // re-reads the row and no longer matches `claim_id IS NULL`: one
        // claim gets it, the other sees fewer rows and rolls back whole.
        let attached = sqlx::query(
            "UPDATE uploads SET claim_id = $3, sale_id = $4 \
             WHERE id = ANY($1) AND owner = $2 \
               AND (claim_id IS NULL OR (claim_id = $3 AND sale_id = $4))",
        )
        .bind(ids)
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
        let mine: i64 =
            sqlx::query_scalar("SELECT count(*) FROM uploads WHERE id = ANY($1) AND owner = $2")
                .bind(ids)
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
