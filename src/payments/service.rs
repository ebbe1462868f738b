//! Payments of orders: start, the providers' verified reports (callbacks
//! and reconciliation alike), late payments, refunds.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::HeaderMap;
use chrono::TimeDelta;
use uuid::Uuid;

use super::sandbox::{Notice, Sandbox};
use super::store::{Charge, ChargeState, Payment, PaymentStatus, PaymentStore, TxnRecord};
use super::{
    Callback, Checkout, PayOutcome, PaymentReport, Provider, ProviderError, Reply, Scene,
    StartRequest,
};
use crate::clock::Clock;
use crate::identity::Identity;
use crate::orders::{Order, OrderError, OrderPayment, OrderStatus, Orders, Paid};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("not yours")]
    Forbidden,
    #[error("{0}")]
    InvalidState(String),
    #[error("the reservation has expired")]
    ReservationExpired,
    #[error("this Idempotency-Key was used with another body")]
    IdempotencyMismatch,
    #[error("the payment provider: {0}")]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Order(#[from] OrderError),
}

/// Why a verified report changed nothing.
#[derive(Debug)]
pub(super) enum Settle {
    /// It contradicts our records (amount, merchant, transaction): refused.
    Refused(&'static str),
    /// We could not act on it now; the provider should send it again.
    Later(String),
}

impl From<StoreError> for Settle {
    fn from(e: StoreError) -> Self {
        Settle::Later(e.to_string())
    }
}

impl From<OrderError> for Settle {
    fn from(e: OrderError) -> Self {
        Settle::Later(e.to_string())
    }
}

/// What a buyer asks for at payment start.
#[derive(Debug, Clone)]
pub struct StartPayment {
    pub provider: String,
    pub scene: Scene,
}

/// The sandbox checkout page's buttons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxAction {
    Pay,
    /// Paid, but the callback is lost (reconciliation must find it).
    PayLost,
    /// Paid; refunds of it will be refused (a rehearsal of a failed refund).
    PayRefundsFail,
    Fail,
}

/// A success report may wait this long for another node recording the
/// same payment before asking the provider to send it again.
const BUSY_WAIT: Duration = Duration::from_secs(3);
pub const SYSTEM: &str = "system";

pub struct Payments {
    pub(super) store: Arc<dyn PaymentStore>,
    pub(super) orders: Arc<Orders>,
    pub(super) providers: BTreeMap<&'static str, Arc<dyn Provider>>,
    sandbox: Option<Arc<Sandbox>>,
    pub(super) clock: Arc<Clock>,
    public_url: Arc<OnceLock<String>>,
    reconcile_after: TimeDelta,
    pub(super) reconcile_every: TimeDelta,
    http: reqwest::Client,
}

impl Payments {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn PaymentStore>,
        orders: Arc<Orders>,
        providers: Vec<Arc<dyn Provider>>,
        sandbox: Option<Arc<Sandbox>>,
        clock: Arc<Clock>,
        public_url: Arc<OnceLock<String>>,
        reconcile_after: Duration,
        reconcile_every: Duration,
        http: reqwest::Client,
    ) -> Self {
        let delta = |d: Duration| TimeDelta::from_std(d).unwrap_or(TimeDelta::seconds(10));
        Payments {
            store,
            orders,
            providers: providers.into_iter().map(|p| (p.name(), p)).collect(),
            sandbox,
            clock,
            public_url,
            reconcile_after: delta(reconcile_after),
            reconcile_every: delta(reconcile_every),
            http,
        }
    }

    /// The enabled providers' names.
    pub fn providers(&self) -> Vec<&'static str> {
        self.providers.keys().copied().collect()
    }

    pub fn enabled(&self, name: &str) -> bool {
        self.providers.contains_key(name)
    }

    pub(super) fn notify_url(&self, provider: &str) -> String {
        format!("{}/api/v1/payments/{provider}/notify", self.base())
    }

    fn base(&self) -> &str {
        self.public_url
            .get()
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// `POST /orders/{id}/payments`: the order's one live payment, opened
    /// at the provider (`true`) or the pending one (`false`).
    pub async fn start(
        &self,
        who: &Identity,
        order_id: Uuid,
        ask: StartPayment,
    ) -> Result<(bool, Payment), PaymentError> {
        let order = self
            .orders
            .current(order_id)
            .await?
            .ok_or(PaymentError::NotFound("order"))?;
        if order.user_id != who.user_id {
            return Err(PaymentError::Forbidden);
        }
        let now = self.clock.now();
        let expires_at = match (order.status, order.expires_at) {
            (OrderStatus::Reserved, Some(e)) if e > now => e,
            (OrderStatus::Reserved, _) | (OrderStatus::Expired, _) => {
                return Err(PaymentError::ReservationExpired)
            }
            (OrderStatus::Completed, _) => {
                return Err(PaymentError::InvalidState(
                    "the order is already paid".into(),
                ))
            }
            (OrderStatus::Cancelled, _) => {
                return Err(PaymentError::InvalidState("the order was cancelled".into()))
            }
        };
        if order.ship_to.is_none() {
            // Nothing is paid for that cannot be shipped.
            return Err(OrderError::AddressRequired.into());
        }
        let Some(provider) = self.providers.get(ask.provider.as_str()) else {
            return Err(PaymentError::InvalidState(format!(
                "payments through {:?} are not enabled here",
                ask.provider.chars().take(32).collect::<String>()
            )));
        };
        if let Some(pending) = self.store.pending_for_order(order_id).await? {
            if pending.provider == provider.name() {
                return Ok((false, pending));
            }
            // The buyer switches wallets: the old payment is closed at its
            // provider first, so it cannot be paid too.
            let old = self
                .providers
                .get(pending.provider.as_str())
                .ok_or_else(|| PaymentError::InvalidState("a payment is pending".into()))?;
            old.close(pending.id).await.map_err(|e| {
                PaymentError::InvalidState(format!(
                    "a payment through {} is pending and could not be closed ({e})",
                    pending.provider
                ))
            })?;
            self.store
                .set_status(
                    pending.id,
                    &[PaymentStatus::Pending],
                    PaymentStatus::Failed,
                    now,
                    None,
                )
                .await?;
        }
        let payment = Payment {
            id: Uuid::new_v4(),
            order_id,
            sale_id: order.sale_id,
            user_id: order.user_id.clone(),
            provider: provider.name().into(),
            amount_cents: order.total_cents,
            currency: order.currency.clone(),
            status: PaymentStatus::Pending,
            checkout: Checkout::default(),
            provider_txn_id: None,
            created_at: now,
            expires_at,
            paid_at: None,
        };
        let first_check = (now + self.reconcile_after).min(expires_at);
        let kept = self.store.insert_pending(&payment, first_check).await?;
        if kept.id != payment.id {
            return Ok((false, kept));
        }
        let req = StartRequest {
            payment_id: payment.id,
            order_id,
            description: description(&order),
            amount_cents: payment.amount_cents,
            currency: payment.currency.clone(),
            expires_at,
            notify_url: self.notify_url(provider.name()),
            return_url: format!("{}/sales/{}", self.base(), order.sale_id),
            scene: ask.scene,
        };
        match provider.start(&req).await {
            Ok(started) => {
                self.store
                    .set_checkout(payment.id, &started.checkout)
                    .await?;
                metrics::counter!("lychee_payments_started_total", "provider" => provider.name())
                    .increment(1);
                Ok((
                    true,
                    Payment {
                        checkout: started.checkout,
                        ..payment
                    },
                ))
            }
            Err(e) => {
                tracing::warn!(provider = provider.name(), payment_id = %payment.id, error = %e, "payment start failed");
                self.store
                    .set_status(
                        payment.id,
                        &[PaymentStatus::Pending],
                        PaymentStatus::Failed,
                        now,
                        None,
                    )
                    .await?;
                Err(e.into())
            }
        }
    }

    /// The order was cancelled: its pending payment is closed at the
    /// provider, so the buyer cannot pay for it any more. If the provider
    /// says it was paid meanwhile, the payment stays pending and its success
    /// (by callback or reconciliation) is refunded as a late payment.
    pub async fn close_pending(&self, order_id: Uuid) {
        let Ok(Some(p)) = self.store.pending_for_order(order_id).await else {
            return;
        };
        let Some(provider) = self.providers.get(p.provider.as_str()) else {
            return;
        };
        match provider.close(p.id).await {
            Ok(()) => {
                let now = self.clock.now();
                // Reconciliation may have seen it closed and called it failed
                // meanwhile: it ended with its order, so it reads expired.
                if let Err(e) = self
                    .store
                    .set_status(
                        p.id,
                        &[PaymentStatus::Pending, PaymentStatus::Failed],
                        PaymentStatus::Expired,
                        now,
                        None,
                    )
                    .await
                {
                    tracing::warn!(payment_id = %p.id, error = %e, "closed payment not recorded; reconciliation settles it");
                }
            }
            Err(e) => {
                tracing::info!(payment_id = %p.id, error = %e, "payment of a cancelled order not closed; reconciliation settles it");
            }
        }
    }

    /// `GET /payments/{id}`: its buyer, the sale's host, an operator.
    pub async fn get(&self, who: &Identity, id: Uuid) -> Result<Payment, PaymentError> {
        let p = self
            .store
            .payment(id)
            .await?
            .ok_or(PaymentError::NotFound("payment"))?;
        if p.user_id == who.user_id || self.orders.may_manage(who, p.sale_id).await? {
            Ok(p)
        } else {
            Err(PaymentError::Forbidden)
        }
    }

    /// `POST /payments/{provider}/notify`. `None`: no such provider here (404).
    pub async fn notify(&self, name: &str, headers: &HeaderMap, body: &[u8]) -> Option<Reply> {
        let provider = self.providers.get(name)?.clone();
        let outcome = match provider.verify(headers, body, self.clock.now()) {
            Err(e) => {
                let reason = match &e {
                    ProviderError::BadSignature(_) => "signature",
                    ProviderError::Stale(_) => "stale",
                    _ => "malformed",
                };
                tracing::warn!(provider = name, reason, error = %e, "callback refused");
                Err(Settle::Refused(reason))
            }
            Ok(Callback::Payment(report)) => self.settle(&provider, report).await,
            Ok(Callback::Refund(report)) => self.settle_refund_report(&provider, report).await,
        };
        Some(match outcome {
            Ok(()) => provider.ack(),
            Err(Settle::Refused(reason)) => {
                metrics::counter!("lychee_payment_callbacks_refused_total", "provider" => name.to_owned(), "reason" => reason)
                    .increment(1);
                provider.nack(reason)
            }
            Err(Settle::Later(why)) => {
                tracing::warn!(provider = name, error = %why, "callback not processed now; the provider retries");
                provider.nack("try again later")
            }
        })
    }

    /// A verified report about a payment, from a callback or a query.
    pub(super) async fn settle(
        &self,
        provider: &Arc<dyn Provider>,
        r: PaymentReport,
    ) -> Result<(), Settle> {
        let Some(payment) = self.store.payment(r.payment_id).await? else {
            return Err(Settle::Refused("unknown_payment"));
        };
        if payment.provider != provider.name() || r.merchant != provider.merchant() {
            return Err(Settle::Refused("merchant"));
        }
        let now = self.clock.now();
        match r.outcome {
            PayOutcome::Pending => return Ok(()),
            PayOutcome::Failed => {
                self.store
                    .set_status(
                        payment.id,
                        &[PaymentStatus::Pending],
                        PaymentStatus::Failed,
                        now,
                        None,
                    )
                    .await?;
                return Ok(());
            }
            PayOutcome::Succeeded | PayOutcome::Refunded => {}
        }
        if r.amount_cents != payment.amount_cents || r.currency != payment.currency {
            return Err(Settle::Refused("amount"));
        }
        let Some(txn) = r.provider_txn_id.filter(|t| !t.is_empty()) else {
            return Err(Settle::Refused("transaction"));
        };
        match self.store.record_txn(payment.id, &txn).await? {
            TxnRecord::Recorded => {}
            TxnRecord::Other(_) | TxnRecord::Taken => return Err(Settle::Refused("transaction")),
        }
        if payment.status.was_paid() {
            return Ok(()); // the same success again
        }
        self.complete(&payment, &txn).await
    }

    /// Money was taken for `payment`: completes its order, or refunds it if
    /// the order is gone (or was paid another way).
    async fn complete(&self, payment: &Payment, txn: &str) -> Result<(), Settle> {
        let paid_by = OrderPayment {
            method: payment.provider.clone(),
            payment_id: Some(payment.id),
            paid_cents: payment.amount_cents,
            refunded_cents: 0,
            note: None,
        };
        let waited = tokio::time::Instant::now();
        let paid = loop {
            match self
                .orders
                .complete_paid(payment.order_id, paid_by.clone(), txn)
                .await?
            {
                Paid::Busy if waited.elapsed() < BUSY_WAIT => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => break other,
            }
        };
        let now = self.clock.now();
        let from = [
            PaymentStatus::Pending,
            PaymentStatus::Failed,
            PaymentStatus::Expired,
        ];
        match paid {
            Paid::Completed(o) | Paid::AlreadyCompleted(o)
                if o.payment.as_ref().and_then(|p| p.payment_id) == Some(payment.id) =>
            {
                self.store
                    .set_status(payment.id, &from, PaymentStatus::Succeeded, now, None)
                    .await?;
                metrics::counter!("lychee_payments_succeeded_total", "provider" => payment.provider.clone())
                    .increment(1);
                Ok(())
            }
            Paid::AlreadyCompleted(_) => self.refund_whole(payment, "duplicate_payment").await,
            Paid::Gone(_) => self.refund_whole(payment, "late_payment").await,
            Paid::Busy => Err(Settle::Later(
                "another node is recording this payment".into(),
            )),
            Paid::Completed(_) => Err(Settle::Later("completed by another payment".into())),
        }
    }

    /// The sandbox checkout page's payment, if it is one.
    pub async fn sandbox_payment(
        &self,
        id: Uuid,
    ) -> Result<(Payment, Option<Charge>), PaymentError> {
        let sandbox = self
            .sandbox
            .as_ref()
            .ok_or(PaymentError::NotFound("payment"))?;
        let p = self
            .store
            .payment(id)
            .await?
            .filter(|p| p.provider == "sandbox")
            .ok_or(PaymentError::NotFound("payment"))?;
        let charge = sandbox.ledger().charge_of(id).await?;
        Ok((p, charge))
    }

    /// A button of the sandbox checkout page: the gateway records what the
    /// buyer did, then sends its signed callback to the notify route (at
    /// the public URL, so it may land on any node). Returns the node's
    /// answer to the callback, `None` when it was deliberately lost.
    pub async fn sandbox_act(
        &self,
        id: Uuid,
        action: SandboxAction,
    ) -> Result<Option<u16>, PaymentError> {
        let (p, _) = self.sandbox_payment(id).await?;
        let sandbox = self
            .sandbox
            .as_ref()
            .ok_or(PaymentError::NotFound("payment"))?;
        let now = self.clock.now();
        if now >= p.expires_at {
            return Err(PaymentError::InvalidState(
                "this payment has expired; it can no longer be paid".into(),
            ));
        }
        let kept = sandbox
            .ledger()
            .charge(&Charge {
                payment_id: id,
                state: if action == SandboxAction::Fail {
                    ChargeState::Failed
                } else {
                    ChargeState::Paid
                },
                // One charge per payment, so its number follows from it.
                txn_id: format!("sbx-{}", id.simple()),
                amount_cents: p.amount_cents,
                currency: p.currency.clone(),
                refunds_fail: action == SandboxAction::PayRefundsFail,
                at: now,
            })
            .await?;
        if kept.state == ChargeState::Closed {
            return Err(PaymentError::InvalidState(
                "this payment was closed; it can no longer be paid".into(),
            ));
        }
        if action == SandboxAction::PayLost {
            return Ok(None);
        }
        let notice = Notice {
            event: "payment".into(),
            out_trade_no: super::provider::trade_no(id),
            txn_id: kept.txn_id.clone(),
            status: if kept.state == ChargeState::Paid {
                "succeeded".into()
            } else {
                "failed".into()
            },
            amount_cents: kept.amount_cents,
            currency: kept.currency.clone(),
            merchant: super::sandbox::MERCHANT.into(),
        };
        let (headers, body) = sandbox.notice(&notice, now);
        let mut req = self
            .http
            .post(self.notify_url("sandbox"))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let answer = req
            .send()
            .await
            .map_err(|e| ProviderError::Unavailable(format!("sandbox callback: {e}")))?;
        Ok(Some(answer.status().as_u16()))
    }
}

/// What the buyer's wallet shows: the product and quantity, in the
/// providers' length limits (WeChat Pay: 127 bytes).
fn description(order: &Order) -> String {
    let mut s = format!("{} x{}", order.sku, order.qty);
    while s.len() > 120 {
        s.pop();
    }
    s
}
