//! Confirmation in Redis of committed instant orders, batched as their
//! commit was: the orders of one SKU that PostgreSQL committed together are
//! moved from reserved to sold, and their keys given their final answers,
//! in one script call instead of one each. Each buyer still waits for its
//! order's confirmation, so the sale's `sold` has moved before the 201.
//!
//! A lost confirmation is healed as a lost single one was: the order stays
//! reserved with its commit lease in the deadlines set, and the reaper asks
//! PostgreSQL before it releases anything; a replay meanwhile finds the
//! order in PostgreSQL.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::inventory::{Confirmation, Inventory, InventoryError, StockLevel};

/// As the batch writer's: a batch of commits is confirmed in one pass.
const MAX_BATCH: usize = 512;
const QUEUE: usize = 8192;

#[derive(Debug, thiserror::Error, Clone)]
pub enum ConfirmError {
    #[error("{0}")]
    Inventory(Arc<InventoryError>),
    #[error("the confirmer has stopped")]
    Stopped,
}

/// The level after the batch goes to its first order only: one stock event
/// per batch, not one per order.
type Reply = oneshot::Sender<Result<Option<StockLevel>, ConfirmError>>;

struct Pending {
    sale_id: Uuid,
    sku: String,
    confirmation: Confirmation,
    reply: Reply,
}

#[derive(Clone)]
pub struct Confirmer {
    tx: mpsc::Sender<Pending>,
}

impl Confirmer {
    pub fn start(inventory: Arc<dyn Inventory>, shutdown: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(inventory, rx, shutdown));
        Confirmer { tx }
    }

    /// Resolves once the order's batch is confirmed (or failed).
    pub async fn confirm(
        &self,
        sale_id: Uuid,
        sku: &str,
        confirmation: Confirmation,
    ) -> Result<Option<StockLevel>, ConfirmError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending {
                sale_id,
                sku: sku.to_owned(),
                confirmation,
                reply,
            })
            .await
            .map_err(|_| ConfirmError::Stopped)?;
        rx.await.map_err(|_| ConfirmError::Stopped)?
    }
}

/// The queued confirmations by sale and SKU, in arrival order.
fn group(queued: Vec<Pending>) -> Vec<(Uuid, String, Vec<Confirmation>, Vec<Reply>)> {
    let mut groups: Vec<(Uuid, String, Vec<Confirmation>, Vec<Reply>)> = Vec::new();
    for p in queued {
        match groups
            .iter_mut()
            .find(|(s, k, _, _)| *s == p.sale_id && *k == p.sku)
        {
            Some((_, _, items, replies)) => {
                items.push(p.confirmation);
                replies.push(p.reply);
            }
            None => groups.push((p.sale_id, p.sku, vec![p.confirmation], vec![p.reply])),
        }
    }
    groups
}

async fn run(
    inventory: Arc<dyn Inventory>,
    mut rx: mpsc::Receiver<Pending>,
    shutdown: CancellationToken,
) {
    let mut queued = Vec::with_capacity(MAX_BATCH);
    loop {
        // Confirmations already queued still go after shutdown begins: their
        // buyers wait for an answer.
        let n = tokio::select! {
            biased;
            n = rx.recv_many(&mut queued, MAX_BATCH) => n,
            _ = shutdown.cancelled(), if rx.is_empty() => return,
        };
        if n == 0 {
            return;
        }
        let calls =
            group(std::mem::take(&mut queued))
                .into_iter()
                .map(|(sale_id, sku, items, replies)| {
                    let inventory = inventory.clone();
                    async move {
                        let outcome = inventory.confirm_batch(sale_id, &sku, &items).await;
                        metrics::histogram!("lychee_confirm_batch_size").record(items.len() as f64);
                        (outcome, replies)
                    }
                });
        for (outcome, replies) in futures_util::future::join_all(calls).await {
            match outcome {
                Ok(level) => {
                    let mut level = level;
                    for reply in replies {
                        let _ = reply.send(Ok(level.take()));
                    }
                }
                Err(e) => {
                    let e = ConfirmError::Inventory(Arc::new(e));
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Stored;

    fn pending(
        sale_id: Uuid,
        sku: &str,
    ) -> (
        Pending,
        oneshot::Receiver<Result<Option<StockLevel>, ConfirmError>>,
    ) {
        let (reply, rx) = oneshot::channel();
        let confirmation = Confirmation {
            order_id: Uuid::now_v7(),
            user_id: "mei".into(),
            key: "k".into(),
            completed_at_ms: 0,
            fingerprint: "A:1".into(),
            answer: Stored::Pending(Uuid::nil()),
        };
        (
            Pending {
                sale_id,
                sku: sku.into(),
                confirmation,
                reply,
            },
            rx,
        )
    }

    #[test]
    fn confirmations_are_grouped_by_sale_and_sku_in_order() {
        let (s1, s2) = (Uuid::now_v7(), Uuid::now_v7());
        let items = vec![
            pending(s1, "A").0,
            pending(s2, "A").0,
            pending(s1, "B").0,
            pending(s1, "A").0,
        ];
        let first = items[0].confirmation.order_id;
        let last = items[3].confirmation.order_id;
        let groups = group(items);
        assert_eq!(groups.len(), 3);
        assert_eq!((groups[0].0, groups[0].1.as_str()), (s1, "A"));
        let ids: Vec<Uuid> = groups[0].2.iter().map(|c| c.order_id).collect();
        assert_eq!(ids, vec![first, last]);
        assert_eq!(groups[0].3.len(), 2);
        assert_eq!((groups[1].0, groups[2].1.as_str()), (s2, "B"));
    }
}
