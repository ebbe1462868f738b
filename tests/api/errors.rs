//! Every error code of the contract, reached by a hostile or wrong input.

use std::time::Duration;

use base64::Engine;
use lychee_live::identity::Role;
use serde_json::json;

use crate::helpers::{Switch, TestApp, TestEnv, SECRET};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn exp_in(secs: i64) -> i64 {
    chrono::Utc::now().timestamp() + secs
}

fn signed(claims: serde_json::Value, secret: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

async fn raw_post(
    app: &TestApp,
    path: &str,
    token: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> crate::helpers::Reply {
    let mut req = app.http.post(app.url(path)).bearer_auth(token).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    app.send(req).await
}

#[tokio::test]
async fn bad_tokens_are_401() {
    let mut env = TestEnv::production().await;
    let app = env.node().await;
    let forged = signed(
        json!({ "sub": "alice", "role": "host", "exp": exp_in(600) }),
        "another-secret-another-secret-0123",
    );
    let expired = signed(
        json!({ "sub": "alice", "role": "host", "exp": exp_in(-120) }),
        SECRET,
    );
    let no_exp = signed(json!({ "sub": "alice", "role": "host" }), SECRET);
    let king = signed(
        json!({ "sub": "alice", "role": "king", "exp": exp_in(600) }),
        SECRET,
    );
    let long_sub = signed(
        json!({ "sub": "x".repeat(65), "role": "host", "exp": exp_in(600) }),
        SECRET,
    );
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&format!(
            r#"{{"sub":"alice","role":"operator","exp":{}}}"#,
            exp_in(600)
        ))
    );
    let hs512 = {
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
            &json!({ "sub": "alice", "role": "host", "exp": exp_in(600) }),
            &key,
        )
        .unwrap()
    };
    for token in [
        forged,
        expired,
        no_exp,
        king,
        long_sub,
        none,
        hs512,
        "garbage".into(),
    ] {
        let r = app
            .create_sale(&token, json!({ "title": "x" }))
            .await
            .expect(401);
        assert_eq!(r.code(), "unauthorized", "{token}");
    }
    let r = app
        .post("/sales", None, json!({ "title": "x" }))
        .await
        .expect(401);
    assert_eq!(r.code(), "unauthorized");
    let r = app.get("/me/orders", None).await.expect(401);
    assert_eq!(r.code(), "unauthorized");
}

#[tokio::test]
async fn roles_and_ownership_are_403() {
    let mut env = TestEnv::production().await;
    let app = env.node().await;
    let alice = env.token(Role::Host, "alice");
    let bob = env.token(Role::Host, "bob");
    let mei = env.token(Role::Viewer, "mei");
    let op = env.token(Role::Operator, "ops");
    let sale = app.live_sale(&alice, "reserve", "FZX", 10, 2).await;
    assert_eq!(
        app.create_sale(&mei, json!({ "title": "x" }))
            .await
            .expect(403)
            .code(),
        "forbidden"
    );
    for token in [&mei, &bob] {
        let r = app
            .add_product(
                token,
                &sale,
                json!({ "sku": "B", "name": "b", "price_cents": 1, "stock": 1 }),
            )
            .await
            .expect(403);
        assert_eq!(r.code(), "forbidden");
        for action in ["start", "end"] {
            let r = app
                .post(&format!("/sales/{sale}/{action}"), Some(token), json!({}))
                .await
                .expect(403);
            assert_eq!(r.code(), "forbidden");
        }
        for action in ["open", "close"] {
            let r = app
                .post(
                    &format!("/sales/{sale}/products/FZX/{action}"),
                    Some(token),
                    json!({}),
                )
                .await
                .expect(403);
            assert_eq!(r.code(), "forbidden");
        }
        let r = app
            .post(
                &format!("/sales/{sale}/products/FZX/restock"),
                Some(token),
                json!({ "add": 5 }),
            )
            .await
            .expect(403);
        assert_eq!(r.code(), "forbidden");
        let r = app
            .post(
                &format!("/sales/{sale}/pin"),
                Some(token),
                json!({ "sku": "FZX" }),
            )
            .await
            .expect(403);
        assert_eq!(r.code(), "forbidden");
        let r = app
            .get(&format!("/sales/{sale}/orders.csv"), Some(token))
            .await
            .expect(403);
        assert_eq!(r.code(), "forbidden");
    }
    // An operator manages every sale.
    app.post(
        &format!("/sales/{sale}/products/FZX/restock"),
        Some(&op),
        json!({ "add": 5 }),
    )
    .await
    .expect(200);
}

#[tokio::test]
async fn malformed_bodies_never_500() {
    let mut env = TestEnv::production().await;
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = app.live_sale(&host, "reserve", "FZX", 10, 2).await;
    let orders = format!("/sales/{sale}/orders");

    type Case = (
        &'static str,
        Option<&'static str>,
        Vec<u8>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "/sales",
            Some("application/json"),
            b"{\"title\": ".to_vec(),
            400,
            "bad_request",
        ),
        (
            "/sales",
            Some("application/json"),
            b"[1,2,3]".to_vec(),
            400,
            "bad_request",
        ),
        (
            "/sales",
            Some("application/json"),
            br#"{"title": 7}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "/sales",
            Some("application/json"),
            vec![0xff, 0xfe, 0x00],
            400,
            "bad_request",
        ),
        (
            "/sales",
            None,
            br#"{"title": "x"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "/sales",
            Some("text/plain"),
            br#"{"title": "x"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "/sales",
            Some("application/json"),
            format!(r#"{{"title": "{}"}}"#, "x".repeat(65 * 1024)).into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            "/sales",
            Some("application/json"),
            format!(r#"{{"title": "{}"}}"#, "x".repeat(121)).into_bytes(),
            400,
            "bad_request",
        ),
        (
            "/sales",
            Some("application/json"),
            br#"{"title": "ok", "reservation_ttl_secs": 5}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "/sales",
            Some("application/json"),
            br#"{"title": "ok", "checkout": "later"}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "/sales",
            Some("application/json"),
            br#"{"title": "ok", "scheduled_at": "tomorrow"}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "/sales",
            Some("application/json"),
            br#"{"title": "ok", "stream_url": "javascript:alert(1)"}"#.to_vec(),
            400,
            "bad_request",
        ),
    ];
    for (path, ct, body, status, code) in cases {
        let r = raw_post(&app, path, &host, ct, body).await;
        assert_eq!(r.status.as_u16(), status, "{path}: {}", r.text);
        assert_eq!(r.code(), code);
    }

    let products = format!("/sales/{sale}/products");
    for body in [
        json!({ "sku": "has space", "name": "n", "price_cents": 1, "stock": 1 }),
        json!({ "sku": "x".repeat(65), "name": "n", "price_cents": 1, "stock": 1 }),
        json!({ "sku": "OK", "name": "x".repeat(121), "price_cents": 1, "stock": 1 }),
        json!({ "sku": "OK", "name": "n", "price_cents": 0, "stock": 1 }),
        json!({ "sku": "OK", "name": "n", "price_cents": 1, "stock": -1 }),
        json!({ "sku": "OK", "name": "n", "price_cents": 1, "stock": 10_000_001 }),
        json!({ "sku": "OK", "name": "n", "price_cents": 1, "stock": 1, "per_user_limit": 0 }),
        json!({ "sku": "OK", "name": "n", "price_cents": 1, "stock": 1, "currency": "yuan" }),
        json!({ "sku": "OK", "name": "n", "price_cents": 1, "stock": 1, "ships_by": "soon" }),
        json!({ "sku": "OK", "name": "n", "price_cents": 1.5, "stock": 1 }),
        json!({ "sku": "OK", "name": "n", "price_cents": "1", "stock": 1 }),
    ] {
        let r = app
            .post(&products, Some(&host), body.clone())
            .await
            .expect(400);
        assert_eq!(r.code(), "bad_request", "{body}");
    }
    let r = app
        .post(
            &format!("/sales/{sale}/products/FZX/restock"),
            Some(&host),
            json!({ "add": 0 }),
        )
        .await
        .expect(400);
    assert_eq!(r.code(), "bad_request");

    for qty in [
        json!(0),
        json!(-1),
        json!(1001),
        json!(1e30),
        json!("1"),
        json!(null),
        json!(1.5),
    ] {
        let req = app
            .http
            .post(app.url(&orders))
            .bearer_auth(&mei)
            .header("Idempotency-Key", format!("q{qty}"))
            .json(&json!({ "sku": "FZX", "qty": qty }));
        let r = app.send(req).await.expect(400);
        assert_eq!(r.code(), "bad_request", "qty {qty}");
    }
    let r = app.buy(&mei, &sale, "sp", "F Z X", 1).await.expect(400);
    assert_eq!(r.code(), "bad_request");
    let no_key = app
        .http
        .post(app.url(&orders))
        .bearer_auth(&mei)
        .json(&json!({ "sku": "FZX", "qty": 1 }));
    assert_eq!(app.send(no_key).await.expect(400).code(), "bad_request");
    let r = app
        .buy(&mei, &sale, &"k".repeat(129), "FZX", 1)
        .await
        .expect(400);
    assert_eq!(r.code(), "bad_request");
    // Nothing was sold by any of that.
    assert_eq!(
        crate::helpers::product(&app.sale(&sale).await, "FZX")["remaining"],
        10
    );
}

#[tokio::test]
async fn not_found_and_conflicts() {
    let mut env = TestEnv::production().await;
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = app.live_sale(&host, "reserve", "FZX", 1, 2).await;
    let ghost = uuid::Uuid::new_v4();
    assert_eq!(
        app.get(&format!("/sales/{ghost}"), None)
            .await
            .expect(404)
            .code(),
        "not_found"
    );
    assert_eq!(
        app.get("/sales/not-a-uuid", None).await.expect(404).code(),
        "not_found"
    );
    assert_eq!(
        app.get("/no/such/endpoint", None).await.expect(404).code(),
        "not_found"
    );
    assert_eq!(
        app.get(&format!("/orders/{ghost}"), Some(&mei))
            .await
            .expect(404)
            .code(),
        "not_found"
    );
    assert_eq!(
        app.buy(&mei, &ghost.to_string(), "k", "FZX", 1)
            .await
            .expect(404)
            .code(),
        "not_found"
    );
    assert_eq!(
        app.buy(&mei, &sale, "k1", "NOPE", 1)
            .await
            .expect(404)
            .code(),
        "not_found"
    );
    assert_eq!(
        app.get("/sales?status=bogus", None)
            .await
            .expect(400)
            .code(),
        "bad_request"
    );

    // not_on_sale, sold_out, sale_not_live.
    app.add_product(
        &host,
        &sale,
        json!({ "sku": "LATER", "name": "n", "price_cents": 5, "stock": 5 }),
    )
    .await
    .expect(201);
    assert_eq!(
        app.buy(&mei, &sale, "k2", "LATER", 1)
            .await
            .expect(409)
            .code(),
        "not_on_sale"
    );
    assert_eq!(
        app.buy(&mei, &sale, "k3", "FZX", 2)
            .await
            .expect(409)
            .code(),
        "sold_out"
    );
    app.buy(&mei, &sale, "k4", "FZX", 1).await.expect(201);
    assert_eq!(
        app.buy(&mei, &sale, "k5", "FZX", 1)
            .await
            .expect(409)
            .code(),
        "sold_out"
    );
    let scheduled = app
        .create_sale(&host, json!({ "title": "later" }))
        .await
        .expect(201)
        .json();
    let sid = scheduled["id"].as_str().unwrap();
    app.add_product(
        &host,
        sid,
        json!({ "sku": "S", "name": "n", "price_cents": 5, "stock": 5 }),
    )
    .await
    .expect(201);
    assert_eq!(
        app.buy(&mei, sid, "k6", "S", 1).await.expect(409).code(),
        "sale_not_live"
    );
}

#[tokio::test]
async fn guest_sign_ups_are_rate_limited() {
    let mut env = TestEnv::embedded();
    let app = env.node().await;
    let mut limited = None;
    for _ in 0..30 {
        let r = app.post("/guests", None, json!({ "name": "bot" })).await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        r.expect(201);
    }
    let r = limited.expect("never rate limited");
    assert_eq!(r.code(), "rate_limited");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
}

fn host_port(url: &str, default: u16) -> String {
    let u = url::Url::parse(url).unwrap();
    format!("{}:{}", u.host_str().unwrap(), u.port().unwrap_or(default))
}

#[tokio::test]
async fn redis_outage_is_503_not_a_hang_and_heals() {
    let mut env = TestEnv::production().await;
    let switch = Switch::start(host_port(&crate::helpers::redis_url(), 6379)).await;
    let mut settings = env.settings();
    // One node behind a cuttable proxy, in a cluster run too (a cluster's
    // topology names its nodes' own addresses, past any proxy).
    if let lychee_live::config::Mode::Production { redis, .. } = &mut settings.mode {
        *redis = lychee_live::config::RedisTarget::Node(format!("redis://{}/", switch.addr));
    }
    let app = env.node_with(settings).await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = app.live_sale(&host, "reserve", "FZX", 10, 2).await;
    switch.cut();
    let started = std::time::Instant::now();
    let r = app.buy(&mei, &sale, "k", "FZX", 1).await.expect(503);
    assert_eq!(r.code(), "unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(ready(&app).await, 503);
    // Back by itself within 5 s of Redis returning; the same key is a fresh try.
    switch.restore();
    buy_once_healed(&app, &mei, &sale, "k", "FZX", Duration::from_secs(5)).await;
    assert_eq!(ready(&app).await, 200);
}

#[tokio::test]
async fn postgres_outage_refuses_completion_and_returns_the_stock() {
    let mut env = TestEnv::production().await;
    let db = env.database_url().unwrap();
    let switch = Switch::start(host_port(&db, 5432)).await;
    let mut settings = env.settings();
    if let lychee_live::config::Mode::Production { database_url, .. } = &mut settings.mode {
        let mut u = url::Url::parse(&db).unwrap();
        u.set_host(Some("127.0.0.1")).unwrap();
        u.set_port(Some(switch.addr.port())).unwrap();
        *database_url = u.to_string();
    }
    let app = env.node_with(settings).await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let instant = app.live_sale(&host, "instant", "NOW", 5, 5).await;
    let reserve = app.live_sale(&host, "reserve", "LATER", 5, 5).await;
    // Warm the node's catalog: the buy path then needs no database to admit.
    app.buy(&mei, &instant, "w1", "NOW", 1).await.expect(201);
    let held = app
        .buy(&mei, &reserve, "w2", "LATER", 1)
        .await
        .expect(201)
        .json();
    switch.cut();
    let r = app.buy(&mei, &instant, "k1", "NOW", 1).await.expect(503);
    assert_eq!(r.code(), "unavailable");
    // Reservations keep working without PostgreSQL; paying needs it.
    let o = app
        .buy(&mei, &reserve, "k2", "LATER", 1)
        .await
        .expect(201)
        .json();
    assert_eq!(o["status"], "reserved");
    let pay = app
        .pay(&host, held["id"].as_str().unwrap(), "p")
        .await
        .expect(503);
    assert_eq!(pay.code(), "unavailable");
    // Recovery by itself. The refused order's unit went back: 4 left, none held.
    switch.restore();
    let back = std::time::Instant::now();
    let sale = loop {
        let r = app.get(&format!("/sales/{instant}"), None).await;
        if r.status == 200 {
            break r.json();
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "not healed: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let p = crate::helpers::product(&sale, "NOW");
    assert_eq!(
        (p["remaining"].clone(), p["reserved"].clone()),
        (json!(4), json!(0))
    );
    // The same key is a fresh attempt now.
    let left = Duration::from_secs(10).saturating_sub(back.elapsed());
    buy_once_healed(&app, &mei, &instant, "k1", "NOW", left).await;
    app.pay(&host, held["id"].as_str().unwrap(), "p")
        .await
        .expect(200);
}

/// `/readyz`'s status.
async fn ready(app: &TestApp) -> u16 {
    let r = app
        .http
        .get(format!("http://{}/readyz", app.addr))
        .send()
        .await;
    r.unwrap().status().as_u16()
}

/// Buys one unit, retrying until it is created; fails if that takes `within`.
async fn buy_once_healed(
    app: &TestApp,
    token: &str,
    sale: &str,
    key: &str,
    sku: &str,
    within: Duration,
) {
    let since = std::time::Instant::now();
    loop {
        let r = app.buy(token, sale, key, sku, 1).await;
        if r.status == 201 {
            return;
        }
        assert!(
            since.elapsed() < within,
            "not healed: {:?} {}",
            r.status,
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
