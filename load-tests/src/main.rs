//! `lychee-load`: drives real lychee-live nodes through the REST API and
//! reports what buyers would see.
//!
//! `rush`: a host opens one SKU; B buyers buy it at full speed until it is sold
//! out, then keep pressing "buy" for a while. Reports completed orders/s and
//! latency while selling, answered attempts/s and latency after sell-out, and
//! checks the invariants through the API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use lychee_live::config::Secret;
use lychee_live::identity::{Identity, Role, TokenKeys};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "lychee-load", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Buyers rush one SKU until it is sold out, then keep trying.
    Rush(RushArgs),
}

#[derive(clap::Args, Clone)]
struct RushArgs {
    /// Base URL of a node; repeat to spread buyers over several nodes.
    #[arg(long = "node", default_value = "http://127.0.0.1:8080")]
    nodes: Vec<String>,
    /// The nodes' JWT secret, to sign the host's and buyers' tokens.
    #[arg(long, env = "LIVE_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    /// Concurrent buyers.
    #[arg(long, default_value_t = 1000)]
    buyers: usize,
    /// Units on sale.
    #[arg(long, default_value_t = 20_000)]
    stock: i64,
    /// reserve or instant.
    #[arg(long, default_value = "instant")]
    checkout: String,
    /// Seconds of buying after sell-out.
    #[arg(long, default_value_t = 5)]
    after_secs: u64,
    /// Give up selling after this many seconds.
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
}

fn histogram() -> Histogram<u64> {
    // Microseconds up to 60 s, three significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

#[derive(Default)]
struct Phase {
    latency: Option<Histogram<u64>>,
    outcomes: HashMap<String, u64>,
}

impl Phase {
    fn record(&mut self, micros: u64, outcome: &str) {
        let h = self.latency.get_or_insert_with(histogram);
        let _ = h.record(micros.max(1));
        *self.outcomes.entry(outcome.to_owned()).or_default() += 1;
    }

    fn merge(&mut self, other: Phase) {
        if let Some(o) = other.latency {
            let h = self.latency.get_or_insert_with(histogram);
            let _ = h.add(o);
        }
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
    }

    fn summary(&self, secs: f64) -> Value {
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

fn token(keys: &TokenKeys, role: Role, sub: &str) -> String {
    let who = Identity {
        user_id: sub.into(),
        name: None,
        role,
    };
    keys.mint(&who, Duration::from_secs(3600), chrono::Utc::now())
        .expect("mint a token")
        .token
}

fn token_for_late(keys: &TokenKeys, i: usize) -> String {
    token(keys, Role::Viewer, &format!("late-{i}"))
}

async fn call(req: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
    let r = req.send().await.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

async fn setup(
    http: &reqwest::Client,
    node: &str,
    host: &str,
    a: &RushArgs,
) -> Result<String, String> {
    let (s, sale) = call(
        http.post(format!("{node}/api/v1/sales"))
            .bearer_auth(host)
            .json(&json!({ "title": "Load rush", "checkout": a.checkout })),
    )
    .await?;
    if s != 201 {
        return Err(format!("create sale: {s} {sale}"));
    }
    let id = sale["id"].as_str().ok_or("sale without id")?.to_owned();
    let steps = [
        (
            format!("{node}/api/v1/sales/{id}/products"),
            json!({ "sku": "RUSH", "name": "Feizixiao 5 kg",
            "price_cents": 16800, "stock": a.stock, "per_user_limit": 1000 }),
        ),
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

async fn rush(a: RushArgs) -> Result<Value, String> {
    let keys = TokenKeys::new(&Secret(a.jwt_secret.clone())).map_err(|e| e.to_string())?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(a.buyers)
        .build()
        .map_err(|e| e.to_string())?;
    let host = token(&keys, Role::Host, "load-host");
    let sale = setup(&http, &a.nodes[0], &host, &a).await?;
    let sold_out = Arc::new(AtomicBool::new(false));
    let sold_out_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..a.buyers {
        let http = http.clone();
        let url = format!("{}/api/v1/sales/{sale}/orders", a.nodes[i % a.nodes.len()]);
        let token = token(&keys, Role::Viewer, &format!("buyer-{i}"));
        // After sell-out the crowd that missed out keeps pressing "buy".
        let late = token_for_late(&keys, i);
        let (sold_out, sold_out_at) = (sold_out.clone(), sold_out_at.clone());
        let (after, max) = (
            Duration::from_secs(a.after_secs),
            Duration::from_secs(a.max_secs),
        );
        tasks.push(tokio::spawn(async move {
            let (mut selling, mut after_phase) = (Phase::default(), Phase::default());
            let mut bought = 0i64;
            for n in 0.. {
                let end_of_after = sold_out_at.lock().ok().and_then(|t| *t).map(|t| t + after);
                if end_of_after.is_some_and(|e| Instant::now() >= e) || started.elapsed() > max {
                    break;
                }
                let phase_after = sold_out.load(Ordering::Relaxed);
                let t = Instant::now();
                let r = call(
                    http.post(&url)
                        .bearer_auth(if phase_after { &late } else { &token })
                        .header("Idempotency-Key", format!("b{i}-{n}"))
                        .json(&json!({ "sku": "RUSH", "qty": 1 })),
                )
                .await;
                let micros = t.elapsed().as_micros() as u64;
                let outcome = match &r {
                    Ok((201, _)) => {
                        bought += 1;
                        "201".to_owned()
                    }
                    Ok((s, v)) => format!("{s} {}", v["error"]["code"].as_str().unwrap_or("?")),
                    Err(_) => "transport error".to_owned(),
                };
                if outcome.ends_with("sold_out") && !phase_after {
                    sold_out.store(true, Ordering::Relaxed);
                    if let Ok(mut at) = sold_out_at.lock() {
                        at.get_or_insert_with(Instant::now);
                    }
                }
                if phase_after {
                    after_phase.record(micros, &outcome)
                } else {
                    selling.record(micros, &outcome)
                }
            }
            (selling, after_phase, bought)
        }));
    }
    let (mut selling, mut after_phase, mut bought) = (Phase::default(), Phase::default(), 0);
    for t in tasks {
        let (s, af, b) = t.await.map_err(|e| e.to_string())?;
        selling.merge(s);
        after_phase.merge(af);
        bought += b;
    }
    let sell_secs = sold_out_at
        .lock()
        .ok()
        .and_then(|t| *t)
        .map_or(started.elapsed(), |t| t - started)
        .as_secs_f64();
    let (_, after_sale) = call(http.get(format!("{}/api/v1/sales/{sale}", a.nodes[0]))).await?;
    let product = &after_sale["products"][0];
    let ok = product["sold"].as_i64() == Some(bought) && bought <= a.stock;
    Ok(json!({
        "scenario": "rush",
        "sale_id": sale,
        "buyers": a.buyers,
        "nodes": a.nodes.len(),
        "stock": a.stock,
        "checkout": a.checkout,
        "bought_2xx": bought,
        "api_sold": product["sold"],
        "api_remaining": product["remaining"],
        "invariants_ok": ok,
        "selling": selling.summary(sell_secs),
        "completed_orders_per_sec": bought as f64 / sell_secs,
        "after_sell_out": after_phase.summary(a.after_secs as f64),
    }))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Rush(a) => rush(a).await,
    };
    match result {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            if report["invariants_ok"] == true {
                std::process::ExitCode::SUCCESS
            } else {
                eprintln!("lychee-load: invariants violated");
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("lychee-load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
