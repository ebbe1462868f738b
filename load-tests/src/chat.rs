//! `chat`: V viewers in one room (spread over the nodes), S of them also
//! chatting at R messages a second in total, within the per-user rate.
//! Reports deliveries/s, end-to-end latency (sender's clock to a viewer's,
//! one machine), and per viewer: missing, duplicates, out of order, lagged.
//! With `--server-pid`, the server's RSS per connected viewer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use lychee_live::config::Secret;
use lychee_live::identity::{Role, TokenKeys};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{connect_ws, live_sale, raise_open_files, rss_bytes, source_addr, token, Ws};
use crate::report::Timeline;

#[derive(clap::Args, Clone)]
pub struct ChatArgs {
    /// Base URL of a node; repeat to spread viewers over several nodes.
    #[arg(long = "node", default_value = "http://127.0.0.1:8080")]
    pub nodes: Vec<String>,
    #[arg(long, env = "LIVE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// Viewers in the room.
    #[arg(long, default_value_t = 1000)]
    pub viewers: usize,
    /// Chat messages a second, all senders together.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Viewers that also send; each stays within the per-user rate (1/s).
    #[arg(long, default_value_t = 200)]
    pub senders: usize,
    /// Seconds of chatting.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// Sockets opened at once while connecting.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// The server's pid, to report its memory per connection (one node).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Local addresses 127.0.0.1..=N to spread client sockets over.
    #[arg(long, default_value_t = 8)]
    pub sources: usize,
    /// Against `lychee-load bare-server`: no sale to set up.
    #[arg(long)]
    pub bare: bool,
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[derive(Default)]
struct Seen {
    received: u64,
    duplicates: u64,
    out_of_order: u64,
    lagged: u64,
    skipped: u64,
    /// Seqs received, as bits from the first one (seqs are dense).
    first: Option<u64>,
    bits: Vec<u64>,
    last: u64,
}

impl Seen {
    /// Marks `seq`; false if it was already there.
    fn insert(&mut self, seq: u64) -> bool {
        let first = *self.first.get_or_insert(seq);
        if seq < first {
            // Older than the first one seen: out of order, counted by the caller.
            return true;
        }
        let i = (seq - first) as usize;
        if self.bits.len() <= i / 64 {
            self.bits.resize(i / 64 + 1, 0);
        }
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let new = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        new
    }
}

/// What a frame says, read without a full JSON parse: the load generator
/// shares the machine and must stay cheaper than the server it measures.
struct Scan {
    /// (seq, sender's timestamp in µs) of each chat event.
    chats: Vec<(u64, Option<i64>)>,
    lagged: Vec<u64>,
}

fn number_after<'a>(s: &'a str, key: &str) -> Option<(&'a str, &'a str)> {
    let at = s.find(key)? + key.len();
    let rest = &s[at..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    Some((&rest[..end], &rest[end..]))
}

/// Reads a frame into `out` (cleared first: one buffer per reader).
fn scan(text: &str, out: &mut Scan) {
    out.chats.clear();
    out.lagged.clear();
    for part in text.split(r#"{"type":"#).skip(1) {
        if let Some(body) = part.strip_prefix(r#""chat","#) {
            let Some((seq, rest)) = number_after(body, r#""seq":"#) else {
                continue;
            };
            let sent = number_after(rest, r#""text":"t="#).and_then(|(t, _)| t.parse().ok());
            if let Ok(seq) = seq.parse() {
                out.chats.push((seq, sent));
            }
        } else if part.starts_with(r#""lagged""#) {
            if let Some((n, _)) = number_after(part, r#""skipped":"#) {
                out.lagged.push(n.parse().unwrap_or(0));
            }
        }
    }
}

async fn read_until(
    mut ws: futures_util::stream::SplitStream<Ws>,
    stop: Arc<AtomicBool>,
    timeline: Arc<std::sync::Mutex<Timeline>>,
) -> Seen {
    let mut seen = Seen::default();
    // Reused per frame: the reader must cost less than the server it measures.
    let mut found = Scan {
        chats: Vec::new(),
        lagged: Vec::new(),
    };
    let mut delivered: Vec<Option<u64>> = Vec::new();
    let mut check = tokio::time::interval(Duration::from_millis(200));
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = check.tick() => {
                if stop.load(Ordering::Relaxed) { break } else { continue }
            }
        };
        let Some(Ok(Message::Text(t))) = msg else {
            if matches!(msg, Some(Ok(_))) {
                continue;
            }
            break;
        };
        let now = now_micros();
        scan(t.as_str(), &mut found);
        delivered.clear();
        for &(seq, sent) in &found.chats {
            if !seen.insert(seq) {
                seen.duplicates += 1;
                continue;
            }
            if seq < seen.last {
                seen.out_of_order += 1;
            }
            seen.last = seen.last.max(seq);
            seen.received += 1;
            delivered.push(sent.map(|sent| (now - sent).max(1) as u64));
        }
        if !delivered.is_empty() {
            // One lock per frame, not per event.
            if let Ok(mut t) = timeline.lock() {
                let at = Instant::now();
                for &micros in &delivered {
                    t.record(at, "delivered", micros);
                }
            }
        }
        for &skipped in &found.lagged {
            seen.lagged += 1;
            seen.skipped += skipped;
        }
    }
    seen
}

/// Readers share a few timelines (one each would not fit in memory with
/// thousands of viewers).
const TIMELINE_SHARDS: usize = 16;

pub async fn run(a: ChatArgs) -> Result<Value, String> {
    raise_open_files();
    let keys = TokenKeys::new(&Secret(a.jwt_secret.clone())).map_err(|e| e.to_string())?;
    let http = reqwest::Client::new();
    let host = token(&keys, Role::Host, "load-host");
    let sale = if a.bare {
        "00000000-0000-0000-0000-000000000000".to_owned()
    } else {
        live_sale(&http, &a.nodes[0], &host, "reserve", 1000, 5).await?
    };
    let rss_before = a.server_pid.and_then(rss_bytes);

    // Connect every viewer first, a bounded number at a time.
    let connect_started = Instant::now();
    let gate = Arc::new(Semaphore::new(a.connect_concurrency));
    let mut connecting = Vec::with_capacity(a.viewers);
    for i in 0..a.viewers {
        let node = a.nodes[i % a.nodes.len()].replacen("http", "ws", 1);
        let url = format!(
            "{node}/api/v1/sales/{sale}/live?access_token={}",
            token(&keys, Role::Viewer, &format!("viewer-{i}"))
        );
        let (gate, source) = (gate.clone(), source_addr(i, a.sources));
        connecting.push(tokio::spawn(async move {
            let _p = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let mut ws = connect_ws(&url, source).await?;
            // The welcome.
            ws.next().await;
            Ok::<Ws, String>(ws)
        }));
    }
    let mut sockets = Vec::with_capacity(a.viewers);
    for c in connecting {
        sockets.push(c.await.map_err(|e| e.to_string())??);
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = a.server_pid.and_then(rss_bytes);

    let stop = Arc::new(AtomicBool::new(false));
    let chat_started = Instant::now();
    let shards: Vec<Arc<std::sync::Mutex<Timeline>>> = (0..TIMELINE_SHARDS)
        .map(|_| Arc::new(std::sync::Mutex::new(Timeline::new(chat_started))))
        .collect();
    let sent_ok = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for ws in sockets {
        let (sink, stream) = ws.split();
        writers.push(sink);
        let shard = shards[readers.len() % TIMELINE_SHARDS].clone();
        readers.push(tokio::spawn(read_until(stream, stop.clone(), shard)));
    }

    // Senders: the first S viewers, taking turns at the total rate.
    let senders = a.senders.min(writers.len()).max(1);
    let interval = Duration::from_secs_f64(1.0 / a.rate);
    let started = Instant::now();
    let mut next = tokio::time::Instant::now();
    let mut n: u64 = 0;
    let padding = "lychee ".repeat(8);
    while started.elapsed() < Duration::from_secs(a.secs) {
        next += interval;
        tokio::time::sleep_until(next).await;
        let w = &mut writers[(n as usize) % senders];
        let text = format!("t={} {padding}{n}", now_micros());
        if w.send(Message::Text(
            json!({ "type": "chat", "text": text }).to_string().into(),
        ))
        .await
        .is_ok()
        {
            sent_ok.fetch_add(1, Ordering::Relaxed);
        }
        n += 1;
    }
    let send_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut totals = Seen::default();
    let mut missing = 0u64;
    let mut max_seq_per_viewer = Vec::new();
    let mut all: Vec<Seen> = Vec::new();
    for r in readers {
        all.push(r.await.map_err(|e| e.to_string())?);
    }
    let mut timeline = Timeline::new(chat_started);
    for shard in shards {
        if let Ok(t) = Arc::try_unwrap(shard)
            .map_err(|_| ())
            .and_then(|m| m.into_inner().map_err(|_| ()))
        {
            timeline.merge(t);
        }
    }
    let published = all.iter().map(|s| s.last).max().unwrap_or(0);
    for s in &all {
        totals.received += s.received;
        totals.duplicates += s.duplicates;
        totals.out_of_order += s.out_of_order;
        totals.lagged += s.lagged;
        totals.skipped += s.skipped;
        missing += published.saturating_sub(s.received + s.skipped);
        max_seq_per_viewer.push(s.last);
    }
    // Every latency is in the timeline: one histogram per viewer as well
    // made the load generator fault in gigabytes in the first seconds.
    let h = timeline.latency();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let per_viewer_rss = match (rss_before, rss_after) {
        (Some(b), Some(a2)) => Some((a2.saturating_sub(b)) as f64 / a.viewers as f64),
        _ => None,
    };
    let ok = totals.duplicates == 0 && totals.out_of_order == 0 && missing == 0;
    Ok(json!({
        "scenario": "chat",
        "sale_id": sale,
        "nodes": a.nodes.len(),
        "viewers": a.viewers,
        "senders": senders,
        "offered_per_sec": a.rate,
        "sent": sent_ok.load(Ordering::Relaxed),
        "published": published,
        "connect_secs": connect_secs,
        "connects_per_sec": a.viewers as f64 / connect_secs,
        "deliveries": totals.received,
        "deliveries_per_sec": totals.received as f64 / send_secs,
        "latency_ms": { "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": ms(1.0) },
        "missing": missing,
        "duplicates": totals.duplicates,
        "out_of_order": totals.out_of_order,
        "lagged_events": totals.lagged,
        "lag_skipped": totals.skipped,
        "server_rss_before": rss_before,
        "server_rss_after_connect": rss_after,
        "server_rss_per_viewer_bytes": per_viewer_rss,
        "invariants_ok": ok,
        "timeline": timeline.to_json(),
    }))
}
