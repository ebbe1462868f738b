//! The event bus: in process for the embedded mode, Redis pub/sub between nodes.
//!
//! Production uses one pub/sub connection per node, subscribed to the stock
//! channel of the deployment (the sold-out fast path needs every sale's) and
//! to the channel of each sale that has viewers on this node, no other.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::PubSubSink;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Envelope, SaleEvent};

/// Room for bursts; a subscriber that falls further behind is told it lagged.
const LOCAL_CAPACITY: usize = 8192;

#[derive(Debug, thiserror::Error)]
#[error("event bus: {0}")]
pub struct BusError(#[from] redis::RedisError);

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
    gaps: tokio::sync::watch::Sender<u64>,
}

impl LocalBus {
    pub fn new() -> Self {
        LocalBus {
            node: Uuid::new_v4(),
            tx: broadcast::channel(LOCAL_CAPACITY).0,
            gaps: tokio::sync::watch::channel(0).0,
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

/// Channel names of one deployment.
#[derive(Debug, Clone)]
pub struct Channels {
    prefix: String,
}

impl Channels {
    pub fn new(prefix: &str) -> Self {
        Channels {
            prefix: prefix.to_owned(),
        }
    }
    pub fn stock(&self) -> String {
        format!("{}:stock", self.prefix)
    }
    pub fn sale(&self, sale_id: Uuid) -> String {
        format!("{}:ev:{sale_id}", self.prefix)
    }
    fn for_event(&self, sale_id: Uuid, event: &SaleEvent) -> String {
        match event {
            SaleEvent::Stock(_) => self.stock(),
            _ => self.sale(sale_id),
        }
    }
}

/// Between nodes: local delivery at once, and Redis channels to the others.
pub struct RedisBus {
    local: LocalBus,
    channels: Channels,
    outbox: mpsc::Sender<(String, Arc<Envelope>)>,
    /// The live subscription's command side; `None` while reconnecting.
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    /// Sales to be subscribed, also after a reconnect.
    watched: Mutex<HashSet<Uuid>>,
}

impl RedisBus {
    /// Starts the publisher and subscriber tasks; both stop on `shutdown`.
    pub fn start(
        client: redis::Client,
        conn: redis::aio::ConnectionManager,
        prefix: &str,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (outbox, rx) = mpsc::channel(LOCAL_CAPACITY);
        let bus = Arc::new(RedisBus {
            local: LocalBus::new(),
            channels: Channels::new(prefix),
            outbox,
            sink: tokio::sync::Mutex::new(None),
            watched: Mutex::new(HashSet::new()),
        });
        tokio::spawn(publish_loop(conn, rx, shutdown.clone()));
        tokio::spawn(subscribe_loop(client, Arc::downgrade(&bus), shutdown));
        bus
    }

    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    fn watched(&self) -> Vec<String> {
        let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        watched.iter().map(|s| self.channels.sale(*s)).collect()
    }
}

#[async_trait]
impl EventBus for RedisBus {
    fn publish(&self, sale_id: Uuid, event: SaleEvent) {
        let channel = self.channels.for_event(sale_id, &event);
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
        self.watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sale_id);
        if let Some(sink) = self.sink.lock().await.as_mut() {
            sink.subscribe(self.channels.sale(sale_id)).await?;
        }
        Ok(())
    }

    async fn unwatch(&self, sale_id: Uuid) -> Result<(), BusError> {
        self.watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sale_id);
        if let Some(sink) = self.sink.lock().await.as_mut() {
            sink.unsubscribe(self.channels.sale(sale_id)).await?;
        }
        Ok(())
    }

    fn gaps(&self) -> tokio::sync::watch::Receiver<u64> {
        self.local.gaps.subscribe()
    }
}

async fn publish_loop(
    mut conn: redis::aio::ConnectionManager,
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
        // What queued meanwhile goes in one pipeline: one round trip.
        let mut pipe = redis::pipe();
        for (channel, env) in queued.drain(..) {
            match serde_json::to_string(&*env) {
                Ok(json) => {
                    pipe.publish(channel, json).ignore();
                }
                Err(e) => tracing::error!(error = %e, "event not serializable"),
            }
        }
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            tracing::warn!(error = %e, "publishing events to Redis failed");
        }
    }
}

async fn subscribe_loop(
    client: redis::Client,
    bus: std::sync::Weak<RedisBus>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        let run = async {
            let Some(b) = bus.upgrade() else {
                return Ok(());
            };
            let (mut sink, mut stream) = client.get_async_pubsub().await?.split();
            // Published first, so a sale watched meanwhile is not missed.
            *b.sink.lock().await = Some(sink.clone());
            sink.subscribe(b.channels.stock()).await?;
            let watched = b.watched();
            if !watched.is_empty() {
                sink.subscribe(watched).await?;
            }
            let (node, tx) = (b.local.node, b.local.tx.clone());
            if !std::mem::take(&mut first) {
                // Subscribed again after a loss: what was published while
                // down is gone; the rooms catch up from Redis.
                b.local.gaps.send_modify(|n| *n += 1);
                metrics::counter!("lychee_bus_gaps_total").increment(1);
            }
            drop(b);
            tracing::debug!("event subscription up");
            while let Some(msg) = stream.next().await {
                let Ok(payload) = msg.get_payload::<String>() else {
                    continue;
                };
                match serde_json::from_str::<Envelope>(&payload) {
                    Ok(env) if env.origin != node => {
                        let _ = tx.send(Arc::new(env));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "undecodable event on the bus"),
                }
            }
            Ok::<(), redis::RedisError>(())
        };
        tokio::select! {
            res = run => {
                if let Err(e) = res {
                    tracing::warn!(error = %e, "event subscription lost; reconnecting");
                }
            }
            _ = shutdown.cancelled() => return,
        }
        let Some(b) = bus.upgrade() else { return };
        *b.sink.lock().await = None;
        drop(b);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
