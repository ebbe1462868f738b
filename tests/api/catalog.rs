//! Sales and products, in both modes.

use lychee_live::identity::Role;
use serde_json::json;

use crate::helpers::{product, TestEnv};

async fn catalog_flow(mut env: TestEnv) {
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = app
        .create_sale(
            &host,
            json!({ "title": "Conghua lychee harvest", "description": "picked at dawn",
                    "stream_url": "https://live.douyin.com/7", "reservation_ttl_secs": 120 }),
        )
        .await
        .expect(201)
        .json();
    let id = sale["id"].as_str().unwrap().to_owned();
    assert_eq!(sale["status"], "scheduled");
    assert_eq!(sale["checkout"], "reserve");
    assert_eq!(sale["host_id"], "alice");
    assert_eq!(sale["reservation_ttl_secs"], 120);
    assert_eq!(sale["products"], json!([]));

    let p = app
        .add_product(
            &host,
            &id,
            json!({ "sku": "HONEY-500G", "name": "Lychee honey 500 g", "price_cents": 6800,
                    "stock": 40, "ships_by": "2027-07-15" }),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(p["status"], "scheduled");
    assert_eq!(
        (p["remaining"].clone(), p["per_user_limit"].clone()),
        (json!(40), json!(5))
    );
    assert_eq!(
        (p["currency"].clone(), p["ships_by"].clone()),
        (json!("CNY"), json!("2027-07-15"))
    );

    let dup = app
        .add_product(
            &host,
            &id,
            json!({ "sku": "HONEY-500G", "name": "again", "price_cents": 1, "stock": 1 }),
        )
        .await
        .expect(409);
    assert_eq!(dup.code(), "duplicate_sku");

    // Opening needs a live sale.
    assert_eq!(
        app.open(&host, &id, "HONEY-500G").await.expect(409).code(),
        "sale_not_live"
    );
    app.start(&host, &id).await.expect(200);
    let opened = app.open(&host, &id, "HONEY-500G").await.expect(200).json();
    assert_eq!(opened["status"], "on_sale");
    let restocked = app
        .post(
            &format!("/sales/{id}/products/HONEY-500G/restock"),
            Some(&host),
            json!({ "add": 10 }),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(
        (restocked["stock"].clone(), restocked["remaining"].clone()),
        (json!(50), json!(50))
    );
    let pinned = app
        .post(
            &format!("/sales/{id}/pin"),
            Some(&host),
            json!({ "sku": "HONEY-500G" }),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(pinned["pinned_sku"], "HONEY-500G");

    let live = app.get("/sales?status=live", None).await.expect(200).json();
    assert!(live["sales"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == id.as_str()));
    let scheduled = app
        .get("/sales?status=scheduled", None)
        .await
        .expect(200)
        .json();
    assert!(!scheduled["sales"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == id.as_str()));

    let closed = app
        .post(
            &format!("/sales/{id}/products/HONEY-500G/close"),
            Some(&host),
            json!({}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(closed["status"], "closed");
    app.open(&host, &id, "HONEY-500G").await.expect(200);

    let ended = app
        .post(&format!("/sales/{id}/end"), Some(&host), json!({}))
        .await
        .expect(200)
        .json();
    assert_eq!(ended["status"], "ended");
    assert!(ended["ended_at"].is_string());
    assert_eq!(product(&ended, "HONEY-500G")["status"], "closed");
    let twice = app
        .post(&format!("/sales/{id}/end"), Some(&host), json!({}))
        .await
        .expect(409);
    assert_eq!(twice.code(), "invalid_state");
    assert_eq!(
        app.start(&host, &id).await.expect(409).code(),
        "invalid_state"
    );
    // Opening needs a live sale, an ended one too; closing asks for what
    // ending already did, so it succeeds and changes nothing.
    assert_eq!(
        app.open(&host, &id, "HONEY-500G").await.expect(409).code(),
        "sale_not_live"
    );
    let closed = app
        .post(
            &format!("/sales/{id}/products/HONEY-500G/close"),
            Some(&host),
            json!({}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(closed["status"], "closed");
}

#[tokio::test]
async fn catalog_in_production_mode() {
    catalog_flow(TestEnv::production().await).await;
}

#[tokio::test]
async fn catalog_in_embedded_mode() {
    catalog_flow(TestEnv::embedded()).await;
}

#[tokio::test]
async fn guests_sign_up_and_are_viewers() {
    let mut env = TestEnv::embedded();
    let app = env.node().await;
    let g = app
        .post("/guests", None, json!({ "name": "Mei" }))
        .await
        .expect(201)
        .json();
    let token = g["token"].as_str().unwrap();
    assert!(g["user_id"].as_str().unwrap().starts_with("guest-"));
    assert!(g["expires_at"].is_string());
    // A guest is a viewer: it cannot create sales.
    let r = app
        .create_sale(token, json!({ "title": "mine" }))
        .await
        .expect(403);
    assert_eq!(r.code(), "forbidden");
    let r = app
        .post("/guests", None, json!({ "name": "" }))
        .await
        .expect(400);
    assert_eq!(r.code(), "bad_request");
}

#[tokio::test]
async fn guests_are_off_by_default_in_production() {
    let mut env = TestEnv::production().await;
    let mut settings = env.settings();
    settings.guests = false;
    let app = env.node_with(settings).await;
    let r = app
        .post("/guests", None, json!({ "name": "Mei" }))
        .await
        .expect(403);
    assert_eq!(r.code(), "forbidden");
}

/// chrono reads these, PostgreSQL does not store them as given: a 400 before
/// the database is asked, never a 500.
#[tokio::test]
async fn ships_by_in_a_far_year_is_a_bad_request_on_postgres() {
    let mut env = TestEnv::production().await;
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = app
        .create_sale(&host, json!({ "title": "Harvest" }))
        .await
        .expect(201)
        .json();
    let id = sale["id"].as_str().unwrap();
    for (i, date) in ["+10000-01-01", "0000-01-01", "+262143-12-31", "-0001-01-01"]
        .into_iter()
        .enumerate()
    {
        let r = app
            .add_product(
                &host,
                id,
                json!({ "sku": format!("P{i}"), "name": "Lychee", "price_cents": 100,
                        "stock": 1, "ships_by": date }),
            )
            .await;
        assert_eq!(r.status, 400, "{date}: {}", r.text);
        assert_eq!(r.code(), "bad_request", "{date}");
    }
    app.add_product(
        &host,
        id,
        json!({ "sku": "LAST", "name": "Lychee", "price_cents": 100,
                "stock": 1, "ships_by": "9999-12-31" }),
    )
    .await
    .expect(201);
}

/// The public list is built at most once a second per node: another node's
/// change shows within that second, this node's own at once, and the
/// single sale always live.
#[tokio::test]
async fn public_lists_are_reused_for_a_second_per_node() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let b = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;
    let remaining = |list: &serde_json::Value| {
        let s = list["sales"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == sale.as_str())
            .expect("the sale is listed");
        product(s, "FZX")["remaining"].as_i64().unwrap()
    };
    let built = std::time::Instant::now();
    let first = a.get("/sales?status=live", None).await.expect(200);
    assert_eq!(
        first.headers["content-type"], "application/json",
        "{:?}",
        first.headers
    );
    assert_eq!(remaining(&first.json()), 10);
    let mei = env.token(Role::Viewer, "mei");
    b.buy(&mei, &sale, "k1", "FZX", 1).await.expect(201);
    let again = a.get("/sales?status=live", None).await.expect(200).json();
    // Within the second (unless this machine stalled that long), node a
    // serves the list it built; the sale itself is read live.
    if built.elapsed() < std::time::Duration::from_millis(800) {
        assert_eq!(
            remaining(&again),
            10,
            "served from the list of a second ago"
        );
    }
    assert_eq!(product(&a.sale(&sale).await, "FZX")["remaining"], 9);
    env.clock.advance(std::time::Duration::from_millis(1000));
    let later = a.get("/sales?status=live", None).await.expect(200).json();
    assert_eq!(remaining(&later), 9);

    // A change made through this node is listed at once.
    a.get("/sales?status=scheduled", None).await.expect(200);
    let new = a
        .create_sale(&host, json!({ "title": "Tomorrow's pick" }))
        .await
        .expect(201)
        .json();
    let scheduled = a
        .get("/sales?status=scheduled", None)
        .await
        .expect(200)
        .json();
    assert!(scheduled["sales"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == new["id"]));
}

#[tokio::test]
async fn a_sale_holds_at_most_200_products() {
    let mut env = TestEnv::embedded();
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = app
        .create_sale(&host, json!({ "title": "Everything" }))
        .await
        .expect(201)
        .json();
    let id = sale["id"].as_str().unwrap();
    let body = |i: usize| json!({ "sku": format!("SKU-{i}"), "name": "Lychee", "price_cents": 100, "stock": 1 });
    for i in 0..200 {
        app.add_product(&host, id, body(i)).await.expect(201);
    }
    let refused = app.add_product(&host, id, body(200)).await.expect(409);
    assert_eq!(refused.code(), "invalid_state");
    assert_eq!(
        app.sale(id).await["products"].as_array().unwrap().len(),
        200
    );
}

/// Only the embedded banner issues sign-in codes (tests/api/cli.rs signs in
/// with one); anything else is 401, and guessing is rate-limited per IP.
#[tokio::test]
async fn sign_in_codes_are_refused_unless_issued_and_rate_limited() {
    let mut env = TestEnv::production().await;
    let app = env.node().await;
    let r = app
        .post("/signin", None, json!({ "code": "0".repeat(32) }))
        .await
        .expect(401);
    assert_eq!(r.code(), "unauthorized");
    for body in [json!({}), json!({ "code": 7 }), json!([])] {
        assert_eq!(
            app.post("/signin", None, body).await.expect(400).code(),
            "bad_request"
        );
    }
    let mut limited = None;
    for i in 0..30 {
        let r = app
            .post("/signin", None, json!({ "code": format!("{i:032x}") }))
            .await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        r.expect(401);
    }
    let r = limited.expect("never rate limited");
    assert_eq!(r.code(), "rate_limited");
    assert!(r.headers.contains_key("retry-after"));
}
