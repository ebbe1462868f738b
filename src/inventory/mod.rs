//! Live counters and reservations: the fast gate of the buy path.
//!
//! One trait, two implementations with the same semantics: Redis Lua scripts
//! (production, shared by every node) and a mutex per sale (embedded mode).
//! PostgreSQL stays the final word; this layer only admits.

pub mod memory;
pub mod redis;
pub mod sold_out;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::{ProductStatus, SaleStatus};
use crate::orders::{Order, OrderStatus};

/// Live counters of one product. `ver` grows with every change so a node can
/// drop a stale level that arrives after a newer one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    pub sku: String,
    /// All ever offered.
    pub stock: i64,
    pub remaining: i64,
    pub reserved: i64,
    pub sold: i64,
    /// `sold_out` when on sale with nothing remaining.
    pub status: ProductStatus,
    pub ver: i64,
}

impl StockLevel {
    /// The status a viewer sees: an open product with nothing left is sold out.
    pub fn derive_status(set: ProductStatus, remaining: i64) -> ProductStatus {
        if set == ProductStatus::OnSale && remaining <= 0 {
            ProductStatus::SoldOut
        } else {
            set
        }
    }
}

/// A product as installed into the inventory (creation or rebuild).
#[derive(Debug, Clone)]
pub struct ProductSeed {
    pub sku: String,
    pub stock: i64,
    /// Committed in PostgreSQL.
    pub sold: i64,
    pub per_user_limit: i32,
    /// As set by the host: scheduled, on_sale or closed.
    pub status: ProductStatus,
}

/// Everything needed to (re)build a sale's live state from PostgreSQL.
#[derive(Debug, Clone)]
pub struct SaleSeed {
    pub sale_id: Uuid,
    /// Fenced into PostgreSQL's products before the seed was read.
    pub epoch: i64,
    pub status: SaleStatus,
    pub products: Vec<ProductSeed>,
    /// Completed quantity per (sku, user), so per-user limits survive a rebuild.
    pub holdings: Vec<(String, String, i64)>,
    /// Where the chat's seq counter starts if it is missing: above every seq
    /// given before a loss, so seq stays strictly increasing for clients.
    pub chat_seq_floor: u64,
}

/// One buy attempt, checked and (if admitted) recorded atomically.
#[derive(Debug, Clone)]
pub struct AdmitRequest {
    /// A claim's reship: only the stock is checked (the sale may have
    /// ended, the product closed, the buyer reached its limit since).
    pub remedy: bool,
    pub sale_id: Uuid,
    pub user_id: String,
    pub key: String,
    /// Identifies the body: the same key with another fingerprint is a mismatch.
    pub fingerprint: String,
    /// The order as it would be created, status `reserved`; its `id`, `sku`,
    /// `qty` and `expires_at` drive the admission.
    pub order: Order,
    /// Reserve checkout: the serialized order, stored as the key's final answer
    /// in the same atomic step (and as the order's record: it must be `order`). Instant checkout: `None`, the key stays pending
    /// until the order is committed.
    pub final_answer: Option<String>,
    /// When the reaper may take the admission back (the reservation deadline,
    /// or a lease for an instant order being committed).
    pub deadline_ms: i64,
}

/// A refusal decided by the inventory; stored as the key's final answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    SaleNotLive,
    NotOnSale,
    SoldOut,
    LimitExceeded { bought: i64, limit: i64 },
    Banned,
}

/// A committed instant order to confirm, with its key's final answer.
#[derive(Debug, Clone)]
pub struct Confirmation {
    pub order_id: Uuid,
    pub user_id: String,
    pub key: String,
    pub completed_at_ms: i64,
    pub fingerprint: String,
    pub answer: Stored,
}

/// An earlier answer for an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// The 201 body as first sent.
    Order(String),
    Rejected(Rejection),
    /// Admitted, but its final answer is not written yet (an instant order in
    /// commit, or a node that died before writing it).
    Pending(Uuid),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Admitted under the sale's live-state `epoch`.
    Admitted {
        level: StockLevel,
        epoch: i64,
    },
    Rejected(Rejection),
    Replay(Stored),
    /// Same key, another body.
    Mismatch,
    /// Live state is missing: the whole sale (`epoch` None) or, for a SKU the
    /// catalog knows, the product (Redis lost keys; `epoch` as seen).
    Missing {
        epoch: Option<i64>,
    },
}

/// An order the inventory holds (reserved, or recently changed).
#[derive(Debug, Clone)]
pub struct LiveOrder {
    pub order: Order,
    pub key: String,
    /// The reaper's deadline in the sorted set, if still there.
    pub deadline_ms: Option<i64>,
    /// The live-state epoch it was admitted under.
    pub epoch: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayStart {
    /// Now `paying`; the reaper leaves it alone until the lease ends.
    Started,
    AlreadyCompleted,
    Expired,
    /// Cancelled, expired or being paid by another request.
    WrongState(OrderStatus),
    NotFound,
}

/// Which states a release may start from.
/// What attaching an address to a reservation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipToSet {
    Done,
    /// Not reserved (any more): being paid, completed, cancelled, expired.
    WrongState(OrderStatus),
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseFrom {
    /// A buyer's cancel: only `reserved`.
    Reserved,
    /// The reaper or a failed commit: any state still holding stock.
    AnyHolding,
    /// PostgreSQL refused the order (`sold + n > stock`): the units this
    /// admission held were already sold through orders the counters missed
    /// (committed around a rebuild). They move to `sold` instead of back on
    /// sale, so the counters converge on PostgreSQL's.
    Refused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    Done(StockLevel),
    WrongState(OrderStatus),
    NotFound,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// Live state could not be reached or answered with an error (the
    /// backend's words, for the log).
    #[error("inventory unavailable: {0}")]
    Unavailable(String),
    #[error("unexpected reply from the inventory: {0}")]
    Protocol(String),
}

impl InventoryError {
    /// The contract's code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            InventoryError::Unavailable(_) => "unavailable",
            InventoryError::Protocol(_) => "internal",
        }
    }
}

impl Rejection {
    /// The contract's code of this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::SaleNotLive => "sale_not_live",
            Rejection::NotOnSale => "not_on_sale",
            Rejection::SoldOut => "sold_out",
            Rejection::LimitExceeded { .. } => "limit_exceeded",
            Rejection::Banned => "banned",
        }
    }
}

impl From<::redis::RedisError> for InventoryError {
    fn from(e: ::redis::RedisError) -> Self {
        InventoryError::Unavailable(e.to_string())
    }
}

/// The inventory port. Every method touching one sale is atomic for that sale.
#[async_trait]
pub trait Inventory: Send + Sync + 'static {
    /// The sale's live-state epoch; `None` when it has no live state.
    async fn epoch(&self, sale_id: Uuid) -> Result<Option<i64>, InventoryError>;
    /// Overwrites the sale's counters with the seed (reservations are dropped:
    /// stock held by them comes back; a record may stay under its old epoch,
    /// so a payment in flight still settles, and releasing it moves only its
    /// status). The sale's marker is written last.
    async fn install(&self, seed: &SaleSeed) -> Result<(), InventoryError>;
    /// One rebuilder per sale across nodes, holding it under its own `token`;
    /// `false` when another holds it.
    async fn lock_rebuild(
        &self,
        sale_id: Uuid,
        token: &str,
        ttl_ms: u64,
    ) -> Result<bool, InventoryError>;
    /// Releases the lock only if `token` still holds it: a rebuild slower
    /// than the lock's expiry must not free the lock of the node after it.
    async fn unlock_rebuild(&self, sale_id: Uuid, token: &str) -> Result<(), InventoryError>;
    /// Whether some node holds the rebuild lock.
    async fn rebuilding(&self, sale_id: Uuid) -> Result<bool, InventoryError>;

    /// Ended closes every product too. Returns the changed levels.
    async fn set_sale_status(
        &self,
        sale_id: Uuid,
        status: SaleStatus,
        skus: &[String],
    ) -> Result<Vec<StockLevel>, InventoryError>;
    async fn add_product(
        &self,
        sale_id: Uuid,
        seed: &ProductSeed,
    ) -> Result<StockLevel, InventoryError>;
    /// `None` when the product has no live state.
    async fn set_product_status(
        &self,
        sale_id: Uuid,
        sku: &str,
        status: ProductStatus,
    ) -> Result<Option<StockLevel>, InventoryError>;
    async fn restock(
        &self,
        sale_id: Uuid,
        sku: &str,
        add: i64,
    ) -> Result<Option<StockLevel>, InventoryError>;
    /// Levels in the order asked; `None` for a SKU without live state.
    async fn levels(
        &self,
        sale_id: Uuid,
        skus: &[String],
    ) -> Result<Vec<Option<StockLevel>>, InventoryError>;
    /// Users holding (reserved or completed) some of the SKU.
    async fn holders(&self, sale_id: Uuid, sku: &str) -> Result<Vec<String>, InventoryError>;
    /// Bans live here alone: admission and chat (whose Redis script reads
    /// the same set) both refuse a banned user, so a ban is one write.
    async fn ban(&self, sale_id: Uuid, user_id: &str) -> Result<(), InventoryError>;
    async fn unban(&self, sale_id: Uuid, user_id: &str) -> Result<(), InventoryError>;
    async fn is_banned(&self, sale_id: Uuid, user_id: &str) -> Result<bool, InventoryError>;
    /// The sale's banned user ids, sorted.
    async fn bans(&self, sale_id: Uuid) -> Result<Vec<String>, InventoryError>;

    async fn admit(&self, req: &AdmitRequest) -> Result<Admission, InventoryError>;
    /// Writes the final answer of a key that is pending for `order_id`.
    async fn store_answer(
        &self,
        sale_id: Uuid,
        user_id: &str,
        key: &str,
        fingerprint: &str,
        answer: &Stored,
    ) -> Result<(), InventoryError>;
    /// The earlier answer for a key, if any (used to wait out a pending one).
    async fn stored_answer(
        &self,
        sale_id: Uuid,
        user_id: &str,
        key: &str,
    ) -> Result<Option<(String, Stored)>, InventoryError>;

    async fn order(
        &self,
        sale_id: Uuid,
        order_id: Uuid,
    ) -> Result<Option<LiveOrder>, InventoryError>;
    /// Which sale an order belongs to, for lookups by order id alone.
    async fn locate(&self, order_id: Uuid) -> Result<Option<Uuid>, InventoryError>;
    /// Records the order in the locator and the user's list (after admission).
    async fn index_order(&self, order: &Order) -> Result<(), InventoryError>;
    /// The user's orders the inventory still holds, newest first.
    async fn user_orders(&self, user_id: &str) -> Result<Vec<LiveOrder>, InventoryError>;

    async fn begin_pay(
        &self,
        sale_id: Uuid,
        order_id: Uuid,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<PayStart, InventoryError>;
    /// Back to `reserved` with its old deadline (the commit failed).
    async fn abort_pay(&self, sale_id: Uuid, order_id: Uuid) -> Result<(), InventoryError>;
    /// Attaches the ship-to address to a reservation, while it is reserved
    /// and no payment is being recorded.
    async fn set_ship_to(
        &self,
        sale_id: Uuid,
        order_id: Uuid,
        ship_to: &crate::fulfilment::address::Address,
    ) -> Result<ShipToSet, InventoryError>;
    /// Reservation -> sold, after PostgreSQL committed the order. Idempotent.
    /// `answer` (fingerprint, final answer) is written for the order's key in
    /// the same step: instant checkout needs no extra round trip.
    #[allow(clippy::too_many_arguments)]
    async fn confirm(
        &self,
        sale_id: Uuid,
        order_id: Uuid,
        sku: &str,
        completed_at_ms: i64,
        payment_ref: Option<&str>,
        answer: Option<(&str, &Stored)>,
    ) -> Result<Option<StockLevel>, InventoryError>;
    /// `confirm` for committed instant orders of one SKU (a batch the
    /// writer committed) in one step; the level after the last, if any
    /// order was known.
    async fn confirm_batch(
        &self,
        sale_id: Uuid,
        sku: &str,
        orders: &[Confirmation],
    ) -> Result<Option<StockLevel>, InventoryError> {
        let mut last = None;
        for c in orders {
            let answer = (c.fingerprint.as_str(), &c.answer);
            if let Some(level) = self
                .confirm(
                    sale_id,
                    c.order_id,
                    sku,
                    c.completed_at_ms,
                    None,
                    Some(answer),
                )
                .await?
            {
                last = Some(level);
            }
        }
        Ok(last)
    }
    /// Returns the order's stock and limit; its status becomes `to`. When the
    /// key is still pending for this order it is forgotten, so a retry is fresh.
    async fn release(
        &self,
        sale_id: Uuid,
        order_id: Uuid,
        to: OrderStatus,
        from: ReleaseFrom,
    ) -> Result<Released, InventoryError>;

    /// Sales the reaper must visit.
    async fn reap_sales(&self) -> Result<Vec<Uuid>, InventoryError>;
    async fn forget_reap_sale(&self, sale_id: Uuid) -> Result<(), InventoryError>;
    /// Takes up to `max` admissions whose deadline passed; each is leased for
    /// `lease_ms` so no other node takes it meanwhile.
    async fn claim_due(
        &self,
        sale_id: Uuid,
        now_ms: i64,
        lease_ms: i64,
        max: usize,
    ) -> Result<Vec<Uuid>, InventoryError>;
    /// Admissions still held (reserved, paying or in commit).
    async fn held_count(&self, sale_id: Uuid) -> Result<u64, InventoryError>;

    async fn ping(&self) -> Result<(), InventoryError>;
}
