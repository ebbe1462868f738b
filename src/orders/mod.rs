//! Orders: buying, paying, cancelling, expiry, and the record of completed
//! orders in PostgreSQL (or SQLite), written in batches.

pub mod batch;
pub mod export;
pub mod postgres;
pub mod reaper;
pub mod rebuild;
pub mod service;
pub mod sqlite;

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
