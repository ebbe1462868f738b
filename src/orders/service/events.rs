//! The sold-out fast path's feed: stock events from the bus teach this
//! node which SKUs are sold out, so refused buyers cost no Redis call.

use super::*;

impl Orders {
    pub(super) async fn stock_changed(&self, sale_id: Uuid, level: StockLevel) {
        let sold_out = self.sold_out.observe(sale_id, &level);
        let sku = level.sku.clone();
        self.stock.changed(sale_id, level);
        if sold_out {
            self.learn_sold_out(sale_id, &sku).await;
        }
    }

    /// Flags the SKU sold out on this node, with its current holders. Once
    /// per flag: the refusals that follow must not each fetch the holders.
    pub(super) async fn learn_sold_out(&self, sale_id: Uuid, sku: &str) {
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
}
