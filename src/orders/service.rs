//! The buy path: Redis admits, PostgreSQL decides. Also pay, cancel and reads.

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
    /// The contract's code of this error, for metrics and the dashboard.
    pub fn code(&self) -> &'static str {
        match self {
            OrderError::Invalid(_) => "bad_request",
            OrderError::NotFound(_) => "not_found",
            OrderError::Forbidden | OrderError::HostConfirms => "forbidden",
            OrderError::Rejected(Rejection::SaleNotLive) => "sale_not_live",
            OrderError::Rejected(Rejection::NotOnSale) => "not_on_sale",
            OrderError::Rejected(Rejection::SoldOut) => "sold_out",
            OrderError::Rejected(Rejection::LimitExceeded { .. }) => "limit_exceeded",
            OrderError::Rejected(Rejection::Banned) => "banned",
            OrderError::IdempotencyMismatch => "idempotency_mismatch",
            OrderError::ReservationExpired => "reservation_expired",
            OrderError::InvalidState(_) => "invalid_state",
            OrderError::Undeliverable => "undeliverable",
            OrderError::AddressRequired => "address_required",
            OrderError::Unavailable(_)
            | OrderError::Store(_)
            | OrderError::Inventory(_)
            | OrderError::Rebuild(_)
            | OrderError::Catalog(_) => "unavailable",
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

    async fn stock_changed(&self, sale_id: Uuid, level: StockLevel) {
        let sold_out = self.sold_out.observe(sale_id, &level);
        let sku = level.sku.clone();
        self.stock.changed(sale_id, level);
        if sold_out {
            self.learn_sold_out(sale_id, &sku).await;
        }
    }

    /// Flags the SKU sold out on this node, with its current holders. Once
    /// per flag: the refusals that follow must not each fetch the holders.
    async fn learn_sold_out(&self, sale_id: Uuid, sku: &str) {
        if self.sold_out.is_flagged(sale_id, sku) {
            return;
        }
        let Some(_learning) = self.sold_out.learner(sale_id, sku) else {
            return;
        };
        let levels = self.inventory.levels(sale_id, &[sku.to_owned()]).await;
        let Ok(Some(Some(level))) = levels.map(|l| l.into_iter().next()) else {
            return;
        };
        if level.remaining > 0 {
            return;
        }
        match self.inventory.holders(sale_id, sku).await {
            Ok(h) => self
                .sold_out
                .set(sale_id, sku, level.ver, h.into_iter().collect()),
            Err(e) => tracing::warn!(error = %e, "sold-out holders unavailable"),
        }
    }

    /// Keeps the fast path in step with stock events from every node.
    pub async fn follow_events(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut rx = self.bus.subscribe();
        let mut gaps = self.bus.gaps();
        loop {
            let env = tokio::select! {
                env = rx.recv() => env,
                // Events published while the subscription was down are lost:
                // a flag may stand for stock that came back meanwhile.
                Ok(()) = gaps.changed() => {
                    self.sold_out.forget_all();
                    continue;
                }
                _ = shutdown.cancelled() => return,
            };
            match env {
                Ok(env) => {
                    if let SaleEvent::Stock(level) = &env.event {
                        if self.sold_out.observe(env.sale_id, level) {
                            self.learn_sold_out(env.sale_id, &level.sku).await;
                        }
                    }
                }
                // Missed events: the flags expire on their own within a second.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Where an order is and what it is now: the inventory for reservations,
    /// PostgreSQL for completed orders (the final word).
    async fn find(&self, order_id: Uuid) -> Result<(Option<LiveOrder>, Option<Order>), OrderError> {
        let live = match self.inventory.locate(order_id).await? {
            Some(sale_id) => self.inventory.order(sale_id, order_id).await?,
            None => None,
        };
        let committed = match &live {
            Some(l) if l.order.status != OrderStatus::Completed => None,
            _ => self.store.order(order_id).await?,
        };
        Ok((live, committed))
    }

    pub async fn get(&self, who: &Identity, order_id: Uuid) -> Result<Order, OrderError> {
        let (live, committed) = self.find(order_id).await?;
        let order = committed
            .or(live.map(|l| l.order))
            .ok_or(OrderError::NotFound("order"))?;
        if order.user_id == who.user_id || who.role == Role::Operator {
            return Ok(order);
        }
        let host = self.catalog.facts(order.sale_id, None).await?;
        if host.is_some_and(|f| who.may_manage(&f.host_id)) {
            Ok(order)
        } else {
            Err(OrderError::Forbidden)
        }
    }

    /// The host's (or an operator's) manual confirmation: the money was
    /// seen outside any provider (cash, a bank or WeChat transfer). Never the
    /// buyer's own word.
    pub async fn confirm_manual(
        &self,
        who: &Identity,
        order_id: Uuid,
        payment_ref: &str,
        note: Option<&str>,
    ) -> Result<Order, OrderError> {
        if payment_ref.is_empty()
            || payment_ref.len() > 128
            || crate::text::check_ascii_ref(payment_ref).is_err()
        {
            return Err(OrderError::Invalid(
                "payment_ref must be 1..=128 printable ASCII characters".into(),
            ));
        }
        if let Some(n) = note {
            if n.chars().count() > 500 {
                return Err(OrderError::Invalid("note: at most 500 characters".into()));
            }
            crate::text::check_multiline(n)
                .map_err(|e| OrderError::Invalid(format!("note: {e}")))?;
        }
        let (live, committed) = self.find(order_id).await?;
        let sale_id = committed
            .as_ref()
            .map(|o| o.sale_id)
            .or(live.as_ref().map(|l| l.order.sale_id))
            .ok_or(OrderError::NotFound("order"))?;
        if !self.may_manage(who, sale_id).await? {
            return Err(OrderError::HostConfirms);
        }
        if let Some(order) = committed {
            return Ok(order);
        }
        let live = live.ok_or(OrderError::NotFound("order"))?;
        let payment = OrderPayment {
            method: OrderPayment::MANUAL.into(),
            payment_id: None,
            paid_cents: live.order.total_cents,
            refunded_cents: 0,
            note: note.map(str::to_owned),
        };
        match self.complete_reserved(live, payment, payment_ref).await? {
            Paid::Completed(o) | Paid::AlreadyCompleted(o) => Ok(o),
            Paid::Gone(OrderStatus::Expired) => Err(OrderError::ReservationExpired),
            Paid::Gone(_) => Err(OrderError::InvalidState("the order is not reserved")),
            Paid::Busy => Err(OrderError::InvalidState("a payment is being recorded")),
        }
    }

    /// Reads the user's address book into this node's cache in the
    /// background, so their first buy here needs no database read.
    pub fn warm_buyer(&self, user_id: &str) {
        let (addresses, user_id) = (self.addresses.clone(), user_id.to_owned());
        tokio::spawn(async move {
            if let Err(e) = addresses.default_of(&user_id).await {
                tracing::debug!(error = %e, "address book not read ahead");
            }
        });
    }

    /// The address a buy ships to: the one named (the buyer's own, or 404),
    /// else the buyer's default, else none (attached later).
    async fn ship_to(
        &self,
        user_id: &str,
        address_id: Option<Uuid>,
    ) -> Result<Option<Address>, OrderError> {
        match address_id {
            Some(id) => match self.addresses.address(user_id, id).await? {
                Some(a) => Ok(Some(Address {
                    is_default: false,
                    ..a
                })),
                None => Err(OrderError::NotFound("address")),
            },
            // Reservations keep working while PostgreSQL is away: the order
            // is taken without an address, which the buyer attaches later.
            None => match self.addresses.default_of(user_id).await {
                Ok(a) => Ok(a.map(|a| Address {
                    is_default: false,
                    ..a
                })),
                Err(e) => {
                    tracing::warn!(error = %e, "default address unavailable; the order is taken without one");
                    Ok(None)
                }
            },
        }
    }

    /// `PUT /orders/{id}/address`: its buyer attaches one of its addresses,
    /// checked against the product's delivery areas, until the order is packed.
    pub async fn attach_address(
        &self,
        who: &Identity,
        order_id: Uuid,
        address_id: Uuid,
    ) -> Result<Order, OrderError> {
        let order = self
            .current(order_id)
            .await?
            .ok_or(OrderError::NotFound("order"))?;
        if order.user_id != who.user_id {
            return Err(OrderError::Forbidden);
        }
        let address = self
            .ship_to(&who.user_id, Some(address_id))
            .await?
            .ok_or(OrderError::NotFound("address"))?;
        let facts = self
            .catalog
            .facts(order.sale_id, Some(&order.sku))
            .await?
            .ok_or(OrderError::NotFound("sale"))?;
        let area = facts
            .products
            .get(&order.sku)
            .and_then(|p| p.ships_to.clone());
        if area.is_some_and(|a| !a.allows(&address.province)) {
            return Err(OrderError::Undeliverable);
        }
        let updated = match order.status {
            OrderStatus::Reserved => {
                match self
                    .inventory
                    .set_ship_to(order.sale_id, order_id, &address)
                    .await?
                {
                    ShipToSet::Done => Order {
                        ship_to: Some(address),
                        ..order
                    },
                    ShipToSet::WrongState(OrderStatus::Reserved) => {
                        return Err(OrderError::InvalidState(
                            "a payment of this order is being recorded; try again",
                        ))
                    }
                    ShipToSet::WrongState(OrderStatus::Expired) => {
                        return Err(OrderError::ReservationExpired)
                    }
                    ShipToSet::WrongState(OrderStatus::Completed) => {
                        // Paid meanwhile: the committed order is the one to change.
                        return Box::pin(self.attach_address(who, order_id, address_id)).await;
                    }
                    ShipToSet::WrongState(_) => {
                        return Err(OrderError::InvalidState("the order was cancelled"))
                    }
                    ShipToSet::NotFound => return Err(OrderError::NotFound("order")),
                }
            }
            OrderStatus::Completed => {
                if !self.store.set_ship_to(order_id, &address).await? {
                    return Err(OrderError::InvalidState(
                        "the order is packed or shipped: its address can no longer change",
                    ));
                }
                self.store
                    .order(order_id)
                    .await?
                    .ok_or(OrderError::NotFound("order"))?
            }
            OrderStatus::Expired => return Err(OrderError::ReservationExpired),
            OrderStatus::Cancelled => {
                return Err(OrderError::InvalidState("the order was cancelled"))
            }
        };
        self.announce(&updated);
        Ok(updated)
    }

    /// A claim's remedy: a zero-price order of `qty` of the claimed order's
    /// SKU, shipped to its address, committed at once. The stock is taken
    /// through the same admission as a buy (409 `sold_out` when none is
    /// left), which checks the stock alone: the sale has usually ended.
    /// `key` makes it idempotent (one reship per claim).
    pub async fn reship(
        &self,
        original: &Order,
        qty: i64,
        key: &str,
        note: String,
    ) -> Result<Order, OrderError> {
        let fp = fingerprint(&original.sku, qty, None);
        for _ in 0..STALE_RETRIES {
            let now = self.clock.now();
            let order = Order {
                id: Uuid::now_v7(),
                sale_id: original.sale_id,
                sku: original.sku.clone(),
                qty,
                unit_price_cents: 0,
                total_cents: 0,
                currency: original.currency.clone(),
                user_id: original.user_id.clone(),
                status: OrderStatus::Reserved,
                created_at: now,
                expires_at: None,
                completed_at: None,
                payment_ref: Some(format!("reship-{}", original.id.simple())),
                payment: Some(OrderPayment {
                    method: OrderPayment::MANUAL.into(),
                    payment_id: None,
                    paid_cents: 0,
                    refunded_cents: 0,
                    note: Some(note.clone()),
                }),
                ship_to: original.ship_to.clone(),
                fulfilment: Fulfilment::Unfulfilled,
                shipment: None,
                claims: Vec::new(),
            };
            let admit = AdmitRequest {
                remedy: true,
                sale_id: original.sale_id,
                user_id: original.user_id.clone(),
                key: key.to_owned(),
                fingerprint: fp.clone(),
                order,
                final_answer: None,
                deadline_ms: now.timestamp_millis() + COMMIT_LEASE_MS,
            };
            let mut admission = self.inventory.admit(&admit).await?;
            if let Admission::Missing { epoch } = admission {
                self.rebuild.repair(original.sale_id, epoch).await?;
                admission = self.inventory.admit(&admit).await?;
            }
            let json = match admission {
                Admission::Admitted { level, epoch } => {
                    self.stock_changed(original.sale_id, level).await;
                    match self.complete_instant(admit, epoch).await? {
                        Some(json) => json,
                        None => continue,
                    }
                }
                Admission::Rejected(r) => return Err(OrderError::Rejected(r)),
                Admission::Replay(Stored::Order(json)) => json,
                Admission::Replay(Stored::Rejected(r)) => return Err(OrderError::Rejected(r)),
                Admission::Replay(Stored::Pending(id)) => {
                    return self.store.order(id).await?.ok_or(OrderError::Unavailable(
                        "the reship is being recorded; try again",
                    ))
                }
                Admission::Mismatch => return Err(OrderError::IdempotencyMismatch),
                Admission::Missing { .. } => {
                    return Err(OrderError::Unavailable("the sale is being rebuilt"))
                }
            };
            let order: Order = serde_json::from_str(&json)
                .map_err(|_| OrderError::Unavailable("the reship answer did not parse"))?;
            self.announce(&order);
            return Ok(order);
        }
        Err(OrderError::Unavailable(
            "the sale is being rebuilt; try again",
        ))
    }

    /// Whether `who` manages the sale (its host, an operator).
    pub async fn may_manage(&self, who: &Identity, sale_id: Uuid) -> Result<bool, OrderError> {
        if who.role == Role::Operator {
            return Ok(true);
        }
        let facts = self.catalog.facts(sale_id, None).await?;
        Ok(facts.is_some_and(|f| who.may_manage(&f.host_id)))
    }

    /// The order as it is now (reserved in the inventory, or committed).
    pub async fn current(&self, order_id: Uuid) -> Result<Option<Order>, OrderError> {
        let (live, committed) = self.find(order_id).await?;
        Ok(committed.or(live.map(|l| l.order)))
    }

    /// The committed order, from PostgreSQL alone.
    pub async fn committed(&self, order_id: Uuid) -> Result<Option<Order>, OrderError> {
        Ok(self.store.order(order_id).await?)
    }

    /// A provider's verified success for a reserved order: completes it
    /// (committed before this returns) unless it expired or was cancelled.
    pub async fn complete_paid(
        &self,
        order_id: Uuid,
        payment: OrderPayment,
        payment_ref: &str,
    ) -> Result<Paid, OrderError> {
        let (live, committed) = self.find(order_id).await?;
        if let Some(order) = committed {
            return Ok(Paid::AlreadyCompleted(order));
        }
        match live {
            Some(live) => self.complete_reserved(live, payment, payment_ref).await,
            // Settled long ago and forgotten by the inventory.
            None => Ok(Paid::Gone(OrderStatus::Expired)),
        }
    }

    /// Tells the buyer's sockets about its order (a refund, a payment).
    pub fn announce(&self, order: &Order) {
        self.bus.publish(
            order.sale_id,
            SaleEvent::Order {
                order: Box::new(order.clone()),
            },
        );
    }

    /// The shared tail of every payment: the lease in the inventory (so the
    /// reaper leaves the reservation alone), the guarded batch writer, then
    /// the inventory's confirmation and the buyer's `order` event.
    async fn complete_reserved(
        &self,
        live: LiveOrder,
        payment: OrderPayment,
        payment_ref: &str,
    ) -> Result<Paid, OrderError> {
        let order_id = live.order.id;
        let sale_id = live.order.sale_id;
        let now = self.clock.now();
        match self
            .inventory
            .begin_pay(sale_id, order_id, now.timestamp_millis(), COMMIT_LEASE_MS)
            .await?
        {
            PayStart::Started => {}
            PayStart::AlreadyCompleted => {
                return match self.store.order(order_id).await? {
                    Some(o) => Ok(Paid::AlreadyCompleted(o)),
                    None => Ok(Paid::Busy),
                };
            }
            PayStart::Expired => return Ok(Paid::Gone(OrderStatus::Expired)),
            PayStart::WrongState(OrderStatus::Reserved) => return Ok(Paid::Busy),
            PayStart::WrongState(status) => return Ok(Paid::Gone(status)),
            PayStart::NotFound => return Ok(Paid::Gone(OrderStatus::Expired)),
        }
        let mut order = live.order;
        order.status = OrderStatus::Completed;
        order.completed_at = Some(now);
        order.payment_ref = Some(payment_ref.to_owned());
        order.payment = Some(payment);
        let committed = self
            .writer
            .commit(CompletedOrder {
                order: order.clone(),
                key: live.key,
                epoch: live.epoch,
            })
            .await;
        let order = match committed {
            Ok(Commit::Committed) => {
                self.stats.order(sale_id);
                order
            }
            Ok(Commit::Stale) => {
                // Admitted before a rebuild, which dropped the reservation.
                self.give_back(sale_id, order_id, OrderStatus::Expired)
                    .await;
                return Ok(Paid::Gone(OrderStatus::Expired));
            }
            Ok(Commit::Existing(existing)) if existing.id == order.id => {
                return Ok(Paid::AlreadyCompleted(*existing))
            }
            Ok(Commit::Existing(_)) | Ok(Commit::SoldOut) => {
                // Only after Redis lost data: the stock is not there to sell.
                self.refused(sale_id, order_id).await;
                return Ok(Paid::Gone(OrderStatus::Cancelled));
            }
            Ok(Commit::Invalid) => {
                if let Err(e) = self.inventory.abort_pay(sale_id, order_id).await {
                    tracing::warn!(error = %e, "payment lease not returned; it expires");
                }
                return Err(OrderError::Invalid(REFUSED_BY_DB.into()));
            }
            Err(e) => {
                if let Err(e) = self.inventory.abort_pay(sale_id, order_id).await {
                    tracing::warn!(error = %e, "payment lease not returned; it expires");
                }
                return Err(e.into());
            }
        };
        let done_at = order.completed_at.unwrap_or(now).timestamp_millis();
        match self
            .inventory
            .confirm(
                sale_id,
                order_id,
                &order.sku,
                done_at,
                order.payment_ref.as_deref(),
                None,
            )
            .await
        {
            Ok(Some(level)) => self.stock_changed(sale_id, level).await,
            Ok(None) => {}
            // Committed: the reaper confirms it later after checking PostgreSQL.
            Err(e) => tracing::warn!(error = %e, %order_id, "confirm deferred to the reaper"),
        }
        self.announce(&order);
        Ok(Paid::Completed(order))
    }

    pub async fn cancel(&self, who: &Identity, order_id: Uuid) -> Result<Order, OrderError> {
        let (live, committed) = self.find(order_id).await?;
        let live = match (live, committed) {
            (_, Some(o)) if o.user_id != who.user_id => return Err(OrderError::Forbidden),
            (_, Some(_)) => return Err(OrderError::InvalidState("the order is completed")),
            (Some(l), None) => l,
            (None, None) => return Err(OrderError::NotFound("order")),
        };
        if live.order.user_id != who.user_id {
            return Err(OrderError::Forbidden);
        }
        let sale_id = live.order.sale_id;
        match self
            .inventory
            .release(
                sale_id,
                order_id,
                OrderStatus::Cancelled,
                ReleaseFrom::Reserved,
            )
            .await?
        {
            Released::Done(level) => self.stock_changed(sale_id, level).await,
            Released::WrongState(OrderStatus::Expired) => {
                return Err(OrderError::ReservationExpired)
            }
            Released::WrongState(_) => {
                return Err(OrderError::InvalidState(
                    "only a reserved order can be cancelled",
                ))
            }
            Released::NotFound => return Err(OrderError::NotFound("order")),
        }
        let mut order = live.order;
        order.status = OrderStatus::Cancelled;
        self.bus.publish(
            sale_id,
            SaleEvent::Order {
                order: Box::new(order.clone()),
            },
        );
        Ok(order)
    }

    /// A ban: the user's reservations in the sale are cancelled and their
    /// stock goes back on sale, so a banned user cannot pay for what it held.
    /// Returns how many were released.
    pub async fn release_user(&self, sale_id: Uuid, user_id: &str) -> Result<usize, OrderError> {
        let mut released = 0;
        for live in self.inventory.user_orders(user_id).await? {
            let order = live.order;
            if order.sale_id != sale_id || order.status != OrderStatus::Reserved {
                continue;
            }
            let done = self
                .inventory
                .release(
                    sale_id,
                    order.id,
                    OrderStatus::Cancelled,
                    ReleaseFrom::Reserved,
                )
                .await?;
            if let Released::Done(level) = done {
                self.stock_changed(sale_id, level).await;
                released += 1;
                let mut order = order;
                order.status = OrderStatus::Cancelled;
                self.bus.publish(
                    sale_id,
                    SaleEvent::Order {
                        order: Box::new(order),
                    },
                );
            }
        }
        Ok(released)
    }

    /// Newest first: completed orders from PostgreSQL, the rest from the inventory.
    pub async fn mine(&self, who: &Identity) -> Result<Vec<Order>, OrderError> {
        let mut by_id: HashMap<Uuid, Order> = HashMap::new();
        for l in self.inventory.user_orders(&who.user_id).await? {
            by_id.insert(l.order.id, l.order);
        }
        for o in self
            .store
            .user_orders(&who.user_id, MY_ORDERS_LIMIT)
            .await?
        {
            by_id.insert(o.id, o);
        }
        let mut out: Vec<Order> = by_id.into_values().collect();
        out.sort_by_key(|o| std::cmp::Reverse((o.created_at, o.id)));
        out.truncate(MY_ORDERS_LIMIT as usize);
        Ok(out)
    }

    /// For the reaper: settles one due admission after asking PostgreSQL.
    pub async fn settle_due(&self, sale_id: Uuid, ids: &[Uuid]) -> Result<(), OrderError> {
        let committed: HashSet<Uuid> = self.store.existing(ids).await?.into_iter().collect();
        for &id in ids {
            if committed.contains(&id) {
                let Some(o) = self.store.order(id).await? else {
                    continue;
                };
                let done_at = o.completed_at.unwrap_or(o.created_at).timestamp_millis();
                let confirmed = self
                    .inventory
                    .confirm(sale_id, id, &o.sku, done_at, o.payment_ref.as_deref(), None)
                    .await?;
                if let Some(level) = confirmed {
                    self.stock_changed(sale_id, level).await;
                }
                continue;
            }
            match self
                .inventory
                .release(sale_id, id, OrderStatus::Expired, ReleaseFrom::AnyHolding)
                .await?
            {
                Released::Done(level) => {
                    self.stock_changed(sale_id, level).await;
                    if let Some(live) = self.inventory.order(sale_id, id).await? {
                        self.bus.publish(
                            sale_id,
                            SaleEvent::Order {
                                order: Box::new(live.order),
                            },
                        );
                    }
                }
                Released::WrongState(_) | Released::NotFound => {}
            }
        }
        Ok(())
    }

    pub async fn catalog_status(
        &self,
        sale_id: Uuid,
    ) -> Result<Option<crate::catalog::SaleStatus>, OrderError> {
        Ok(self.catalog.store().sale(sale_id).await?.map(|s| s.status))
    }

    pub fn inventory(&self) -> &Arc<dyn Inventory> {
        &self.inventory
    }

    pub fn clock(&self) -> &Arc<Clock> {
        &self.clock
    }
}
