//! Orders: buying, paying, cancelling, expiry, and the record of completed
//! orders in PostgreSQL (or SQLite), written in batches.

pub mod batch;
pub mod confirm;
pub mod export;
pub mod reaper;
pub mod rebuild;
pub mod service;
pub mod sql;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::fulfilment::address::Address;
use crate::fulfilment::{Fulfilment, Shipment};
use crate::store::StoreError;

pub use service::{OrderError, Orders, Paid};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Reserved,
    Completed,
    Cancelled,
    Expired,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Reserved => "reserved",
            OrderStatus::Completed => "completed",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
        }
    }
}

/// The contract's Order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: Uuid,
    pub sale_id: Uuid,
    pub sku: String,
    pub qty: i64,
    pub unit_price_cents: i64,
    pub total_cents: i64,
    pub currency: String,
    pub user_id: String,
    pub status: OrderStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub payment_ref: Option<String>,
    /// How a completed order was paid; `None` while reserved (nothing is
    /// paid until a provider, a manual confirmation or COD says so).
    #[serde(default)]
    pub payment: Option<OrderPayment>,
    /// The address it ships to: a copy taken when attached.
    #[serde(default)]
    pub ship_to: Option<Address>,
    #[serde(default)]
    pub fulfilment: Fulfilment,
    #[serde(default)]
    pub shipment: Option<Shipment>,
    /// The contract's Claims of the order, filled in where an order is
    /// read or announced (`claims::Claims::with_claims`); kept as JSON so
    /// orders know nothing of after-sales.
    #[serde(default)]
    pub claims: Vec<serde_json::Value>,
}

/// The contract's `payment` object of an Order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPayment {
    /// `cod`, `manual`, or the provider's name.
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<Uuid>,
    pub paid_cents: i64,
    /// What its succeeded refunds returned.
    #[serde(default)]
    pub refunded_cents: i64,
    /// The host's note on a manual confirmation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl OrderPayment {
    pub const COD: &'static str = "cod";
    pub const MANUAL: &'static str = "manual";

    /// Cash on delivery: what the courier collects counts as paid, so a
    /// claim on it can be refunded (by hand) up to the order's total.
    pub fn cod(total_cents: i64) -> Self {
        OrderPayment {
            method: Self::COD.into(),
            payment_id: None,
            paid_cents: total_cents,
            refunded_cents: 0,
            note: None,
        }
    }
}

/// The `payment` of a stored order; rows from before payments have none.
pub(crate) fn payment_from_row(
    method: Option<String>,
    payment_id: Option<Uuid>,
    paid_cents: Option<i64>,
    refunded_cents: i64,
    note: Option<String>,
) -> Option<OrderPayment> {
    Some(OrderPayment {
        method: method?,
        payment_id,
        paid_cents: paid_cents.unwrap_or(0),
        refunded_cents,
        note,
    })
}

/// The dashboard's after-sales figures of a sale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AfterSales {
    pub refunds_cents: i64,
    pub late: i64,
    /// Boxes given for nothing (a claim's reship) at their product's price:
    /// counted in `sold`, so the dashboard takes them out of the GMV.
    pub free_cents: i64,
}

/// A completed order with no `ships_by` is late this long after completion.
pub const LATE_AFTER_HOURS: i64 = 48;

/// An order's `ship_to` as the orders table keeps it (JSON text).
pub(crate) fn ship_to_text(a: Option<&Address>) -> Result<Option<String>, StoreError> {
    a.map(|a| serde_json::to_string(a).map_err(|e| StoreError::Corrupt(format!("ship_to: {e}"))))
        .transpose()
}

pub(crate) fn ship_to_from_text(s: Option<String>) -> Result<Option<Address>, StoreError> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("ship_to: {e}"))))
        .transpose()
}

/// The `shipment` of a stored order: there once it shipped.
pub(crate) fn shipment_from_row(
    courier: Option<String>,
    waybill: Option<String>,
    shipped_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
) -> Option<Shipment> {
    Some(Shipment {
        courier: courier?,
        waybill: waybill?,
        shipped_at: shipped_at?,
        delivered_at,
    })
}

/// A completed order on its way to the database, with the key that made it:
/// the database refuses a second order for one key even if Redis forgot it.
#[derive(Debug, Clone)]
pub struct CompletedOrder {
    pub order: Order,
    pub key: String,
    /// The live-state epoch it was admitted under (see `products.epoch`).
    pub epoch: i64,
}

/// What the database did with one order of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    Committed,
    /// This order id, or another order for the same key, was already there.
    Existing(Box<Order>),
    /// `sold + qty` would pass `stock`: possible only after Redis lost data.
    SoldOut,
    /// Admitted under an epoch a rebuild has since fenced out: the admission
    /// no longer counts; admit it again under the new epoch.
    Stale,
    /// The database refused this order's values (validation should have
    /// caught them); the rest of its batch is committed without it.
    Invalid,
}

/// Where completed orders live.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Commits the orders, many per transaction, each SKU's `sold` raised once
    /// with the guard `sold + n <= stock`. One outcome per order, in order.
    async fn commit(&self, batch: &[CompletedOrder]) -> Result<Vec<Commit>, StoreError>;
    async fn order(&self, id: Uuid) -> Result<Option<Order>, StoreError>;
    /// Those of `ids` that are committed.
    async fn existing(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError>;
    /// Newest first.
    async fn user_orders(&self, user_id: &str, limit: i64) -> Result<Vec<Order>, StoreError>;
    /// Completed quantity per (sku, user) of a sale: per-user limits for a rebuild.
    async fn holdings(&self, sale_id: Uuid) -> Result<Vec<(String, String, i64)>, StoreError>;
    /// Completed orders after `after` (created_at, id), oldest first.
    async fn completed_page(
        &self,
        sale_id: Uuid,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Order>, StoreError>;
    /// Sum of `total_cents` of the sale's completed orders.
    async fn gmv(&self, sale_id: Uuid) -> Result<i64, StoreError>;
    /// Replaces a completed order's `ship_to` while it is unfulfilled;
    /// `false` if it is packed or further (or not there).
    async fn set_ship_to(&self, order_id: Uuid, ship_to: &Address) -> Result<bool, StoreError>;
    /// Moves a completed order's fulfilment from one of `from` to `to`
    /// (with its shipment when shipping, the time when delivering); `None`
    /// if it was in none of `from`. Returns the order as it is now.
    async fn move_fulfilment(
        &self,
        order_id: Uuid,
        from: &[Fulfilment],
        to: Fulfilment,
        shipment: Option<(&str, &str)>,
        at: DateTime<Utc>,
    ) -> Result<Option<Order>, StoreError>;
    /// The sale's refunded money and late shipments at `now`.
    async fn after_sales(
        &self,
        sale_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<AfterSales, StoreError>;
    /// A page of the packing list: completed orders not shipped yet, with
    /// an address (`with_address`) or without, oldest first.
    async fn to_pack_page(
        &self,
        sale_id: Uuid,
        with_address: bool,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Order>, StoreError>;
}

/// Per (sale, sku, epoch): what one transaction adds to `sold`. Sorted, so
/// every batch locks its product rows in the same order and two nodes'
/// batches over the same SKUs cannot deadlock each other.
pub(crate) type SoldIncrements<'a> = BTreeMap<(Uuid, &'a str, i64), i64>;

/// Sums the quantities of the orders actually inserted.
pub(crate) fn sold_increments<'a>(
    batch: &[&'a CompletedOrder],
    inserted: &HashSet<Uuid>,
) -> SoldIncrements<'a> {
    let mut per_sku = SoldIncrements::new();
    for c in batch.iter().filter(|c| inserted.contains(&c.order.id)) {
        *per_sku
            .entry((c.order.sale_id, c.order.sku.as_str(), c.epoch))
            .or_default() += c.order.qty;
    }
    per_sku
}

/// What a backend gives the group-commit algorithm of `commit_batch`.
#[async_trait]
pub(crate) trait GuardedInsert: Send + Sync {
    /// One transaction: inserts the orders not present yet and raises each
    /// (sale, sku, epoch)'s `sold` once, guarded by `sold + n <= stock` and the
    /// epoch. Commits and returns the ids inserted, or rolls back and returns
    /// `None` when a guard failed.
    async fn insert_guarded(
        &self,
        batch: &[&CompletedOrder],
    ) -> Result<Option<HashSet<Uuid>>, StoreError>;
    /// The order already there for this one's id or key.
    async fn existing_for(&self, c: &CompletedOrder) -> Result<Option<Order>, StoreError>;
    /// The product's current epoch.
    async fn epoch_of(&self, c: &CompletedOrder) -> Result<Option<i64>, StoreError>;
}

/// A deadlocked or serialization-failed transaction is tried this often
/// before its buyers get 503.
const CONFLICT_RETRIES: u32 = 4;

/// One guarded transaction, tried again when the database rolled it back
/// for a conflict with another transaction (another node's batch, a fence).
async fn insert_retrying(
    db: &dyn GuardedInsert,
    batch: &[&CompletedOrder],
) -> Result<Option<HashSet<Uuid>>, StoreError> {
    let mut attempt = 0;
    loop {
        match db.insert_guarded(batch).await {
            Err(StoreError::Conflict(e)) if attempt < CONFLICT_RETRIES => {
                attempt += 1;
                metrics::counter!("lychee_db_conflict_retries_total").increment(1);
                tracing::debug!(error = %e, attempt, "batch conflicted; trying again");
                tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
            }
            other => return other,
        }
    }
}

/// Group commit: the whole batch in one transaction; if a guard fails (only
/// after Redis lost data) or the database refuses one order's values, each
/// order alone, so those that fit still ship and only the bad one fails.
pub(crate) async fn commit_batch(
    db: &dyn GuardedInsert,
    batch: &[CompletedOrder],
) -> Result<Vec<Commit>, StoreError> {
    let all: Vec<&CompletedOrder> = batch.iter().collect();
    let mut out = Vec::with_capacity(batch.len());
    match insert_retrying(db, &all).await {
        Ok(Some(inserted)) => {
            for c in batch {
                out.push(if inserted.contains(&c.order.id) {
                    Commit::Committed
                } else {
                    already_there(db, c).await?
                });
            }
            return Ok(out);
        }
        Ok(None) => {}
        Err(StoreError::Refused(e)) => {
            tracing::warn!(error = %e, n = batch.len(), "a batch was refused; committing its orders one by one");
        }
        Err(e) => return Err(e),
    }
    for c in batch {
        out.push(match insert_retrying(db, &[c]).await {
            Ok(Some(inserted)) if inserted.contains(&c.order.id) => Commit::Committed,
            Ok(Some(_)) => already_there(db, c).await?,
            Ok(None) if db.epoch_of(c).await? != Some(c.epoch) => Commit::Stale,
            Ok(None) => Commit::SoldOut,
            Err(StoreError::Refused(e)) => {
                metrics::counter!("lychee_orders_refused_by_db_total").increment(1);
                tracing::warn!(error = %e, order_id = %c.order.id, "the database refused an order");
                Commit::Invalid
            }
            Err(e) => return Err(e),
        });
    }
    Ok(out)
}

async fn already_there(db: &dyn GuardedInsert, c: &CompletedOrder) -> Result<Commit, StoreError> {
    match db.existing_for(c).await? {
        Some(o) => Ok(Commit::Existing(Box::new(o))),
        // Not inserted and not found: a conflicting row vanished; impossible
        // without deletes, so say so rather than claim success.
        None => Err(StoreError::Corrupt(format!(
            "order {} neither new nor present",
            c.order.id
        ))),
    }
}
