//! `drill`: a rush of buyers and chatting viewers over every node, kept
//! running while faults are applied one at a time (shell commands given with
//! `--fault name=command`). After each fault and at the end, the contract's
//! invariants are checked through PostgreSQL and the API, and chat must have
//! resumed on every viewer. Prints a table; fails on any violation.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use lychee_live::config::Secret;
use lychee_live::identity::{Role, TokenKeys};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{call, connect_ws, live_sale, source_addr, token};

#[derive(clap::Args, Clone)]
pub struct DrillArgs {
    #[arg(long = "node", required = true)]
    pub nodes: Vec<String>,
    #[arg(long, env = "LIVE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// PostgreSQL of the nodes, for the invariant checks.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// `name=shell command`, applied in order.
    #[arg(long = "fault")]
    pub faults: Vec<String>,
    /// Seconds of load after each fault before checking.
    #[arg(long, default_value_t = 12)]
    pub settle_secs: u64,
    #[arg(long, default_value_t = 40)]
    pub buyers: usize,
    #[arg(long, default_value_t = 30)]
    pub viewers: usize,
    /// Per-user limit: high enough that buyers keep buying through every fault.
    #[arg(long, default_value_t = 1000)]
    pub limit: i64,
}

#[derive(Default)]
struct Tally {
    /// Completed orders answered 2xx: id -> user.
    completed: HashMap<String, String>,
    answers: HashMap<String, u64>,
}

fn node_of(nodes: &[String], i: usize) -> &str {
    &nodes[i % nodes.len()]
}

async fn buyer(
    i: usize,
    nodes: Vec<String>,
    sale: String,
    token: String,
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let mut n = 0u64;
    let mut node = i;
    while !stop.load(Ordering::Relaxed) {
        let url = format!("{}/api/v1/sales/{sale}/orders", node_of(&nodes, node));
        let key = format!("d{i}-{n}");
        // A 503 or a dead node: the same key again on the next node.
        let r = call(
            http.post(&url)
                .bearer_auth(&token)
                .header("Idempotency-Key", &key)
                .json(&json!({ "sku": "RUSH", "qty": 1 })),
        )
        .await;
        let outcome = match &r {
            Ok((201, v)) => {
                if let (Some(id), Some(user)) = (v["id"].as_str(), v["user_id"].as_str()) {
                    if let Ok(mut t) = tally.lock() {
                        t.completed.insert(id.to_owned(), user.to_owned());
                    }
                }
                n += 1;
                "201".to_owned()
            }
            Ok((s, v)) if *s == 503 || *s == 429 => {
                node += 1;
                format!("{s} {}", v["error"]["code"].as_str().unwrap_or("?"))
            }
            Ok((s, v)) => {
                n += 1;
                format!("{s} {}", v["error"]["code"].as_str().unwrap_or("?"))
            }
            Err(_) => {
                node += 1;
                "transport".to_owned()
            }
        };
        if let Ok(mut t) = tally.lock() {
            *t.answers.entry(outcome).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A viewer that reconnects to the next node with `since` when its socket ends.
async fn viewer(
    i: usize,
    nodes: Vec<String>,
    sale: String,
    token: String,
    seen: Arc<Mutex<Vec<u64>>>,
    reconnects: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut node = i;
    let mut since: Option<u64> = None;
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let base = node_of(&nodes, node).replacen("http", "ws", 1);
        let mut url = format!("{base}/api/v1/sales/{sale}/live?access_token={token}");
        if let Some(s) = since {
            url.push_str(&format!("&since={s}"));
        }
        let Ok(ws) = connect_ws(&url, source_addr(i, 4)).await else {
            node += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let (mut sink, mut stream) = ws.split();
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(Ok(Message::Text(t))) = msg else {
                        if matches!(msg, Some(Ok(_))) { continue } else { break }
                    };
                    let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else { continue };
                    let events = match v["type"].as_str() {
                        Some("welcome") => v["chat"].as_array().cloned().unwrap_or_default(),
                        _ => crate::common::events(v),
                    };
                    for e in events {
                        if e["type"] == "chat" {
                            if let Some(seq) = e["seq"].as_u64() {
                                since = Some(since.map_or(seq, |s| s.max(seq)));
                                if let Ok(mut s) = seen.lock() { s.push(seq); }
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    if stop.load(Ordering::Relaxed) { return; }
                    // A few viewers chat, within the per-user rate.
                    if i.is_multiple_of(3) {
                        sent += 1;
                        let text = json!({ "type": "chat", "text": format!("v{i} m{sent}") });
                        if sink.send(Message::Text(text.to_string().into())).await.is_err() { break; }
                    }
                }
            }
        }
        reconnects.fetch_add(1, Ordering::Relaxed);
        node += 1;
    }
}

async fn check(
    db: &str,
    sale: &str,
    completed: &HashMap<String, String>,
    limit: i64,
) -> Result<Vec<(&'static str, bool)>, String> {
    let pool = sqlx::PgPool::connect(db).await.map_err(|e| e.to_string())?;
    let err = |e: sqlx::Error| e.to_string();
    // One statement, one snapshot: batches keep committing meanwhile.
    let (sold, stock, rows_sum): (i64, i64, i64) = sqlx::query_as(
        "SELECT sold, stock, (SELECT COALESCE(SUM(qty), 0)::bigint FROM orders WHERE sale_id = $1::uuid) \
         FROM products WHERE sale_id = $1::uuid AND sku = 'RUSH'",
    )
    .bind(sale)
    .fetch_one(&pool)
    .await
    .map_err(err)?;
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT id::text, user_id, qty, idempotency_key FROM orders WHERE sale_id = $1::uuid",
    )
    .bind(sale)
    .fetch_all(&pool)
    .await
    .map_err(err)?;
    pool.close().await;
    let ids: HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let keys: HashSet<(&str, &str)> = rows.iter().map(|r| (r.1.as_str(), r.3.as_str())).collect();
    let mut per_user: HashMap<&str, i64> = HashMap::new();
    for r in &rows {
        *per_user.entry(r.1.as_str()).or_default() += r.2;
    }
    Ok(vec![
        ("sold <= stock", sold <= stock),
        ("sold = sum of rows", sold == rows_sum),
        (
            "every 2xx completed order in PostgreSQL",
            completed.keys().all(|id| ids.contains(id.as_str())),
        ),
        (
            "no idempotency key with two orders",
            keys.len() == rows.len(),
        ),
        (
            "nobody over the limit",
            per_user.values().all(|q| *q <= limit),
        ),
    ])
}

pub async fn run(a: DrillArgs) -> Result<Value, String> {
    let keys = TokenKeys::new(&Secret(a.jwt_secret.clone())).map_err(|e| e.to_string())?;
    let http = reqwest::Client::new();
    let host = token(&keys, Role::Host, "drill-host");
    // Enough stock that buyers keep buying through every fault.
    let sale = live_sale(&http, &a.nodes[0], &host, "instant", 1_000_000, a.limit).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let reconnects = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..a.buyers {
        let t = token(&keys, Role::Viewer, &format!("drill-buyer-{i}"));
        tasks.push(tokio::spawn(buyer(
            i,
            a.nodes.clone(),
            sale.clone(),
            t,
            tally.clone(),
            stop.clone(),
        )));
    }
    let mut seen = Vec::new();
    for i in 0..a.viewers {
        let s = Arc::new(Mutex::new(Vec::new()));
        seen.push(s.clone());
        let t = token(&keys, Role::Viewer, &format!("drill-viewer-{i}"));
        tasks.push(tokio::spawn(viewer(
            i,
            a.nodes.clone(),
            sale.clone(),
            t,
            s,
            reconnects.clone(),
            stop.clone(),
        )));
    }
    let mut rows = Vec::new();
    let mut all_ok = true;
    let mut phases: Vec<(String, Option<String>)> = vec![("warm-up".into(), None)];
    for f in &a.faults {
        let (name, cmd) = f.split_once('=').ok_or("a fault is name=command")?;
        phases.push((name.to_owned(), Some(cmd.to_owned())));
    }
    for (name, cmd) in phases {
        let started = Instant::now();
        let before: Vec<usize> = seen
            .iter()
            .map(|s| s.lock().map(|v| v.len()).unwrap_or(0))
            .collect();
        if let Some(cmd) = &cmd {
            // The sale's id, for faults aimed at where it lives.
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env("DRILL_SALE", &sale)
                .status()
                .await
                .map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("fault {name}: `{cmd}` failed"));
            }
        }
        tokio::time::sleep(Duration::from_secs(a.settle_secs)).await;
        // A copy: the lock must not be held while the check awaits.
        let (completed_ids, answers) = {
            let t = tally.lock().map_err(|e| e.to_string())?;
            (t.completed.clone(), t.answers.clone())
        };
        let completed = completed_ids.len();
        let mut checks = check(&a.database_url, &sale, &completed_ids, a.limit).await?;
        // Chat resumed: every viewer saw new messages since the fault.
        let resumed = seen
            .iter()
            .zip(&before)
            .all(|(s, b)| s.lock().map(|v| v.len() > *b).unwrap_or(false));
        checks.push(("chat resumed on every viewer", resumed));
        let dup_free = seen.iter().all(|s| {
            s.lock()
                .map(|v| {
                    let set: HashSet<&u64> = v.iter().collect();
                    set.len() == v.len() && v.windows(2).all(|w| w[0] < w[1])
                })
                .unwrap_or(false)
        });
        checks.push(("chat once and in order", dup_free));
        let ok = checks.iter().all(|c| c.1);
        all_ok &= ok;
        println!(
            "{name:>22}  {:>6.1}s  completed {completed:>6}  {}",
            started.elapsed().as_secs_f64(),
            if ok {
                "ok".to_owned()
            } else {
                format!(
                    "VIOLATED: {:?}",
                    checks
                        .iter()
                        .filter(|c| !c.1)
                        .map(|c| c.0)
                        .collect::<Vec<_>>()
                )
            }
        );
        rows.push(json!({
            "fault": name,
            "command": cmd,
            "completed_orders": completed,
            "answers": answers,
            "viewer_reconnects": reconnects.load(Ordering::Relaxed),
            "checks": checks.into_iter().map(|(k, v)| (k.to_owned(), Value::from(v))).collect::<serde_json::Map<_, _>>(),
            "ok": ok,
        }));
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let (_, after) = call(http.get(format!("{}/api/v1/sales/{sale}", a.nodes[0]))).await?;
    Ok(
        json!({ "scenario": "drill", "sale_id": sale, "phases": rows, "api_product": after["products"][0], "invariants_ok": all_ok }),
    )
}
