//! After-sales claims (contract section 11): a buyer reports a spoiled,
//! damaged or missing box with photos, within the product's claim window;
//! the host settles it by a refund or rejects it.

pub mod sql;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::CatalogStore;
use crate::clock::Clock;
use crate::fulfilment::Fulfilment;
use crate::identity::Identity;
use crate::orders::{Order, OrderError, OrderStatus, Orders};
use crate::payments::{PaymentError, Payments, RefundStatus};
use crate::store::StoreError;
use crate::uploads::{UploadError, Uploads};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimKind {
    Spoiled,
    Damaged,
    ShortWeight,
    WrongItem,
    NotReceived,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimStatus {
    Open,
    /// Resolved by a refund the provider has not confirmed yet.
    Approved,
    Rejected,
    Settled,
}

/// How the host resolved a claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// `refund` or `reject`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_cents: Option<i64>,
    #[serde(default)]
    pub note: String,
    /// The zero-price order a reship sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reship_order_id: Option<Uuid>,
}

/// The contract's Claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claim {
    pub id: Uuid,
    pub order_id: Uuid,
    #[serde(skip)]
    pub sale_id: Uuid,
    #[serde(skip)]
    pub user_id: String,
    pub kind: ClaimKind,
    pub qty_affected: i64,
    pub description: String,
    /// Upload ids; served as URLs.
    #[serde(serialize_with = "photo_urls")]
    pub photos: Vec<Uuid>,
    pub status: ClaimStatus,
    pub resolution: Option<Resolution>,
    pub created_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

fn photo_urls<S: serde::Serializer>(ids: &[Uuid], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ids.iter().map(|id| Uploads::url(*id)))
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("not yours")]
    Forbidden,
    #[error("{0}")]
    InvalidState(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Order(#[from] OrderError),
    #[error(transparent)]
    Payment(#[from] PaymentError),
    #[error(transparent)]
    Upload(#[from] UploadError),
}

#[async_trait]
pub trait ClaimStore: Send + Sync + 'static {
    /// Inserts an open claim; `false` if its order has one open already.
    async fn insert_open(&self, c: &Claim) -> Result<bool, StoreError>;
    async fn claim(&self, id: Uuid) -> Result<Option<Claim>, StoreError>;
    /// Removes a claim that could not be completed (its photos refused).
    async fn remove(&self, id: Uuid) -> Result<(), StoreError>;
    async fn of_order(&self, order_id: Uuid) -> Result<Vec<Claim>, StoreError>;
    /// Newest first.
    async fn of_sale(&self, sale_id: Uuid, limit: i64) -> Result<Vec<Claim>, StoreError>;
    /// Resolves an open claim; `None` if it was not open.
    async fn resolve(
        &self,
        id: Uuid,
        status: ClaimStatus,
        resolution: &Resolution,
        at: DateTime<Utc>,
    ) -> Result<Option<Claim>, StoreError>;
    /// Open claims of a sale (the dashboard's `claims_open`).
    async fn open_count(&self, sale_id: Uuid) -> Result<i64, StoreError>;
}

/// `POST /orders/{id}/claims` as sent.
#[derive(Debug, Deserialize)]
pub struct NewClaim {
    pub kind: ClaimKind,
    pub qty_affected: i64,
    pub description: String,
    #[serde(default)]
    pub photos: Vec<Uuid>,
}

/// `POST /claims/{id}/resolve` as sent.
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Resolve {
    Refund {
        refund_cents: i64,
        #[serde(default)]
        note: Option<String>,
    },
    Reship {
        #[serde(default)]
        note: Option<String>,
    },
    Reject {
        note: String,
    },
}

const SALE_CLAIMS_LIMIT: i64 = 500;

pub struct Claims {
    store: Arc<dyn ClaimStore>,
    orders: Arc<Orders>,
    catalog: Arc<dyn CatalogStore>,
    payments: Arc<Payments>,
    uploads: Arc<Uploads>,
    clock: Arc<Clock>,
}

impl Claims {
    pub fn new(
        store: Arc<dyn ClaimStore>,
        orders: Arc<Orders>,
        catalog: Arc<dyn CatalogStore>,
        payments: Arc<Payments>,
        uploads: Arc<Uploads>,
        clock: Arc<Clock>,
    ) -> Self {
        Claims {
            store,
            orders,
            catalog,
            payments,
            uploads,
            clock,
        }
    }

    pub fn store(&self) -> &Arc<dyn ClaimStore> {
        &self.store
    }

    /// `POST /orders/{id}/claims`: its buyer, within the claim window.
    pub async fn open(
        &self,
        who: &Identity,
        order_id: Uuid,
        body: NewClaim,
    ) -> Result<Claim, ClaimError> {
        let order = match self.orders.committed(order_id).await? {
            Some(o) => o,
            None => {
                return match self.orders.current(order_id).await? {
                    Some(o) if o.user_id == who.user_id => Err(ClaimError::InvalidState(
                        "only a completed order can be claimed".into(),
                    )),
                    Some(_) => Err(ClaimError::Forbidden),
                    None => Err(ClaimError::NotFound("order")),
                }
            }
        };
        if order.user_id != who.user_id {
            return Err(ClaimError::Forbidden);
        }
        if !(1..=order.qty).contains(&body.qty_affected) {
            return Err(ClaimError::Invalid(format!(
                "qty_affected must be 1..={}",
                order.qty
            )));
        }
        let description = body.description.trim();
        if description.is_empty()
            || description.chars().count() > 1000
            || crate::text::check_multiline(description).is_err()
        {
            return Err(ClaimError::Invalid(
                "description must be 1..=1000 characters, without control characters".into(),
            ));
        }
        if body.photos.len() > crate::uploads::MAX_PER_CLAIM {
            return Err(ClaimError::Invalid("at most 3 photos".into()));
        }
        // The window runs from delivery, or from shipping when delivery
        // was never recorded; before shipping there is nothing to claim.
        let since = match (&order.shipment, order.fulfilment) {
            (Some(s), _) => s.delivered_at.unwrap_or(s.shipped_at),
            (None, Fulfilment::Lost) => order.completed_at.unwrap_or(order.created_at),
            (None, _) => {
                return Err(ClaimError::InvalidState(
                    "a claim can be made once the order has shipped".into(),
                ))
            }
        };
        let hours = self
            .catalog
            .product(order.sale_id, &order.sku)
            .await?
            .map(|p| p.claim_window_hours)
            .unwrap_or(crate::catalog::DEFAULT_CLAIM_WINDOW_HOURS);
        let now = self.clock.now();
        if now > since + TimeDelta::hours(hours.into()) {
            return Err(ClaimError::InvalidState(format!(
                "claims on this product are taken within {hours} h of delivery"
            )));
        }
        let claim = Claim {
            id: Uuid::now_v7(),
            order_id,
            sale_id: order.sale_id,
            user_id: order.user_id.clone(),
            kind: body.kind,
            qty_affected: body.qty_affected,
            description: description.to_owned(),
            photos: body.photos.clone(),
            status: ClaimStatus::Open,
            resolution: None,
            created_at: now,
            resolved_at: None,
        };
        if !self.store.insert_open(&claim).await? {
            return Err(ClaimError::InvalidState(
                "this order has an open claim already".into(),
            ));
        }
        if let Err(e) = self
            .uploads
            .attach(&who.user_id, &body.photos, claim.id, order.sale_id)
            .await
        {
            self.store.remove(claim.id).await?;
            return Err(e.into());
        }
        metrics::counter!("lychee_claims_opened_total").increment(1);
        self.announce(order_id).await;
        Ok(claim)
    }

    /// `POST /claims/{id}/resolve`: the sale's host, an operator.
    pub async fn resolve(
        &self,
        who: &Identity,
        id: Uuid,
        how: Resolve,
    ) -> Result<Claim, ClaimError> {
        let claim = self
            .store
            .claim(id)
            .await?
            .ok_or(ClaimError::NotFound("claim"))?;
        if !self.orders.may_manage(who, claim.sale_id).await? {
            return Err(ClaimError::NotFound("claim"));
        }
        if claim.status != ClaimStatus::Open {
            return Err(ClaimError::InvalidState(
                "the claim is resolved already".into(),
            ));
        }
        let note = |n: Option<String>| -> Result<String, ClaimError> {
            let n = n.unwrap_or_default();
            let n = n.trim();
            if n.chars().count() > 500 || crate::text::check_multiline(n).is_err() {
                return Err(ClaimError::Invalid(
                    "note must be at most 500 characters, without control characters".into(),
                ));
            }
            Ok(n.to_owned())
        };
        let (status, resolution) = match how {
            Resolve::Refund {
                refund_cents,
                note: n,
            } => {
                let note = note(n)?;
                // One refund per claim: a retried resolve finds the same one.
                let refund = self
                    .payments
                    .refund(
                        who,
                        claim.order_id,
                        &format!("claim:{}", claim.id.simple()),
                        refund_cents,
                        &format!("claim: {}", kind_name(claim.kind)),
                    )
                    .await?;
                let status = match refund.status {
                    RefundStatus::Succeeded => ClaimStatus::Settled,
                    RefundStatus::Pending => ClaimStatus::Approved,
                    RefundStatus::Failed => {
                        return Err(ClaimError::InvalidState(
                            "the provider refused the refund; try again or refund by hand".into(),
                        ))
                    }
                };
                (
                    status,
                    Resolution {
                        action: "refund".into(),
                        refund_cents: Some(refund_cents),
                        note,
                        reship_order_id: None,
                    },
                )
            }
            Resolve::Reject { note: n } => {
                let note = note(Some(n))?;
                if note.is_empty() {
                    return Err(ClaimError::Invalid(
                        "a rejection says why: note is 1..=500 characters".into(),
                    ));
                }
                (
                    ClaimStatus::Rejected,
                    Resolution {
                        action: "reject".into(),
                        refund_cents: None,
                        note,
                        reship_order_id: None,
                    },
                )
            }
            Resolve::Reship { note: n } => {
                let note = note(n)?;
                let original = self
                    .orders
                    .committed(claim.order_id)
                    .await?
                    .ok_or(ClaimError::NotFound("order"))?;
                let shipped = self
                    .orders
                    .reship(
                        &original,
                        claim.qty_affected,
                        &format!("reship:{}", claim.id.simple()),
                        format!("reship for claim {}", claim.id),
                    )
                    .await?;
                (
                    ClaimStatus::Settled,
                    Resolution {
                        action: "reship".into(),
                        refund_cents: None,
                        note,
                        reship_order_id: Some(shipped.id),
                    },
                )
            }
        };
        let done = self
            .store
            .resolve(id, status, &resolution, self.clock.now())
            .await?
            .ok_or_else(|| ClaimError::InvalidState("the claim is resolved already".into()))?;
        self.announce(claim.order_id).await;
        Ok(done)
    }

    /// `GET /sales/{id}/claims`: its host, an operator; newest first.
    pub async fn of_sale(&self, who: &Identity, sale_id: Uuid) -> Result<Vec<Claim>, ClaimError> {
        if !self.orders.may_manage(who, sale_id).await? {
            return Err(ClaimError::Forbidden);
        }
        Ok(self.store.of_sale(sale_id, SALE_CLAIMS_LIMIT).await?)
    }

    /// The order with its claims, as the contract shows an Order. Only a
    /// completed order can have any.
    pub async fn with_claims(&self, mut order: Order) -> Result<Order, ClaimError> {
        if order.status == OrderStatus::Completed {
            order.claims = self
                .store
                .of_order(order.id)
                .await?
                .iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect();
        }
        Ok(order)
    }

    /// The buyer hears of its order's claims as `order` events.
    async fn announce(&self, order_id: Uuid) {
        if let Ok(Some(order)) = self.orders.committed(order_id).await {
            if let Ok(order) = self.with_claims(order).await {
                self.orders.announce(&order);
            }
        }
    }
}

fn kind_name(k: ClaimKind) -> &'static str {
    match k {
        ClaimKind::Spoiled => "spoiled",
        ClaimKind::Damaged => "damaged",
        ClaimKind::ShortWeight => "short weight",
        ClaimKind::WrongItem => "wrong item",
        ClaimKind::NotReceived => "not received",
    }
}

pub(crate) fn kind_text(k: ClaimKind) -> &'static str {
    match k {
        ClaimKind::Spoiled => "spoiled",
        ClaimKind::Damaged => "damaged",
        ClaimKind::ShortWeight => "short_weight",
        ClaimKind::WrongItem => "wrong_item",
        ClaimKind::NotReceived => "not_received",
    }
}

pub(crate) fn status_text(s: ClaimStatus) -> &'static str {
    match s {
        ClaimStatus::Open => "open",
        ClaimStatus::Approved => "approved",
        ClaimStatus::Rejected => "rejected",
        ClaimStatus::Settled => "settled",
    }
}

pub(crate) fn parse_kind(s: &str) -> Result<ClaimKind, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| StoreError::Corrupt(format!("claim kind {s:?}")))
}

pub(crate) fn parse_status(s: &str) -> Result<ClaimStatus, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| StoreError::Corrupt(format!("claim status {s:?}")))
}
