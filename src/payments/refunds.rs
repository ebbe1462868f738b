//! Refunds: the host's (`POST /orders/{id}/refunds`), and the automatic
//! ones of payments whose order cannot complete; sent to the payment's
//! provider, settled by its answer, its callback or reconciliation.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::service::{PaymentError, Payments, Settle, SYSTEM};
use super::store::{Payment, PaymentStatus, Refund, RefundGuard, RefundInsert, RefundStatus};
use super::{Provider, ProviderError, RefundOutcome, RefundReport, RefundRequest};
use crate::identity::Identity;

impl Payments {
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

    /// A success that cannot complete its order: the money goes back.
    pub(super) async fn refund_whole(&self, payment: &Payment, reason: &str) -> Result<(), Settle> {
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

    pub(super) async fn settle_refund_report(
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

    pub(super) async fn reconcile_refund(&self, r: Refund, now: DateTime<Utc>) {
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
}
