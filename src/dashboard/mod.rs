//! What operators watch: per-second figures per sale summed over all nodes
//! (the SSE dashboard), and Prometheus metrics of this node.
//!
//! Each node counts locally and, once a second, adds its counts to the sale's
//! figures for that second in Redis (a hash per sale and second, expiring
//! soon), so the sum over nodes is what every node reads back.

pub mod feed;
pub mod metrics;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::Clock;
use crate::kv::{Keys, Kv};

/// Upper bounds (ms) of the buy latency buckets; the last is unbounded.
pub const LATENCY_BOUNDS_MS: [f64; 20] = [
    1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0,
    750.0, 1000.0, 2000.0, 5000.0,
];
const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;
/// Figures of a second are kept this long in Redis.
const KEEP_SECS: i64 = 30;

/// One sale's counts over one second.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    pub chat: u64,
    pub buy_attempts: u64,
    pub orders: u64,
    pub latency: [u64; BUCKETS],
}

impl Figures {
    fn is_empty(&self) -> bool {
        *self == Figures::default()
    }

    fn add(&mut self, other: &Figures) {
        self.chat += other.chat;
        self.buy_attempts += other.buy_attempts;
        self.orders += other.orders;
        for (a, b) in self.latency.iter_mut().zip(other.latency.iter()) {
            *a += b;
        }
    }

    /// The upper bound of the bucket holding quantile `q`, in ms.
    pub fn latency_quantile(&self, q: f64) -> f64 {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return LATENCY_BOUNDS_MS
                    .get(i)
                    .copied()
                    .unwrap_or(LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1] * 2.0);
            }
        }
        0.0
    }

    fn fields(&self) -> Vec<(String, u64)> {
        let mut f = vec![
            ("chat".to_owned(), self.chat),
            ("attempts".to_owned(), self.buy_attempts),
            ("orders".to_owned(), self.orders),
        ];
        f.extend(
            self.latency
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (format!("l{i}"), *n)),
        );
        f
    }

    fn from_fields(map: &HashMap<String, u64>) -> Figures {
        let mut f = Figures {
            chat: map.get("chat").copied().unwrap_or(0),
            buy_attempts: map.get("attempts").copied().unwrap_or(0),
            orders: map.get("orders").copied().unwrap_or(0),
            ..Figures::default()
        };
        for (i, slot) in f.latency.iter_mut().enumerate() {
            *slot = map.get(&format!("l{i}")).copied().unwrap_or(0);
        }
        f
    }
}

fn bucket(ms: f64) -> usize {
    LATENCY_BOUNDS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(BUCKETS - 1)
}

/// Where the per-second figures of all nodes meet.
/// Figures could not be added or read (the backend's words, for the log).
#[derive(Debug, thiserror::Error)]
#[error("figures unavailable: {0}")]
pub struct FiguresError(String);

impl From<redis::RedisError> for FiguresError {
    fn from(e: redis::RedisError) -> Self {
        FiguresError(e.to_string())
    }
}

#[async_trait]
pub trait FiguresStore: Send + Sync + 'static {
    async fn add(&self, sale_id: Uuid, second: i64, f: &Figures) -> Result<(), FiguresError>;
    async fn read(&self, sale_id: Uuid, second: i64) -> Result<Figures, FiguresError>;
}

pub struct RedisFigures {
    conn: Kv,
    keys: Keys,
}

impl RedisFigures {
    pub fn new(conn: Kv, prefix: &str) -> Self {
        RedisFigures {
            conn,
            keys: Keys::new(prefix),
        }
    }
}

#[async_trait]
impl FiguresStore for RedisFigures {
    async fn add(&self, sale_id: Uuid, second: i64, f: &Figures) -> Result<(), FiguresError> {
        let key = self.keys.figures(sale_id, second);
        let mut pipe = redis::pipe();
        for (field, n) in f.fields() {
            pipe.hincr(&key, field, n).ignore();
        }
        pipe.expire(&key, KEEP_SECS).ignore();
        Ok(pipe.query_async::<()>(&mut self.conn.clone()).await?)
    }

    async fn read(&self, sale_id: Uuid, second: i64) -> Result<Figures, FiguresError> {
        let map: HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(self.keys.figures(sale_id, second))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(Figures::from_fields(&map))
    }
}

/// One process: the same sums, in memory.
#[derive(Default)]
pub struct MemoryFigures {
    seconds: Mutex<HashMap<(Uuid, i64), Figures>>,
}

#[async_trait]
impl FiguresStore for MemoryFigures {
    async fn add(&self, sale_id: Uuid, second: i64, f: &Figures) -> Result<(), FiguresError> {
        // Short section, no await: std mutex.
        let mut s = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        s.retain(|(_, sec), _| *sec > second - KEEP_SECS);
        s.entry((sale_id, second)).or_default().add(f);
        Ok(())
    }

    async fn read(&self, sale_id: Uuid, second: i64) -> Result<Figures, FiguresError> {
        let s = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        Ok(s.get(&(sale_id, second)).cloned().unwrap_or_default())
    }
}

/// The buy path's metric handles, looked up once (per outcome) instead of on
/// every attempt: registering a labelled counter allocates its key, which
/// showed in the profile of the sold-out crowd. The node's recorder is
/// installed before the first request.
struct BuyMetrics {
    latency: ::metrics::Histogram,
    orders: ::metrics::Counter,
    attempts: Mutex<HashMap<&'static str, ::metrics::Counter>>,
}

impl BuyMetrics {
    fn attempt(&self, outcome: &'static str) {
        // Short section, no await: std mutex.
        let mut known = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        known
            .entry(outcome)
            .or_insert_with(
                || ::metrics::counter!("lychee_buy_attempts_total", "outcome" => outcome),
            )
            .increment(1);
    }
}

static BUY_METRICS: LazyLock<BuyMetrics> = LazyLock::new(|| BuyMetrics {
    latency: ::metrics::histogram!("lychee_buy_latency_seconds"),
    orders: ::metrics::counter!("lychee_orders_completed_total"),
    attempts: Mutex::default(),
});

/// This node's counts of the current seconds, flushed once a second.
pub struct Stats {
    clock: Arc<Clock>,
    pending: Mutex<HashMap<(Uuid, i64), Figures>>,
    store: Arc<dyn FiguresStore>,
}

/// How a buy attempt ended, for the dashboard and the metrics.
#[derive(Debug, Clone, Copy)]
pub enum BuyOutcome {
    Created,
    Refused(&'static str),
}

impl Stats {
    pub fn new(clock: Arc<Clock>, store: Arc<dyn FiguresStore>) -> Arc<Self> {
        Arc::new(Stats {
            clock,
            pending: Mutex::new(HashMap::new()),
            store,
        })
    }

    pub fn store(&self) -> &Arc<dyn FiguresStore> {
        &self.store
    }

    fn with(&self, sale_id: Uuid, f: impl FnOnce(&mut Figures)) {
        let second = self.clock.now_ms().div_euclid(1000);
        // Short section, no await: std mutex.
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        f(p.entry((sale_id, second)).or_default());
    }

    pub fn buy(&self, sale_id: Uuid, outcome: BuyOutcome, latency: Duration) {
        let ms = latency.as_secs_f64() * 1000.0;
        self.with(sale_id, |f| {
            f.buy_attempts += 1;
            f.latency[bucket(ms)] += 1;
        });
        let label = match outcome {
            BuyOutcome::Created => "created",
            BuyOutcome::Refused(code) => code,
        };
        BUY_METRICS.attempt(label);
        BUY_METRICS.latency.record(latency.as_secs_f64());
    }

    /// An order completed (instant checkout or paid).
    pub fn order(&self, sale_id: Uuid) {
        self.with(sale_id, |f| f.orders += 1);
        BUY_METRICS.orders.increment(1);
    }

    pub fn chat(&self, sale_id: Uuid) {
        self.with(sale_id, |f| f.chat += 1);
        ::metrics::counter!("lychee_chat_messages_total").increment(1);
    }

    async fn flush(&self, before_second: i64) {
        let due: Vec<((Uuid, i64), Figures)> = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<(Uuid, i64)> = p
                .keys()
                .filter(|(_, s)| *s < before_second)
                .copied()
                .collect();
            keys.into_iter()
                .filter_map(|k| p.remove(&k).map(|f| (k, f)))
                .collect()
        };
        for ((sale, second), f) in due {
            if f.is_empty() {
                continue;
            }
            if let Err(e) = self.store.add(sale, second, &f).await {
                ::metrics::counter!("lychee_redis_errors_total").increment(1);
                tracing::warn!(error = %e, "dashboard figures not stored");
            }
        }
    }

    /// Flushes finished seconds, a few times a second, until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => {
                    self.flush(i64::MAX).await;
                    return;
                }
            }
            self.flush(self.clock.now_ms().div_euclid(1000)).await;
        }
    }
}

/// One `data:` of the dashboard stream (contract section 7).
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub ts: i64,
    pub viewers: u64,
    pub chat_per_sec: u64,
    pub buy_attempts_per_sec: u64,
    pub orders_per_sec: u64,
    pub gmv_cents: i64,
    /// What succeeded refunds of the sale's completed orders returned.
    pub refunds_cents: i64,
    /// Completed orders still unshipped after their product's `ships_by`
    /// (or 48 h after completion): boxes going bad in the shed.
    pub late: i64,
    /// Claims waiting for the host.
    pub claims_open: i64,
    /// Payments of the sale that ended `failed` (declined, closed unpaid
    /// by the provider): a provider or a checkout in trouble.
    pub payment_failures: i64,
    pub products: Vec<ProductFigures>,
    pub buy_latency_ms: LatencyFigures,
}

#[derive(Debug, Serialize)]
pub struct ProductFigures {
    pub sku: String,
    pub remaining: i64,
    pub reserved: i64,
    pub sold: i64,
}

#[derive(Debug, Serialize)]
pub struct LatencyFigures {
    pub p50: f64,
    pub p99: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_from_buckets() {
        let mut f = Figures::default();
        for _ in 0..98 {
            f.latency[bucket(4.0)] += 1;
        }
        f.latency[bucket(180.0)] += 1;
        f.latency[bucket(9000.0)] += 1;
        assert_eq!(f.latency_quantile(0.5), 5.0);
        assert_eq!(f.latency_quantile(0.99), 200.0);
        assert_eq!(f.latency_quantile(1.0), 10000.0);
        assert_eq!(Figures::default().latency_quantile(0.99), 0.0);
    }

    /// The field form is how Redis holds a second's figures.
    #[test]
    fn figures_survive_their_field_form() {
        let mut a = Figures {
            chat: 2,
            orders: 1,
            ..Figures::default()
        };
        a.latency[3] = 4;
        assert_eq!(Figures::from_fields(&a.fields().into_iter().collect()), a);
    }
}
