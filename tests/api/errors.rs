//! Every error code of the contract, reached by a hostile or wrong input.

use std::time::Duration;

use base64::Engine;
use lychee_live::identity::Role;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::helpers::{TestApp, TestEnv, SECRET};

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

/// A TCP proxy to Redis that the test can cut.
async fn redis_proxy() -> (String, tokio_util::sync::CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = url::Url::parse(&crate::helpers::redis_url()).unwrap();
    let target = format!(
        "{}:{}",
        upstream.host_str().unwrap(),
        upstream.port().unwrap_or(6379)
    );
    let cut = tokio_util::sync::CancellationToken::new();
    let stop = cut.clone();
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = tokio::select! {
                c = listener.accept() => match c { Ok(c) => c, Err(_) => return },
                _ = stop.cancelled() => return,
            };
            let target = target.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let Ok(mut out) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                    _ = stop.cancelled() => {
                        let _ = inbound.shutdown().await;
                    }
                }
            });
        }
    });
    (format!("redis://{addr}/"), cut)
}

#[tokio::test]
async fn redis_outage_is_503_not_a_hang() {
    let mut env = TestEnv::production().await;
    let (url, cut) = redis_proxy().await;
    let mut settings = env.settings();
    if let lychee_live::config::Mode::Production { redis_url, .. } = &mut settings.mode {
        *redis_url = url;
    }
    let app = env.node_with(settings).await;
    let addr = app.addr;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = app.live_sale(&host, "reserve", "FZX", 10, 2).await;
    cut.cancel();
    let started = std::time::Instant::now();
    let r = app.buy(&mei, &sale, "k", "FZX", 1).await.expect(503);
    assert_eq!(r.code(), "unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let ready = app
        .http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
}
