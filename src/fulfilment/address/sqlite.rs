//! Address books in SQLite (the embedded mode): the PostgreSQL statements,
//! with text uuids and times. Every change writes the user's row in
//! `address_books` first, so it holds the write lock before it reads (see
//! the migration).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::{Address, AddressStore, Inserted, MAX_ADDRESSES};
use crate::store::StoreError;

pub struct SqliteAddresses {
    pool: SqlitePool,
}

impl SqliteAddresses {
    pub fn new(pool: SqlitePool) -> Self {
        SqliteAddresses { pool }
    }
}

const COLUMNS: &str = "id, name, phone, province, city, district, line, postcode, is_default";

fn from_row(row: &SqliteRow) -> Result<Address, StoreError> {
    Ok(Address {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        phone: row.try_get("phone")?,
        province: row.try_get("province")?,
        city: row.try_get("city")?,
        district: row.try_get("district")?,
        line: row.try_get("line")?,
        postcode: row.try_get("postcode")?,
        is_default: row.try_get("is_default")?,
    })
}

/// Takes the write lock for the rest of `tx`, creating the book if needed.
async fn lock_book(
    tx: &mut Transaction<'_, Sqlite>,
    user_id: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO address_books (user_id, changed_at) VALUES ($1, $2) \
         ON CONFLICT (user_id) DO UPDATE SET changed_at = excluded.changed_at",
    )
    .bind(user_id)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl AddressStore for SqliteAddresses {
    async fn address(&self, user_id: &str, id: Uuid) -> Result<Option<Address>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM addresses WHERE id = $1 AND user_id = $2");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(from_row)
            .transpose()
    }

    async fn default_of(&self, user_id: &str) -> Result<Option<Address>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM addresses WHERE user_id = $1 AND is_default");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(from_row)
            .transpose()
    }

    async fn insert(
        &self,
        user_id: &str,
        address: &Address,
        at: DateTime<Utc>,
    ) -> Result<Inserted, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_book(&mut tx, user_id, at).await?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM addresses WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        if count >= MAX_ADDRESSES {
            tx.rollback().await?;
            return Ok(Inserted::Full);
        }
        let is_default = address.is_default || count == 0;
        if is_default {
            sqlx::query("UPDATE addresses SET is_default = 0 WHERE user_id = $1 AND is_default")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO addresses (id, user_id, name, phone, province, city, district, line, \
               postcode, is_default, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(address.id)
        .bind(user_id)
        .bind(&address.name)
        .bind(&address.phone)
        .bind(&address.province)
        .bind(&address.city)
        .bind(address.district.as_deref())
        .bind(&address.line)
        .bind(address.postcode.as_deref())
        .bind(is_default)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Inserted::Added(Address {
            is_default,
            ..address.clone()
        }))
    }

    async fn list(&self, user_id: &str) -> Result<Vec<Address>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM addresses WHERE user_id = $1 \
             ORDER BY is_default DESC, seq DESC"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(from_row)
            .collect()
    }

    async fn delete(&self, user_id: &str, id: Uuid, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // A write first, for the lock; only a book that exists is touched.
        let book = sqlx::query("UPDATE address_books SET changed_at = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if book == 0 {
            return Ok(false);
        }
        let was_default: Option<bool> = sqlx::query_scalar(
            "DELETE FROM addresses WHERE id = $1 AND user_id = $2 RETURNING is_default",
        )
        .bind(id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        match was_default {
            None => {
                tx.rollback().await?;
                return Ok(false);
            }
            Some(true) => {
                sqlx::query(
                    "UPDATE addresses SET is_default = 1 WHERE id = \
                       (SELECT id FROM addresses WHERE user_id = $1 ORDER BY seq DESC LIMIT 1)",
                )
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            }
            Some(false) => {}
        }
        tx.commit().await?;
        Ok(true)
    }
}
