//! Payments, refunds and the sandbox's books in SQL, once for PostgreSQL and
//! SQLite (see `crate::sql`): SQLite has one writer, so it needs no row locks.

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{ColumnIndex, Decode, Encode, Executor, Pool, Row, Type};
use uuid::Uuid;

use super::store::{
    Charge, ChargeState, Payment, PaymentStatus, PaymentStore, Refund, RefundGuard, RefundInsert,
    RefundStatus, SandboxLedger, TxnRecord,
};
use super::Checkout;
use crate::sql::{RowsAffected, Sql, Value};
use crate::store::StoreError;

pub struct SqlPayments<DB: Sql> {
    pool: Pool<DB>,
}

impl<DB: Sql> SqlPayments<DB> {
    pub fn new(pool: Pool<DB>) -> Self {
        SqlPayments { pool }
    }
}

/// Rows as records, and the statements payments and refunds share.
impl<DB> SqlPayments<DB>
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
    fn payment_from_row(row: &DB::Row) -> Result<Payment, StoreError> {
        let checkout: String = row.try_get("checkout")?;
        Ok(Payment {
            id: row.try_get("id")?,
            order_id: row.try_get("order_id")?,
            sale_id: row.try_get("sale_id")?,
            user_id: row.try_get("user_id")?,
            provider: row.try_get("provider")?,
            amount_cents: row.try_get("amount_cents")?,
            currency: row.try_get("currency")?,
            status: PaymentStatus::parse(row.try_get("status")?)?,
            checkout: serde_json::from_str::<Checkout>(&checkout)
                .map_err(|e| StoreError::Corrupt(format!("checkout: {e}")))?,
            provider_txn_id: row.try_get("provider_txn_id")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            paid_at: row.try_get("paid_at")?,
        })
    }

    fn refund_from_row(row: &DB::Row) -> Result<Refund, StoreError> {
        Ok(Refund {
            id: row.try_get("id")?,
            order_id: row.try_get("order_id")?,
            payment_id: row.try_get("payment_id")?,
            provider: row.try_get("provider")?,
            amount_cents: row.try_get("amount_cents")?,
            currency: row.try_get("currency")?,
            reason: row.try_get("reason")?,
            status: RefundStatus::parse(row.try_get("status")?)?,
            provider_refund_id: row.try_get("provider_refund_id")?,
            requested_by: row.try_get("requested_by")?,
            idempotency_key: row.try_get("idempotency_key")?,
            fingerprint: row.try_get("fingerprint")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    fn charge_from_row(row: &DB::Row) -> Result<Charge, StoreError> {
        Ok(Charge {
            payment_id: row.try_get("payment_id")?,
            state: ChargeState::parse(row.try_get("state")?)?,
            txn_id: row.try_get("txn_id")?,
            amount_cents: row.try_get("amount_cents")?,
            currency: row.try_get("currency")?,
            refunds_fail: row.try_get("refunds_fail")?,
            at: row.try_get("at")?,
        })
    }

    /// Leases up to `max` of `table`'s due pending rows (payments or
    /// refunds) until `now + lease`; SKIP LOCKED: nodes reconciling at once
    /// take different ones.
    async fn claim_due(
        &self,
        table: &str,
        columns: &str,
        now: DateTime<Utc>,
        lease: TimeDelta,
        max: i64,
    ) -> Result<Vec<DB::Row>, StoreError> {
        let sql = format!(
            "UPDATE {table} SET next_check_at = $2 WHERE id IN ( \
               SELECT id FROM {table} WHERE next_check_at <= $1 AND status = 'pending' \
               ORDER BY next_check_at LIMIT $3 {}) \
             RETURNING {columns}",
            DB::SKIP_LOCKED
        );
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(now + lease)
            .bind(max)
            .fetch_all(&self.pool)
            .await?)
    }

    /// When `table`'s row `id` is next looked at; `None`: never.
    async fn schedule(
        &self,
        table: &str,
        id: Uuid,
        next: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let sql = format!("UPDATE {table} SET next_check_at = $2 WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(next)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

const PAYMENT_COLUMNS: &str = "id, order_id, sale_id, user_id, provider, amount_cents, currency, \
     status, checkout, provider_txn_id, created_at, expires_at, paid_at";

const REFUND_COLUMNS: &str = "id, order_id, payment_id, provider, amount_cents, currency, reason, \
     status, provider_refund_id, requested_by, idempotency_key, fingerprint, created_at, updated_at";

fn checkout_json(c: &Checkout) -> Result<String, StoreError> {
    serde_json::to_string(c).map_err(|e| StoreError::Corrupt(format!("checkout: {e}")))
}

#[async_trait]
impl<DB> PaymentStore for SqlPayments<DB>
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
    async fn insert_pending(
        &self,
        p: &Payment,
        next_check: DateTime<Utc>,
    ) -> Result<Payment, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO payments (id, order_id, sale_id, user_id, provider, amount_cents, \
               currency, status, checkout, created_at, expires_at, next_check_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10, $11) \
             ON CONFLICT (order_id) WHERE status = 'pending' DO NOTHING",
        )
        .bind(p.id)
        .bind(p.order_id)
        .bind(p.sale_id)
        .bind(&p.user_id)
        .bind(&p.provider)
        .bind(p.amount_cents)
        .bind(&p.currency)
        .bind(checkout_json(&p.checkout)?)
        .bind(p.created_at)
        .bind(p.expires_at)
        .bind(next_check)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(p.clone());
        }
        self.pending_for_order(p.order_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a pending payment vanished".into()))
    }

    async fn set_checkout(&self, id: Uuid, checkout: &Checkout) -> Result<(), StoreError> {
        sqlx::query("UPDATE payments SET checkout = $2 WHERE id = $1")
            .bind(id)
            .bind(checkout_json(checkout)?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn payment(&self, id: Uuid) -> Result<Option<Payment>, StoreError> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(Self::payment_from_row)
            .transpose()
    }

    async fn pending_for_order(&self, order_id: Uuid) -> Result<Option<Payment>, StoreError> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 AND status = 'pending'"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(order_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(Self::payment_from_row)
            .transpose()
    }

    async fn record_txn(&self, id: Uuid, txn: &str) -> Result<TxnRecord, StoreError> {
        let done = sqlx::query(
            "UPDATE payments SET provider_txn_id = $2 \
             WHERE id = $1 AND (provider_txn_id IS NULL OR provider_txn_id = $2)",
        )
        .bind(id)
        .bind(txn)
        .execute(&self.pool)
        .await;
        match done {
            Ok(r) if r.rows_affected() == 1 => Ok(TxnRecord::Recorded),
            Ok(_) => {
                let other: Option<Option<String>> =
                    sqlx::query_scalar("SELECT provider_txn_id FROM payments WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(TxnRecord::Other(other.flatten().unwrap_or_default()))
            }
            Err(e) => match StoreError::from(e) {
                StoreError::Duplicate => Ok(TxnRecord::Taken),
                other => Err(other),
            },
        }
    }

    async fn set_status(
        &self,
        id: Uuid,
        from: &[PaymentStatus],
        to: PaymentStatus,
        at: DateTime<Utc>,
        next_check: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let from = crate::sql::json_texts(from.iter().map(|s| s.as_str()));
        let paid = to == PaymentStatus::Succeeded;
        let sql = format!(
            "UPDATE payments SET status = $3, next_check_at = $4, \
               paid_at = CASE WHEN $5 THEN COALESCE(paid_at, $6) ELSE paid_at END \
             WHERE id = $1 AND {}",
            DB::in_json_texts("status", "$2")
        );
        let n = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(from)
            .bind(to.as_str())
            .bind(next_check)
            .bind(paid)
            .bind(at)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn claim_due_payments(
        &self,
        now: DateTime<Utc>,
        lease: TimeDelta,
        max: i64,
    ) -> Result<Vec<Payment>, StoreError> {
        self.claim_due("payments", PAYMENT_COLUMNS, now, lease, max)
            .await?
            .iter()
            .map(Self::payment_from_row)
            .collect()
    }

    async fn schedule_payment(
        &self,
        id: Uuid,
        next: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.schedule("payments", id, next).await
    }

    async fn insert_refund(
        &self,
        r: &Refund,
        guard: RefundGuard,
        next_check: DateTime<Utc>,
    ) -> Result<RefundInsert, StoreError> {
        // Writes first: a SQLite transaction that read before writing can
        // fail to upgrade its lock, and PostgreSQL's unique key decides a
        // race on one key without a read.
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM refunds \
             WHERE order_id = $1 AND requested_by = $2 AND idempotency_key = $3"
        );
        let inserted = sqlx::query(
            "INSERT INTO refunds (id, order_id, payment_id, provider, amount_cents, currency, \
               reason, status, provider_refund_id, requested_by, idempotency_key, fingerprint, \
               created_at, updated_at, next_check_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14) \
             ON CONFLICT (order_id, requested_by, idempotency_key) DO NOTHING",
        )
        .bind(r.id)
        .bind(r.order_id)
        .bind(r.payment_id)
        .bind(&r.provider)
        .bind(r.amount_cents)
        .bind(&r.currency)
        .bind(&r.reason)
        .bind(r.status.as_str())
        .bind(r.provider_refund_id.as_deref())
        .bind(&r.requested_by)
        .bind(&r.idempotency_key)
        .bind(&r.fingerprint)
        .bind(r.created_at)
        .bind(next_check)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            // This key was used before (or at once on another node): that
            // refund stands.
            tx.rollback().await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(r.order_id)
                .bind(&r.requested_by)
                .bind(&r.idempotency_key)
                .fetch_one(&self.pool)
                .await?;
            return Ok(RefundInsert::Existing(Self::refund_from_row(&row)?));
        }
        if guard == RefundGuard::Order {
            let held = sqlx::query(
                "UPDATE orders SET refund_held_cents = refund_held_cents + $2 \
                 WHERE id = $1 AND refund_held_cents + $2 <= COALESCE(paid_cents, 0)",
            )
            .bind(r.order_id)
            .bind(r.amount_cents)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if held != 1 {
                tx.rollback().await?;
                return Ok(RefundInsert::TooMuch);
            }
        }
        tx.commit().await?;
        Ok(RefundInsert::Inserted(r.clone()))
    }

    async fn refund(&self, id: Uuid) -> Result<Option<Refund>, StoreError> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(Self::refund_from_row)
            .transpose()
    }

    async fn order_refunds(&self, order_id: Uuid) -> Result<Vec<Refund>, StoreError> {
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE order_id = $1 ORDER BY created_at, id"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(order_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(Self::refund_from_row)
            .collect()
    }

    async fn failed_count(&self, sale_id: Uuid) -> Result<i64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM payments WHERE sale_id = $1 AND status = 'failed'",
        )
        .bind(sale_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    async fn finish_refund(
        &self,
        id: Uuid,
        to: RefundStatus,
        provider_refund_id: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<Option<Refund>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE refunds SET status = $2, updated_at = $3, next_check_at = NULL, \
               provider_refund_id = COALESCE($4, provider_refund_id) \
             WHERE id = $1 AND status = 'pending' RETURNING {REFUND_COLUMNS}"
        );
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(to.as_str())
            .bind(at)
            .bind(provider_refund_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let refund = Self::refund_from_row(&row)?;
        match to {
            RefundStatus::Succeeded => {
                sqlx::query(
                    "UPDATE orders SET refunded_cents = refunded_cents + $2 \
                     WHERE id = $1 AND refunded_cents + $2 <= refund_held_cents",
                )
                .bind(refund.order_id)
                .bind(refund.amount_cents)
                .execute(&mut *tx)
                .await?;
                if let Some(payment_id) = refund.payment_id {
                    sqlx::query(
                        "UPDATE payments SET status = CASE \
                           WHEN (SELECT COALESCE(SUM(r.amount_cents), 0) FROM refunds r \
                                 WHERE r.payment_id = payments.id AND r.status = 'succeeded') \
                                >= payments.amount_cents \
                           THEN 'refunded' ELSE 'partially_refunded' END \
                         WHERE id = $1 AND status IN ('succeeded', 'partially_refunded', 'refunded')",
                    )
                    .bind(payment_id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            RefundStatus::Failed => {
                sqlx::query(
                    "UPDATE orders SET refund_held_cents = refund_held_cents - $2 \
                     WHERE id = $1 AND refund_held_cents - $2 >= refunded_cents",
                )
                .bind(refund.order_id)
                .bind(refund.amount_cents)
                .execute(&mut *tx)
                .await?;
            }
            RefundStatus::Pending => {}
        }
        tx.commit().await?;
        Ok(Some(refund))
    }

    async fn claim_due_refunds(
        &self,
        now: DateTime<Utc>,
        lease: TimeDelta,
        max: i64,
    ) -> Result<Vec<Refund>, StoreError> {
        self.claim_due("refunds", REFUND_COLUMNS, now, lease, max)
            .await?
            .iter()
            .map(Self::refund_from_row)
            .collect()
    }

    async fn schedule_refund(
        &self,
        id: Uuid,
        next: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.schedule("refunds", id, next).await
    }
}

#[async_trait]
impl<DB> SandboxLedger for SqlPayments<DB>
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
    async fn charge(&self, c: &Charge) -> Result<Charge, StoreError> {
        sqlx::query(
            "INSERT INTO sandbox_charges (payment_id, state, txn_id, amount_cents, currency, \
               refunds_fail, at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (payment_id) DO NOTHING",
        )
        .bind(c.payment_id)
        .bind(c.state.as_str())
        .bind(&c.txn_id)
        .bind(c.amount_cents)
        .bind(&c.currency)
        .bind(c.refunds_fail)
        .bind(c.at)
        .execute(&self.pool)
        .await?;
        self.charge_of(c.payment_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a sandbox charge vanished".into()))
    }

    async fn charge_of(&self, payment_id: Uuid) -> Result<Option<Charge>, StoreError> {
        sqlx::query(
            "SELECT payment_id, state, txn_id, amount_cents, currency, refunds_fail, at \
             FROM sandbox_charges WHERE payment_id = $1",
        )
        .bind(payment_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(Self::charge_from_row)
        .transpose()
    }

    async fn refund(
        &self,
        refund_id: Uuid,
        payment_id: Uuid,
        amount_cents: i64,
        succeeded: bool,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        sqlx::query(
            "INSERT INTO sandbox_refunds (refund_id, payment_id, amount_cents, succeeded, at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (refund_id) DO NOTHING",
        )
        .bind(refund_id)
        .bind(payment_id)
        .bind(amount_cents)
        .bind(succeeded)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT succeeded FROM sandbox_refunds WHERE refund_id = $1")
                .bind(refund_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn refund_of(&self, refund_id: Uuid) -> Result<Option<(i64, bool)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT amount_cents, succeeded FROM sandbox_refunds WHERE refund_id = $1",
        )
        .bind(refund_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn refunded(&self, payment_id: Uuid) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(amount_cents), 0) AS BIGINT) FROM sandbox_refunds \
             WHERE payment_id = $1 AND succeeded",
        )
        .bind(payment_id)
        .fetch_one(&self.pool)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Sqlite;

    use super::*;

    fn pending(now: DateTime<Utc>) -> Payment {
        Payment {
            id: Uuid::new_v4(),
            order_id: Uuid::new_v4(),
            sale_id: Uuid::new_v4(),
            user_id: "mei".into(),
            provider: "sandbox".into(),
            amount_cents: 100,
            currency: "CNY".into(),
            status: PaymentStatus::Pending,
            checkout: Default::default(),
            provider_txn_id: None,
            created_at: now,
            expires_at: now + TimeDelta::minutes(5),
            paid_at: None,
        }
    }

    /// A provider's transaction id is recorded once: the same report again
    /// is fine, another id for the payment is `Other`, and the id on a
    /// second payment (a forged or misrouted callback) is `Taken`.
    #[tokio::test]
    async fn a_transaction_id_is_recorded_once() {
        let store: SqlPayments<Sqlite> =
            SqlPayments::new(crate::catalog::sql::tests::memory_pool().await);
        let now = Utc::now();
        let (a, b) = (pending(now), pending(now));
        store.insert_pending(&a, now).await.unwrap();
        store.insert_pending(&b, now).await.unwrap();
        assert_eq!(
            store.record_txn(a.id, "T1").await.unwrap(),
            TxnRecord::Recorded
        );
        assert_eq!(
            store.record_txn(a.id, "T1").await.unwrap(),
            TxnRecord::Recorded
        );
        assert_eq!(
            store.record_txn(a.id, "T2").await.unwrap(),
            TxnRecord::Other("T1".into())
        );
        assert_eq!(
            store.record_txn(b.id, "T1").await.unwrap(),
            TxnRecord::Taken
        );
        assert_eq!(
            store.record_txn(b.id, "T3").await.unwrap(),
            TxnRecord::Recorded
        );
    }
}
