//! What the scenarios share: latency histograms, tokens, API calls.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lychee_live::identity::{Identity, Role, TokenKeys};
use serde_json::{json, Value};

use crate::report::Timeline;

pub fn histogram() -> Histogram<u64> {
    // Microseconds up to 60 s, three significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

#[derive(Default)]
pub struct Phase {
    latency: Option<Histogram<u64>>,
    outcomes: HashMap<String, u64>,
}

impl Phase {
    pub fn record(&mut self, micros: u64, outcome: &str) {
        let h = self.latency.get_or_insert_with(histogram);
        let _ = h.record(micros.max(1));
        match self.outcomes.get_mut(outcome) {
            Some(n) => *n += 1,
            None => {
                self.outcomes.insert(outcome.to_owned(), 1);
            }
        }
    }

    pub fn summary(&self, secs: f64) -> Value {
        let total: u64 = self.outcomes.values().sum();
        let ms = |q: f64| {
            self.latency
                .as_ref()
                .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
        };
        json!({
            "requests": total,
            "secs": secs,
            "per_sec": if secs > 0.0 { total as f64 / secs } else { 0.0 },
            "outcomes": self.outcomes,
            "latency_ms": { "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": ms(1.0) },
        })
    }
}

/// Answers as one buyer's loop saw them. The loop only appends twelve bytes
/// an answer; histograms are built once after the run. (A timeline and two
/// histograms per buyer made the load generator zero 200 KB pages at every
/// second boundary: a fifth of the machine during a rush.)
#[derive(Default)]
pub struct Samples {
    labels: Vec<String>,
    rows: Vec<Sample>,
}

struct Sample {
    at_ms: u32,
    micros: u32,
    label: u16,
    after: bool,
}

impl Samples {
    /// An answer with `label`, `at` into the run, `after` sell-out or not.
    pub fn push(&mut self, at: Duration, micros: u64, label: &str, after: bool) {
        let label = match self.labels.iter().position(|l| l == label) {
            Some(i) => i,
            None => {
                self.labels.push(label.to_owned());
                self.labels.len() - 1
            }
        };
        self.rows.push(Sample {
            at_ms: at.as_millis().min(u32::MAX as u128) as u32,
            micros: micros.min(u32::MAX as u64) as u32,
            label: label as u16,
            after,
        });
    }

    /// The phases (selling, after sell-out) and the per-second timeline.
    pub fn tally(all: Vec<Samples>, start: Instant) -> (Phase, Phase, Timeline) {
        let (mut selling, mut after) = (Phase::default(), Phase::default());
        let mut timeline = Timeline::new(start);
        for s in all {
            for r in s.rows {
                let label = &s.labels[r.label as usize];
                let micros = u64::from(r.micros);
                timeline.record_in((r.at_ms / 1000) as usize, label, Some(micros));
                let phase = if r.after { &mut after } else { &mut selling };
                phase.record(micros, label);
            }
        }
        (selling, after, timeline)
    }
}

pub fn token(keys: &TokenKeys, role: Role, sub: &str) -> String {
    let who = Identity {
        user_id: sub.into(),
        name: None,
        role,
    };
    keys.mint(&who, Duration::from_secs(3600), chrono::Utc::now())
        .expect("mint a token")
        .token
}

/// Adds a default address in `province` to the book of the token's user.
pub async fn add_address(
    http: &reqwest::Client,
    node: &str,
    token: &str,
    province: &str,
) -> Result<(), String> {
    let (s, v) = call(
        http.post(format!("{node}/api/v1/me/addresses"))
            .bearer_auth(token)
            .json(
                &json!({ "name": "Load Buyer", "phone": "13800000000", "province": province,
                           "city": "City", "line": "1 Orchard Road", "is_default": true }),
            ),
    )
    .await?;
    if s != 201 {
        return Err(format!("add address: {s} {v}"));
    }
    Ok(())
}

pub fn token_for_late(keys: &TokenKeys, i: usize) -> String {
    token(keys, Role::Viewer, &format!("late-{i}"))
}

pub async fn call(req: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
    let r = req.send().await.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// A live sale with one product on sale; returns its id.
pub async fn live_sale(
    http: &reqwest::Client,
    node: &str,
    host: &str,
    checkout: &str,
    stock: i64,
    per_user_limit: i64,
) -> Result<String, String> {
    live_sale_with(http, node, host, checkout, stock, per_user_limit, None).await
}

/// `live_sale`, its product shipping only to the provinces `ships_to` names
/// (GB/T 2260 codes) when given.
pub async fn live_sale_with(
    http: &reqwest::Client,
    node: &str,
    host: &str,
    checkout: &str,
    stock: i64,
    per_user_limit: i64,
    ships_to: Option<&[String]>,
) -> Result<String, String> {
    let (s, sale) = call(
        http.post(format!("{node}/api/v1/sales"))
            .bearer_auth(host)
            .json(&json!({ "title": "Load test", "checkout": checkout })),
    )
    .await?;
    if s != 201 {
        return Err(format!("create sale: {s} {sale}"));
    }
    let id = sale["id"].as_str().ok_or("sale without id")?.to_owned();
    let steps = [
        (format!("{node}/api/v1/sales/{id}/products"), {
            let mut p = json!({ "sku": "RUSH", "name": "Feizixiao 5 kg", "price_cents": 16800,
                                    "stock": stock, "per_user_limit": per_user_limit });
            if let Some(codes) = ships_to {
                p["ships_to"] = json!({ "include": codes });
            }
            p
        }),
        (format!("{node}/api/v1/sales/{id}/start"), json!({})),
        (
            format!("{node}/api/v1/sales/{id}/products/RUSH/open"),
            json!({}),
        ),
    ];
    for (url, body) in steps {
        let (s, v) = call(http.post(&url).bearer_auth(host).json(&body)).await?;
        if !(200..300).contains(&s) {
            return Err(format!("{url}: {s} {v}"));
        }
    }
    Ok(id)
}

/// As many open files as the hard limit allows: each socket is one.
pub fn raise_open_files() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

/// The local address of the `i`th client socket: spread over 127.0.0.1..=N so
/// more sockets than one source address has ephemeral ports can connect.
pub fn source_addr(i: usize, sources: usize) -> SocketAddr {
    let n = (i % sources.max(1)) as u8;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + n)), 0)
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket from a chosen local address (loopback nodes only use
/// the spread; other hosts are dialled from the default address).
pub async fn connect_ws(url: &str, source: SocketAddr) -> Result<Ws, String> {
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    let host = parsed.host_str().ok_or("no host")?.to_owned();
    let port = parsed.port_or_known_default().ok_or("no port")?;
    let target: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if target.ip().is_loopback() {
        socket
            .bind(source)
            .map_err(|e| format!("bind {source}: {e}"))?;
    }
    let stream = socket.connect(target).await.map_err(|e| e.to_string())?;
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// The events of one server frame: a `batch`'s list, or the frame itself.
pub fn events(frame: Value) -> Vec<Value> {
    match frame["type"].as_str() {
        Some("batch") => match frame {
            Value::Object(mut o) => match o.remove("events") {
                Some(Value::Array(events)) => events,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        },
        _ => vec![frame],
    }
}

/// The resident memory of a process, from /proc.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}
