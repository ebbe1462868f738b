//! Live events of sales: what viewers see change. The buy path and the catalog
//! publish here; the WebSocket rooms (and the sold-out fast path) subscribe.
//!
//! Production carries events between nodes over one Redis pub/sub connection
//! per node; the embedded mode keeps them in process. Either way every node
//! sees every event once, its own first.

pub mod bus;
pub mod chat;
pub mod live;
pub mod moderation;
pub mod presence;
pub mod room;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::catalog::{Product, SaleStatus};
use crate::inventory::StockLevel;
use crate::orders::Order;

pub use bus::{EventBus, LocalBus, RedisBus};
pub use room::Hub;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SaleEvent {
    Stock(StockLevel),
    Product {
        product: Product,
    },
    Sale {
        status: SaleStatus,
    },
    Pinned {
        sku: String,
    },
    /// For the buyer alone: an order changed (completed, cancelled, expired).
    Order {
        order: Box<Order>,
    },
    Chat(chat::ChatMessage),
    ChatDeleted {
        seq: u64,
    },
    Announcement {
        text: String,
        ts: i64,
    },
    SlowMode {
        secs: u32,
    },
    /// Not for viewers: close this user's sockets in the sale (a ban).
    Kick {
        user_id: String,
    },
}

/// One event of one sale, as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub sale_id: Uuid,
    /// The node that published it: a node skips its own events coming back.
    pub origin: Uuid,
    pub event: SaleEvent,
}

/// Coalesces stock levels: a rush of buys on one SKU becomes at most one
/// event per SKU per tick, carrying the newest level (highest `ver`).
pub struct StockPublisher {
    pending: Mutex<HashMap<(Uuid, String), StockLevel>>,
    bus: Arc<dyn EventBus>,
}

/// Short enough that the latest value reaches a viewer well within 200 ms.
pub const STOCK_TICK: Duration = Duration::from_millis(50);

impl StockPublisher {
    pub fn new(bus: Arc<dyn EventBus>) -> Arc<Self> {
        Arc::new(StockPublisher {
            pending: Mutex::new(HashMap::new()),
            bus,
        })
    }

    pub fn changed(&self, sale_id: Uuid, level: StockLevel) {
        // Short section, no await: std mutex.
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get_mut(&(sale_id, level.sku.clone())) {
            Some(old) if old.ver >= level.ver => {}
            Some(old) => *old = level,
            None => {
                pending.insert((sale_id, level.sku.clone()), level);
            }
        }
    }

    fn flush(&self) {
        let drained: Vec<_> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().collect()
        };
        for ((sale_id, _), level) in drained {
            self.bus.publish(sale_id, SaleEvent::Stock(level));
        }
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(STOCK_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush(),
                _ = shutdown.cancelled() => {
                    self.flush();
                    return;
                }
            }
        }
    }
}
