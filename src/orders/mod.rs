//! Orders: buying, paying, cancelling, expiry, and the record of completed
//! orders in PostgreSQL (or SQLite), written in batches.

pub mod batch;
pub mod export;
pub mod postgres;
pub mod reaper;
pub mod rebuild;
pub mod service;
pub mod sqlite;

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::StoreError;

pub use service::{OrderError, Orders};

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
    Existing(Order),
    /// `sold + qty` would pass `stock`: possible only after Redis lost data.
    SoldOut,
    /// Admitted under an epoch a rebuild has since fenced out: the admission
    /// no longer counts; admit it again under the new epoch.
    Stale,
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
}

/// Per (sale, sku, epoch): what one transaction adds to `sold`.
pub(crate) type SoldIncrements<'a> = HashMap<(Uuid, &'a str, i64), i64>;

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

/// Group commit: the whole batch in one transaction; if a guard fails (only
/// after Redis lost data), each order alone, so those that fit still ship.
pub(crate) async fn commit_batch(
    db: &dyn GuardedInsert,
    batch: &[CompletedOrder],
) -> Result<Vec<Commit>, StoreError> {
    let all: Vec<&CompletedOrder> = batch.iter().collect();
    let mut out = Vec::with_capacity(batch.len());
    if let Some(inserted) = db.insert_guarded(&all).await? {
        for c in batch {
            out.push(if inserted.contains(&c.order.id) {
                Commit::Committed
            } else {
                already_there(db, c).await?
            });
        }
        return Ok(out);
    }
    for c in batch {
        out.push(match db.insert_guarded(&[c]).await? {
            Some(inserted) if inserted.contains(&c.order.id) => Commit::Committed,
            Some(_) => already_there(db, c).await?,
            None if db.epoch_of(c).await? != Some(c.epoch) => Commit::Stale,
            None => Commit::SoldOut,
        });
    }
    Ok(out)
}

async fn already_there(db: &dyn GuardedInsert, c: &CompletedOrder) -> Result<Commit, StoreError> {
    match db.existing_for(c).await? {
        Some(o) => Ok(Commit::Existing(o)),
        // Not inserted and not found: a conflicting row vanished; impossible
        // without deletes, so say so rather than claim success.
        None => Err(StoreError::Corrupt(format!(
            "order {} neither new nor present",
            c.order.id
        ))),
    }
}
