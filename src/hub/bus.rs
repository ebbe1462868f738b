//! The event bus: in process for the embedded mode, Redis pub/sub between nodes.
//!
//! Production uses one subscriber per node (see `kv::pubsub`), subscribed to
//! the stock partitions of the deployment (the sold-out fast path needs every
//! sale's levels) and to the channel of each sale that has viewers on this
//! node, no other.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Envelope, SaleEvent};
use crate::kv::pubsub::{Heard, Subscriber};
use crate::kv::{Keys, Kv, Redis};

/// Room for bursts; a subscriber that falls further behind is told it lagged.
const LOCAL_CAPACITY: usize = 8192;

#[derive(Debug, thiserror::Error)]
#[error("event bus unavailable: {0}")]
pub struct BusError(String);

impl From<redis::RedisError> for BusError {
    fn from(e: redis::RedisError) -> Self {
        BusError(e.to_string())
    }
}

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Never waits: the hot paths publish and go on.
    fn publish(&self, sale_id: Uuid, event: SaleEvent);
    /// Every event this node receives (stock of every sale; the rest only
    /// for watched sales).
    fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>>;
    /// Starts receiving a sale's events; returns once subscribed, so nothing
    /// published afterwards is missed.
    async fn watch(&self, sale_id: Uuid) -> Result<(), BusError>;
    async fn unwatch(&self, sale_id: Uuid) -> Result<(), BusError>;
    /// Counts the gaps in what this node received: it moves on when the
    /// subscription is back after a loss, so whatever was published
    /// meanwhile never arrived and the rooms must catch up from the stores.
    fn gaps(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// One process: a broadcast channel.
pub struct LocalBus {
    node: Uuid,
    tx: broadcast::Sender<Arc<Envelope>>,
    /// In process nothing is lost in transit; the Redis bus moves it.
    gaps: Arc<tokio::sync::watch::Sender<u64>>,
}

impl LocalBus {
    pub fn new() -> Self {
        LocalBus {
            node: Uuid::new_v4(),
            tx: broadcast::channel(LOCAL_CAPACITY).0,
            gaps: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    fn send(&self, env: Arc<Envelope>) {
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(env);
    }
}

impl Default for LocalBus {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl EventBus for LocalBus {
    fn publish(&self, sale_id: Uuid, event: SaleEvent) {
        self.send(Arc::new(Envelope {
            sale_id,
            origin: self.node,
            event,
        }));
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.tx.subscribe()
    }

    async fn watch(&self, _: Uuid) -> Result<(), BusError> {
        Ok(())
    }

    async fn unwatch(&self, _: Uuid) -> Result<(), BusError> {
        Ok(())
    }

    fn gaps(&self) -> tokio::sync::watch::Receiver<u64> {
        self.gaps.subscribe()
    }
}

/// Between nodes: local delivery at once, and Redis channels to the others.
pub struct RedisBus {
    local: LocalBus,
    keys: Keys,
    outbox: mpsc::Sender<(String, Arc<Envelope>)>,
    subscriber: Arc<Subscriber>,
}

impl RedisBus {
    /// Starts the publisher and subscriber tasks; both stop on `shutdown`.
    pub fn start(redis: &Redis, prefix: &str, shutdown: CancellationToken) -> Arc<Self> {
        let (outbox, rx) = mpsc::channel(LOCAL_CAPACITY);
        let local = LocalBus::new();
        let keys = Keys::new(prefix);
        let (node, tx, gaps) = (local.node, local.tx.clone(), local.gaps.clone());
        let handler = Box::new(move |heard: Heard<'_>| match heard {
            Heard::Message(payload) => match serde_json::from_slice::<Envelope>(payload) {
                Ok(env) if env.origin != node => {
                    let _ = tx.send(Arc::new(env));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "undecodable event on the bus"),
            },
            Heard::Up { again: true } => {
                // Subscribed again after a loss: what was published while
                // down is gone; the rooms catch up from Redis.
                gaps.send_modify(|n| *n += 1);
                metrics::counter!("lychee_bus_gaps_total").increment(1);
            }
            Heard::Up { again: false } => tracing::debug!("event subscription up"),
            Heard::Down => tracing::warn!("event subscription down; rooms catch up when back"),
        });
        let subscriber = Subscriber::start(
            redis.source.clone(),
            keys.stock_channels(),
            handler,
            shutdown.clone(),
        );
        tokio::spawn(publish_loop(redis.conn.clone(), rx, shutdown));
        Arc::new(RedisBus {
            local,
            keys,
            outbox,
            subscriber,
        })
    }

    fn channel_for(&self, sale_id: Uuid, event: &SaleEvent) -> String {
        match event {
            SaleEvent::Stock(_) => self.keys.stock_channel(sale_id),
            _ => self.keys.sale_channel(sale_id),
        }
    }
}

#[async_trait]
impl EventBus for RedisBus {
    fn publish(&self, sale_id: Uuid, event: SaleEvent) {
        let channel = self.channel_for(sale_id, &event);
        let env = Arc::new(Envelope {
            sale_id,
            origin: self.local.node,
            event,
        });
        self.local.send(env.clone());
        if self.outbox.try_send((channel, env)).is_err() {
            tracing::warn!("event outbox full: an event reaches only this node");
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.local.subscribe()
    }

    async fn watch(&self, sale_id: Uuid) -> Result<(), BusError> {
        Ok(self.subscriber.add(self.keys.sale_channel(sale_id)).await?)
    }

    async fn unwatch(&self, sale_id: Uuid) -> Result<(), BusError> {
        Ok(self
            .subscriber
            .remove(&self.keys.sale_channel(sale_id))
            .await?)
    }

    fn gaps(&self) -> tokio::sync::watch::Receiver<u64> {
        self.local.gaps.subscribe()
    }
}

async fn publish_loop(
    kv: Kv,
    mut rx: mpsc::Receiver<(String, Arc<Envelope>)>,
    shutdown: CancellationToken,
) {
    let mut queued = Vec::with_capacity(256);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut queued, 256) => n,
            _ = shutdown.cancelled() => return,
        };
        if n == 0 {
            return;
        }
        // What queued meanwhile goes in one round trip per slot.
        let mut messages = Vec::with_capacity(n);
        for (channel, env) in queued.drain(..) {
            match serde_json::to_string(&*env) {
                Ok(json) => messages.push((channel, json)),
                Err(e) => tracing::error!(error = %e, "event not serializable"),
            }
        }
        if let Err(e) = kv.publish_all(messages).await {
            tracing::warn!(error = %e, "publishing events to Redis failed");
        }
    }
}
