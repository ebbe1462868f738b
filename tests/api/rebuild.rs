//! Redis loses its data mid-sale: live stock is rebuilt from PostgreSQL and
//! nothing is sold twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lychee_live::identity::Role;
use serde_json::json;

use crate::helpers::{product, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_wiped_mid_sale_on_two_nodes() {
    let mut env = TestEnv::production().await;
    let a = Arc::new(env.node().await);
    let b = Arc::new(env.node().await);
    let host = env.token(Role::Host, "alice");
    let sale = a.live_sale(&host, "instant", "FZX", 150, 3).await;

    let buyers = |from: usize, to: usize| {
        let mut tasks = Vec::new();
        for i in from..to {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            let token = env.token(Role::Viewer, &format!("buyer-{}", i % 120));
            let sale = sale.clone();
            tasks.push(tokio::spawn(async move {
                let r = node.buy(&token, &sale, &format!("k{i}"), "FZX", 1).await;
                (r.status.as_u16(), r.text)
            }));
        }
        tasks
    };
    let mut completed: HashSet<String> = HashSet::new();
    let mut collect = |results: Vec<(u16, String)>| {
        for (status, text) in results {
            match status {
                201 => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(v["status"], "completed");
                    completed.insert(v["id"].as_str().unwrap().to_owned());
                }
                409 | 503 => {}
                other => panic!("unexpected {other}: {text}"),
            }
        }
    };

    let first = buyers(0, 100);
    let mut results = Vec::new();
    for t in first {
        results.push(t.await.unwrap());
    }
    collect(results);
    // Redis forgets everything of this deployment while buyers keep coming.
    let second = buyers(100, 400);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(env.wipe_redis().await > 0);
    let mut results = Vec::new();
    for t in second {
        results.push(t.await.unwrap());
    }
    collect(results);

    let pg = env.pg().await;
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM orders WHERE sale_id = $1::uuid")
        .bind(&sale)
        .fetch_all(&pg)
        .await
        .unwrap();
    let in_db: HashSet<String> = ids.iter().map(|i| i.to_string()).collect();
    // No completed order lost: every 2xx has its row.
    assert!(
        completed.is_subset(&in_db),
        "lost: {:?}",
        completed.difference(&in_db).collect::<Vec<_>>()
    );
    let (sold, stock): (i64, i64) =
        sqlx::query_as("SELECT sold, stock FROM products WHERE sale_id = $1::uuid")
            .bind(&sale)
            .fetch_one(&pg)
            .await
            .unwrap();
    let sum: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(qty),0)::bigint FROM orders WHERE sale_id = $1::uuid",
    )
    .bind(&sale)
    .fetch_one(&pg)
    .await
    .unwrap();
    assert!(sold <= stock, "oversold: {sold} > {stock}");
    assert_eq!(sum, sold);
    // Per-user limits held across the wipe (rebuilt from completed orders).
    let over: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT user_id FROM orders WHERE sale_id = $1::uuid \
         GROUP BY user_id HAVING SUM(qty) > 3) o",
    )
    .bind(&sale)
    .fetch_one(&pg)
    .await
    .unwrap();
    assert_eq!(over, 0);
    // The live counters agree with the record again.
    let s = a.sale(&sale).await;
    assert_eq!(
        product(&s, "FZX")["sold"],
        json!(sold),
        "{}",
        product(&s, "FZX")
    );
    assert_eq!(product(&s, "FZX")["remaining"], json!(stock - sold));
    pg.close().await;
}

/// `reconcile` (the library call behind `lychee-live reconcile`) rebuilds a
/// sale whose keys are gone, and a forced one matches PostgreSQL.
#[tokio::test]
async fn reconcile_rebuilds_missing_sales() {
    let mut env = TestEnv::production().await;
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = app.live_sale(&host, "instant", "FZX", 10, 5).await;
    app.buy(&mei, &sale, "a", "FZX", 3).await.expect(201);
    env.wipe_redis().await;
    let settings = env.settings();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let backends = lychee_live::Backends::open(&settings, &shutdown)
        .await
        .unwrap();
    let n = backends.rebuilder().reconcile(false).await.unwrap();
    assert_eq!(n, 1);
    shutdown.cancel();
    let s = app.sale(&sale).await;
    let p = product(&s, "FZX");
    assert_eq!(
        (
            p["sold"].clone(),
            p["remaining"].clone(),
            p["status"].clone()
        ),
        (json!(3), json!(7), json!("on_sale"))
    );
    // The per-user limit survived: 3 held, 2 more allowed, not 3.
    let r = app.buy(&mei, &sale, "b", "FZX", 3).await.expect(409);
    assert_eq!(r.code(), "limit_exceeded");
    app.buy(&mei, &sale, "c", "FZX", 2).await.expect(201);
}
