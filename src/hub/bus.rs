//! The event bus: in process for the embedded mode, Redis pub/sub between nodes.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Envelope, SaleEvent};

/// Room for bursts; a subscriber that falls further behind is told it lagged.
const LOCAL_CAPACITY: usize = 4096;

pub trait EventBus: Send + Sync + 'static {
    /// Never waits: the hot paths publish and go on.
    fn publish(&self, sale_id: Uuid, event: SaleEvent);
    fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>>;
}

/// One process: a broadcast channel.
pub struct LocalBus {
    node: Uuid,
    tx: broadcast::Sender<Arc<Envelope>>,
}

impl LocalBus {
    pub fn new() -> Self {
        LocalBus {
            node: Uuid::new_v4(),
            tx: broadcast::channel(LOCAL_CAPACITY).0,
        }
    }
}

impl Default for LocalBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus for LocalBus {
    fn publish(&self, sale_id: Uuid, event: SaleEvent) {
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(Arc::new(Envelope {
            sale_id,
            origin: self.node,
            event,
        }));
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.tx.subscribe()
    }
}

/// Between nodes: local delivery at once, and one Redis channel per
/// deployment carrying every event to the other nodes.
pub struct RedisBus {
    local: LocalBus,
    outbox: mpsc::Sender<Arc<Envelope>>,
}

impl RedisBus {
    /// Starts the publisher and subscriber tasks; both stop on `shutdown`.
    pub fn start(
        client: redis::Client,
        conn: redis::aio::ConnectionManager,
        prefix: &str,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let channel = format!("{prefix}:ev");
        let (outbox, rx) = mpsc::channel(LOCAL_CAPACITY);
        let bus = Arc::new(RedisBus {
            local: LocalBus::new(),
            outbox,
        });
        tokio::spawn(publish_loop(conn, channel.clone(), rx, shutdown.clone()));
        tokio::spawn(subscribe_loop(
            client,
            channel,
            bus.local.node,
            bus.local.tx.clone(),
            shutdown,
        ));
        bus
    }
}

impl EventBus for RedisBus {
    fn publish(&self, sale_id: Uuid, event: SaleEvent) {
        let env = Arc::new(Envelope {
            sale_id,
            origin: self.local.node,
            event,
        });
        let _ = self.local.tx.send(env.clone());
        if self.outbox.try_send(env).is_err() {
            tracing::warn!("event outbox full: an event reaches only this node");
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.local.subscribe()
    }
}

async fn publish_loop(
    mut conn: redis::aio::ConnectionManager,
    channel: String,
    mut rx: mpsc::Receiver<Arc<Envelope>>,
    shutdown: CancellationToken,
) {
    loop {
        let env = tokio::select! {
            env = rx.recv() => match env { Some(e) => e, None => return },
            _ = shutdown.cancelled() => return,
        };
        // Drain what queued meanwhile into one pipeline: one round trip.
        let mut pipe = redis::pipe();
        let mut next = Some(env);
        while let Some(env) = next {
            match serde_json::to_string(&*env) {
                Ok(json) => {
                    pipe.publish(&channel, json).ignore();
                }
                Err(e) => tracing::error!(error = %e, "event not serializable"),
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            tracing::warn!(error = %e, "publishing events to Redis failed");
        }
    }
}

async fn subscribe_loop(
    client: redis::Client,
    channel: String,
    node: Uuid,
    tx: broadcast::Sender<Arc<Envelope>>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let run = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
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
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
