//! `EventBus`: every node sees every event once, its own first (at once,
//! watched or not); another node's stock events always, its other events
//! only for the sales it watches. The in-process bus is one node: each
//! "node" of it is the same bus.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::broadcast::error::TryRecvError;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{next_of, Keep};
use crate::helpers::TestEnv;
use lychee_live::catalog::{ProductStatus, SaleStatus};
use lychee_live::hub::chat::ChatMessage;
use lychee_live::hub::{EventBus, LocalBus, RedisBus, SaleEvent};
use lychee_live::inventory::StockLevel;
use lychee_live::kv::Redis;

pub enum Nodes {
    Local(Arc<LocalBus>),
    Redis {
        redis: Redis,
        prefix: String,
        shutdown: CancellationToken,
    },
}

impl Nodes {
    /// A node's bus (a new node on Redis, its subscriptions up).
    async fn node(&self) -> Arc<dyn EventBus> {
        match self {
            Nodes::Local(bus) => bus.clone(),
            Nodes::Redis {
                redis,
                prefix,
                shutdown,
            } => super::redis_bus(redis, prefix, shutdown.clone()).await,
        }
    }

    /// A node as `Node::start` leaves it: its subscriptions may still be
    /// on their way.
    fn started(&self) -> Arc<dyn EventBus> {
        match self {
            Nodes::Local(bus) => bus.clone(),
            Nodes::Redis {
                redis,
                prefix,
                shutdown,
            } => RedisBus::start(redis, prefix, shutdown.clone()),
        }
    }

    /// Returns once the node's subscriptions are up.
    async fn until_up(&self, bus: &dyn EventBus) {
        if let Nodes::Redis { redis, prefix, .. } = self {
            super::until_up(bus, redis, prefix).await;
        }
    }

    fn one_process(&self) -> bool {
        matches!(self, Nodes::Local(_))
    }
}

async fn memory() -> (Nodes, Keep) {
    (Nodes::Local(Arc::new(LocalBus::new())), Keep::memory())
}

async fn redis() -> (Nodes, Keep) {
    let env = TestEnv::production().await;
    let shutdown = CancellationToken::new();
    let nodes = Nodes::Redis {
        redis: Redis::connect(&crate::helpers::redis_target())
            .await
            .unwrap(),
        prefix: env.prefix().unwrap().to_owned(),
        shutdown: shutdown.clone(),
    };
    (nodes, Keep::redis(env, Some(shutdown)))
}

conformance_cases! {
    events_reach_every_watching_node_once_in_order: [memory, redis],
    a_node_hears_its_own_events_at_once_watched_or_not: [memory, redis],
    stock_of_unwatched_sales_reaches_every_node: [memory, redis],
    a_watch_right_after_start_misses_nothing: [memory, redis],
    // One process has no other node to keep an unwatched sale's events from.
    another_node_s_events_arrive_only_while_watched: [redis],
}

fn chat(seq: u64, user: &str, text: &str) -> SaleEvent {
    SaleEvent::Chat(ChatMessage {
        seq,
        user_id: user.to_owned(),
        name: "李梅 \"Mei\"".to_owned(),
        text: text.to_owned(),
        ts: 1_700_000_000_000,
    })
}

fn stock(sku: &str, remaining: i64) -> SaleEvent {
    SaleEvent::Stock(StockLevel {
        sku: sku.to_owned(),
        stock: 10,
        remaining,
        reserved: 10 - remaining,
        sold: 0,
        status: ProductStatus::OnSale,
        ver: 1_700_000_000_000_000 + remaining,
    })
}

async fn events_reach_every_watching_node_once_in_order(nodes: Nodes) {
    let (a, b) = (nodes.node().await, nodes.node().await);
    let sale = Uuid::new_v4();
    a.watch(sale).await.unwrap();
    b.watch(sale).await.unwrap();
    let (mut ra, mut rb) = (a.subscribe(), b.subscribe());
    let x = chat(1, "a:{b}:c", "</script> \"}{\" 荔枝 🍒");
    let y = SaleEvent::Kick {
        user_id: "{x}".to_owned(),
    };
    let z = SaleEvent::Announcement {
        text: "3 boxes left\\".to_owned(),
        ts: 7,
    };
    let w = SaleEvent::Sale {
        status: SaleStatus::Ended,
    };

    a.publish(sale, x.clone());
    a.publish(sale, y.clone());
    let bx = next_of(&mut rb, sale).await;
    assert_eq!(bx.event, x);
    assert_eq!(next_of(&mut rb, sale).await.event, y);
    // Published by b once it heard y: a hears it after any copy of its own
    // x and y coming back, so a copy not skipped would show before it.
    b.publish(sale, z.clone());
    let ax = next_of(&mut ra, sale).await;
    assert_eq!(ax.event, x);
    assert_eq!(next_of(&mut ra, sale).await.event, y);
    let az = next_of(&mut ra, sale).await;
    assert_eq!(az.event, z);
    a.publish(sale, w.clone());
    assert_eq!(next_of(&mut ra, sale).await.event, w);
    let bz = next_of(&mut rb, sale).await;
    assert_eq!(bz.event, z);
    assert_eq!(
        next_of(&mut rb, sale).await.event,
        w,
        "b's z came back once"
    );

    // The publisher is named alike on every node.
    assert_eq!(ax.origin, bx.origin);
    assert_eq!(az.origin, bz.origin);
    assert_eq!(ax.origin == az.origin, nodes.one_process());
    assert_eq!(ax.sale_id, sale);
    assert_eq!(*a.gaps().borrow(), 0, "nothing was lost");
    assert_eq!(*b.gaps().borrow(), 0);
}

async fn a_node_hears_its_own_events_at_once_watched_or_not(nodes: Nodes) {
    let a = nodes.node().await;
    let mut ra = a.subscribe();
    let sale = Uuid::new_v4();
    assert!(matches!(ra.try_recv(), Err(TryRecvError::Empty)));
    for event in [
        chat(9, "mei", "unwatched"),
        SaleEvent::SlowMode { secs: 30 },
        stock("A", 3),
    ] {
        a.publish(sale, event.clone());
        let env = ra.try_recv().expect("delivered before publish returns");
        assert_eq!((env.sale_id, &env.event), (sale, &event));
    }
    // Unwatching what was never watched is fine, and stops nothing of its own.
    a.unwatch(sale).await.unwrap();
    a.unwatch(Uuid::new_v4()).await.unwrap();
    a.publish(sale, SaleEvent::ChatDeleted { seq: 9 });
    assert_eq!(
        ra.try_recv().unwrap().event,
        SaleEvent::ChatDeleted { seq: 9 }
    );
    // A receiver hears only what was published after it subscribed.
    let mut late = a.subscribe();
    assert!(matches!(late.try_recv(), Err(TryRecvError::Empty)));
}

async fn stock_of_unwatched_sales_reaches_every_node(nodes: Nodes) {
    let (a, b) = (nodes.node().await, nodes.node().await);
    let mut rb = b.subscribe();
    // Enough sales for every stock partition.
    let sales: Vec<Uuid> = (0..24).map(|_| Uuid::new_v4()).collect();
    for (i, sale) in sales.iter().enumerate() {
        a.publish(*sale, stock(&format!("sku-{{{i}}}"), i as i64));
    }
    let mut heard = HashSet::new();
    let wanted: HashSet<Uuid> = sales.iter().copied().collect();
    tokio::time::timeout(super::EVENT_WAIT, async {
        while heard.len() < sales.len() {
            let env = rb.recv().await.expect("receiver");
            if !wanted.contains(&env.sale_id) {
                continue;
            }
            let i = sales.iter().position(|s| *s == env.sale_id).unwrap();
            assert_eq!(env.event, stock(&format!("sku-{{{i}}}"), i as i64));
            assert!(heard.insert(env.sale_id), "twice: {}", env.sale_id);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("heard {} of {} sales' stock", heard.len(), sales.len()));
}

/// c, watching, proves each event went through Redis while b did not
/// watch; b's next event of the sale is then the first it was owed.
async fn another_node_s_events_arrive_only_while_watched(nodes: Nodes) {
    let (a, b, c) = (nodes.node().await, nodes.node().await, nodes.node().await);
    let sale = Uuid::new_v4();
    let (mut rb, mut rc) = (b.subscribe(), c.subscribe());
    c.watch(sale).await.unwrap();

    a.publish(sale, chat(1, "mei", "before b watched"));
    assert_eq!(
        next_of(&mut rc, sale).await.event,
        chat(1, "mei", "before b watched")
    );
    // `watch` returns once subscribed: what is published next arrives.
    b.watch(sale).await.unwrap();
    a.publish(sale, chat(2, "mei", "watched"));
    assert_eq!(
        next_of(&mut rb, sale).await.event,
        chat(2, "mei", "watched")
    );
    assert_eq!(
        next_of(&mut rc, sale).await.event,
        chat(2, "mei", "watched")
    );

    b.unwatch(sale).await.unwrap();
    a.publish(sale, chat(3, "mei", "after b unwatched"));
    assert_eq!(
        next_of(&mut rc, sale).await.event,
        chat(3, "mei", "after b unwatched")
    );
    b.watch(sale).await.unwrap();
    a.publish(sale, chat(4, "mei", "watched again"));
    assert_eq!(
        next_of(&mut rb, sale).await.event,
        chat(4, "mei", "watched again")
    );
    // Stock still reaches b whether it watches or not.
    b.unwatch(sale).await.unwrap();
    a.publish(sale, stock("A", 1));
    assert_eq!(next_of(&mut rb, sale).await.event, stock("A", 1));
}

/// "Returns once subscribed, so nothing published afterwards is missed",
/// also for a node that has just started (a socket joins at once).
async fn a_watch_right_after_start_misses_nothing(nodes: Nodes) {
    let (a, c) = (nodes.node().await, nodes.node().await);
    let sale = Uuid::new_v4();
    c.watch(sale).await.unwrap();
    let mut rc = c.subscribe();
    let b = nodes.started();
    let mut rb = b.subscribe();
    b.watch(sale).await.unwrap();
    let first = chat(1, "mei", "right after b watched");
    a.publish(sale, first.clone());
    assert_eq!(next_of(&mut rc, sale).await.event, first, "through Redis");
    // Once b is surely up, the next event shows whether b had the first.
    nodes.until_up(&*b).await;
    a.publish(sale, chat(2, "mei", "once b is up"));
    assert_eq!(next_of(&mut rb, sale).await.event, first);
}
