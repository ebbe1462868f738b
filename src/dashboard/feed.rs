//! The dashboard's snapshots: one per sale and second on each node, shared
//! by every stream of that sale on the node.
//!
//! A snapshot reads Redis (the second's figures, viewer counts, live stock)
//! and PostgreSQL (the sale's products), on the pool the batch writer needs.
//! Built per stream, ten operators' tabs meant ten times that work a second.
//! Instead the first stream of a sale starts a task that builds one snapshot
//! a second, serialized once, and publishes it through a `watch` channel;
//! every stream of the sale sends the latest one. The task ends within a
//! second of the last stream going (or at shutdown). Each user may hold a
//! few streams per node, so one client cannot open them by the thousand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::{FiguresStore, LatencyFigures, ProductFigures, Snapshot};
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::hub::presence::Presence;

/// Dashboard streams one user may hold on one node.
pub const MAX_STREAMS_PER_USER: usize = 5;
/// A snapshot of second `s` is taken this far into second `s + 1`: every
/// node has flushed its counts of `s` by then (within 250 ms of its end),
/// and a wake-up late by up to half a second still reads the right second,
/// so none is skipped or shown twice.
const PHASE_MS: i64 = 500;

/// One second of a sale's dashboard, serialized once for all its streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The snapshot's JSON.
    Data(Arc<str>),
    /// Why this second's figures could not be read; the stream goes on.
    Error(Arc<str>),
}

/// Builds a snapshot of a sale (a trait so tests can count the builds).
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// The sale's figures of `second` (unix seconds), and its state now.
    async fn snapshot(&self, sale_id: Uuid, second: i64) -> Result<Snapshot, String>;
}

/// The node's live figures: the dashboard's real source.
pub struct LiveSource {
    pub catalog: Arc<Catalog>,
    /// Refunds and late shipments, once a second per sale for all its streams.
    pub orders: Arc<dyn crate::orders::OrderStore>,
    pub claims: Arc<dyn crate::claims::ClaimStore>,
    pub payments: Arc<dyn crate::payments::store::PaymentStore>,
    pub figures: Arc<dyn FiguresStore>,
    pub presence: Arc<dyn Presence>,
    pub clock: Arc<Clock>,
}

#[async_trait]
impl Source for LiveSource {
    /// The sale's figures of `second`, summed over every node.
    async fn snapshot(&self, sale_id: Uuid, second: i64) -> Result<Snapshot, String> {
        let now = self.clock.now_ms();
        let figures = self
            .figures
            .read(sale_id, second)
            .await
            .map_err(|e| format!("dashboard figures unavailable: {e}"))?;
        let viewers = self
            .presence
            .total(sale_id, now)
            .await
            .map_err(|e| format!("viewer counts unavailable: {e}"))?;
        let catalog = self
            .catalog
            .figures(sale_id)
            .await
            .map_err(|e| format!("catalog unavailable: {e}"))?;
        let after_sales = self
            .orders
            .after_sales(sale_id, self.clock.now())
            .await
            .map_err(|e| format!("orders unavailable: {e}"))?;
        let claims_open = self
            .claims
            .open_count(sale_id)
            .await
            .map_err(|e| format!("claims unavailable: {e}"))?;
        let payment_failures = self
            .payments
            .failed_count(sale_id)
            .await
            .map_err(|e| format!("payments unavailable: {e}"))?;
        Ok(Snapshot {
            ts: now,
            viewers,
            chat_per_sec: figures.chat,
            buy_attempts_per_sec: figures.buy_attempts,
            orders_per_sec: figures.orders,
            gmv_cents: catalog.gmv_cents.saturating_sub(after_sales.free_cents),
            refunds_cents: after_sales.refunds_cents,
            late: after_sales.late,
            claims_open,
            payment_failures,
            products: catalog
                .products
                .iter()
                .map(|p| ProductFigures {
                    sku: p.sku.clone(),
                    remaining: p.remaining,
                    reserved: p.reserved,
                    sold: p.sold,
                })
                .collect(),
            buy_latency_ms: LatencyFigures {
                p50: figures.latency_quantile(0.5),
                p99: figures.latency_quantile(0.99),
            },
        })
    }
}

type Latest = watch::Sender<Option<Frame>>;

/// This node's dashboard feeds, one per watched sale.
pub struct Feeds {
    source: Arc<dyn Source>,
    clock: Arc<Clock>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    per_user: usize,
    /// Short sections, no await: std mutexes.
    sales: Mutex<HashMap<Uuid, Arc<Latest>>>,
    streams: Mutex<HashMap<String, usize>>,
}

/// A user already holds as many streams as allowed.
#[derive(Debug, thiserror::Error)]
#[error("at most {0} dashboard streams per user on this node")]
pub struct TooManyStreams(pub usize);

/// One stream's view of its sale's feed; its slot is given back on drop.
pub struct Subscription {
    pub frames: watch::Receiver<Option<Frame>>,
    _slot: Slot,
}

struct Slot {
    feeds: Arc<Feeds>,
    user: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut streams = self.feeds.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = streams.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                streams.remove(&self.user);
            }
        }
        ::metrics::gauge!("lychee_dashboard_streams").decrement(1.0);
    }
}

impl Feeds {
    pub fn new(
        source: Arc<dyn Source>,
        clock: Arc<Clock>,
        per_user: usize,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Feeds {
            source,
            clock,
            shutdown,
            tasks,
            per_user,
            sales: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
        })
    }

    /// Joins (or starts) the sale's feed for one of `user`'s streams. The
    /// latest frame, if any, is ready at once; then one a second.
    pub fn subscribe(
        self: &Arc<Self>,
        user: &str,
        sale_id: Uuid,
    ) -> Result<Subscription, TooManyStreams> {
        {
            let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            let mine = streams.entry(user.to_owned()).or_insert(0);
            if *mine >= self.per_user {
                return Err(TooManyStreams(self.per_user));
            }
            *mine += 1;
        }
        ::metrics::gauge!("lychee_dashboard_streams").increment(1.0);
        let slot = Slot {
            feeds: self.clone(),
            user: user.to_owned(),
        };
        let mut sales = self.sales.lock().unwrap_or_else(|e| e.into_inner());
        let mut frames = match sales.get(&sale_id) {
            Some(latest) => latest.subscribe(),
            None => {
                let (latest, frames) = watch::channel(None);
                let latest = Arc::new(latest);
                sales.insert(sale_id, latest.clone());
                self.tasks.spawn(self.clone().run(sale_id, latest));
                frames
            }
        };
        if frames.borrow().is_some() {
            frames.mark_changed();
        }
        Ok(Subscription {
            frames,
            _slot: slot,
        })
    }

    /// The last complete second at once, then each next one at its phase.
    async fn run(self: Arc<Self>, sale_id: Uuid, latest: Arc<Latest>) {
        loop {
            if self.retire_unwatched(sale_id, &latest) {
                return;
            }
            let second = self.clock.now_ms().div_euclid(1000) - 1;
            let frame = match self.source.snapshot(sale_id, second).await {
                Ok(s) => match serde_json::to_string(&s) {
                    Ok(json) => Frame::Data(json.into()),
                    Err(e) => Frame::Error(format!("snapshot not serialized: {e}").into()),
                },
                Err(e) => Frame::Error(e.into()),
            };
            ::metrics::counter!("lychee_dashboard_snapshots_total").increment(1);
            latest.send_replace(Some(frame));
            // A slow snapshot shortens the wait rather than moving the phase.
            let due = (second + 2) * 1000 + PHASE_MS;
            let wait = (due - self.clock.now_ms()).clamp(0, 1000 + PHASE_MS);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                _ = self.shutdown.cancelled() => break,
            }
        }
        // Shutdown: dropping the sender ends every stream of the sale.
        self.sales
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sale_id);
    }

    /// Removes the sale's feed if no stream is left. Under the map's lock, so
    /// a stream joining meanwhile either finds the feed still there and
    /// keeps it, or starts a new one.
    fn retire_unwatched(&self, sale_id: Uuid, latest: &Latest) -> bool {
        let mut sales = self.sales.lock().unwrap_or_else(|e| e.into_inner());
        if latest.receiver_count() > 0 {
            return false;
        }
        sales.remove(&sale_id);
        true
    }

    /// Sales with a feed running on this node.
    pub fn watched(&self) -> usize {
        self.sales.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the snapshots built, and stamps each with its number.
    #[derive(Default)]
    struct Counting {
        built: AtomicUsize,
    }

    #[async_trait]
    impl Source for Counting {
        async fn snapshot(&self, _: Uuid, _: i64) -> Result<Snapshot, String> {
            let n = self.built.fetch_add(1, Ordering::Relaxed) + 1;
            Ok(Snapshot {
                ts: n as i64,
                viewers: 0,
                chat_per_sec: 0,
                buy_attempts_per_sec: 0,
                orders_per_sec: 0,
                gmv_cents: 0,
                refunds_cents: 0,
                late: 0,
                claims_open: 0,
                payment_failures: 0,
                products: Vec::new(),
                buy_latency_ms: LatencyFigures { p50: 0.0, p99: 0.0 },
            })
        }
    }

    struct Fixture {
        feeds: Arc<Feeds>,
        source: Arc<Counting>,
        clock: Arc<Clock>,
        shutdown: CancellationToken,
    }

    fn feeds(per_user: usize) -> Fixture {
        let source = Arc::new(Counting::default());
        let clock = Arc::new(Clock::default());
        let shutdown = CancellationToken::new();
        let feeds = Feeds::new(
            source.clone(),
            clock.clone(),
            per_user,
            TaskTracker::new(),
            shutdown.clone(),
        );
        Fixture {
            feeds,
            source,
            clock,
            shutdown,
        }
    }

    /// Moves the domain clock with the paused runtime's.
    async fn pass(clock: &Clock, d: Duration) {
        clock.advance(d);
        tokio::time::sleep(d).await;
    }

    async fn next(s: &mut Subscription) -> Option<Frame> {
        s.frames.changed().await.ok()?;
        s.frames.borrow_and_update().clone()
    }

    #[tokio::test(start_paused = true)]
    async fn many_streams_of_a_sale_share_one_snapshot_a_second() {
        let Fixture {
            feeds,
            source,
            clock,
            ..
        } = feeds(100);
        let sale = Uuid::new_v4();
        let mut subs: Vec<Subscription> = (0..40)
            .map(|i| feeds.subscribe(&format!("op{}", i % 10), sale).unwrap())
            .collect();
        let other = Uuid::new_v4();
        let _elsewhere = feeds.subscribe("op0", other).unwrap();
        // The domain clock is the wall clock plus the test's steps: seconds
        // that really pass on a loaded machine add their snapshots too.
        let wall = std::time::Instant::now();
        for second in 1..=5 {
            let mut seen = Vec::new();
            for s in &mut subs {
                seen.push(next(s).await);
            }
            // Every stream sent the same bytes, built once for all.
            assert!(seen.iter().all(|f| f == &seen[0]), "{seen:?}");
            assert!(matches!(&seen[0], Some(Frame::Data(j)) if j.contains("\"ts\":")));
            pass(&clock, Duration::from_secs(1)).await;
            let built = source.built.load(Ordering::Relaxed);
            // This sale's feed and the other one's: two a second.
            let real = wall.elapsed().as_secs() as usize;
            // Two feeds, a snapshot a second each; a step of the test clock
            // may land between a feed's wake-up and its next phase and cost
            // it one more. Unshared, 40 streams would build 40 a second.
            assert!(
                built <= 4 * (second + real) + 2,
                "{built} snapshots in {second} s (+{real} s of wall time)"
            );
        }
        assert_eq!(feeds.watched(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_stream_gets_the_latest_frame_at_once() {
        let Fixture { feeds, .. } = feeds(100);
        let sale = Uuid::new_v4();
        let mut first = feeds.subscribe("a", sale).unwrap();
        let frame = next(&mut first).await;
        let mut late = feeds.subscribe("b", sale).unwrap();
        assert_eq!(next(&mut late).await, frame);
    }

    #[tokio::test(start_paused = true)]
    async fn a_feed_stops_when_its_last_stream_is_gone_or_at_shutdown() {
        let Fixture {
            feeds,
            source,
            clock,
            shutdown,
        } = feeds(100);
        let sale = Uuid::new_v4();
        let mut s = feeds.subscribe("a", sale).unwrap();
        next(&mut s).await;
        drop(s);
        pass(&clock, Duration::from_secs(2)).await;
        assert_eq!(feeds.watched(), 0);
        let built = source.built.load(Ordering::Relaxed);
        pass(&clock, Duration::from_secs(5)).await;
        assert_eq!(
            source.built.load(Ordering::Relaxed),
            built,
            "no reader, no work"
        );

        // A new stream starts a new feed; shutdown ends its stream.
        let mut s = feeds.subscribe("a", sale).unwrap();
        assert!(next(&mut s).await.is_some());
        shutdown.cancel();
        assert!(s.frames.changed().await.is_err());
        assert_eq!(feeds.watched(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn streams_are_capped_per_user_and_given_back() {
        let Fixture { feeds, .. } = feeds(2);
        let (one, two) = (Uuid::new_v4(), Uuid::new_v4());
        let a1 = feeds.subscribe("a", one).unwrap();
        let _a2 = feeds.subscribe("a", two).unwrap();
        assert!(feeds.subscribe("a", one).is_err());
        let _b = feeds.subscribe("b", one).unwrap();
        drop(a1);
        let _a3 = feeds.subscribe("a", one).unwrap();
        assert!(feeds.subscribe("a", two).is_err());
    }
}
