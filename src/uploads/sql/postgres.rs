//! Storing an upload in PostgreSQL: the owner's uploads take turns on an
//! advisory lock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Pool, Postgres, Row};

use super::UploadSql;
use crate::store::StoreError;
use crate::uploads::{Put, Quota, UploadMeta};

/// The first key of the two-key advisory locks that serialize one owner's
/// uploads ("upld"), apart from any other lock of the database.
const OWNER_LOCK_SPACE: i32 = 0x7570_6c64;

fn int(v: u32) -> Result<i32, StoreError> {
    i32::try_from(v).map_err(|_| StoreError::Corrupt(format!("upload field {v} out of range")))
}

#[async_trait]
impl UploadSql for Postgres {
    async fn put(
        pool: &Pool<Self>,
        meta: &UploadMeta,
        data: &[u8],
        quota: Quota,
    ) -> Result<Put, StoreError> {
        let mut tx = pool.begin().await?;
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
}
