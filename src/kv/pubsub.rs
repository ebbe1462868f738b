//! Subscriptions that survive reconnects, slot moves and failovers.
//!
//! One node: a pub/sub connection subscribed to every wanted channel, made
//! again after a loss. A cluster: sharded channels (`SSUBSCRIBE`) on one
//! RESP3 cluster connection, one channel per command (several sales' channels
//! in one `SSUBSCRIBE` would be CROSSSLOT). Redis unsubscribes a shard's
//! clients when its slot moves and a node can drop; the wanted channels are
//! compared with the confirmed ones on every such push and once a second,
//! and the missing subscribed again, routed to wherever the slot is now.
//!
//! Whatever was published while a channel was lost never arrives: the
//! handler hears `Down` then `Up { again: true }` and catches up from the
//! stores.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubSink;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Source;

const RECONCILE_EVERY: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long `add` waits for a subscriber that has just started to connect;
/// inside the 3 s in which an outage must be answered.
const FIRST_LINK_WAIT: Duration = Duration::from_millis(2500);

/// What a subscriber's handler hears.
pub enum Heard<'a> {
    Message(&'a [u8]),
    /// Every wanted channel is subscribed; `again` after a loss.
    Up {
        again: bool,
    },
    /// A wanted channel (or all of them) is not subscribed now.
    Down,
}

pub type Handler = Box<dyn Fn(Heard<'_>) + Send + Sync>;

enum Link {
    Node(PubSubSink),
    Cluster(ClusterConnection),
}

impl Link {
    async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Link::Node(sink) => sink.subscribe(channel).await,
            Link::Cluster(conn) => conn.ssubscribe(channel).await,
        }
    }
    async fn unsubscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Link::Node(sink) => sink.unsubscribe(channel).await,
            Link::Cluster(conn) => conn.sunsubscribe(channel).await,
        }
    }
}

#[derive(Default)]
struct State {
    wanted: HashSet<String>,
    /// Confirmed by the server (cluster only; one node confirms all at once).
    subscribed: HashSet<String>,
    up: bool,
    ever_up: bool,
    /// A channel was added before the first connection and not confirmed in
    /// time: the first `Up` is reported as `again`, so its watcher catches up.
    gap_owed: bool,
}

pub struct Subscriber {
    state: Mutex<State>,
    /// The live connection's command side; `None` while reconnecting.
    link: tokio::sync::Mutex<Option<Link>>,
    handler: Handler,
    /// Wakes the cluster's reconciler when a push says a channel was lost.
    lost: tokio::sync::Notify,
    /// Whether `link` is set, for `add` to wait on at start.
    linked: tokio::sync::watch::Sender<bool>,
}

impl Subscriber {
    /// Subscribes to `channels` now and whatever `add` names later; stops
    /// on `shutdown`.
    pub fn start(
        source: Source,
        channels: Vec<String>,
        handler: Handler,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let sub = Arc::new(Subscriber {
            state: Mutex::new(State {
                wanted: channels.into_iter().collect(),
                ..State::default()
            }),
            link: tokio::sync::Mutex::new(None),
            handler,
            lost: tokio::sync::Notify::new(),
            linked: tokio::sync::watch::channel(false).0,
        });
        match source {
            Source::Node(client) => {
                tokio::spawn(node_loop(client, Arc::downgrade(&sub), shutdown));
            }
            Source::Cluster(seeds) => {
                tokio::spawn(cluster_loop(seeds, Arc::downgrade(&sub), shutdown));
            }
        }
        sub
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once subscribed, so nothing published afterwards is missed.
    /// A subscriber that has just started is waited for; while reconnecting
    /// after a loss the channel is subscribed with the rest, and the handler
    /// hears `Up { again: true }`.
    pub async fn add(&self, channel: String) -> RedisResult<()> {
        let first = {
            let mut st = self.state();
            st.wanted.insert(channel.clone());
            !st.ever_up
        };
        if first && !*self.linked.borrow() {
            let mut linked = self.linked.subscribe();
            let _ = tokio::time::timeout(FIRST_LINK_WAIT, linked.wait_for(|l| *l)).await;
        }
        match self.link.lock().await.as_mut() {
            Some(link) => {
                link.subscribe(&channel).await?;
                self.state().subscribed.insert(channel);
            }
            None if first => self.state().gap_owed = true,
            None => {}
        }
        Ok(())
    }

    async fn set_link(&self, link: Option<Link>) {
        let linked = link.is_some();
        *self.link.lock().await = link;
        self.linked.send_replace(linked);
    }

    pub async fn remove(&self, channel: &str) -> RedisResult<()> {
        {
            let mut st = self.state();
            st.wanted.remove(channel);
            st.subscribed.remove(channel);
        }
        if let Some(link) = self.link.lock().await.as_mut() {
            link.unsubscribe(channel).await?;
        }
        Ok(())
    }

    /// Whether every wanted channel is subscribed now.
    pub fn is_up(&self) -> bool {
        self.state().up
    }

    fn went_up(&self) {
        let again = {
            let mut st = self.state();
            if st.up {
                return;
            }
            st.up = true;
            std::mem::replace(&mut st.ever_up, true) || std::mem::take(&mut st.gap_owed)
        };
        (self.handler)(Heard::Up { again });
    }

    fn went_down(&self) {
        {
            let mut st = self.state();
            if !st.up {
                return;
            }
            st.up = false;
        }
        (self.handler)(Heard::Down);
    }

    fn missing(&self) -> Vec<String> {
        let st = self.state();
        st.wanted.difference(&st.subscribed).cloned().collect()
    }
}

async fn sleep_or_stop(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.cancelled() => false,
    }
}

async fn node_loop(client: redis::Client, sub: Weak<Subscriber>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let run = async {
            let (mut sink, mut stream) = client.get_async_pubsub().await?.split();
            {
                let Some(s) = sub.upgrade() else {
                    return Ok(());
                };
                // Published first, so a channel added meanwhile is not missed.
                s.set_link(Some(Link::Node(sink.clone()))).await;
                let wanted: Vec<String> = s.state().wanted.iter().cloned().collect();
                if !wanted.is_empty() {
                    sink.subscribe(wanted).await?;
                }
                s.went_up();
            }
            while let Some(msg) = stream.next().await {
                let Some(s) = sub.upgrade() else {
                    return Ok(());
                };
                (s.handler)(Heard::Message(msg.get_payload_bytes()));
            }
            Ok::<(), redis::RedisError>(())
        };
        tokio::select! {
            res = run => {
                if let Err(e) = res {
                    tracing::warn!(error = %e, "subscription lost; reconnecting");
                } else {
                    backoff = Duration::from_millis(100);
                }
            }
            _ = shutdown.cancelled() => return,
        }
        let Some(s) = sub.upgrade() else { return };
        s.set_link(None).await;
        s.went_down();
        drop(s);
        if !sleep_or_stop(backoff, &shutdown).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

async fn cluster_loop(seeds: Vec<String>, sub: Weak<Subscriber>, shutdown: CancellationToken) {
    let (tx, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
    let mut backoff = Duration::from_millis(100);
    // The client reconnects to nodes by itself; only the first connection
    // (the topology from a seed) is retried here.
    let conn = loop {
        let client = Source::cluster_builder(&seeds)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx.clone())
            .build();
        let conn = match client {
            Ok(c) => c.get_async_connection().await,
            Err(e) => Err(e),
        };
        match conn {
            Ok(conn) => break conn,
            Err(e) => tracing::warn!(error = %e, "cluster subscription: no seed answers"),
        }
        if !sleep_or_stop(backoff, &shutdown).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    };
    {
        let Some(s) = sub.upgrade() else { return };
        s.set_link(Some(Link::Cluster(conn))).await;
    }
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    loop {
        let Some(s) = sub.upgrade() else { return };
        tokio::select! {
            push = pushes.recv() => {
                let Some(push) = push else { return };
                on_push(&s, push);
                // Drain what queued without a reconcile in between.
                while let Ok(push) = pushes.try_recv() {
                    on_push(&s, push);
                }
            }
            _ = tick.tick() => reconcile(&s).await,
            _ = s.lost.notified() => reconcile(&s).await,
            _ = shutdown.cancelled() => return,
        }
    }
}

fn on_push(s: &Subscriber, push: PushInfo) {
    match push.kind {
        PushKind::SMessage => {
            if let Some(Value::BulkString(payload)) = push.data.get(1) {
                (s.handler)(Heard::Message(payload));
            }
        }
        PushKind::SSubscribe => {
            if let Some(channel) = push.data.first().and_then(text) {
                s.state().subscribed.insert(channel);
            }
        }
        PushKind::SUnsubscribe => {
            let Some(channel) = push.data.first().and_then(text) else {
                return;
            };
            let wanted = {
                let mut st = s.state();
                st.subscribed.remove(&channel);
                st.wanted.contains(&channel)
            };
            if wanted {
                // Its slot moved or its primary stepped down.
                tracing::info!("shard channel unsubscribed by the server; subscribing again");
                s.went_down();
                s.lost.notify_one();
            }
        }
        PushKind::Disconnection => {
            // Which node it was is not said: confirm every channel again.
            s.state().subscribed.clear();
            s.went_down();
            s.lost.notify_one();
        }
        _ => {}
    }
}

async fn reconcile(s: &Subscriber) {
    let missing = s.missing();
    if !missing.is_empty() {
        let mut link = s.link.lock().await;
        let Some(link) = link.as_mut() else { return };
        for channel in missing {
            match link.subscribe(&channel).await {
                Ok(()) => {
                    s.state().subscribed.insert(channel);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "subscribing a shard channel failed; retrying");
                }
            }
        }
    }
    if s.missing().is_empty() {
        s.went_up();
    } else {
        s.went_down();
    }
}
