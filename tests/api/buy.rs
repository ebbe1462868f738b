//! The buy path: admission, completion, idempotency, expiry, in both modes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lychee_live::identity::Role;
use serde_json::{json, Value};

use crate::helpers::{product, TestEnv};

/// 500 buyers over two nodes, 100 units, limit 2: exactly 100 sold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_never_oversell() {
    let mut env = TestEnv::production().await;
    let a = Arc::new(env.node().await);
    let b = Arc::new(env.node().await);
    let host = env.token(Role::Host, "alice");
    let sale = a.live_sale(&host, "instant", "FZX", 100, 2).await;

    let mut tasks = Vec::new();
    for i in 0..500 {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        let token = env.token(Role::Viewer, &format!("buyer-{i}"));
        let sale = sale.clone();
        tasks.push(tokio::spawn(async move {
            // Each buyer tries three times (qty 1, 1, then 2) to hit the limit.
            let mut got = Vec::new();
            for (n, qty) in [1, 1, 2].into_iter().enumerate() {
                let r = node.buy(&token, &sale, &format!("k{n}"), "FZX", qty).await;
                match r.status.as_u16() {
                    201 => got.push(r.json()),
                    409 => assert!(
                        ["sold_out", "limit_exceeded"].contains(&r.code().as_str()),
                        "{}",
                        r.text
                    ),
                    _ => panic!("unexpected {:?} {}", r.status, r.text),
                }
            }
            got
        }));
    }
    let mut per_user: HashMap<String, i64> = HashMap::new();
    let mut sold = 0;
    let mut total_cents = 0;
    for t in tasks {
        for o in t.await.unwrap() {
            assert_eq!(o["status"], "completed");
            *per_user
                .entry(o["user_id"].as_str().unwrap().into())
                .or_default() += o["qty"].as_i64().unwrap();
            sold += o["qty"].as_i64().unwrap();
            total_cents += o["total_cents"].as_i64().unwrap();
        }
    }
    assert_eq!(sold, 100);
    assert!(per_user.values().all(|&q| q <= 2), "someone over the limit");

    let pg = env.pg().await;
    let (rows, qty, cents): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(qty),0)::bigint, COALESCE(SUM(total_cents),0)::bigint \
         FROM orders WHERE sale_id = $1::uuid",
    )
    .bind(&sale)
    .fetch_one(&pg)
    .await
    .unwrap();
    let answered: usize = per_user.len();
    assert!(rows as usize >= answered);
    assert_eq!((qty, cents), (100, total_cents));
    let s = b.sale(&sale).await;
    let p = product(&s, "FZX");
    assert_eq!(
        (
            p["sold"].clone(),
            p["remaining"].clone(),
            p["reserved"].clone()
        ),
        (json!(100), json!(0), json!(0))
    );
    assert_eq!(p["status"], "sold_out");
    let db_sold: i64 = sqlx::query_scalar("SELECT sold FROM products WHERE sale_id = $1::uuid")
        .bind(&sale)
        .fetch_one(&pg)
        .await
        .unwrap();
    assert_eq!(db_sold, 100);
    pg.close().await;
}

/// A replay answered by the other node is the first answer, byte for byte.
#[tokio::test]
async fn idempotent_replay_across_nodes() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let b = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;
    let first = a.buy(&mei, &sale, "key-1", "FZX", 2).await.expect(201);
    let again = b.buy(&mei, &sale, "key-1", "FZX", 2).await.expect(201);
    assert_eq!(first.text, again.text);
    // The order moved on; the replay still shows it as first sent.
    let id = first.json()["id"].as_str().unwrap().to_owned();
    b.pay(&host, &id, "pay-1").await.expect(200);
    let later = a.buy(&mei, &sale, "key-1", "FZX", 2).await.expect(201);
    assert_eq!(later.text, first.text);
    let other = b.buy(&mei, &sale, "key-1", "FZX", 3).await.expect(422);
    assert_eq!(other.code(), "idempotency_mismatch");
    // Only one order was made.
    assert_eq!(product(&a.sale(&sale).await, "FZX")["sold"], 2);
    // Another user with the same key is a different request.
    let li = env.token(Role::Viewer, "li");
    b.buy(&li, &sale, "key-1", "FZX", 1).await.expect(201);
    // A refusal is final too: replayed even after stock comes back.
    let big = b.buy(&li, &sale, "key-big", "FZX", 5).await.expect(409);
    assert_eq!(big.code(), "limit_exceeded");
    assert_eq!(big.json()["error"]["bought"], 1);
    assert_eq!(big.json()["error"]["limit"], 5);
    let replay = a.buy(&li, &sale, "key-big", "FZX", 5).await.expect(409);
    assert_eq!(replay.text, big.text);
}

async fn reserve_pay_cancel_flow(mut env: TestEnv) {
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let li = env.token(Role::Viewer, "li");
    let op = env.token(Role::Operator, "ops");
    let sale = app.live_sale(&host, "reserve", "NMC", 5, 3).await;

    let o = app.buy(&mei, &sale, "a", "NMC", 2).await.expect(201).json();
    assert_eq!(o["status"], "reserved");
    assert!(o["expires_at"].is_string());
    assert_eq!(
        (o["unit_price_cents"].clone(), o["total_cents"].clone()),
        (json!(12800), json!(25600))
    );
    let id = o["id"].as_str().unwrap().to_owned();
    let p = product(&app.sale(&sale).await, "NMC").clone();
    assert_eq!(
        (p["remaining"].clone(), p["reserved"].clone()),
        (json!(3), json!(2))
    );

    // Readers: the buyer, the host, an operator; not another viewer.
    app.get(&format!("/orders/{id}"), Some(&mei))
        .await
        .expect(200);
    app.get(&format!("/orders/{id}"), Some(&host))
        .await
        .expect(200);
    app.get(&format!("/orders/{id}"), Some(&op))
        .await
        .expect(200);
    assert_eq!(
        app.get(&format!("/orders/{id}"), Some(&li))
            .await
            .expect(403)
            .code(),
        "forbidden"
    );
    assert_eq!(app.pay(&li, &id, "x").await.expect(403).code(), "forbidden");

    // The buyer's word is not a payment: only the host confirms by hand.
    assert_eq!(
        app.pay(&mei, &id, "wx-123").await.expect(403).code(),
        "forbidden"
    );
    let paid = app.pay(&host, &id, "wx-123").await.expect(200).json();
    assert_eq!(paid["status"], "completed");
    assert_eq!(paid["payment"]["method"], "manual");
    assert_eq!(paid["payment"]["paid_cents"], paid["total_cents"]);
    assert_eq!(paid["payment"]["refunded_cents"], 0);
    assert_eq!(paid["payment_ref"], "wx-123");
    assert!(paid["completed_at"].is_string());
    let again = app.pay(&host, &id, "wx-123").await.expect(200).json();
    assert_eq!(again["id"], paid["id"]);
    assert_eq!(
        app.cancel(&mei, &id).await.expect(409).code(),
        "invalid_state"
    );
    let p = product(&app.sale(&sale).await, "NMC").clone();
    assert_eq!(
        (
            p["remaining"].clone(),
            p["reserved"].clone(),
            p["sold"].clone()
        ),
        (json!(3), json!(0), json!(2))
    );

    let o2 = app.buy(&mei, &sale, "b", "NMC", 1).await.expect(201).json();
    let id2 = o2["id"].as_str().unwrap().to_owned();
    // Limit 3: 2 completed + 1 reserved; one more is over.
    let over = app.buy(&mei, &sale, "c", "NMC", 1).await.expect(409);
    assert_eq!(over.code(), "limit_exceeded");
    let cancelled = app.cancel(&mei, &id2).await.expect(200).json();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(
        app.cancel(&mei, &id2).await.expect(409).code(),
        "invalid_state"
    );
    assert_eq!(
        app.pay(&host, &id2, "late").await.expect(409).code(),
        "invalid_state"
    );
    // Cancelling gave the unit and the limit back.
    app.buy(&mei, &sale, "d", "NMC", 1).await.expect(201);

    let mine = app.get("/me/orders", Some(&mei)).await.expect(200).json();
    let list = mine["orders"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert!(list
        .windows(2)
        .all(|w| w[0]["created_at"].as_str() >= w[1]["created_at"].as_str()));
    assert_eq!(
        list.iter().filter(|o| o["status"] == "completed").count(),
        1
    );

    // CSV: completed orders only, header first, RFC 4180.
    let csv = app
        .get(&format!("/sales/{sale}/orders.csv"), Some(&host))
        .await
        .expect(200);
    assert!(csv.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let lines: Vec<&str> = csv.text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        "order_id,created_at,completed_at,user_id,sku,qty,unit_price_cents,total_cents,currency,payment_ref,\
         payment_method,payment_id,paid_cents,refunded_cents"
    );
    assert_eq!(lines.len(), 2);
    assert!(
        lines[1].starts_with(&id)
            && lines[1].ends_with(",mei,NMC,2,12800,25600,CNY,wx-123,manual,,25600,0"),
        "{}",
        lines[1]
    );
    let r = app
        .get(&format!("/sales/{sale}/orders.csv"), Some(&mei))
        .await
        .expect(403);
    assert_eq!(r.code(), "forbidden");
}

#[tokio::test]
async fn reserve_pay_cancel_in_production_mode() {
    reserve_pay_cancel_flow(TestEnv::production().await).await;
}

#[tokio::test]
async fn reserve_pay_cancel_in_embedded_mode() {
    reserve_pay_cancel_flow(TestEnv::embedded()).await;
}

async fn expiry_flow(mut env: TestEnv) {
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = app.live_sale(&host, "reserve", "FZX", 2, 2).await;
    let o = app.buy(&mei, &sale, "a", "FZX", 2).await.expect(201).json();
    let id = o["id"].as_str().unwrap();
    assert_eq!(product(&app.sale(&sale).await, "FZX")["status"], "sold_out");
    // The default TTL is 300 s; move the clock past it instead of waiting.
    env.clock.advance(Duration::from_secs(301));
    let s = app
        .wait_for_sale(&sale, 3, |s| product(s, "FZX")["remaining"] == 2)
        .await;
    assert_eq!(product(&s, "FZX")["reserved"], 0);
    assert_eq!(product(&s, "FZX")["status"], "on_sale");
    let order: Value = app
        .get(&format!("/orders/{id}"), Some(&mei))
        .await
        .expect(200)
        .json();
    assert_eq!(order["status"], "expired");
    assert_eq!(
        app.pay(&host, id, "late").await.expect(409).code(),
        "reservation_expired"
    );
    // The limit came back with the stock.
    app.buy(&mei, &sale, "b", "FZX", 2).await.expect(201);
}

#[tokio::test]
async fn expiry_returns_stock_in_production_mode() {
    expiry_flow(TestEnv::production().await).await;
}

#[tokio::test]
async fn expiry_returns_stock_in_embedded_mode() {
    expiry_flow(TestEnv::embedded()).await;
}

/// Paying just before the deadline wins; just after, it is expired even if
/// the reaper has not run yet.
#[tokio::test]
async fn pay_checks_the_deadline_itself() {
    let mut env = TestEnv::production().await;
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = app.live_sale(&host, "reserve", "FZX", 5, 5).await;
    let o = app.buy(&mei, &sale, "a", "FZX", 1).await.expect(201).json();
    env.clock.advance(Duration::from_secs(299));
    app.pay(&host, o["id"].as_str().unwrap(), "in-time")
        .await
        .expect(200);
}

/// After sell-out, others are refused locally, but a holder's replay still
/// gets its own first answer.
#[tokio::test]
async fn sold_out_fast_path_keeps_replays() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let b = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let li = env.token(Role::Viewer, "li");
    let sale = a.live_sale(&host, "instant", "FZX", 1, 1).await;
    let first = a.buy(&mei, &sale, "k", "FZX", 1).await.expect(201);
    for node in [&a, &b] {
        for i in 0..20 {
            let r = node
                .buy(&li, &sale, &format!("x{i}"), "FZX", 1)
                .await
                .expect(409);
            assert_eq!(r.code(), "sold_out");
        }
        let replay = node.buy(&mei, &sale, "k", "FZX", 1).await.expect(201);
        assert_eq!(replay.text, first.text);
    }
    // A restock clears the flag on every node.
    a.restock(&host, &sale, "FZX", 1).await.expect(200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let r = b.buy(&li, &sale, "after-restock", "FZX", 1).await;
        if r.status == 201 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "restock never reached node b"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The embedded mode under the same rush: one process, no oversell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_never_oversells() {
    let mut env = TestEnv::embedded();
    let app = Arc::new(env.node().await);
    let host = env.token(Role::Host, "alice");
    let sale = app.live_sale(&host, "instant", "FZX", 100, 2).await;
    let mut tasks = Vec::new();
    for i in 0..300 {
        let app = app.clone();
        let token = env.token(Role::Viewer, &format!("buyer-{i}"));
        let sale = sale.clone();
        tasks.push(tokio::spawn(async move {
            let mut qty = 0;
            for n in 0..3 {
                let r = app.buy(&token, &sale, &format!("k{n}"), "FZX", 1).await;
                match r.status.as_u16() {
                    201 => qty += 1,
                    409 => {}
                    _ => panic!("unexpected {:?} {}", r.status, r.text),
                }
            }
            qty
        }));
    }
    let mut sold = 0;
    for t in tasks {
        let q = t.await.unwrap();
        assert!(q <= 2, "over the limit: {q}");
        sold += q;
    }
    assert_eq!(sold, 100);
    let p = product(&app.sale(&sale).await, "FZX").clone();
    assert_eq!(
        (p["sold"].clone(), p["remaining"].clone()),
        (json!(100), json!(0))
    );
}
