//! The operators' numbers: the SSE dashboard summed over nodes, /metrics, health.

use std::time::Duration;

use lychee_live::identity::Role;
use serde_json::{json, Value};

use crate::helpers::{TestApp, TestEnv};

/// Reads `data:` events of one dashboard stream until `pred` holds for what
/// it showed so far (or 10 s pass).
pub async fn watch_until(
    app: &TestApp,
    sale: &str,
    token: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    read_until(open_dashboard(app, sale, token).await, pred).await
}

/// Opens a dashboard stream; its events wait in the socket until read.
async fn open_dashboard(app: &TestApp, sale: &str, token: &str) -> reqwest::Response {
    let r = app
        .http
        .get(app.url(&format!("/sales/{sale}/dashboard")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    r
}

async fn read_until(r: reqwest::Response, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut r = r;
    let mut buf = String::new();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, r.chunk()).await {
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                seen.push(serde_json::from_str(data).unwrap());
                if pred(&seen) {
                    return seen;
                }
            }
        }
    }
    panic!("the dashboard never showed what was expected: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_sums_every_node() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let b = env.node().await;
    let host = env.token(Role::Host, "alice");
    let op = env.token(Role::Operator, "ops");
    let sale = a.live_sale(&host, "instant", "FZX", 100, 50).await;
    let buyer = env.token(Role::Viewer, "mei");
    let (_viewer, _) = b.join(&sale, &buyer, None).await;
    // Open before buying, as an operator would: each event shows the last
    // whole second, so a stream opened seconds later (a busy CI machine)
    // would have missed the attempts.
    let dashboard = open_dashboard(&b, &sale, &op).await;
    // Six attempts, three on each node: five orders and one refusal.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { &a } else { &b };
        let (buyer, sale) = (buyer.clone(), sale.clone());
        let qty = if i == 5 { 1000 } else { 1 };
        tasks.push(async move { node.buy(&buyer, &sale, &format!("k{i}"), "FZX", qty).await });
    }
    let results = futures_util::future::join_all(tasks).await;
    assert_eq!(results.iter().filter(|r| r.status == 201).count(), 5);
    // The attempts may straddle two seconds: read until the figures of both
    // nodes add up to all six.
    fn total(seen: &[Value], field: &str) -> u64 {
        seen.iter().map(|v| v[field].as_u64().unwrap()).sum()
    }
    let seen = read_until(dashboard, |seen| {
        total(seen, "buy_attempts_per_sec") >= 6 && total(seen, "orders_per_sec") >= 5
    })
    .await;
    assert_eq!(total(&seen, "buy_attempts_per_sec"), 6, "{seen:?}");
    assert_eq!(total(&seen, "orders_per_sec"), 5, "{seen:?}");
    let all = seen.last().unwrap();
    assert_eq!(all["gmv_cents"], 5 * 12800);
    assert_eq!(
        all["products"],
        json!([{ "sku": "FZX", "remaining": 95, "reserved": 0, "sold": 5 }])
    );
    let (p50, p99) = (
        all["buy_latency_ms"]["p50"].as_f64().unwrap(),
        all["buy_latency_ms"]["p99"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p99 >= p50, "{all}");
    assert!(all["ts"].as_i64().unwrap() > 0);
    // The viewer on node b counts on node a's stream too, and so do node
    // a's and node b's orders in its GMV.
    watch_until(&a, &sale, &op, |seen| {
        seen.last()
            .is_some_and(|v| v["viewers"] == 1 && v["gmv_cents"] == 5 * 12800)
    })
    .await;
    // A payment on one node shows in the GMV of a stream on the other.
    let paid = b
        .buy(&buyer, &sale, "k-more", "FZX", 2)
        .await
        .expect(201)
        .json();
    assert_eq!(paid["status"], "completed");
    let gmv: i64 = sqlx::query_scalar("SELECT SUM(total_cents)::bigint FROM orders")
        .fetch_one(&env.pg().await)
        .await
        .unwrap();
    assert_eq!(gmv, 7 * 12800);
    watch_until(&a, &sale, &op, |seen| {
        seen.last().is_some_and(|v| v["gmv_cents"] == gmv)
    })
    .await;
}

/// Many streams of one sale on a node share one snapshot a second (they
/// all show the same `ts`), and a user holds at most five.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_streams_share_one_snapshot_and_are_capped_per_user() {
    let mut env = TestEnv::production().await;
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let op = env.token(Role::Operator, "ops");
    let sale = app.live_sale(&host, "instant", "FZX", 10, 5).await;
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams.push(open_dashboard(&app, &sale, &op).await);
    }
    let path = format!("/sales/{sale}/dashboard");
    let over = app.get(&path, Some(&op)).await.expect(429);
    assert_eq!(over.code(), "rate_limited");
    assert!(over.headers.contains_key("retry-after"));
    // Another user has five of its own.
    let other = open_dashboard(&app, &sale, &env.token(Role::Operator, "ops2")).await;
    let mut seen = Vec::new();
    for stream in streams.drain(..).chain([other]) {
        let events = read_until(stream, |seen| seen.len() >= 3).await;
        seen.extend(events.iter().map(|v| v["ts"].as_i64().unwrap()));
    }
    seen.sort_unstable();
    seen.dedup();
    // Built per stream, 18 events would carry about 18 distinct times;
    // shared, they are the few seconds the streams were read in.
    assert!(
        seen.len() <= 8,
        "{} distinct snapshots: {seen:?}",
        seen.len()
    );
    // The five streams were dropped: their slots come back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = app
            .http
            .get(app.url(&path))
            .bearer_auth(&op)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 429);
        assert!(
            tokio::time::Instant::now() < deadline,
            "slots never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = app
        .http
        .get(format!("http://{}/metrics", app.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("lychee_dashboard_snapshots_total"), "{text}");
}

#[tokio::test]
async fn dashboard_is_for_the_host_and_operators() {
    let mut env = TestEnv::production().await;
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = app.live_sale(&host, "reserve", "FZX", 10, 2).await;
    let path = format!("/sales/{sale}/dashboard");
    assert_eq!(
        app.get(&path, None).await.expect(401).code(),
        "unauthorized"
    );
    let mei = env.token(Role::Viewer, "mei");
    assert_eq!(
        app.get(&path, Some(&mei)).await.expect(403).code(),
        "forbidden"
    );
    let bob = env.token(Role::Host, "bob");
    assert_eq!(
        app.get(&path, Some(&bob)).await.expect(403).code(),
        "forbidden"
    );
    watch_until(&app, &sale, &host, |seen| {
        seen.last()
            .is_some_and(|v| v["products"][0]["remaining"] == 10)
    })
    .await;
}

#[tokio::test]
async fn metrics_and_health() {
    let mut env = TestEnv::production().await;
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = app.live_sale(&host, "instant", "FZX", 10, 2).await;
    app.buy(&mei, &sale, "k", "FZX", 1).await.expect(201);
    let base = format!("http://{}", app.addr);
    let text = app
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "lychee_ws_open_sockets",
        "lychee_ws_frames_in_total",
        "lychee_ws_frames_out_total",
        "lychee_fanout_deliveries_total",
        "lychee_buy_attempts_total{outcome=\"created\"}",
        "lychee_buy_latency_seconds_bucket",
        "lychee_batch_size_bucket",
        "lychee_batch_commit_seconds_bucket",
        "lychee_redis_errors_total",
        "lychee_db_errors_total",
        "lychee_lagged_viewers_total",
    ] {
        assert!(
            text.contains(series),
            "{series} missing from /metrics:\n{text}"
        );
    }
    let health = app
        .http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready: Value = app
        .http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready, json!({ "database": true, "inventory": true }));
}

#[tokio::test]
async fn a_dashboard_stream_ends_at_its_tokens_expiry() {
    let mut env = TestEnv::embedded();
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = app.live_sale(&host, "reserve", "FZX", 10, 5).await;
    let short = env.token_for(Role::Host, "alice", Duration::from_secs(2));
    let mut r = open_dashboard(&app, &sale, &short).await;
    let mut body = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        match tokio::time::timeout_at(deadline, r.chunk()).await {
            Ok(Ok(Some(chunk))) => body.push_str(std::str::from_utf8(&chunk).unwrap()),
            Ok(Ok(None)) => break,
            other => panic!("the stream outlived its token: {other:?} after {body}"),
        }
    }
    assert!(body.contains("event: expired"), "{body}");
}

/// The dashboard counts late shipments (past `ships_by`, or 48 h after
/// completion without one) and refunded money, on the test's clock.
async fn late_and_refunds_are_counted(mut env: TestEnv) {
    let app = env.node().await;
    // The test's clock moves days ahead: the stream must outlive that.
    let host = env.token_for(Role::Host, "alice", Duration::from_secs(20 * 24 * 3600));
    let mei = env.token(Role::Viewer, "mei");
    let sale = app.live_sale(&host, "reserve", "FZX", 100, 100).await;
    let today = env.clock.now().date_naive();
    app.add_product(
        &host,
        &sale,
        json!({ "sku": "PRE", "name": "Pre-sale", "price_cents": 5000, "stock": 10,
                "ships_by": (today + chrono::Days::new(3)).format("%Y-%m-%d").to_string() }),
    )
    .await
    .expect(201);
    app.open(&host, &sale, "PRE").await.expect(200);
    app.add_address(&mei, "440000").await;
    let mut ids = Vec::new();
    for (key, sku) in [("a", "FZX"), ("b", "FZX"), ("c", "PRE")] {
        let o = app.buy(&mei, &sale, key, sku, 1).await.expect(201).json();
        let id = o["id"].as_str().unwrap().to_owned();
        app.pay(&host, &id, "cash").await.expect(200);
        ids.push(id);
    }
    // One of the FZX boxes leaves in time.
    app.send(
        app.http
            .post(app.url(&format!("/sales/{sale}/shipments")))
            .bearer_auth(&host)
            .header("content-type", "text/csv")
            .body(format!("order_id,courier,waybill\n{},SF,SF1\n", ids[0])),
    )
    .await
    .expect(200);
    let refund = app
        .http
        .post(app.url(&format!("/orders/{}/refunds", ids[1])))
        .bearer_auth(&host)
        .header("Idempotency-Key", "r")
        .json(&json!({ "amount_cents": 700, "reason": "split fruit" }));
    app.send(refund).await.expect(201);
    let seen = watch_until(&app, &sale, &host, |s| {
        s.last().is_some_and(|d| d["refunds_cents"] == 700)
    })
    .await;
    assert_eq!(seen.last().unwrap()["late"], 0);
    // Two days on, the unshipped FZX box is late; the pre-sale one is not.
    env.clock.advance(Duration::from_secs(49 * 3600));
    let seen = watch_until(&app, &sale, &host, |s| {
        s.last().is_some_and(|d| d["late"] == 1)
    })
    .await;
    assert_eq!(seen.last().unwrap()["refunds_cents"], 700);
    // Past the pre-sale's ships_by too.
    env.clock.advance(Duration::from_secs(3 * 24 * 3600));
    watch_until(&app, &sale, &host, |s| {
        s.last().is_some_and(|d| d["late"] == 2)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn late_and_refunds_are_counted_in_production() {
    late_and_refunds_are_counted(TestEnv::production().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn late_and_refunds_are_counted_embedded() {
    late_and_refunds_are_counted(TestEnv::embedded()).await;
}
