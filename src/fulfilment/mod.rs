//! Fulfilment: where an order ships (the buyer's address book, a product's
//! delivery areas) and how it gets there (packing, shipments, delivery).

pub mod address;
pub mod packing;
pub mod service;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// Where a completed order's box is (contract section 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fulfilment {
    #[default]
    Unfulfilled,
    Packed,
    Shipped,
    Delivered,
    Returned,
    Lost,
}

impl Fulfilment {
    pub fn as_str(self) -> &'static str {
        match self {
            Fulfilment::Unfulfilled => "unfulfilled",
            Fulfilment::Packed => "packed",
            Fulfilment::Shipped => "shipped",
            Fulfilment::Delivered => "delivered",
            Fulfilment::Returned => "returned",
            Fulfilment::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "unfulfilled" => Fulfilment::Unfulfilled,
            "packed" => Fulfilment::Packed,
            "shipped" => Fulfilment::Shipped,
            "delivered" => Fulfilment::Delivered,
            "returned" => Fulfilment::Returned,
            "lost" => Fulfilment::Lost,
            other => return Err(StoreError::Corrupt(format!("fulfilment {other:?}"))),
        })
    }

    /// The states an order may move to `self` from. Shipping is the only
    /// way to `shipped` (it needs a waybill); a box comes back or is lost
    /// only once it left.
    pub fn reachable_from(self) -> &'static [Fulfilment] {
        use Fulfilment::*;
        match self {
            Unfulfilled => &[],
            Packed => &[Unfulfilled],
            Shipped => &[Unfulfilled, Packed],
            Delivered => &[Shipped],
            Returned => &[Shipped, Delivered],
            Lost => &[Shipped],
        }
    }

    /// Not shipped yet: on the packing list, and its address may change.
    pub fn unshipped(self) -> bool {
        matches!(self, Fulfilment::Unfulfilled | Fulfilment::Packed)
    }
}

/// The contract's `shipment` of an Order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    pub courier: String,
    pub waybill: String,
    pub shipped_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}
