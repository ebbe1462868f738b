//! What the shared SQL stores need of a sqlx database, and where PostgreSQL
//! and SQLite say the same thing differently. A store written once against
//! `Sql` runs on both; the few statements the dialects cannot share are a
//! store's own trait with one implementation per dialect (e.g. `OrderSql`).

use sqlx::{Database, Decode, Encode, IntoArguments, Postgres, Sqlite, Type};

pub trait Sql: Database<Arguments: IntoArguments<Self>, QueryResult: RowsAffected> {
    /// The value for `products.position` in an INSERT: PostgreSQL has a
    /// sequence; SQLite has none on a non-key column, so the next position
    /// is computed inside the INSERT, which holds the write lock. `$1` is
    /// the sale.
    const NEXT_POSITION: &'static str;

    /// `column` is one of the strings of the JSON array in `param` (SQLite
    /// binds no arrays, so both take a set as one text: `json_texts`).
    fn in_json_texts(column: &str, param: &str) -> String;

    /// `column` (a UUID) is one of the hex UUIDs of the JSON array in `param`.
    fn in_json_ids(column: &str, param: &str) -> String;

    /// Ends a `SELECT` that picks rows to claim: PostgreSQL locks them and
    /// skips those another node holds; SQLite has one writer, so nothing.
    const SKIP_LOCKED: &'static str;
}

/// A set of strings as the one JSON text `Sql::in_json_texts` reads.
pub fn json_texts<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    serde_json::Value::from(items.into_iter().collect::<Vec<_>>()).to_string()
}

/// What an `execute` changed, for generic code (each driver has it only as
/// an inherent method).
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        sqlx::postgres::PgQueryResult::rows_affected(self)
    }
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        sqlx::sqlite::SqliteQueryResult::rows_affected(self)
    }
}

impl Sql for Postgres {
    const NEXT_POSITION: &'static str = "DEFAULT";
    const SKIP_LOCKED: &'static str = "FOR UPDATE SKIP LOCKED";

    fn in_json_texts(column: &str, param: &str) -> String {
        format!("{column} IN (SELECT jsonb_array_elements_text(CAST({param} AS jsonb)))")
    }

    fn in_json_ids(column: &str, param: &str) -> String {
        format!(
            "{column} IN (SELECT CAST(jsonb_array_elements_text(CAST({param} AS jsonb)) AS uuid))"
        )
    }
}

impl Sql for Sqlite {
    const NEXT_POSITION: &'static str =
        "(SELECT COALESCE(MAX(position), 0) + 1 FROM products WHERE sale_id = $1)";
    const SKIP_LOCKED: &'static str = "";

    fn in_json_texts(column: &str, param: &str) -> String {
        format!("{column} IN (SELECT value FROM json_each({param}))")
    }

    fn in_json_ids(column: &str, param: &str) -> String {
        format!("{column} IN (SELECT unhex(value) FROM json_each({param}))")
    }
}

/// A Rust type a backend binds and reads as it is: the shared stores list
/// the ones they use, `Uuid: Value<DB>`, instead of three traits each.
pub trait Value<DB: Database>: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> {}

impl<DB: Database, T> Value<DB> for T where
    T: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>
{
}
