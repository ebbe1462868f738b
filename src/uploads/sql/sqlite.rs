//! Storing an upload in SQLite: one statement, which takes the write lock
//! before it counts.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Pool, Row, Sqlite};

use super::UploadSql;
use crate::store::StoreError;
use crate::uploads::{Put, Quota, UploadMeta};

#[async_trait]
impl UploadSql for Sqlite {
    async fn put(
        pool: &Pool<Self>,
        meta: &UploadMeta,
        data: &[u8],
        quota: Quota,
    ) -> Result<Put, StoreError> {
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
        .execute(pool)
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
        .fetch_one(pool)
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
}
