//! Address books in SQL, once for PostgreSQL and SQLite (see `crate::sql`).
//! Every change first writes the user's row in `address_books` (see the
//! migrations): in PostgreSQL changes to one book queue on that row lock, on
//! any number of nodes, and read committed state after it; in SQLite the
//! write takes the database's write lock before anything is read.
//! `address_books` (see the migration): changes to one book queue there,
//! on any number of nodes, and read committed state after it.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Encode, Executor, Pool, Row, Transaction, Type};
use uuid::Uuid;

use super::{Address, AddressStore, Inserted, MAX_ADDRESSES};
use crate::sql::{RowsAffected, Sql, Value};
use crate::store::StoreError;

pub struct SqlAddresses<DB: Sql> {
    pool: Pool<DB>,
}

impl<DB: Sql> SqlAddresses<DB> {
    pub fn new(pool: Pool<DB>) -> Self {
        SqlAddresses { pool }
    }
}

/// Rows as records, and the book's lock.
impl<DB> SqlAddresses<DB>
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
    fn address_from_row(row: &DB::Row) -> Result<Address, StoreError> {
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

    /// Takes the book's lock for the rest of `tx` (its row in PostgreSQL, the
    /// write lock in SQLite), creating the book if needed.
    async fn lock_book(
        tx: &mut Transaction<'_, DB>,
        user_id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO address_books (user_id, changed_at) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET changed_at = EXCLUDED.changed_at",
        )
        .bind(user_id)
        .bind(at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

const COLUMNS: &str = "id, name, phone, province, city, district, line, postcode, is_default";

#[async_trait]
impl<DB> AddressStore for SqlAddresses<DB>
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
    async fn address(&self, user_id: &str, id: Uuid) -> Result<Option<Address>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM addresses WHERE id = $1 AND user_id = $2");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(Self::address_from_row)
            .transpose()
    }

    async fn default_of(&self, user_id: &str) -> Result<Option<Address>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM addresses WHERE user_id = $1 AND is_default");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(Self::address_from_row)
            .transpose()
    }

    async fn insert(
        &self,
        user_id: &str,
        address: &Address,
        at: DateTime<Utc>,
    ) -> Result<Inserted, StoreError> {
        let mut tx = self.pool.begin().await?;
        Self::lock_book(&mut tx, user_id, at).await?;
        // Read committed (or SQLite's one writer): this count sees every
        // add that held the lock before us.
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
            sqlx::query(
                "UPDATE addresses SET is_default = false WHERE user_id = $1 AND is_default",
            )
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
            .map(Self::address_from_row)
            .collect()
    }

    async fn books(
        &self,
        user_ids: &[String],
    ) -> Result<HashMap<String, Vec<Address>>, StoreError> {
        let sql = format!(
            "SELECT user_id, {COLUMNS} FROM addresses WHERE {} \
             ORDER BY user_id, is_default DESC, seq DESC",
            DB::in_json_texts("user_id", "$1")
        );
        let list = crate::sql::json_texts(user_ids.iter().map(String::as_str));
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(list)
            .fetch_all(&self.pool)
            .await?;
        let mut books: HashMap<String, Vec<Address>> = HashMap::new();
        for row in &rows {
            let user: String = row.try_get("user_id")?;
            books
                .entry(user)
                .or_default()
                .push(Self::address_from_row(row)?);
        }
        Ok(books)
    }

    async fn delete(&self, user_id: &str, id: Uuid, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Only a book that exists is locked: a stranger's guesses create none.
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
                    "UPDATE addresses SET is_default = true WHERE id = \
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

#[cfg(test)]
mod tests {
    use sqlx::Sqlite;

    use super::*;

    fn address(name: &str) -> Address {
        Address {
            id: Uuid::new_v4(),
            name: name.into(),
            phone: "13800138000".into(),
            province: "440000".into(),
            city: "Maoming".into(),
            district: None,
            line: "1 Orchard Road".into(),
            postcode: None,
            is_default: false,
        }
    }

    /// Several books in one query, whatever the user ids hold (a comma, a
    /// quote): the ids go as one JSON array.
    #[tokio::test]
    async fn books_are_read_together_for_any_user_ids() {
        let store: SqlAddresses<Sqlite> =
            SqlAddresses::new(crate::catalog::sql::tests::memory_pool().await);
        let at = Utc::now();
        let odd = "a,b \"c\"";
        for (user, name) in [(odd, "first"), (odd, "second"), ("li", "only")] {
            store.insert(user, &address(name), at).await.unwrap();
        }
        let books = store
            .books(&[odd.to_owned(), "li".into(), "nobody".into()])
            .await
            .unwrap();
        let names = |u: &str| -> Vec<String> { books[u].iter().map(|a| a.name.clone()).collect() };
        assert_eq!(books.len(), 2, "a user without addresses is absent");
        assert_eq!(names(odd), ["first", "second"], "the default first");
        assert_eq!(names("li"), ["only"]);
    }
}
