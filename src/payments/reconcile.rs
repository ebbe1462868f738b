//! Reconciliation: every node asks the providers about pending payments and
//! refunds near and after their expiry, so a lost callback neither loses a
//! paid order nor keeps stock held. Each row is claimed by one node at a
//! time (`next_check_at` moves forward as the claim).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::service::{PaymentError, Payments};
use super::store::{Payment, PaymentStatus};
use super::{PayOutcome, ProviderError};

/// A node claims a due payment or refund for this long.
const CHECK_LEASE: TimeDelta = TimeDelta::seconds(60);
const CHECK_BATCH: i64 = 50;
const IN_FLIGHT: usize = 8;

pub async fn run(payments: Arc<Payments>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match payments.reconcile_once().await {
            Ok(0) => {}
            Ok(asked) => tracing::debug!(asked, "reconciled payments and refunds"),
            Err(e) => {
                tracing::warn!(error = %e, "reconciliation pass failed; next pass tries again")
            }
        }
    }
}

impl Payments {
    /// One pass of reconciliation: asks providers about due pending
    /// payments and refunds. Each is claimed by one node at a time.
    pub async fn reconcile_once(&self) -> Result<usize, PaymentError> {
        let now = self.clock.now();
        let payments = self
            .store
            .claim_due_payments(now, CHECK_LEASE, CHECK_BATCH)
            .await?;
        let refunds = self
            .store
            .claim_due_refunds(now, CHECK_LEASE, CHECK_BATCH)
            .await?;
        let asked = payments.len() + refunds.len();
        // A few questions in flight: one slow provider answer (up to its
        // timeout) does not hold up the rest of the batch past its lease.
        futures_util::stream::iter(payments)
            .for_each_concurrent(IN_FLIGHT, |p| self.reconcile_payment(p, now))
            .await;
        futures_util::stream::iter(refunds)
            .for_each_concurrent(IN_FLIGHT, |r| self.reconcile_refund(r, now))
            .await;
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
}
