//! `rush`: viewers watch the sale on WebSockets; a host opens one SKU; buyers
//! buy it (over REST or their live socket) at full speed or at an offered
//! rate until it is sold out, then the crowd that missed out keeps pressing
//! "buy" for a while. Reports completed orders/s and latency while selling,
//! answered attempts/s and latency after sell-out, and checks the invariants
//! (including that every viewer's stock count reached the final one).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lychee_live::config::Secret;
use lychee_live::identity::{Role, TokenKeys};
use serde_json::{json, Value};

use futures_util::StreamExt;

use crate::common::{
    add_address, call, live_sale_with, progress, raise_open_files, token, token_for_late, Samples,
};
use crate::costs;
use crate::rush_live::{self, Answer, Transport};

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Via {
    Rest,
    Ws,
}

#[derive(clap::Args, Clone)]
pub struct RushArgs {
    /// Base URL of a node; repeat to spread buyers over several nodes.
    #[arg(long = "node", default_value = "http://127.0.0.1:8080")]
    pub nodes: Vec<String>,
    /// The nodes' JWT secret, to sign the host's and buyers' tokens.
    #[arg(long, env = "LIVE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// Concurrent buyers.
    #[arg(long, default_value_t = 1000)]
    pub buyers: usize,
    /// Distinct users the buyers act for (default: one each). Buyer `i` buys
    /// as users `i`, `i + buyers`, `i + 2 * buyers`, ... in turn, one a
    /// request, so few connections can be many users (REST only).
    #[arg(long)]
    pub users: Option<usize>,
    /// How buyers buy: `POST .../orders`, or a `buy` message on their live socket.
    #[arg(long, value_enum, default_value = "rest")]
    pub via: Via,
    /// Viewers watching the sale on WebSockets (spread over the nodes), who
    /// must all see the final stock count.
    #[arg(long, default_value_t = 0)]
    pub viewers: usize,
    /// Units on sale.
    #[arg(long, default_value_t = 20_000)]
    pub stock: i64,
    /// reserve or instant.
    #[arg(long, default_value = "instant")]
    pub checkout: String,
    /// Seconds of buying after sell-out.
    #[arg(long, default_value_t = 5)]
    pub after_secs: u64,
    /// Give up selling after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub max_secs: u64,
    /// Per-user limit of the product.
    #[arg(long, default_value_t = 1000)]
    pub limit: i64,
    /// Offered buy attempts a second, all buyers together (default: each buyer
    /// as fast as its answers come).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Province codes (GB/T 2260, comma-separated) the product ships to;
    /// every buyer then has a default address in one of them, so each buy
    /// is checked against the delivery areas (contract section 10).
    #[arg(long, value_delimiter = ',')]
    pub ships_to: Option<Vec<String>>,
    /// Redis of the nodes: its time and commands per completed order are
    /// reported (its command statistics are reset at the start).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// `LO-HI`: sales are made until one's Redis Cluster slot is in the
    /// range (a primary's), so concurrent rushes can each load another primary.
    #[arg(long, value_parser = parse_slots)]
    pub slots: Option<(u16, u16)>,
    /// A node's pid, for its CPU per completed order; repeat for several.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// PostgreSQL of the nodes: completed orders are checked there too.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

fn parse_slots(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s.split_once('-').ok_or("LO-HI")?;
    let lo: u16 = lo.parse().map_err(|e| format!("{e}"))?;
    let hi: u16 = hi.parse().map_err(|e| format!("{e}"))?;
    if lo > hi || hi >= lychee_live::kv::keys::SLOTS {
        return Err(format!("not a slot range: {s}"));
    }
    Ok((lo, hi))
}

pub async fn run(a: RushArgs) -> Result<Value, String> {
    raise_open_files();
    let keys = TokenKeys::new(&Secret(a.jwt_secret.clone())).map_err(|e| e.to_string())?;
    // Set-up and checks only: buyers have their own connections.
    let http = reqwest::Client::new();
    let host = token(&keys, Role::Host, "load-host");
    let mut tries = 0;
    let sale = loop {
        let sale = live_sale_with(
            &http,
            &a.nodes[0],
            &host,
            &a.checkout,
            a.stock,
            a.limit,
            a.ships_to.as_deref(),
        )
        .await?;
        let Some((lo, hi)) = a.slots else { break sale };
        let id: uuid::Uuid = sale.parse().map_err(|e| format!("sale id: {e}"))?;
        if (lo..=hi).contains(&lychee_live::kv::keys::sale_slot(id)) {
            break sale;
        }
        tries += 1;
        // A range of a third of the slots takes a few tries on average.
        if tries == 200 {
            return Err(format!("no sale landed in slots {lo}-{hi}"));
        }
    };
    let buyers = a.buyers;
    let users = a.users.unwrap_or(buyers);
    if let Some(codes) = a.ships_to.as_deref().filter(|c| !c.is_empty()) {
        give_addresses(&http, &a.nodes, &keys, users, codes).await?;
    }
    let bar = progress(a.stock as u64, "sold");
    if users < buyers {
        return Err("--users must be at least --buyers".into());
    }
    if users != buyers && a.via == Via::Ws {
        return Err("--users other than --buyers needs --via rest".into());
    }
    let pace = a.rate.map(|r| Duration::from_secs_f64(buyers as f64 / r));
    let sold_out = Arc::new(AtomicBool::new(false));
    let sold_out_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let (stop_viewers, stopped) = tokio::sync::watch::channel(false);
    let viewer_tokens = (0..a.viewers)
        .map(|i| token(&keys, Role::Viewer, &format!("watcher-{i}")))
        .collect();
    let viewers = rush_live::watch_viewers(&a.nodes, &sale, viewer_tokens, stopped).await;
    // Buyers have had the sale's page open for a while: their connections
    // exist before they press "buy", so connection set-up is not counted.
    let mut transports = Vec::with_capacity(buyers);
    for i in 0..buyers {
        let node = &a.nodes[i % a.nodes.len()];
        let (tokens, late) = buyer_tokens(&keys, i, buyers, users);
        transports.push(match a.via {
            Via::Rest => {
                let main = Transport::rest(node, &sale, &tokens).await?;
                let other = Transport::rest(node, &sale, &late).await?;
                (main, other)
            }
            Via::Ws => {
                let main = Transport::ws(node, &sale, &tokens[0], i).await?;
                let other = Transport::ws(node, &sale, &late[0], i).await?;
                (main, other)
            }
        });
    }
    let ok_label = match a.via {
        Via::Rest => "201",
        Via::Ws => "ws order",
    };
    let probe = costs::Probe::start(
        a.redis_url.as_deref(),
        a.database_url.as_deref(),
        &a.server_pids,
    )
    .await?;
    let completed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    // The costs are those of selling: read at sell-out, while the buyers go on.
    let costs = {
        let (sold_out_at, completed) = (sold_out_at.clone(), completed.clone());
        let max = Duration::from_secs(a.max_secs);
        tokio::spawn(async move {
            while sold_out_at.lock().ok().and_then(|t| *t).is_none() && started.elapsed() < max {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            probe.finish(completed.load(Ordering::Relaxed)).await
        })
    };
    let mut tasks = Vec::new();
    for (i, (mut main, mut other)) in transports.into_iter().enumerate() {
        let (sold_out, sold_out_at) = (sold_out.clone(), sold_out_at.clone());
        let completed = completed.clone();
        let (after, max) = (
            Duration::from_secs(a.after_secs),
            Duration::from_secs(a.max_secs),
        );
        let (bar, interval) = (bar.clone(), pace);
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            let mut bought = Vec::new();
            // Buyers start spread over one interval, not all at once.
            let mut next = tokio::time::Instant::now()
                + interval.map_or(Duration::ZERO, |d| d.mul_f64(i as f64 / buyers as f64));
            for n in 0.. {
                if let Some(d) = interval {
                    tokio::time::sleep_until(next).await;
                    next += d;
                }
                let end_of_after = sold_out_at.lock().ok().and_then(|t| *t).map(|t| t + after);
                if end_of_after.is_some_and(|e| Instant::now() >= e) || started.elapsed() > max {
                    break;
                }
                let phase_after = sold_out.load(Ordering::Relaxed);
                let reference = format!("b{i}-{n}");
                let t = Instant::now();
                // After sell-out the crowd that missed out keeps pressing "buy".
                let answer = if phase_after {
                    other.buy(&reference).await
                } else {
                    main.buy(&reference).await
                };
                let micros = t.elapsed().as_micros() as u64;
                let outcome: Cow<str> = match answer {
                    Answer::Order(id) => {
                        bought.push(id);
                        completed.fetch_add(1, Ordering::Relaxed);
                        bar.inc(1);
                        Cow::Borrowed(ok_label)
                    }
                    Answer::Refused(label) => Cow::Owned(label),
                    Answer::Transport => Cow::Borrowed("transport error"),
                };
                if outcome.ends_with("sold_out") && !phase_after {
                    sold_out.store(true, Ordering::Relaxed);
                    if let Ok(mut at) = sold_out_at.lock() {
                        at.get_or_insert_with(Instant::now);
                    }
                }
                samples.push(started.elapsed(), micros, &outcome, phase_after);
            }
            (samples, bought)
        }));
    }
    let (mut all, mut ids) = (Vec::new(), Vec::new());
    for t in tasks {
        let (s, b) = t.await.map_err(|e| e.to_string())?;
        all.push(s);
        ids.extend(b);
    }
    let (selling, after_phase, timeline) = Samples::tally(all, started);
    bar.finish_and_clear();
    let bought = ids.len() as i64;
    let sell_secs = sold_out_at
        .lock()
        .ok()
        .and_then(|t| *t)
        .map_or(started.elapsed(), |t| t - started)
        .as_secs_f64();
    let (_, after_sale) = call(http.get(format!("{}/api/v1/sales/{sale}", a.nodes[0]))).await?;
    let product = &after_sale["products"][0];
    let held = product["sold"].as_i64().unwrap_or(-1) + product["reserved"].as_i64().unwrap_or(-1);
    let demand_exceeded = sold_out.load(Ordering::Relaxed);
    // The last count is published within 50 ms; give it time to reach everyone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let watched = rush_live::collect(viewers, stop_viewers, product["remaining"].as_i64()).await;
    let mut checks = vec![
        ("api_sold_plus_reserved_is_2xx", held == bought),
        ("never_over_stock", bought <= a.stock),
        (
            "sold_out_means_all_sold",
            !demand_exceeded || bought == a.stock,
        ),
        (
            "every_viewer_saw_the_final_stock",
            watched.failed == 0 && watched.saw_final == watched.viewers,
        ),
    ];
    if let Some(url) = &a.database_url {
        checks.extend(
            check_database(url, &sale, &ids, a.limit, &a.checkout, a.ships_to.is_some()).await?,
        );
    }
    let costs = costs.await.map_err(|e| e.to_string())?;
    let ok = checks.iter().all(|(_, ok)| *ok);
    let checks: serde_json::Map<String, Value> = checks
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
    Ok(json!({
        "scenario": "rush",
        "sale_id": sale,
        "buyers": a.buyers,
        "users": users,
        "via": format!("{:?}", a.via).to_lowercase(),
        "viewers": watched.viewers,
        "viewer_frames": watched.frames,
        "viewers_failed": watched.failed,
        "nodes": a.nodes.len(),
        "stock": a.stock,
        "checkout": a.checkout,
        "bought_2xx": bought,
        "api_sold": product["sold"],
        "api_remaining": product["remaining"],
        "checks": checks,
        "invariants_ok": ok,
        "selling": selling.summary(sell_secs),
        "completed_orders_per_sec": bought as f64 / sell_secs,
        "completed_per_full_second": per_second_figures(&timeline.counts(ok_label), sell_secs),
        "after_sell_out": after_phase.summary(a.after_secs as f64),
        "offered_per_sec": a.rate,
        "costs_while_selling": costs,
        "timeline": timeline.to_json(),
    }))
}

/// Whether a rate was sustained: the slowest and the median of the whole
/// seconds before sell-out (the last, partial one left out).
fn per_second_figures(counts: &[u64], sell_secs: f64) -> Value {
    let mut full: Vec<u64> = counts.iter().copied().take(sell_secs as usize).collect();
    full.sort_unstable();
    json!({
        "seconds": full.len(),
        "slowest": full.first(),
        "median": full.get(full.len() / 2),
    })
}

/// Through PostgreSQL: every 2xx completed order present exactly once, sold
/// as in the API, nobody over the limit.
async fn check_database(
    url: &str,
    sale: &str,
    ids: &[String],
    limit: i64,
    checkout: &str,
    addressed: bool,
) -> Result<Vec<(&'static str, bool)>, String> {
    let pool = sqlx::PgPool::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let err = |e: sqlx::Error| e.to_string();
    let rows: Vec<(String, String, i64, bool)> = sqlx::query_as(
        "SELECT id::text, user_id, qty, ship_to IS NOT NULL FROM orders WHERE sale_id = $1::uuid",
    )
    .bind(sale)
    .fetch_all(&pool)
    .await
    .map_err(err)?;
    let (sold, stock): (i64, i64) =
        sqlx::query_as("SELECT sold, stock FROM products WHERE sale_id = $1::uuid")
            .bind(sale)
            .fetch_one(&pool)
            .await
            .map_err(err)?;
    pool.close().await;
    let in_db: std::collections::HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let mut per_user: std::collections::HashMap<&str, i64> = Default::default();
    for (_, user, qty, _) in &rows {
        *per_user.entry(user).or_default() += qty;
    }
    let distinct: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut checks = vec![
        ("db_sold_within_stock", sold <= stock),
        (
            "db_sold_is_sum_of_rows",
            sold == rows.iter().map(|r| r.2).sum::<i64>(),
        ),
        (
            "db_nobody_over_limit",
            per_user.values().all(|q| *q <= limit),
        ),
        ("answers_distinct", distinct.len() == ids.len()),
    ];
    if addressed {
        checks.push(("db_every_order_has_ship_to", rows.iter().all(|r| r.3)));
    }
    if checkout == "instant" {
        checks.push((
            "db_every_2xx_present_once",
            ids.iter().all(|i| in_db.contains(i.as_str())) && rows.len() == ids.len(),
        ));
    }
    Ok(checks)
}

/// A default address for each of the buyers' users, in the areas spread
/// over them; before the rush, so it is not counted.
async fn give_addresses(
    http: &reqwest::Client,
    nodes: &[String],
    keys: &TokenKeys,
    users: usize,
    codes: &[String],
) -> Result<(), String> {
    let bar = progress(users as u64, "addresses");
    let adds = (0..users).map(|u| {
        let (node, code) = (&nodes[u % nodes.len()], &codes[u % codes.len()]);
        let tok = token(keys, Role::Viewer, &format!("buyer-{u}"));
        let bar = bar.clone();
        async move {
            add_address(http, node, &tok, code).await?;
            bar.inc(1);
            Ok::<(), String>(())
        }
    });
    let mut done = futures_util::stream::iter(adds).buffer_unordered(64);
    while let Some(r) = done.next().await {
        r?;
    }
    bar.finish_and_clear();
    Ok(())
}

/// The tokens of the users buyer `i` acts for, and of the late users who take
/// their place after sell-out.
fn buyer_tokens(
    keys: &TokenKeys,
    i: usize,
    buyers: usize,
    users: usize,
) -> (Vec<String>, Vec<String>) {
    users_of(i, buyers, users)
        .map(|u| {
            (
                token(keys, Role::Viewer, &format!("buyer-{u}")),
                token_for_late(keys, u),
            )
        })
        .unzip()
}

/// The users buyer `i` of `buyers` acts for, out of `users`.
fn users_of(i: usize, buyers: usize, users: usize) -> impl Iterator<Item = usize> {
    (i..users).step_by(buyers)
}

#[cfg(test)]
mod tests {
    use super::{per_second_figures, users_of};

    #[test]
    fn buyers_share_the_users_out() {
        assert_eq!(users_of(1, 3, 8).collect::<Vec<_>>(), [1, 4, 7]);
        assert_eq!(users_of(2, 3, 8).collect::<Vec<_>>(), [2, 5]);
        // One user each by default.
        assert_eq!(users_of(5, 10, 10).collect::<Vec<_>>(), [5]);
        let mut all: Vec<usize> = (0..1000).flat_map(|i| users_of(i, 1000, 50_000)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..50_000).collect::<Vec<_>>());
    }

    #[test]
    fn the_partial_last_second_does_not_count() {
        let f = per_second_figures(&[12_000, 9_000, 11_000, 400], 3.04);
        assert_eq!(f["seconds"], 3);
        assert_eq!(f["slowest"], 9_000);
        assert_eq!(f["median"], 11_000);
        let none = per_second_figures(&[300], 0.5);
        assert_eq!(none["seconds"], 0);
        assert!(none["slowest"].is_null());
    }
}
