//! The expiry reaper, on every node: takes due reservations (each claimed
//! atomically, so nodes never release one twice), asks PostgreSQL whether
//! each was completed meanwhile, and returns the stock of the others.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Orders;
use crate::catalog::SaleStatus;

/// With this tick, expired stock is back on sale well within the contract's 2 s.
const TICK: Duration = Duration::from_millis(250);
/// A claimed admission not settled within this (the node died) is due again.
const LEASE_MS: i64 = 10_000;
const PER_TICK: usize = 500;

pub async fn run(orders: Arc<Orders>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) = reap_once(&orders).await {
            tracing::warn!(error = %e, "reaper pass failed; retrying next tick");
        }
    }
}

/// One pass over every sale holding admissions.
pub async fn reap_once(orders: &Orders) -> Result<(), super::OrderError> {
    let inventory = orders.inventory();
    for sale_id in inventory.reap_sales().await? {
        let now = orders.clock().now_ms();
        let due = inventory
            .claim_due(sale_id, now, LEASE_MS, PER_TICK)
            .await?;
        if !due.is_empty() {
            orders.settle_due(sale_id, &due).await?;
        }
        if due.is_empty() && inventory.held_count(sale_id).await? == 0 {
            // Only an ended sale leaves the set: no admission can race in.
            let ended = orders
                .catalog_status(sale_id)
                .await?
                .is_none_or(|s| s == SaleStatus::Ended);
            if ended {
                inventory.forget_reap_sale(sale_id).await?;
            }
        }
    }
    Ok(())
}
