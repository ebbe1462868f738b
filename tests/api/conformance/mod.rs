//! Storage-trait conformance: one suite per port (inventory, chat store,
//! presence, event bus, dashboard figures), each case a generic async fn
//! over the trait, run against every backend. The `redis` variant runs on
//! the suite's Redis, so a cluster run (`TEST_REDIS_CLUSTER_NODES`) covers
//! the cluster with the same cases.
//!
//! A case asserts the trait's contract as its docs state it. Where a
//! backend differs by design (one process has no other node), the case
//! lists only the backends it applies to, with the reason beside it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use crate::helpers::TestEnv;
use lychee_live::hub::{Envelope, EventBus, RedisBus, SaleEvent};
use lychee_live::inventory::StockLevel;
use lychee_live::kv::{keys::STOCK_PARTITIONS, Keys, Redis};

/// `case: [backend, ...]` generates `case::backend`, a `#[tokio::test]`
/// that builds the backend with the suite's `backend()` fn, which returns
/// `(what the case takes, Keep)`, and runs the case on it.
macro_rules! conformance_cases {
    ($($case:ident: $backends:tt),+ $(,)?) => {
        $( conformance_cases!(@case $case $backends); )+
    };
    (@case $case:ident [$($backend:ident),+ $(,)?]) => {
        mod $case {
            $(
                #[tokio::test]
                async fn $backend() {
                    let (backend, _keep) = super::$backend().await;
                    super::$case(backend).await;
                }
            )+
        }
    };
}

pub mod bus;
pub mod chat;
pub mod figures;
pub mod inventory;
pub mod presence;

/// What a backend needs for the test's length: the tasks it started
/// (stopped first, on drop) and its Redis prefix and database (deleted).
#[derive(Default)]
pub struct Keep {
    _tasks: Option<DropGuard>,
    _env: Option<TestEnv>,
}

impl Keep {
    pub fn memory() -> Keep {
        Keep::default()
    }

    pub fn redis(env: TestEnv, tasks: Option<CancellationToken>) -> Keep {
        Keep {
            _tasks: tasks.map(CancellationToken::drop_guard),
            _env: Some(env),
        }
    }
}

/// How long an event may take to cross Redis before a case fails.
pub const EVENT_WAIT: Duration = Duration::from_secs(5);

/// A node's bus as `Node::start` makes it, returned once its stock
/// subscriptions are up: `watch` waits for its own subscription, but the
/// stock channels are subscribed by a task of their own after `start`.
pub async fn redis_bus(redis: &Redis, prefix: &str, shutdown: CancellationToken) -> Arc<RedisBus> {
    let bus = RedisBus::start(redis, prefix, shutdown);
    until_up(&*bus, redis, prefix).await;
    bus
}

/// Returns once a Redis node's bus hears every stock partition.
pub async fn until_up(bus: &dyn EventBus, redis: &Redis, prefix: &str) {
    let mut rx = bus.subscribe();
    let keys = Keys::new(prefix);
    // A probe on every partition, from no node (origin nil), until each is heard.
    let probe = Uuid::new_v4();
    let mut heard = HashSet::new();
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    while heard.len() < STOCK_PARTITIONS as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bus's stock subscriptions are not up: heard {heard:?}"
        );
        let probes = (0..STOCK_PARTITIONS)
            .filter(|n| !heard.contains(n))
            .map(|n| {
                let env = Envelope {
                    sale_id: probe,
                    origin: Uuid::nil(),
                    event: SaleEvent::Stock(StockLevel {
                        sku: n.to_string(),
                        stock: 0,
                        remaining: 0,
                        reserved: 0,
                        sold: 0,
                        status: lychee_live::catalog::ProductStatus::Closed,
                        ver: 0,
                    }),
                };
                let json = serde_json::to_string(&env).expect("envelope");
                (keys.stock_partition(n), json)
            })
            .collect();
        redis
            .conn
            .publish_all(probes)
            .await
            .expect("publish probes");
        let round = tokio::time::sleep(Duration::from_millis(50));
        tokio::pin!(round);
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Ok(env) => {
                        if let (true, SaleEvent::Stock(level)) = (env.sale_id == probe, &env.event) {
                            heard.insert(level.sku.parse::<u32>().expect("probe sku"));
                        }
                    }
                    Err(e) => panic!("bus receiver: {e}"),
                },
                _ = &mut round => break,
            }
        }
    }
}

/// The next event of `sale` this receiver gets (others' are skipped).
pub async fn next_of(rx: &mut broadcast::Receiver<Arc<Envelope>>, sale: Uuid) -> Arc<Envelope> {
    tokio::time::timeout(EVENT_WAIT, async {
        loop {
            match rx.recv().await {
                Ok(env) if env.sale_id == sale => return env,
                Ok(_) => {}
                Err(e) => panic!("bus receiver: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event of sale {sale} within {EVENT_WAIT:?}"))
}

/// Hostile user ids: a key separator, a hash tag, both, and the tag's
/// braces alone (Redis Cluster hashes the first `{...}` of a key).
pub const HOSTILE_USERS: [&str; 5] = ["a:b", "{x}", "a:{b}:c", "}{", "用户:{1}"];
