//! Payments of orders: start, the providers' verified reports (callbacks
//! and reconciliation alike), late payments, refunds.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::HeaderMap;
use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::sandbox::{Notice, Sandbox};
use super::store::{
    Charge, ChargeState, Payment, PaymentStatus, PaymentStore, Refund, RefundGuard, RefundInsert,
    RefundStatus, TxnRecord,
};
use super::{
    Callback, Checkout, PayOutcome, PaymentReport, Provider, ProviderError, RefundOutcome,
    RefundReport, RefundRequest, Reply, Scene, StartRequest,
};
use crate::catalog::StoreError;
use crate::clock::Clock;
use crate::identity::Identity;
use crate::orders::{Order, OrderError, OrderPayment, OrderStatus, Orders, Paid};

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
enum Settle {
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
/// A node claims a due payment or refund for this long.
const CHECK_LEASE: TimeDelta = TimeDelta::seconds(60);
const CHECK_BATCH: i64 = 50;
pub const SYSTEM: &str = "system";

pub struct Payments {
    store: Arc<dyn PaymentStore>,
    orders: Arc<Orders>,
    providers: BTreeMap<&'static str, Arc<dyn Provider>>,
    sandbox: Option<Arc<Sandbox>>,
    clock: Arc<Clock>,
    public_url: Arc<OnceLock<String>>,
    reconcile_after: TimeDelta,
    reconcile_every: TimeDelta,
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

    fn notify_url(&self, provider: &str) -> String {
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
                if let Err(e) = self
                    .store
                    .set_status(
                        p.id,
                        &[PaymentStatus::Pending],
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
    async fn settle(&self, provider: &Arc<dyn Provider>, r: PaymentReport) -> Result<(), Settle> {
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

    /// A success that cannot complete its order: the money goes back.
    async fn refund_whole(&self, payment: &Payment, reason: &str) -> Result<(), Settle> {
        let now = self.clock.now();
        let from = [
            PaymentStatus::Pending,
            PaymentStatus::Failed,
            PaymentStatus::Expired,
        ];
        self.store
            .set_status(payment.id, &from, PaymentStatus::Succeeded, now, None)
            .await?;
        tracing::info!(payment_id = %payment.id, order_id = %payment.order_id, reason, "refunding a payment whose order cannot complete");
        metrics::counter!("lychee_late_payments_total", "reason" => reason.to_owned()).increment(1);
        let refund = Refund {
            id: Uuid::new_v4(),
            order_id: payment.order_id,
            payment_id: Some(payment.id),
            provider: payment.provider.clone(),
            amount_cents: payment.amount_cents,
            currency: payment.currency.clone(),
            reason: reason.into(),
            status: RefundStatus::Pending,
            provider_refund_id: None,
            requested_by: SYSTEM.into(),
            idempotency_key: format!("whole:{}", payment.id),
            fingerprint: String::new(),
            created_at: now,
            updated_at: now,
        };
        let refund = match self
            .store
            .insert_refund(&refund, RefundGuard::Payment, now + self.reconcile_every)
            .await?
        {
            RefundInsert::Inserted(r) | RefundInsert::Existing(r) => r,
            RefundInsert::TooMuch => return Err(Settle::Refused("refund")),
        };
        if refund.status == RefundStatus::Pending {
            // A failure here leaves it pending: reconciliation sends it again.
            self.send_refund(&refund).await;
        }
        Ok(())
    }

    fn refund_request(&self, r: &Refund, payment: &Payment) -> RefundRequest {
        RefundRequest {
            refund_id: r.id,
            payment_id: payment.id,
            provider_txn_id: payment.provider_txn_id.clone(),
            amount_cents: r.amount_cents,
            paid_cents: payment.amount_cents,
            currency: r.currency.clone(),
            reason: r.reason.clone(),
            notify_url: self.notify_url(&payment.provider),
        }
    }

    /// Sends a pending refund to its provider and records the answer.
    async fn send_refund(&self, r: &Refund) -> Option<Refund> {
        let (Some(provider), Some(payment_id)) =
            (self.providers.get(r.provider.as_str()), r.payment_id)
        else {
            tracing::warn!(refund_id = %r.id, provider = %r.provider, "refund's provider is not enabled; it waits");
            return None;
        };
        let payment = match self.store.payment(payment_id).await {
            Ok(Some(p)) => p,
            _ => return None,
        };
        let req = self.refund_request(r, &payment);
        match provider.refund(&req).await {
            Ok(report) => self.apply_refund(r, report).await,
            Err(e) if e.is_transient() => {
                tracing::warn!(refund_id = %r.id, error = %e, "refund not sent; reconciliation tries again");
                None
            }
            Err(e) => {
                tracing::warn!(refund_id = %r.id, error = %e, "the provider refused a refund");
                self.finish(r.id, RefundStatus::Failed, None).await
            }
        }
    }

    async fn apply_refund(&self, r: &Refund, report: RefundReport) -> Option<Refund> {
        match report.outcome {
            RefundOutcome::Succeeded => {
                self.finish(
                    r.id,
                    RefundStatus::Succeeded,
                    report.provider_refund_id.as_deref(),
                )
                .await
            }
            RefundOutcome::Failed => {
                self.finish(
                    r.id,
                    RefundStatus::Failed,
                    report.provider_refund_id.as_deref(),
                )
                .await
            }
            RefundOutcome::Pending => None,
        }
    }

    /// Settles a refund and tells the buyer (its order's `payment` changed).
    async fn finish(
        &self,
        id: Uuid,
        to: RefundStatus,
        provider_id: Option<&str>,
    ) -> Option<Refund> {
        let done = match self
            .store
            .finish_refund(id, to, provider_id, self.clock.now())
            .await
        {
            Ok(done) => done?,
            Err(e) => {
                tracing::warn!(refund_id = %id, error = %e, "refund outcome not recorded; reconciliation tries again");
                return None;
            }
        };
        metrics::counter!("lychee_refunds_total", "status" => to.as_str()).increment(1);
        if let Ok(Some(order)) = self.orders.committed(done.order_id).await {
            self.orders.announce(&order);
        }
        Some(done)
    }

    async fn settle_refund_report(
        &self,
        provider: &Arc<dyn Provider>,
        report: RefundReport,
    ) -> Result<(), Settle> {
        let Some(r) = self.store.refund(report.refund_id).await? else {
            return Err(Settle::Refused("unknown_refund"));
        };
        if r.provider != provider.name() {
            return Err(Settle::Refused("merchant"));
        }
        if report.amount_cents != r.amount_cents {
            return Err(Settle::Refused("amount"));
        }
        if r.status == RefundStatus::Pending {
            self.apply_refund(&r, report).await;
        }
        Ok(())
    }

    /// `POST /orders/{id}/refunds` (the sale's host, an operator).
    pub async fn refund(
        &self,
        who: &Identity,
        order_id: Uuid,
        key: &str,
        amount_cents: i64,
        reason: &str,
    ) -> Result<Refund, PaymentError> {
        if key.is_empty() || key.len() > 128 || crate::text::check_ascii_ref(key).is_err() {
            return Err(PaymentError::Invalid(
                "Idempotency-Key must be 1..=128 printable ASCII characters".into(),
            ));
        }
        if amount_cents <= 0 {
            return Err(PaymentError::Invalid("amount_cents must be > 0".into()));
        }
        if reason.chars().count() > 200 || crate::text::check_visible_line(reason).is_err() {
            return Err(PaymentError::Invalid(
                "reason must be 1..=200 characters of one line".into(),
            ));
        }
        let Some(order) = self.orders.committed(order_id).await? else {
            return match self.orders.current(order_id).await? {
                Some(o) if self.orders.may_manage(who, o.sale_id).await? => Err(
                    PaymentError::InvalidState("only a completed order can be refunded".into()),
                ),
                Some(_) => Err(PaymentError::Forbidden),
                None => Err(PaymentError::NotFound("order")),
            };
        };
        if !self.orders.may_manage(who, order.sale_id).await? {
            return Err(PaymentError::Forbidden);
        }
        let paid = order.payment.clone();
        let payment_id = paid.as_ref().and_then(|p| p.payment_id);
        let provider = match &paid {
            Some(p) if payment_id.is_some() => p.method.clone(),
            _ => "manual".to_owned(),
        };
        let now = self.clock.now();
        let refund = Refund {
            id: Uuid::new_v4(),
            order_id,
            payment_id,
            provider: provider.clone(),
            amount_cents,
            currency: order.currency.clone(),
            reason: reason.to_owned(),
            status: RefundStatus::Pending,
            provider_refund_id: None,
            requested_by: who.user_id.clone(),
            idempotency_key: key.to_owned(),
            fingerprint: format!("{amount_cents}:{reason}"),
            created_at: now,
            updated_at: now,
        };
        let refund = match self
            .store
            .insert_refund(&refund, RefundGuard::Order, now + self.reconcile_every)
            .await?
        {
            RefundInsert::Inserted(r) => r,
            RefundInsert::Existing(r) if r.fingerprint == refund.fingerprint => return Ok(r),
            RefundInsert::Existing(_) => return Err(PaymentError::IdempotencyMismatch),
            RefundInsert::TooMuch => {
                return Err(PaymentError::InvalidState(
                    "refunds of an order cannot add up to more than it was paid".into(),
                ))
            }
        };
        if payment_id.is_none() {
            // Cash on delivery or a manual payment: the host pays back by
            // hand; the record is what we keep.
            return Ok(self
                .finish(refund.id, RefundStatus::Succeeded, None)
                .await
                .unwrap_or(refund));
        }
        self.send_refund(&refund).await;
        Ok(self.store.refund(refund.id).await?.unwrap_or(refund))
    }

    /// One pass of reconciliation: asks providers about due pending
    /// payments and refunds. Each is claimed by one node at a time.
    pub async fn reconcile_once(&self) -> Result<usize, PaymentError> {
        let now = self.clock.now();
        let mut asked = 0;
        for p in self
            .store
            .claim_due_payments(now, CHECK_LEASE, CHECK_BATCH)
            .await?
        {
            asked += 1;
            self.reconcile_payment(p, now).await;
        }
        for r in self
            .store
            .claim_due_refunds(now, CHECK_LEASE, CHECK_BATCH)
            .await?
        {
            asked += 1;
            self.reconcile_refund(r, now).await;
        }
        Ok(asked)
    }

    async fn reconcile_payment(&self, p: Payment, now: DateTime<Utc>) {
        let next =
            Some((now + self.reconcile_every).min(p.expires_at.max(now + TimeDelta::seconds(1))));
        let Some(provider) = self.providers.get(p.provider.as_str()).cloned() else {
            let _ = self.store.schedule_payment(p.id, None).await;
            return;
        };
        let expired = now >= p.expires_at;
        let outcome = match provider.query(p.id).await {
            Ok(report) if report.payment_id == p.id => match report.outcome {
                PayOutcome::Succeeded | PayOutcome::Refunded => {
                    match self.settle(&provider, report).await {
                        Ok(()) => return,
                        Err(e) => Err(format!("{e:?}")),
                    }
                }
                PayOutcome::Pending if expired => match provider.close(p.id).await {
                    Ok(()) => Ok(PaymentStatus::Expired),
                    Err(e) => Err(e.to_string()),
                },
                PayOutcome::Pending => Err(String::new()),
                PayOutcome::Failed if expired => Ok(PaymentStatus::Expired),
                PayOutcome::Failed => Ok(PaymentStatus::Failed),
            },
            Ok(_) => Err("the provider answered about another payment".into()),
            Err(ProviderError::NotFound(_)) if expired => Ok(PaymentStatus::Expired),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(to) => {
                let _ = self
                    .store
                    .set_status(p.id, &[PaymentStatus::Pending], to, now, None)
                    .await;
            }
            Err(why) => {
                if !why.is_empty() {
                    tracing::debug!(payment_id = %p.id, error = %why, "payment still unsettled");
                }
                let _ = self.store.schedule_payment(p.id, next).await;
            }
        }
    }

    async fn reconcile_refund(&self, r: Refund, now: DateTime<Utc>) {
        let (Some(provider), Some(payment_id)) =
            (self.providers.get(r.provider.as_str()), r.payment_id)
        else {
            let _ = self.store.schedule_refund(r.id, None).await;
            return;
        };
        let Ok(Some(payment)) = self.store.payment(payment_id).await else {
            return;
        };
        let req = self.refund_request(&r, &payment);
        let settled = match provider.query_refund(&req).await {
            Ok(report) => self.apply_refund(&r, report).await,
            // Never reached the provider: send it again (the refund number
            // makes it idempotent there).
            Err(ProviderError::NotFound(_)) => self.send_refund(&r).await,
            Err(e) => {
                tracing::debug!(refund_id = %r.id, error = %e, "refund still unsettled");
                None
            }
        };
        if settled.is_none() {
            let _ = self
                .store
                .schedule_refund(r.id, Some(now + self.reconcile_every))
                .await;
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
