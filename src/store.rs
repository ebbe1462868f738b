//! The SQL stores' one error, in the store's terms (unavailable, conflict,
//! refused, ...), not the driver's: callers decide on the kind, and the
//! driver's words stay in the text for the log.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("unexpected value in the database: {0}")]
    Corrupt(String),
    #[error("duplicate")]
    Duplicate,
    /// A deadlock or serialization failure: the transaction was rolled back
    /// and may simply be tried again.
    #[error("transaction conflict: {0}")]
    Conflict(String),
    /// The database refused a value (SQLSTATE class 22 or 23 other than a
    /// duplicate: a NUL in text, an out-of-range date, a failed check).
    #[error("value refused by the database: {0}")]
    Refused(String),
}

impl StoreError {
    /// The contract's code of this error (`http::error` answers with it,
    /// metrics count it).
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) | StoreError::Conflict(_) => "unavailable",
            StoreError::Duplicate => "invalid_state",
            StoreError::Refused(_) => "bad_request",
            StoreError::Database(_) | StoreError::Corrupt(_) => "internal",
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate,
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some("40001" | "40P01") => StoreError::Conflict(e.to_string()),
                Some(c) if c.starts_with("22") || c.starts_with("23") => {
                    StoreError::Refused(e.to_string())
                }
                _ => StoreError::Database(e.to_string()),
            },
            _ => StoreError::Database(e.to_string()),
        }
    }
}
