//! Sales and products: what is offered, by whom, and in which state.
//! PostgreSQL (or SQLite) is their home; live counters come from `inventory`.

pub mod lists;
pub mod service;
pub mod sql;
pub mod validate;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::StoreError;

pub use service::Catalog;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaleStatus {
    Scheduled,
    Live,
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Checkout {
    Reserve,
    Instant,
}

/// What the host set; `sold_out` is never stored, it is derived from the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductStatus {
    Scheduled,
    OnSale,
    SoldOut,
    Closed,
}

macro_rules! str_enum {
    ($ty:ident { $($var:ident => $s:literal),* $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$var => $s),* }
            }
        }
        impl std::str::FromStr for $ty {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($s => Ok($ty::$var),)*
                    other => Err(StoreError::Corrupt(format!("{} {other:?}", stringify!($ty)))),
                }
            }
        }
    };
}
str_enum!(SaleStatus { Scheduled => "scheduled", Live => "live", Ended => "ended" });
str_enum!(Checkout { Reserve => "reserve", Instant => "instant" });
str_enum!(ProductStatus { Scheduled => "scheduled", OnSale => "on_sale", SoldOut => "sold_out", Closed => "closed" });

/// A sale as stored, without products.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SaleRecord {
    pub id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub host_id: String,
    pub status: SaleStatus,
    pub checkout: Checkout,
    pub reservation_ttl_secs: i32,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub pinned_sku: Option<String>,
    pub stream_url: Option<String>,
}

/// A product as stored: `sold` is PostgreSQL's committed count, the final word.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProductRecord {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub currency: String,
    pub stock: i64,
    pub per_user_limit: i32,
    pub ships_by: Option<NaiveDate>,
    pub status: ProductStatus,
    pub sold: i64,
    pub ships_to: Option<ShipsTo>,
    pub claim_window_hours: i32,
}

/// Where a product ships (contract section 10): province codes included
/// and excluded; absent, everywhere. Lychee keeps about two days, so a box
/// the courier cannot bring in time is not sold at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipsTo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
}

impl ShipsTo {
    /// Whether an address in `province` can be shipped to.
    pub fn allows(&self, province: &str) -> bool {
        let included = self
            .include
            .as_ref()
            .is_none_or(|list| list.iter().any(|c| c == province));
        let excluded = self
            .exclude
            .as_ref()
            .is_some_and(|list| list.iter().any(|c| c == province));
        included && !excluded
    }
}

/// `ships_to` as the products table keeps it (JSON text; NULL: everywhere).
pub(crate) fn ships_to_text(s: Option<&ShipsTo>) -> Result<Option<String>, StoreError> {
    s.map(|s| serde_json::to_string(s).map_err(|e| StoreError::Corrupt(format!("ships_to: {e}"))))
        .transpose()
}

pub(crate) fn ships_to_from_text(s: Option<String>) -> Result<Option<ShipsTo>, StoreError> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("ships_to: {e}"))))
        .transpose()
}

/// Claims on a product are taken this long after delivery (or shipping).
pub const DEFAULT_CLAIM_WINDOW_HOURS: i32 = 48;

/// The contract's Sale.
#[derive(Debug, Clone, Serialize)]
pub struct Sale {
    #[serde(flatten)]
    pub record: SaleRecord,
    pub products: Vec<Product>,
}

/// The contract's Product, with live counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub currency: String,
    pub stock: i64,
    pub per_user_limit: i32,
    pub ships_by: Option<NaiveDate>,
    pub status: ProductStatus,
    pub remaining: i64,
    pub reserved: i64,
    pub sold: i64,
    #[serde(default)]
    pub ships_to: Option<ShipsTo>,
    #[serde(default = "default_claim_window")]
    pub claim_window_hours: i32,
}

fn default_claim_window() -> i32 {
    DEFAULT_CLAIM_WINDOW_HOURS
}

/// Validated input of `POST /sales`.
#[derive(Debug, Clone)]
pub struct NewSale {
    pub title: String,
    pub description: Option<String>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub checkout: Checkout,
    pub reservation_ttl_secs: i32,
    pub stream_url: Option<String>,
}

/// Validated input of `POST /sales/{id}/products`.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub currency: String,
    pub stock: i64,
    pub per_user_limit: i32,
    pub ships_by: Option<NaiveDate>,
    pub ships_to: Option<ShipsTo>,
    pub claim_window_hours: i32,
}

/// Transition a sale's status only from an allowed one; `None` when it was not.
#[derive(Debug, Clone, Copy)]
pub struct Transition {
    pub from: SaleStatus,
    pub to: SaleStatus,
}

/// Where sales and products live.
#[async_trait]
pub trait CatalogStore: Send + Sync + 'static {
    async fn insert_sale(&self, sale: &SaleRecord) -> Result<(), StoreError>;
    async fn sale(&self, id: Uuid) -> Result<Option<SaleRecord>, StoreError>;
    /// Newest first, at most `limit`.
    async fn sales(
        &self,
        status: Option<SaleStatus>,
        limit: i64,
    ) -> Result<Vec<SaleRecord>, StoreError>;
    /// Moves the status if it is `from`; sets `started_at`/`ended_at`. Ending
    /// closes every product in the same transaction.
    async fn transition(
        &self,
        id: Uuid,
        t: Transition,
        at: DateTime<Utc>,
    ) -> Result<Option<SaleRecord>, StoreError>;
    async fn set_pinned(&self, id: Uuid, sku: &str) -> Result<(), StoreError>;
    /// `StoreError::Duplicate` when the SKU exists in the sale. `epoch` is the
    /// sale's live-state epoch the product starts in.
    async fn insert_product(
        &self,
        sale_id: Uuid,
        p: &NewProduct,
        epoch: i64,
    ) -> Result<(), StoreError>;
    /// Raises every product of the sale to `epoch` and returns them as of that
    /// moment: waits for commits in progress, and fences out any order admitted
    /// under an older epoch that has not committed yet.
    async fn fence(&self, sale_id: Uuid, epoch: i64) -> Result<Vec<ProductRecord>, StoreError>;
    /// In creation order.
    async fn products(&self, sale_id: Uuid) -> Result<Vec<ProductRecord>, StoreError>;
    async fn product(&self, sale_id: Uuid, sku: &str) -> Result<Option<ProductRecord>, StoreError>;
    async fn set_product_status(
        &self,
        sale_id: Uuid,
        sku: &str,
        status: ProductStatus,
    ) -> Result<(), StoreError>;
    /// Adds to `stock`, returns the new total.
    async fn restock(&self, sale_id: Uuid, sku: &str, add: i64) -> Result<i64, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}
