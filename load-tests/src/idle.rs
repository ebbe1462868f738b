//! `idle`: N viewers connect to one room and stay idle. Reports the connect
//! rate, failures and, with `--server-pid`, the server's memory per viewer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lychee_live::config::Secret;
use lychee_live::identity::{Role, TokenKeys};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::common::{
    connect_ws, live_sale, progress, raise_open_files, rss_bytes, source_addr, token,
};

#[derive(clap::Args, Clone)]
pub struct IdleArgs {
    /// Base URL of a node; repeat to spread viewers.
    #[arg(long = "node", default_value = "http://127.0.0.1:8080")]
    pub nodes: Vec<String>,
    #[arg(long, env = "LIVE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// Idle viewers to connect.
    #[arg(long, default_value_t = 1000)]
    pub viewers: usize,
    /// Sockets opened at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Local addresses 127.0.0.1..=N to spread client sockets over.
    #[arg(long, default_value_t = 8)]
    pub sources: usize,
    /// Seconds to hold the viewers once connected.
    #[arg(long, default_value_t = 5)]
    pub hold_secs: u64,
    /// The server's pid (one node), for its memory per viewer.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

pub async fn run(a: IdleArgs) -> Result<Value, String> {
    let limit = raise_open_files();
    let keys = TokenKeys::new(&Secret(a.jwt_secret.clone())).map_err(|e| e.to_string())?;
    let http = reqwest::Client::new();
    let host = token(&keys, Role::Host, "load-host");
    let sale = live_sale(&http, &a.nodes[0], &host, "reserve", 10, 5).await?;
    let rss_before = a.server_pid.and_then(rss_bytes);
    let bar = progress(a.viewers as u64, "connecting");
    let gate = Arc::new(Semaphore::new(a.connect_concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(a.viewers);
    for i in 0..a.viewers {
        let node = a.nodes[i % a.nodes.len()].replacen("http", "ws", 1);
        let url = format!(
            "{node}/api/v1/sales/{sale}/live?access_token={}",
            token(&keys, Role::Viewer, &format!("idle-{i}"))
        );
        let (gate, bar, source) = (gate.clone(), bar.clone(), source_addr(i, a.sources));
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let mut ws = connect_ws(&url, source).await?;
            ws.next().await;
            bar.inc(1);
            Ok::<_, String>(ws)
        }));
    }
    let mut sockets = Vec::with_capacity(a.viewers);
    let mut failures = 0usize;
    let mut first_error = None;
    for t in tasks {
        match t.await.map_err(|e| e.to_string())? {
            Ok(ws) => sockets.push(ws),
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    tokio::time::sleep(Duration::from_secs(a.hold_secs)).await;
    let rss_after = a.server_pid.and_then(rss_bytes);
    let connected = sockets.len();
    drop(sockets);
    let per_viewer = match (rss_before, rss_after) {
        (Some(b), Some(af)) if connected > 0 => {
            Some(af.saturating_sub(b) as f64 / connected as f64)
        }
        _ => None,
    };
    Ok(json!({
        "scenario": "idle",
        "nodes": a.nodes.len(),
        "viewers": a.viewers,
        "connected": connected,
        "failures": failures,
        "first_error": first_error,
        "open_files_limit": limit,
        "connect_secs": connect_secs,
        "connects_per_sec": connected as f64 / connect_secs,
        "server_rss_before": rss_before,
        "server_rss_after": rss_after,
        "server_rss_per_viewer_bytes": per_viewer,
        "invariants_ok": failures == 0,
    }))
}
