//! Limits and what must never leak: rate limits, socket caps, CORS, CSV
//! formulas, and secrets in logs.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use lychee_live::identity::Role;
use serde_json::json;

use crate::helpers::{TestApp, TestEnv, SECRET};
use crate::live_helpers::Ended;
use lychee_live::http::limits::LimitSettings;

/// A production node with these limits, and a live sale of FZX.
async fn limited_sale(
    stock: i64,
    limit: i64,
    set: impl FnOnce(&mut LimitSettings),
) -> (TestEnv, TestApp, String) {
    let mut env = TestEnv::production().await;
    let mut settings = env.settings();
    set(&mut settings.limits);
    let app = env.node_with(settings).await;
    let host = env.token(Role::Host, "alice");
    let sale = app.live_sale(&host, "reserve", "FZX", stock, limit).await;
    (env, app, sale)
}

#[tokio::test]
async fn buys_are_rate_limited_per_user_with_retry_after() {
    let (env, app, sale) = limited_sale(100, 100, |l| l.buy_per_user = 2.0).await;
    let mei = env.token(Role::Viewer, "mei");
    let mut limited = None;
    for i in 0..10 {
        let r = app.buy(&mei, &sale, &format!("k{i}"), "FZX", 1).await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        r.expect(201);
    }
    let r = limited.expect("never rate limited");
    assert_eq!(r.code(), "rate_limited");
    assert!(
        r.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // Another user is not affected.
    let li = env.token(Role::Viewer, "li");
    app.buy(&li, &sale, "a", "FZX", 1).await.expect(201);
}

#[tokio::test]
async fn sockets_per_user_are_capped() {
    let (env, app, sale) = limited_sale(10, 5, |l| l.max_sockets_per_user = 2).await;
    let mei = env.token(Role::Viewer, "mei");
    let (_a, _) = app.join(&sale, &mei, None).await;
    let (_b, _) = app.join(&sale, &mei, None).await;
    let refused = tokio_tungstenite::connect_async(app.live_url(&sale, &mei, None)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("a third socket was not refused: {:?}", other.map(|_| ())),
    }
    // Someone else still gets in.
    app.join(&sale, &env.token(Role::Viewer, "li"), None).await;
}

#[tokio::test]
async fn cors_is_off_unless_origins_are_listed() {
    let mut env = TestEnv::embedded();
    let off = env.node().await;
    let r = off
        .http
        .get(off.url("/sales"))
        .header("Origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    drop(off);

    let mut env = TestEnv::embedded();
    let mut settings = env.settings();
    settings.cors_origins = vec!["https://shop.example".into()];
    let on = env.node_with(settings).await;
    let allowed = on
        .http
        .get(on.url("/sales"))
        .header("Origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let other = on
        .http
        .get(on.url("/sales"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn csv_cells_never_run_as_formulas() {
    let mut env = TestEnv::production().await;
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mallory = env.token(Role::Viewer, "=cmd|' /C calc'!A0");
    let sale = app.live_sale(&host, "reserve", "FZX", 10, 5).await;
    let o = app
        .buy(&mallory, &sale, "k", "FZX", 1)
        .await
        .expect(201)
        .json();
    app.pay(
        &host,
        o["id"].as_str().unwrap(),
        "@SUM(1+1)*cmd|' /C calc'!A0",
    )
    .await
    .expect(200);
    let csv = app
        .get(&format!("/sales/{sale}/orders.csv"), Some(&host))
        .await
        .expect(200)
        .text;
    let row = csv.lines().nth(1).unwrap();
    assert!(row.contains(",'=cmd|' /C calc'!A0,"), "{row}");
    assert!(
        row.ends_with(",'@SUM(1+1)*cmd|' /C calc'!A0,manual,,12800,0"),
        "{row}"
    );
    let cells: Vec<&str> = row.split(',').collect();
    assert!(
        !cells.iter().any(|c| c.starts_with(['=', '+', '-', '@'])),
        "{row}"
    );
}

/// Runs the real binary with debug logs, uses tokens every way a client can,
/// and greps what it logged.
#[tokio::test]
async fn tokens_and_secrets_never_reach_the_logs() {
    let dir = std::env::temp_dir().join(format!("lychee-logs-{}", uuid::Uuid::new_v4().simple()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut child = Command::new(env!("CARGO_BIN_EXE_lychee-live"))
        .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
        .arg(&dir)
        .env("LIVE_JWT_SECRET", SECRET)
        .env("RUST_LOG", "trace")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://{addr}/api/v1");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if http
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the node did not start");
    let sales: serde_json::Value = http
        .get(format!("{base}/sales"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sale = sales["sales"][0]["id"].as_str().unwrap().to_owned();
    let guest: serde_json::Value = http
        .post(format!("{base}/guests"))
        .json(&json!({ "name": "Mei" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = guest["token"].as_str().unwrap().to_owned();
    http.post(format!("{base}/sales/{sale}/orders"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "k1")
        .json(&json!({ "sku": "FZX-5KG", "qty": 1 }))
        .send()
        .await
        .unwrap();
    let forged = format!("{token}x");
    http.get(format!("{base}/me/orders"))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    let url = format!("ws://{addr}/api/v1/sales/{sale}/live?access_token={token}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    use futures_util::StreamExt;
    ws.next().await;
    drop(ws);
    let _ = tokio_tungstenite::connect_async(format!(
        "ws://{addr}/api/v1/sales/{sale}/live?access_token={forged}"
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.kill();
    let _ = child.wait();
    let mut logs = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        logs.contains("lychee-live ready"),
        "no logs captured: {logs}"
    );
    let signature = token.rsplit('.').next().unwrap();
    for secret in [SECRET, token.as_str(), signature] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

#[tokio::test]
async fn chat_is_rate_limited_per_ip_across_users() {
    // Burst 2 for the address; each user alone could send 3.
    let (env, app, sale) = limited_sale(10, 5, |l| l.chat_per_ip = 1.0).await;
    let mut viewers = Vec::new();
    for name in ["mei", "li", "zhao"] {
        viewers.push(
            app.join(&sale, &env.token(Role::Viewer, name), None)
                .await
                .0,
        );
    }
    for (i, text) in ["one", "two"].into_iter().enumerate() {
        viewers[i].chat(text).await;
        while viewers[i].next_of("chat").await["text"] != text {}
    }
    viewers[2].chat("three").await;
    let (code, e) = viewers[2].error().await;
    assert_eq!(code, "rate_limited", "{e}");
    // Refused, not counted as abuse: the socket stays open.
    viewers[2].ping("still-here").await;
}

#[tokio::test]
async fn slow_and_idle_http_clients_are_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut env = TestEnv::embedded();
    let mut settings = env.settings();
    settings.limits.header_timeout = Duration::from_millis(300);
    let app = env.node_with(settings).await;

    // Reads until the server closes; panics if it does not within 3 s.
    async fn closed_within(s: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut got))
            .await
            .expect("the server kept the connection open")
            .ok();
        got
    }

    // Slowloris: a request head that never ends.
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert!(!String::from_utf8_lossy(&closed_within(&mut slow).await).contains("200 OK"));
    assert!(started.elapsed() >= Duration::from_millis(200));

    // Connected and silent.
    let mut silent = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    closed_within(&mut silent).await;

    // A keep-alive connection is answered, then dropped once idle.
    let mut idle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = closed_within(&mut idle).await;
    assert!(
        String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answered)
    );
}

#[tokio::test]
async fn sockets_that_never_answer_pings_are_closed() {
    let (env, app, sale) = limited_sale(10, 5, |l| l.heartbeat = Duration::from_millis(200)).await;
    let (mut deaf, _) = app.join(&sale, &env.token(Role::Viewer, "mei"), None).await;
    let (mut awake, _) = app.join(&sale, &env.token(Role::Viewer, "li"), None).await;
    // Reading is what answers pings; `deaf` reads nothing for 2 s.
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < until {
        awake.next_within(Duration::from_millis(100)).await;
    }
    awake.ping("alive").await;
    // Closed with 1001, or reset when the late pongs hit a closed socket;
    // `rest` fails if it stays open.
    let (_, ended) = deaf.rest().await;
    assert!(
        matches!(ended, Ended::Closed(1001) | Ended::Dropped),
        "{ended:?}"
    );
}

/// Guest sign-ups from `app` as the client `xff` claims to be.
async fn guest_as(app: &TestApp, xff: &str) -> u16 {
    let req = app
        .http
        .post(app.url("/guests"))
        .header("X-Forwarded-For", xff)
        .json(&json!({ "name": "Mei" }));
    app.send(req).await.status.as_u16()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_guest_budget() {
    let mut env = TestEnv::embedded();
    let mut settings = env.settings();
    settings.limits.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let app = env.node_with(settings).await;
    // The proxy appends the address it saw to what the client sent.
    for _ in 0..20 {
        assert_eq!(guest_as(&app, "198.51.100.1, 203.0.113.1").await, 201);
    }
    assert_eq!(guest_as(&app, "198.51.100.2, 203.0.113.1").await, 429);
    assert_eq!(guest_as(&app, "203.0.113.2").await, 201);
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_do_not_dodge_the_guest_limit() {
    let mut env = TestEnv::embedded();
    let app = env.node().await;
    for i in 0..20 {
        assert_eq!(guest_as(&app, &format!("203.0.113.{i}")).await, 201);
    }
    assert_eq!(guest_as(&app, "203.0.113.99").await, 429);
    let forwarded = app
        .http
        .post(app.url("/guests"))
        .header("Forwarded", "for=203.0.113.100")
        .json(&json!({ "name": "Mei" }));
    assert_eq!(app.send(forwarded).await.status, 429);
}

#[tokio::test]
async fn refused_chat_does_not_drain_the_ip_budget_of_neighbours() {
    // Burst 2 for the address, shared by everyone behind it.
    let (env, app, sale) = limited_sale(10, 5, |l| l.chat_per_ip = 1.0).await;
    let (mut host, _) = app.join(&sale, &env.token(Role::Host, "alice"), None).await;
    let (mut mei, _) = app.join(&sale, &env.token(Role::Viewer, "mei"), None).await;
    let (mut li, _) = app.join(&sale, &env.token(Role::Viewer, "li"), None).await;
    host.send(json!({ "type": "mute", "user_id": "mei", "secs": 60 }))
        .await;
    host.ping("muted").await;
    for _ in 0..6 {
        mei.chat("let me speak").await;
        let (code, e) = mei.error().await;
        assert_eq!(code, "muted", "{e}");
    }
    // Her neighbour on the same address still has the whole burst.
    for text in ["one", "two"] {
        li.chat(text).await;
        while li.next_of("chat").await["text"] != text {}
    }
    li.chat("three").await;
    let (code, e) = li.error().await;
    assert_eq!(code, "rate_limited", "{e}");
}

async fn guest_token(app: &TestApp) -> String {
    app.post("/guests", None, json!({ "name": "Mei" }))
        .await
        .expect(201)
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn assert_socket_refused(app: &TestApp, sale: &str, token: &str) {
    match app.connect(app.live_url(sale, token, None)).await {
        Err(r) => {
            assert_eq!(r.status, 503);
            assert_eq!(r.code(), "unavailable");
        }
        Ok(_) => panic!("a socket over the cap was let in"),
    }
}

#[tokio::test]
async fn sockets_per_ip_are_capped_lower_for_guests() {
    let (env, app, sale) = limited_sale(10, 5, |l| {
        l.max_sockets_per_ip = 3;
        l.max_guest_sockets_per_ip = 2;
    })
    .await;
    let (g1, _) = app.join(&sale, &guest_token(&app).await, None).await;
    let _g2 = app.join(&sale, &guest_token(&app).await, None).await;
    assert_socket_refused(&app, &sale, &guest_token(&app).await).await;
    // Signed-in viewers from the same address fill the rest of its cap.
    let _mei = app.join(&sale, &env.token(Role::Viewer, "mei"), None).await;
    let li = env.token(Role::Viewer, "li");
    assert_socket_refused(&app, &sale, &li).await;
    // A closed socket gives its place back.
    drop(g1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while app.connect(app.live_url(&sale, &li, None)).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sockets_per_ip_count_the_client_behind_a_trusted_proxy() {
    let (env, app, sale) = limited_sale(10, 5, |l| {
        l.max_sockets_per_ip = 1;
        l.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let from = |user: &str, client: &str| {
        let mut req = app
            .live_url(&sale, &env.token(Role::Viewer, user), None)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("x-forwarded-for", client.parse().unwrap());
        req
    };
    let _a = app.connect(from("mei", "203.0.113.1")).await.unwrap();
    let _b = app.connect(from("li", "203.0.113.2")).await.unwrap();
    let again = app.connect(from("zhao", "203.0.113.1")).await;
    assert_eq!(again.err().map(|r| r.status), Some(503));
}

#[tokio::test]
async fn slow_request_bodies_are_cut_at_the_request_timeout() {
    use tokio::io::AsyncWriteExt;
    let mut env = TestEnv::embedded();
    let mut settings = env.settings();
    settings.limits.header_timeout = Duration::from_secs(10);
    settings.limits.request_timeout = Duration::from_millis(500);
    let app = env.node_with(settings).await;
    let host = env.token(Role::Host, "alice");
    let sale = app.live_sale(&host, "reserve", "FZX", 10, 5).await;

    // A whole head, then a 64 KiB body a byte at a time: answered 408 and
    // closed at the deadline, not held for as long as the client likes.
    let slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (mut read, mut write) = slow.into_split();
    write
        .write_all(
            b"POST /api/v1/guests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 65536\r\n\r\n{",
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let drip = tokio::spawn(async move {
        while write.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut got = Vec::new();
    let closed = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::io::AsyncReadExt::read_to_end(&mut read, &mut got),
    )
    .await;
    drip.abort();
    assert!(closed.is_ok(), "a trickled body held the connection");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("request_timeout"), "{got}");
    assert!(started.elapsed() >= Duration::from_millis(400));

    // Bodies that arrive in time, and responses that last, are untouched.
    app.post("/guests", None, json!({ "name": "Mei" }))
        .await
        .expect(201);
    let (mut ws, _) = app.join(&sale, &env.token(Role::Viewer, "mei"), None).await;
    let dashboard = app
        .http
        .get(app.url(&format!("/sales/{sale}/dashboard")))
        .bearer_auth(&host)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    ws.ping("still open").await;
    let mut dashboard = dashboard;
    let mut events = 0;
    while events < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(3), dashboard.chunk())
            .await
            .expect("the dashboard stream stalled")
            .unwrap()
            .expect("the dashboard stream ended");
        events += String::from_utf8_lossy(&chunk).matches("data:").count();
    }
}

/// A connection from `from` (a loopback address) that the node answered, or
/// `None` if it was closed at once.
async fn connection_from(app: &TestApp, from: [u8; 4]) -> Option<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    let mut s = socket.connect(app.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(b"}") {
        match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("neither answered nor closed"),
        }
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
    Some(s)
}

/// Retries until a connection from `from` is let in (a closed one's place
/// is given back once the node has seen it close).
async fn connection_eventually(app: &TestApp, from: [u8; 4]) -> tokio::net::TcpStream {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(s) = connection_from(app, from).await {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "no place came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn connections_are_capped_per_ip_and_per_node() {
    let mut env = TestEnv::embedded();
    let mut settings = env.settings();
    settings.limits.max_connections = 5;
    settings.limits.max_connections_per_ip = 3;
    let app = env.node_with(settings).await;
    let (a, b, c) = ([127, 0, 0, 1], [127, 0, 0, 2], [127, 0, 0, 3]);
    let mut from_a = Vec::new();
    for _ in 0..3 {
        from_a.push(connection_from(&app, a).await.expect("under the cap"));
    }
    assert!(
        connection_from(&app, a).await.is_none(),
        "over the per-IP cap"
    );
    // Another address still gets in, up to the node's cap.
    let _b1 = connection_from(&app, b).await.expect("another address");
    let _b2 = connection_from(&app, b).await.expect("another address");
    assert!(
        connection_from(&app, c).await.is_none(),
        "over the node's cap"
    );
    // Closing a connection gives its place back.
    drop(from_a.pop());
    let _a = connection_eventually(&app, a).await;
    assert!(
        connection_from(&app, c).await.is_none(),
        "the node is full again"
    );
    drop(from_a);
    let _c = connection_eventually(&app, c).await;
}

#[tokio::test]
async fn trusted_proxies_are_not_capped_per_ip_and_websockets_hold_their_place() {
    let (env, app, sale) = limited_sale(10, 5, |l| {
        l.max_connections = 8;
        l.max_connections_per_ip = 2;
        l.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let (proxy, other) = ([127, 0, 0, 1], [127, 0, 0, 2]);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            connection_from(&app, proxy)
                .await
                .expect("a proxy is not capped"),
        );
    }
    let _o1 = connection_from(&app, other).await.expect("under the cap");
    let _o2 = connection_from(&app, other).await.expect("under the cap");
    assert!(connection_from(&app, other).await.is_none());
    // An upgraded WebSocket keeps its connection's place: with it open the
    // node fills up...
    let (ws, _) = app.join(&sale, &env.token(Role::Viewer, "mei"), None).await;
    while let Some(s) = connection_from(&app, proxy).await {
        held.push(s);
        assert!(held.len() < 10, "the node's cap never applied");
    }
    // ...and its place comes back when it closes.
    drop(ws);
    let _p = connection_eventually(&app, proxy).await;
}

/// `stream_url` only on the deployment's streaming hosts, and the pages'
/// CSP frames exactly those.
#[tokio::test]
async fn only_listed_stream_hosts_are_framed() {
    let mut env = TestEnv::embedded();
    let mut settings = env.settings();
    settings.stream_hosts = std::sync::Arc::new(
        lychee_live::catalog::validate::StreamHosts::parse(["live.douyin.com", "*.bilivideo.com"])
            .unwrap(),
    );
    let app = env.node_with(settings).await;
    let host = env.token(Role::Host, "alice");
    for bad in [
        "https://evil.example/live.douyin.com",
        "https://live.douyin.com.evil.example/",
        "https://live.douyin.com@evil.example/",
        "https://live.douyin.com:8443/",
        "https://live.kuaishou.com/u/1",
    ] {
        let r = app
            .create_sale(&host, json!({ "title": "Harvest", "stream_url": bad }))
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert_eq!(r.code(), "bad_request");
    }
    let sale = app
        .create_sale(
            &host,
            json!({ "title": "Harvest", "stream_url": "https://cn-gd.bilivideo.com/live/1.m3u8" }),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(
        sale["stream_url"],
        "https://cn-gd.bilivideo.com/live/1.m3u8"
    );
    for page in ["/", &format!("/sales/{}", sale["id"].as_str().unwrap())] {
        let r = app
            .http
            .get(format!("http://{}{page}", app.addr))
            .send()
            .await
            .unwrap();
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("; frame-src https://live.douyin.com https://*.bilivideo.com; "),
            "{csp}"
        );
    }
}
