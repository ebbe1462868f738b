//! Reconciliation: every node asks the providers about pending payments and
//! refunds near and after their expiry, so a lost callback neither loses a
//! paid order nor keeps stock held. Each row is claimed by one node at a
//! time (`next_check_at` moves forward as the claim).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Payments;

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
