//! Rebuilding a sale's live state from PostgreSQL (stock − sold), at start-up,
//! on `lychee-live reconcile`, and whenever a node finds it missing.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::OrderStore;
use crate::catalog::{CatalogStore, SaleStatus};
use crate::inventory::{Inventory, InventoryError, ProductSeed, SaleSeed};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("another node is rebuilding the sale")]
    Busy,
}

impl RebuildError {
    /// The contract's code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            RebuildError::Store(e) => e.code(),
            RebuildError::Inventory(e) => e.code(),
            RebuildError::Busy => "unavailable",
        }
    }
}

/// Long enough for a sale with thousands of products and buyers.
const LOCK_TTL_MS: u64 = 10_000;
/// How long a node waits for another node's rebuild before answering 503.
const WAIT_FOR_OTHER: Duration = Duration::from_secs(3);

pub struct Rebuilder {
    catalog: Arc<dyn CatalogStore>,
    orders: Arc<dyn OrderStore>,
    inventory: Arc<dyn Inventory>,
}

impl Rebuilder {
    pub fn new(
        catalog: Arc<dyn CatalogStore>,
        orders: Arc<dyn OrderStore>,
        inventory: Arc<dyn Inventory>,
    ) -> Self {
        Rebuilder {
            catalog,
            orders,
            inventory,
        }
    }

    /// Makes sure the sale has live state, rebuilding it if missing; returns
    /// its epoch.
    pub async fn ensure(&self, sale_id: Uuid) -> Result<i64, RebuildError> {
        if let Some(epoch) = self.inventory.epoch(sale_id).await? {
            return Ok(epoch);
        }
        self.rebuild_if(sale_id, |current| current.is_none(), false)
            .await?;
        self.inventory
            .epoch(sale_id)
            .await?
            .ok_or(RebuildError::Busy)
    }

    /// The first live state of a sale just created: its chat starts at seq 1.
    pub async fn create(&self, sale_id: Uuid) -> Result<(), RebuildError> {
        self.rebuild_if(sale_id, |current| current.is_none(), true)
            .await
    }

    /// Live state was found missing or incomplete under epoch `seen`: rebuild,
    /// unless another node already did (the epoch moved on since).
    pub async fn repair(&self, sale_id: Uuid, seen: Option<i64>) -> Result<(), RebuildError> {
        self.rebuild_if(
            sale_id,
            |current| current.is_none() || current == seen,
            false,
        )
        .await
    }

    /// Rebuilds unconditionally (reservations held only in Redis are dropped).
    pub async fn rebuild(&self, sale_id: Uuid) -> Result<(), RebuildError> {
        self.rebuild_if(sale_id, |_| true, false).await
    }

    /// Under a lock shared by all nodes, rebuilds if `needed(current epoch)`.
    async fn rebuild_if(
        &self,
        sale_id: Uuid,
        needed: impl Fn(Option<i64>) -> bool,
        fresh: bool,
    ) -> Result<(), RebuildError> {
        let token = Uuid::new_v4().to_string();
        if !self
            .inventory
            .lock_rebuild(sale_id, &token, LOCK_TTL_MS)
            .await?
        {
            return self.wait_for_other(sale_id).await;
        }
        let result = match self.inventory.epoch(sale_id).await {
            Ok(current) if needed(current) => self.rebuild_locked(sale_id, fresh).await,
            Ok(_) => Ok(()),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = self.inventory.unlock_rebuild(sale_id, &token).await {
            tracing::warn!(error = %e, %sale_id, "rebuild lock not released; it expires");
        }
        result
    }

    async fn rebuild_locked(&self, sale_id: Uuid, fresh: bool) -> Result<(), RebuildError> {
        let Some(sale) = self.catalog.sale(sale_id).await? else {
            return Ok(());
        };
        // Fence first: from here on no order admitted under the old state can
        // commit, so `sold` and the holdings read below stay true.
        let now = chrono::Utc::now();
        let epoch = now.timestamp_micros();
        let products = self.catalog.fence(sale_id, epoch).await?;
        let holdings = self.orders.holdings(sale_id).await?;
        let seed = SaleSeed {
            sale_id,
            epoch,
            status: sale.status,
            products: products
                .into_iter()
                .map(|p| ProductSeed {
                    sku: p.sku,
                    stock: p.stock,
                    sold: p.sold,
                    per_user_limit: p.per_user_limit,
                    status: p.status,
                })
                .collect(),
            holdings,
            // Rebuilt after a loss, the chat counter went with the rest:
            // restart it from the time in µs, above any seq given before
            // (short of a million messages a second since the sale began).
            chat_seq_floor: if fresh {
                0
            } else {
                now.timestamp_micros().max(0) as u64
            },
        };
        self.inventory.install(&seed).await?;
        tracing::info!(%sale_id, "rebuilt live state from the database");
        Ok(())
    }

    /// Another node holds the lock: wait until it is done.
    async fn wait_for_other(&self, sale_id: Uuid) -> Result<(), RebuildError> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHER;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if !self.inventory.rebuilding(sale_id).await?
                && self.inventory.epoch(sale_id).await?.is_some()
            {
                return Ok(());
            }
        }
        Err(RebuildError::Busy)
    }

    /// Every scheduled or live sale: rebuilt where missing (or always, with `force`).
    /// Returns how many were rebuilt.
    pub async fn reconcile(&self, force: bool) -> Result<usize, RebuildError> {
        let mut rebuilt = 0;
        for status in [SaleStatus::Live, SaleStatus::Scheduled] {
            for sale in self.catalog.sales(Some(status), i64::MAX).await? {
                if force {
                    self.rebuild(sale.id).await?;
                    rebuilt += 1;
                } else if self.inventory.epoch(sale.id).await?.is_none() {
                    self.ensure(sale.id).await?;
                    rebuilt += 1;
                }
            }
        }
        Ok(rebuilt)
    }
}
