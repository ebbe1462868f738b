//! Where payments and refunds are kept (PostgreSQL, or SQLite embedded).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Checkout;
use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Succeeded,
    Failed,
    Expired,
    Refunded,
    PartiallyRefunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Expired => "expired",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "pending" => PaymentStatus::Pending,
            "succeeded" => PaymentStatus::Succeeded,
            "failed" => PaymentStatus::Failed,
            "expired" => PaymentStatus::Expired,
            "refunded" => PaymentStatus::Refunded,
            "partially_refunded" => PaymentStatus::PartiallyRefunded,
            other => return Err(StoreError::Corrupt(format!("payment status {other:?}"))),
        })
    }

    /// Money was taken (whatever was refunded since).
    pub fn was_paid(self) -> bool {
        matches!(
            self,
            PaymentStatus::Succeeded | PaymentStatus::Refunded | PaymentStatus::PartiallyRefunded
        )
    }
}

/// The contract's Payment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    #[serde(skip)]
    pub sale_id: Uuid,
    #[serde(skip)]
    pub user_id: String,
    pub provider: String,
    pub amount_cents: i64,
    pub currency: String,
    pub status: PaymentStatus,
    pub checkout: Checkout,
    pub provider_txn_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "pending" => RefundStatus::Pending,
            "succeeded" => RefundStatus::Succeeded,
            "failed" => RefundStatus::Failed,
            other => return Err(StoreError::Corrupt(format!("refund status {other:?}"))),
        })
    }
}

/// The contract's Refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refund {
    pub id: Uuid,
    pub order_id: Uuid,
    pub payment_id: Option<Uuid>,
    /// `manual` or the payment's provider.
    pub provider: String,
    pub amount_cents: i64,
    pub currency: String,
    pub reason: String,
    pub status: RefundStatus,
    pub provider_refund_id: Option<String>,
    #[serde(skip)]
    pub requested_by: String,
    #[serde(skip)]
    pub idempotency_key: String,
    #[serde(skip)]
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Who guards a new refund's amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundGuard {
    /// A completed order: its refunds never add up to more than it was paid.
    Order,
    /// A payment whose order never completed (a late payment): refunded
    /// whole, once (its idempotency key is derived from the payment).
    Payment,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundInsert {
    Inserted(Refund),
    /// This requester already used the key: that refund.
    Existing(Refund),
    /// It would refund more than was paid (or the order is not completed).
    TooMuch,
}

/// What recording a provider's transaction id found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnRecord {
    /// Recorded now, or it was already this one.
    Recorded,
    /// This payment already has another transaction id.
    Other(String),
    /// Another payment holds this transaction id.
    Taken,
}

#[async_trait]
pub trait PaymentStore: Send + Sync + 'static {
    /// Inserts `p` (pending) unless a payment of its order is pending:
    /// returns the pending one (the new one or the one already there).
    async fn insert_pending(
        &self,
        p: &Payment,
        next_check: DateTime<Utc>,
    ) -> Result<Payment, StoreError>;
    async fn set_checkout(&self, id: Uuid, checkout: &Checkout) -> Result<(), StoreError>;
    async fn payment(&self, id: Uuid) -> Result<Option<Payment>, StoreError>;
    async fn pending_for_order(&self, order_id: Uuid) -> Result<Option<Payment>, StoreError>;
    async fn record_txn(&self, id: Uuid, txn: &str) -> Result<TxnRecord, StoreError>;
    /// Moves a payment from one of `from` to `to`; `false` if it was in
    /// none of them. `next_check` replaces its reconciliation time.
    async fn set_status(
        &self,
        id: Uuid,
        from: &[PaymentStatus],
        to: PaymentStatus,
        at: DateTime<Utc>,
        next_check: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError>;
    /// Pending payments due for a question to their provider, claimed for
    /// `lease` (another node skips them meanwhile).
    async fn claim_due_payments(
        &self,
        now: DateTime<Utc>,
        lease: chrono::TimeDelta,
        max: i64,
    ) -> Result<Vec<Payment>, StoreError>;
    async fn schedule_payment(
        &self,
        id: Uuid,
        next: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError>;

    /// Inserts a pending refund, guarded (one transaction with the hold).
    async fn insert_refund(
        &self,
        r: &Refund,
        guard: RefundGuard,
        next_check: DateTime<Utc>,
    ) -> Result<RefundInsert, StoreError>;
    async fn refund(&self, id: Uuid) -> Result<Option<Refund>, StoreError>;
    async fn order_refunds(&self, order_id: Uuid) -> Result<Vec<Refund>, StoreError>;
    /// The sale's payments that ended `failed`, for the dashboard.
    async fn failed_count(&self, sale_id: Uuid) -> Result<i64, StoreError>;
    /// Settles a pending refund (`Succeeded` or `Failed`) with the order's
    /// sums and its payment's status, in one transaction. `None` if it was
    /// not pending (settled already: nothing changes).
    async fn finish_refund(
        &self,
        id: Uuid,
        to: RefundStatus,
        provider_refund_id: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<Option<Refund>, StoreError>;
    async fn claim_due_refunds(
        &self,
        now: DateTime<Utc>,
        lease: chrono::TimeDelta,
        max: i64,
    ) -> Result<Vec<Refund>, StoreError>;
    async fn schedule_refund(
        &self,
        id: Uuid,
        next: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError>;
}

/// What the buyer did on the sandbox's checkout page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeState {
    Paid,
    Failed,
    Closed,
}

impl ChargeState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChargeState::Paid => "paid",
            ChargeState::Failed => "failed",
            ChargeState::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "paid" => ChargeState::Paid,
            "failed" => ChargeState::Failed,
            "closed" => ChargeState::Closed,
            other => return Err(StoreError::Corrupt(format!("charge state {other:?}"))),
        })
    }
}

/// The sandbox gateway's record of one payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub payment_id: Uuid,
    pub state: ChargeState,
    pub txn_id: String,
    pub amount_cents: i64,
    pub currency: String,
    pub refunds_fail: bool,
    pub at: DateTime<Utc>,
}

/// The sandbox gateway's own books (a real gateway keeps these on its side).
#[async_trait]
pub trait SandboxLedger: Send + Sync + 'static {
    /// Records the first outcome of a payment; later ones are ignored (a
    /// charge is final, as at a real gateway). Returns the charge as kept.
    async fn charge(&self, c: &Charge) -> Result<Charge, StoreError>;
    async fn charge_of(&self, payment_id: Uuid) -> Result<Option<Charge>, StoreError>;
    /// Records a refund once; returns whether it succeeded (as first recorded).
    async fn refund(
        &self,
        refund_id: Uuid,
        payment_id: Uuid,
        amount_cents: i64,
        succeeded: bool,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    async fn refund_of(&self, refund_id: Uuid) -> Result<Option<(i64, bool)>, StoreError>;
    /// Refunded so far on a charge, succeeded refunds only.
    async fn refunded(&self, payment_id: Uuid) -> Result<i64, StoreError>;
}
