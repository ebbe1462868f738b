//! The buy path: Redis admits, PostgreSQL decides. The rest of the order
//! service is beside it: `payment` (pay, confirm, cancel, expiry), `reads`,
//! `delivery` (addresses, reships) and `events` (the sold-out fast path's feed).

mod delivery;
mod events;
mod payment;
mod reads;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use uuid::Uuid;

use super::batch::{BatchWriter, WriteError};
use super::confirm::Confirmer;
use super::rebuild::{RebuildError, Rebuilder};
use super::{Commit, CompletedOrder, Order, OrderPayment, OrderStatus, OrderStore};
use crate::catalog::service::CatalogError;
use crate::catalog::{validate, Catalog, Checkout};
use crate::clock::Clock;
use crate::dashboard::{BuyOutcome, Stats};
use crate::fulfilment::address::{Address, AddressStore};
use crate::fulfilment::Fulfilment;
use crate::hub::{EventBus, SaleEvent, StockPublisher};
use crate::identity::{Identity, Role};
use crate::inventory::sold_out::SoldOut;
use crate::inventory::{
    Admission, AdmitRequest, Confirmation, Inventory, InventoryError, LiveOrder, PayStart,
    Rejection, ReleaseFrom, Released, ShipToSet, StockLevel, Stored,
};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("not your order")]
    Forbidden,
    #[error(
        "only the sale's host or an operator confirms a payment by hand; pay through a provider"
    )]
    HostConfirms,
    #[error("refused")]
    Rejected(Rejection),
    #[error("this Idempotency-Key was used with another body")]
    IdempotencyMismatch,
    #[error("the reservation has expired")]
    ReservationExpired,
    #[error("{0}")]
    InvalidState(&'static str),
    #[error("this product does not ship to that address's province")]
    Undeliverable,
    #[error("attach an address to the order first (PUT /orders/{{id}}/address)")]
    AddressRequired,
    #[error("{0}")]
    Unavailable(&'static str),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Rebuild(#[from] RebuildError),
}

impl OrderError {
    /// The contract's code of this error: what the API answers
    /// (`http::error` is tested to agree) and what metrics and the
    /// dashboard count.
    pub fn code(&self) -> &'static str {
        match self {
            OrderError::Invalid(_) => "bad_request",
            OrderError::NotFound(_) => "not_found",
            OrderError::Forbidden | OrderError::HostConfirms => "forbidden",
            OrderError::Rejected(r) => r.code(),
            OrderError::IdempotencyMismatch => "idempotency_mismatch",
            OrderError::ReservationExpired => "reservation_expired",
            OrderError::InvalidState(_) => "invalid_state",
            OrderError::Undeliverable => "undeliverable",
            OrderError::AddressRequired => "address_required",
            OrderError::Unavailable(_) => "unavailable",
            OrderError::Store(e) => e.code(),
            OrderError::Inventory(e) => e.code(),
            OrderError::Rebuild(e) => e.code(),
            OrderError::Catalog(e) => e.code(),
        }
    }
}

impl From<WriteError> for OrderError {
    fn from(_: WriteError) -> Self {
        OrderError::Unavailable("orders cannot be recorded right now; try again")
    }
}

/// A buy attempt as parsed from REST or WebSocket.
#[derive(Debug, Clone)]
pub struct BuyRequest {
    pub sale_id: Uuid,
    pub key: String,
    pub sku: String,
    pub qty: i64,
    /// The address to ship to; `None`: the buyer's default, if any.
    pub address_id: Option<Uuid>,
}

/// No per-user limit exceeds this, so a larger quantity is a malformed request.
pub const MAX_QTY: i64 = 1000;
/// How long the reaper leaves an instant order or a payment in commit alone.
const COMMIT_LEASE_MS: i64 = 30_000;
/// An instant admission older than this without its answer was abandoned by
/// its node (a commit takes milliseconds; requests time out within seconds).
const ABANDONED_AFTER_MS: i64 = 4_000;
/// How long a replay waits for the first attempt's answer.
const PENDING_WAIT: Duration = Duration::from_secs(5);
const MY_ORDERS_LIMIT: i64 = 100;
/// The answer to an order the database refused although it passed validation.
const REFUSED_BY_DB: &str = "the order could not be recorded: a value was refused";
/// Admissions of one buy fenced out by rebuilds before giving up with 503.
const STALE_RETRIES: usize = 3;

/// What a payment did to its reserved order.
#[derive(Debug, Clone, PartialEq)]
pub enum Paid {
    /// Completed by this payment, committed now.
    Completed(Order),
    /// Already completed (this payment seen before, or another one).
    AlreadyCompleted(Order),
    /// Expired or cancelled first (or the stock was gone): not resurrected.
    Gone(OrderStatus),
    /// Another node is recording a payment of it right now.
    Busy,
}

pub struct Orders {
    inventory: Arc<dyn Inventory>,
    /// The buyers' address books: a buy ships to one of them.
    addresses: Arc<dyn AddressStore>,
    store: Arc<dyn OrderStore>,
    catalog: Arc<Catalog>,
    writer: BatchWriter,
    confirmer: Confirmer,
    rebuild: Arc<Rebuilder>,
    bus: Arc<dyn EventBus>,
    stock: Arc<StockPublisher>,
    stats: Arc<Stats>,
    clock: Arc<Clock>,
    /// Shared with the catalog, which clears a flag before answering a restock.
    sold_out: Arc<SoldOut>,
}

/// What a key's request was: the same key with another body is refused.
/// Without an explicit address the format is the one before addresses, so
/// keys stored by an older node still replay.
fn fingerprint(sku: &str, qty: i64, address_id: Option<Uuid>) -> String {
    match address_id {
        None => format!("{sku}:{qty}"),
        Some(a) => format!("{sku}:{qty}:{}", a.simple()),
    }
}

fn to_json(order: &Order) -> Result<String, OrderError> {
    serde_json::to_string(order).map_err(|_| OrderError::Unavailable("order not serializable"))
}

/// The first answer to a buy: the order's JSON as sent, or a refusal.
pub type BuyAnswer = Result<String, OrderError>;

impl Orders {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inventory: Arc<dyn Inventory>,
        addresses: Arc<dyn AddressStore>,
        store: Arc<dyn OrderStore>,
        catalog: Arc<Catalog>,
        writer: BatchWriter,
        confirmer: Confirmer,
        rebuild: Arc<Rebuilder>,
        bus: Arc<dyn EventBus>,
        stock: Arc<StockPublisher>,
        stats: Arc<Stats>,
        clock: Arc<Clock>,
        sold_out: Arc<SoldOut>,
    ) -> Self {
        Orders {
            inventory,
            addresses,
            store,
            catalog,
            writer,
            confirmer,
            rebuild,
            bus,
            stock,
            stats,
            clock,
            sold_out,
        }
    }

    pub fn store(&self) -> &Arc<dyn OrderStore> {
        &self.store
    }

    /// Validates a buy's inputs; the same rules for REST and WebSocket.
    pub fn check_request(key: &str, sku: &str, qty: i64) -> Result<(), OrderError> {
        // A WebSocket `ref` takes the header's rule: it is the same key space,
        // and a NUL in it once failed a whole batch of other buyers' orders.
        if key.is_empty() || key.len() > 128 || crate::text::check_ascii_ref(key).is_err() {
            return Err(OrderError::Invalid(
                "Idempotency-Key (or ref) must be 1..=128 printable ASCII characters".into(),
            ));
        }
        validate::sku(sku).map_err(|e| OrderError::Invalid(e.0))?;
        if !(1..=MAX_QTY).contains(&qty) {
            return Err(OrderError::Invalid(format!("qty must be 1..={MAX_QTY}")));
        }
        Ok(())
    }

    /// Buys as `who`. `Ok` carries the order JSON to send with 201.
    #[tracing::instrument(level = "debug", skip_all, fields(sale_id = %req.sale_id, user = %who.user_id))]
    pub async fn buy(&self, who: &Identity, req: BuyRequest) -> BuyAnswer {
        let started = Instant::now();
        let sale_id = req.sale_id;
        let answer = self.buy_once(who, req).await;
        let outcome = match &answer {
            Ok(_) => BuyOutcome::Created,
            Err(e) => BuyOutcome::Refused(e.code()),
        };
        self.stats.buy(sale_id, outcome, started.elapsed());
        answer
    }

    async fn buy_once(&self, who: &Identity, req: BuyRequest) -> BuyAnswer {
        Self::check_request(&req.key, &req.sku, req.qty)?;
        // A rebuild can fence out an instant order between admission and
        // commit; it is then admitted again under the new state.
        for _ in 0..STALE_RETRIES {
            if let Some(answer) = self.attempt(who, &req).await? {
                return Ok(answer);
            }
        }
        Err(OrderError::Unavailable(
            "the sale is being rebuilt; try again",
        ))
    }

    /// One admission (and commit); `None` when the commit was fenced out.
    async fn attempt(
        &self,
        who: &Identity,
        req: &BuyRequest,
    ) -> Result<Option<String>, OrderError> {
        let facts = self
            .catalog
            .facts(req.sale_id, Some(&req.sku))
            .await?
            .ok_or(OrderError::NotFound("sale"))?;
        let product = facts
            .products
            .get(&req.sku)
            .ok_or(OrderError::NotFound("product"))?;
        if self.sold_out.answers(req.sale_id, &req.sku, &who.user_id) {
            metrics::counter!("lychee_sold_out_fast_path_total").increment(1);
            return Err(OrderError::Rejected(Rejection::SoldOut));
        }
        let ship_to = self.ship_to(&who.user_id, req.address_id).await?;
        if let (Some(area), Some(address)) = (&product.ships_to, &ship_to) {
            if !area.allows(&address.province) {
                // A replay of a key answered before still gets that answer.
                if let Some((fp, stored)) = self
                    .inventory
                    .stored_answer(req.sale_id, &who.user_id, &req.key)
                    .await?
                {
                    if fp != fingerprint(&req.sku, req.qty, req.address_id) {
                        return Err(OrderError::IdempotencyMismatch);
                    }
                    return self.replay(who, req, stored).await.map(Some);
                }
                return Err(OrderError::Undeliverable);
            }
        }
        let now = self.clock.now();
        let instant = facts.checkout == Checkout::Instant;
        let expires_at =
            (!instant).then(|| now + TimeDelta::seconds(facts.reservation_ttl_secs.into()));
        let order = Order {
            id: Uuid::now_v7(),
            sale_id: req.sale_id,
            sku: req.sku.clone(),
            qty: req.qty,
            unit_price_cents: product.price_cents,
            total_cents: product.price_cents * req.qty,
            currency: product.currency.clone(),
            user_id: who.user_id.clone(),
            status: OrderStatus::Reserved,
            created_at: now,
            expires_at,
            completed_at: None,
            payment_ref: None,
            payment: None,
            ship_to,
            fulfilment: Fulfilment::Unfulfilled,
            shipment: None,
            claims: Vec::new(),
        };
        let fp = fingerprint(&req.sku, req.qty, req.address_id);
        let admit = AdmitRequest {
            remedy: false,
            sale_id: req.sale_id,
            user_id: who.user_id.clone(),
            key: req.key.clone(),
            fingerprint: fp.clone(),
            final_answer: if instant {
                None
            } else {
                Some(to_json(&order)?)
            },
            deadline_ms: match expires_at {
                Some(e) => e.timestamp_millis(),
                None => now.timestamp_millis() + COMMIT_LEASE_MS,
            },
            order,
        };
        let mut admission = self.inventory.admit(&admit).await?;
        if let Admission::Missing { epoch } = admission {
            self.rebuild.repair(req.sale_id, epoch).await?;
            admission = self.inventory.admit(&admit).await?;
        }
        match admission {
            Admission::Admitted { level, epoch } => {
                self.stock_changed(req.sale_id, level).await;
                if instant {
                    self.complete_instant(admit, epoch).await
                } else {
                    self.inventory.index_order(&admit.order).await?;
                    admit
                        .final_answer
                        .map(Some)
                        .ok_or(OrderError::Unavailable("reservation without an answer"))
                }
            }
            Admission::Rejected(r) => {
                if r == Rejection::SoldOut {
                    self.learn_sold_out(req.sale_id, &req.sku).await;
                }
                Err(OrderError::Rejected(r))
            }
            Admission::Replay(stored) => self.replay(who, req, stored).await.map(Some),
            Admission::Mismatch => Err(OrderError::IdempotencyMismatch),
            Admission::Missing { .. } => Err(OrderError::Unavailable("the sale is being rebuilt")),
        }
    }

    /// Instant checkout: the reply waits for PostgreSQL. `None`: fenced out.
    async fn complete_instant(
        &self,
        admit: AdmitRequest,
        epoch: i64,
    ) -> Result<Option<String>, OrderError> {
        let mut order = admit.order;
        let sale_id = order.sale_id;
        order.status = OrderStatus::Completed;
        order.completed_at = Some(order.created_at);
        // Cash on delivery, unless the caller said otherwise (a reship).
        if order.payment.is_none() {
            order.payment = Some(OrderPayment::cod(order.total_cents));
        }
        let committed = self
            .writer
            .commit(CompletedOrder {
                order: order.clone(),
                key: admit.key.clone(),
                epoch,
            })
            .await;
        let answer = match committed {
            Ok(Commit::Stale) => {
                self.give_back(sale_id, order.id, OrderStatus::Expired)
                    .await;
                return Ok(None);
            }
            Ok(Commit::Committed) => {
                self.stats.order(sale_id);
                // Confirmed with the rest of its batch, the key's final
                // answer recorded in the same call.
                let json = to_json(&order)?;
                let confirmed = self
                    .confirmer
                    .confirm(
                        sale_id,
                        &order.sku,
                        Confirmation {
                            order_id: order.id,
                            user_id: order.user_id.clone(),
                            key: admit.key.clone(),
                            completed_at_ms: order.created_at.timestamp_millis(),
                            fingerprint: admit.fingerprint.clone(),
                            answer: Stored::Order(json.clone()),
                        },
                    )
                    .await;
                match confirmed {
                    Ok(Some(level)) => self.stock_changed(sale_id, level).await,
                    Ok(None) => {}
                    // Committed: the reaper confirms it after asking PostgreSQL,
                    // and a replay finds the order there.
                    Err(e) => tracing::warn!(error = %e, order_id = %order.id, "confirm deferred"),
                }
                return Ok(Some(json));
            }
            Ok(Commit::Existing(existing)) => {
                // Redis forgot the key but PostgreSQL did not: the first order stands.
                self.give_back(sale_id, order.id, OrderStatus::Cancelled)
                    .await;
                Stored::Order(to_json(&existing)?)
            }
            Ok(Commit::SoldOut) => {
                self.refused(sale_id, order.id).await;
                Stored::Rejected(Rejection::SoldOut)
            }
            Ok(Commit::Invalid) => {
                self.give_back(sale_id, order.id, OrderStatus::Expired)
                    .await;
                return Err(OrderError::Invalid(REFUSED_BY_DB.into()));
            }
            Err(e) => {
                // Not recorded: the stock goes back and the key is forgotten,
                // so the buyer's retry is a fresh attempt.
                self.give_back(sale_id, order.id, OrderStatus::Expired)
                    .await;
                return Err(e.into());
            }
        };
        if let Err(e) = self
            .inventory
            .store_answer(
                sale_id,
                &order.user_id,
                &admit.key,
                &admit.fingerprint,
                &answer,
            )
            .await
        {
            tracing::warn!(error = %e, "final answer not stored");
        }
        match answer {
            Stored::Order(json) => Ok(Some(json)),
            Stored::Rejected(r) => Err(OrderError::Rejected(r)),
            Stored::Pending(_) => Err(OrderError::Unavailable("order in progress")),
        }
    }

    async fn give_back(&self, sale_id: Uuid, order_id: Uuid, to: OrderStatus) {
        self.release_held(sale_id, order_id, to, ReleaseFrom::AnyHolding)
            .await;
    }

    /// PostgreSQL said sold out: the counters were optimistic, correct them.
    async fn refused(&self, sale_id: Uuid, order_id: Uuid) {
        tracing::warn!(%sale_id, %order_id, "database refused an admitted order; correcting live stock");
        self.release_held(
            sale_id,
            order_id,
            OrderStatus::Cancelled,
            ReleaseFrom::Refused,
        )
        .await;
    }

    async fn release_held(
        &self,
        sale_id: Uuid,
        order_id: Uuid,
        to: OrderStatus,
        from: ReleaseFrom,
    ) {
        match self.inventory.release(sale_id, order_id, to, from).await {
            Ok(Released::Done(level)) => self.stock_changed(sale_id, level).await,
            Ok(_) => {}
            // The reaper returns it when the lease ends, after checking PostgreSQL.
            Err(e) => tracing::warn!(error = %e, %order_id, "stock not returned now"),
        }
    }

    async fn replay(&self, who: &Identity, req: &BuyRequest, stored: Stored) -> BuyAnswer {
        let deadline = Instant::now() + PENDING_WAIT;
        let mut stored = stored;
        loop {
            match stored {
                Stored::Order(json) => return Ok(json),
                Stored::Rejected(r) => return Err(OrderError::Rejected(r)),
                Stored::Pending(order_id) => {
                    if let Some(order) = self.store.order(order_id).await? {
                        return to_json(&order);
                    }
                    if self.abandoned(req.sale_id, order_id).await? {
                        // Its node gave up (an outage) without giving the stock
                        // back: do it now rather than wait for the reaper, and
                        // try afresh. Safe even if that node still commits:
                        // PostgreSQL keeps one order per key.
                        self.give_back(req.sale_id, order_id, OrderStatus::Expired)
                            .await;
                        return Box::pin(self.buy_once(who, req.clone())).await;
                    }
                    if Instant::now() >= deadline {
                        return Err(OrderError::Unavailable(
                            "the first attempt with this key is still in progress",
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    match self
                        .inventory
                        .stored_answer(req.sale_id, &who.user_id, &req.key)
                        .await?
                    {
                        Some((_, s)) => stored = s,
                        // Released meanwhile: the first attempt failed; try afresh.
                        None => return Box::pin(self.buy_once(who, req.clone())).await,
                    }
                }
            }
        }
    }

    /// An instant admission still pending long after any healthy commit.
    async fn abandoned(&self, sale_id: Uuid, order_id: Uuid) -> Result<bool, OrderError> {
        let Some(live) = self.inventory.order(sale_id, order_id).await? else {
            return Ok(false);
        };
        let age = self.clock.now() - live.order.created_at;
        Ok(live.order.status == OrderStatus::Reserved
            && live.order.expires_at.is_none()
            && age > TimeDelta::milliseconds(ABANDONED_AFTER_MS))
    }

    pub fn inventory(&self) -> &Arc<dyn Inventory> {
        &self.inventory
    }

    pub fn clock(&self) -> &Arc<Clock> {
        &self.clock
    }
}
