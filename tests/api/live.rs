//! The live room over WebSocket, against real Redis with two nodes.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use futures_util::StreamExt;
use lychee_live::config::Secret;
use lychee_live::identity::{Identity, Role, TokenKeys};
use lychee_live::Node;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{product, TestApp, TestEnv, SECRET};
use crate::live_helpers::{Ended, Recorder, Viewer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_chat_and_stock_across_two_nodes() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let b = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let li = env.token(Role::Viewer, "li");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;

    let (mut va, welcome) = a.join(&sale, &mei, None).await;
    assert_eq!(welcome["you"]["user_id"], "mei");
    assert_eq!(welcome["sale"]["id"], sale.as_str());
    assert_eq!(welcome["chat"], json!([]));
    assert_eq!(welcome["slow_mode_secs"], 0);
    let (mut vb, _) = b.join(&sale, &li, None).await;

    va.chat("  first box is mine  ").await;
    for v in [&mut va, &mut vb] {
        let m = v.next_of("chat").await;
        assert_eq!(
            (m["seq"].clone(), m["text"].clone(), m["user_id"].clone()),
            (json!(1), json!("first box is mine"), json!("mei"))
        );
    }
    // A REST buy on node a: viewers on node b see the stock fall (after,
    // maybe, the level from when the product opened).
    a.buy(&mei, &sale, "k1", "FZX", 2).await.expect(201);
    let mut s = vb.next_of("stock").await;
    if s["remaining"] == 10 {
        s = vb.next_of("stock").await;
    }
    assert_eq!(
        (
            s["sku"].clone(),
            s["remaining"].clone(),
            s["reserved"].clone()
        ),
        (json!("FZX"), json!(8), json!(2))
    );

    // A buy over the socket: the answer comes to that socket with its ref.
    vb.send(json!({ "type": "buy", "sku": "FZX", "qty": 1, "ref": "ws-1" }))
        .await;
    let o = vb.next_of("order").await;
    assert_eq!(o["ref"], "ws-1");
    assert_eq!(o["order"]["status"], "reserved");
    vb.send(json!({ "type": "ping", "ref": "p" })).await;
    assert_eq!(vb.next_of("pong").await["ref"], "p");
    let (_, again) = b.join(&sale, &li, None).await;
    assert_eq!(again["chat"][0]["text"], "first box is mine");
}

// ---------------------------------------------------------------------------
// Small tools

/// The `seq`s of a list of chat events (a JSON array or a slice).
fn seqs(chats: &[Value]) -> Vec<u64> {
    chats
        .iter()
        .map(|c| c["seq"].as_u64().unwrap_or_else(|| panic!("no seq: {c}")))
        .collect()
}

fn welcome_seqs(welcome: &Value) -> Vec<u64> {
    seqs(welcome["chat"].as_array().expect("welcome.chat"))
}

fn range(from: u64, to: u64) -> Vec<u64> {
    (from..=to).collect()
}

/// Every socket gets the chat message `seq` (sent by `user` with `text`) next.
async fn all_get_chat(viewers: &mut [&mut Viewer], seq: u64, user: &str, text: &str) {
    for v in viewers.iter_mut() {
        let m = v.next_of("chat").await;
        assert_eq!(
            (&m["seq"], &m["user_id"], &m["text"]),
            (&json!(seq), &json!(user), &json!(text)),
            "{m}"
        );
        assert!(m["ts"].as_i64().is_some_and(|t| t > 0), "{m}");
    }
}

/// A node started here rather than by `TestEnv`, so the test can shut it down.
async fn own_node(env: &TestEnv, shutdown: CancellationToken) -> TestApp {
    let node = Node::start(env.settings(), env.clock.clone(), shutdown)
        .await
        .expect("node starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(node.serve(listener));
    TestApp {
        addr,
        base: format!("http://{addr}/api/v1"),
        http: reqwest::Client::new(),
    }
}

/// Reads a recorder until a chat with `seq >= last`; every event on the way.
async fn recorded_until_seq(rec: &mut Recorder, last: u64) -> Vec<(Instant, Value)> {
    let mut out = Vec::new();
    loop {
        let (at, v) = rec
            .next_within(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("chat {last} never came"));
        let done = v["type"] == "chat" && v["seq"].as_u64() >= Some(last);
        out.push((at, v));
        if done {
            return out;
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Every client message and server event

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_tools_and_chat_rules_apply_across_two_nodes() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let b = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;

    let (mut h, hw) = a.join(&sale, &host, None).await;
    assert_eq!(
        hw["you"],
        json!({ "user_id": "alice", "name": "alice", "role": "host" })
    );
    assert!(hw["viewers"].as_u64().is_some_and(|n| n >= 1), "{hw}");
    let (mut m, mw) = a.join(&sale, &env.token(Role::Viewer, "mei"), None).await;
    assert_eq!(mw["you"]["role"], "viewer");
    let (mut l, _) = b.join(&sale, &env.token(Role::Viewer, "li"), None).await;

    // announce: trimmed, to everyone on both nodes.
    h.send(json!({ "type": "announce", "text": "  ten boxes at eight  " }))
        .await;
    for v in [&mut h, &mut m, &mut l] {
        let e = v.next_of("announcement").await;
        assert_eq!(e["text"], "ten boxes at eight");
        assert!(e["ts"].as_i64().is_some_and(|t| t > 0), "{e}");
    }

    // pin: event everywhere, and the sale shows it.
    h.send(json!({ "type": "pin", "sku": "FZX" })).await;
    for v in [&mut h, &mut m, &mut l] {
        assert_eq!(v.next_of("pinned").await["sku"], "FZX");
    }
    assert_eq!(b.sale(&sale).await["pinned_sku"], "FZX");
    h.send(json!({ "type": "pin", "sku": "NOPE" })).await;
    assert_eq!(h.error().await.0, "not_found");

    // chat, then delete_chat: gone from everyone's screen and from history.
    m.chat("hello from node a").await;
    all_get_chat(&mut [&mut h, &mut m, &mut l], 1, "mei", "hello from node a").await;
    l.chat("hello from node b").await;
    all_get_chat(&mut [&mut h, &mut m, &mut l], 2, "li", "hello from node b").await;
    h.send(json!({ "type": "delete_chat", "seq": 2 })).await;
    for v in [&mut h, &mut m, &mut l] {
        assert_eq!(v.next_of("chat_deleted").await["seq"], 2);
    }
    let (_, w) = b.join(&sale, &env.token(Role::Viewer, "wu"), None).await;
    assert_eq!(welcome_seqs(&w), [1]);
    let (_, w) = a.join(&sale, &env.token(Role::Viewer, "wu"), Some(0)).await;
    assert_eq!(welcome_seqs(&w), [1]);
    h.send(json!({ "type": "delete_chat", "seq": 2 })).await;
    assert_eq!(h.error().await.0, "not_found");

    // mute: the muted user (on the other node) is refused; unmuted, it chats.
    h.send(json!({ "type": "mute", "user_id": "li", "secs": 60 }))
        .await;
    h.ping("mute applied").await;
    l.chat("can you hear me").await;
    let (code, e) = l.error().await;
    assert_eq!(code, "muted", "{e}");
    h.send(json!({ "type": "mute", "user_id": "li", "secs": 0 }))
        .await;
    h.ping("unmute applied").await;
    l.chat("back again").await;
    // Seq 3 is this one: the muted message was never numbered nor sent.
    all_get_chat(&mut [&mut h, &mut m, &mut l], 3, "li", "back again").await;

    // slow_mode: announced, in the welcome, enforced on viewers, not on the host.
    h.send(json!({ "type": "slow_mode", "secs": 30 })).await;
    for v in [&mut h, &mut m, &mut l] {
        assert_eq!(v.next_of("slow_mode").await["secs"], 30);
    }
    let (_, w) = b.join(&sale, &env.token(Role::Viewer, "wu"), None).await;
    assert_eq!(w["slow_mode_secs"], 30);
    m.chat("first in slow mode").await;
    all_get_chat(
        &mut [&mut h, &mut m, &mut l],
        4,
        "mei",
        "first in slow mode",
    )
    .await;
    m.chat("second too soon").await;
    let (code, e) = m.error().await;
    assert_eq!(code, "slow_mode", "{e}");
    h.chat("host one").await;
    h.chat("host two").await;
    all_get_chat(&mut [&mut h, &mut m, &mut l], 5, "alice", "host one").await;
    all_get_chat(&mut [&mut h, &mut m, &mut l], 6, "alice", "host two").await;
    h.send(json!({ "type": "slow_mode", "secs": 0 })).await;
    for v in [&mut h, &mut m, &mut l] {
        assert_eq!(v.next_of("slow_mode").await["secs"], 0);
    }
    m.chat("free again").await;
    all_get_chat(&mut [&mut h, &mut m, &mut l], 7, "mei", "free again").await;

    // A viewer's host commands: forbidden, no effect, socket open.
    for cmd in [
        json!({ "type": "announce", "text": "free boxes" }),
        json!({ "type": "pin", "sku": "FZX" }),
        json!({ "type": "delete_chat", "seq": 1 }),
        json!({ "type": "mute", "user_id": "li", "secs": 60 }),
        json!({ "type": "ban", "user_id": "li" }),
        json!({ "type": "slow_mode", "secs": 60 }),
    ] {
        m.send(cmd.clone()).await;
        let (code, e) = m.error().await;
        assert_eq!(code, "forbidden", "{cmd} -> {e}");
    }
    m.ping("still open").await;
    l.chat("not banned, not muted").await;
    let seen = l.until("chat").await;
    let chat = seen.last().expect("chat");
    assert_eq!(
        (&chat["seq"], &chat["text"]),
        (&json!(8), &json!("not banned, not muted"))
    );
    for e in &seen {
        let kind = e["type"].as_str().unwrap_or_default();
        assert!(
            !["announcement", "pinned", "chat_deleted", "slow_mode"].contains(&kind),
            "a viewer's command took effect: {e}"
        );
    }

    // The chat rate is per user across nodes: burst 3, then rate_limited.
    let zhao = env.token(Role::Viewer, "zhao");
    let (mut za, _) = a.join(&sale, &zhao, None).await;
    let (mut zb, _) = b.join(&sale, &zhao, None).await;
    za.chat("z one").await;
    all_get_chat(&mut [&mut za, &mut zb], 9, "zhao", "z one").await;
    zb.chat("z two").await;
    all_get_chat(&mut [&mut za, &mut zb], 10, "zhao", "z two").await;
    za.chat("z three").await;
    all_get_chat(&mut [&mut za, &mut zb], 11, "zhao", "z three").await;
    zb.chat("z four").await;
    let (code, e) = zb.error().await;
    assert_eq!(code, "rate_limited", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_changes_orders_and_viewer_counts_reach_the_right_sockets() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let b = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;
    let (mut m, _) = a.join(&sale, &mei, None).await;
    let (mut l, _) = b.join(&sale, &env.token(Role::Viewer, "li"), None).await;

    // Two sockets on two nodes: both see a count of 2.
    m.viewers_reach(2, Duration::from_secs(4)).await;
    l.viewers_reach(2, Duration::from_secs(4)).await;

    // product events for create, open, restock, close (REST on either node).
    a.add_product(
        &host,
        &sale,
        json!({ "sku": "LZ", "name": "Lychee 1 kg", "price_cents": 3900,
                "stock": 5, "per_user_limit": 2 }),
    )
    .await
    .expect(201);
    let lz = |v: &Value, status: &str, stock: i64| {
        let p = &v["product"];
        assert_eq!(
            (&p["sku"], &p["status"], &p["stock"]),
            (&json!("LZ"), &json!(status), &json!(stock)),
            "{v}"
        );
    };
    for v in [&mut m, &mut l] {
        lz(&v.next_of("product").await, "scheduled", 5);
    }
    b.open(&host, &sale, "LZ").await.expect(200);
    for v in [&mut m, &mut l] {
        lz(&v.next_of("product").await, "on_sale", 5);
    }
    b.post(
        &format!("/sales/{sale}/products/LZ/restock"),
        Some(&host),
        json!({ "add": 3 }),
    )
    .await
    .expect(200);
    for v in [&mut m, &mut l] {
        let p = v.next_of("product").await;
        lz(&p, "on_sale", 8);
        assert_eq!(p["product"]["remaining"], 8, "{p}");
    }
    a.post(
        &format!("/sales/{sale}/products/LZ/close"),
        Some(&host),
        json!({}),
    )
    .await
    .expect(200);
    for v in [&mut m, &mut l] {
        lz(&v.next_of("product").await, "closed", 8);
    }

    // order events: to the buyer alone, on another node than the REST calls.
    let o1 = b.buy(&mei, &sale, "k1", "FZX", 1).await.expect(201).json();
    assert_eq!(o1["status"], "reserved");
    let id1 = o1["id"].as_str().expect("id");
    b.pay(&host, id1, "pay-1").await.expect(200);
    let e = m.next_of("order").await;
    assert_eq!(
        (&e["order"]["id"], &e["order"]["status"]),
        (&json!(id1), &json!("completed")),
        "{e}"
    );
    assert!(e.get("ref").is_none_or(Value::is_null), "{e}");
    let o2 = a.buy(&mei, &sale, "k2", "FZX", 1).await.expect(201).json();
    let id2 = o2["id"].as_str().expect("id");
    a.cancel(&mei, id2).await.expect(200);
    let e = m.next_of("order").await;
    assert_eq!(
        (&e["order"]["id"], &e["order"]["status"]),
        (&json!(id2), &json!("cancelled")),
        "{e}"
    );
    // A marker after both: li saw no order event before it, mei no other.
    a.post(
        &format!("/sales/{sale}/pin"),
        Some(&host),
        json!({ "sku": "FZX" }),
    )
    .await
    .expect(200);
    for (v, who) in [(&mut l, "li"), (&mut m, "mei")] {
        let seen = v.until("pinned").await;
        assert!(
            seen.iter().all(|e| e["type"] != "order"),
            "{who} got an order event it should not: {seen:?}"
        );
    }

    // sale {status} on REST end, then every product, closed.
    a.post(&format!("/sales/{sale}/end"), Some(&host), json!({}))
        .await
        .expect(200);
    for v in [&mut m, &mut l] {
        assert_eq!(v.next_of("sale").await["status"], "ended");
        let mut closed = BTreeSet::new();
        while closed.len() < 2 {
            let p = v.next_of("product").await;
            assert_eq!(p["product"]["status"], "closed", "{p}");
            closed.insert(p["product"]["sku"].as_str().expect("sku").to_owned());
        }
        assert_eq!(closed, BTreeSet::from(["FZX".into(), "LZ".into()]));
    }
}

// ---------------------------------------------------------------------------
// 2. Fan-out

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_reaches_every_viewer_on_both_nodes_once_and_in_order() {
    const SENDERS: usize = 50;
    const VIEWERS: usize = 200;
    // The default rate allows a burst of 3 per user.
    const EACH: usize = 3;
    let total = (SENDERS * EACH) as u64;
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let b = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;

    // Senders first, then viewers; even ones on node a, odd ones on node b.
    let joins = (0..SENDERS + VIEWERS).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let who = if i < SENDERS {
            format!("sender{i:02}")
        } else {
            format!("viewer{i:03}")
        };
        let token = env.token(Role::Viewer, &who);
        let sale = sale.clone();
        async move { app.join(&sale, &token, None).await }
    });
    let sockets: Vec<(Viewer, Value)> = futures_util::stream::iter(joins)
        .buffered(32)
        .collect()
        .await;

    let mut tasks = Vec::new();
    for (i, (mut v, welcome)) in sockets.into_iter().enumerate() {
        assert_eq!(welcome["chat"], json!([]), "{welcome}");
        tasks.push(tokio::spawn(async move {
            if i < SENDERS {
                for j in 0..EACH {
                    v.chat(&format!("sender{i:02} says {j}")).await;
                }
            }
            let mut got = Vec::new();
            let mut events = 0;
            while got.len() < total as usize {
                match v.next_within(Duration::from_secs(10)).await {
                    Some(e) if e["type"] == "chat" => {
                        events += 1;
                        got.push(e);
                    }
                    Some(e) if e["type"] == "error" => panic!("socket {i}: {e}"),
                    Some(_) => events += 1,
                    None => break,
                }
            }
            (got, events, v.frames)
        }));
    }
    let mut first: Option<Vec<Value>> = None;
    let (mut all_events, mut all_frames) = (0, 0);
    for (i, t) in tasks.into_iter().enumerate() {
        let (got, events, frames) = t.await.expect("reader");
        all_events += events;
        all_frames += frames;
        assert_eq!(seqs(&got), range(1, total), "socket {i}");
        match &first {
            None => {
                let texts: BTreeSet<(String, String)> = got
                    .iter()
                    .map(|c| (c["user_id"].to_string(), c["text"].to_string()))
                    .collect();
                let want: BTreeSet<(String, String)> = (0..SENDERS)
                    .flat_map(|i| {
                        (0..EACH).map(move |j| {
                            (
                                json!(format!("sender{i:02}")).to_string(),
                                json!(format!("sender{i:02} says {j}")).to_string(),
                            )
                        })
                    })
                    .collect();
                assert_eq!(texts, want);
                first = Some(got);
            }
            Some(f) => assert_eq!(&got, f, "socket {i} saw other messages"),
        }
    }
    // Somewhere in this rush the server packed several events in one frame.
    assert!(
        all_frames < all_events,
        "no batch frame: {all_frames} frames for {all_events} events"
    );
}

// ---------------------------------------------------------------------------
// 3. Resume

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_on_the_other_node_returns_exactly_the_missed_chat() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let b = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;
    let (mut h, _) = a.join(&sale, &host, None).await;
    let (mut m, _) = a.join(&sale, &mei, None).await;
    let (mut li, _) = a.join(&sale, &env.token(Role::Viewer, "li"), None).await;
    let (mut zhao, _) = b.join(&sale, &env.token(Role::Viewer, "zhao"), None).await;

    li.chat("li before").await;
    assert_eq!(seqs(&m.chats_until(1).await), [1]);
    zhao.chat("zhao before").await;
    assert_eq!(seqs(&m.chats_until(2).await), [2]);
    m.ws.close(None).await.expect("close");
    drop(m);

    // Missed: 4 from viewers on both nodes, 120 from the host (more than
    // the 50 of a plain welcome).
    for i in 0..2 {
        li.chat(&format!("li away {i}")).await;
        zhao.chat(&format!("zhao away {i}")).await;
    }
    for i in 0..120 {
        h.chat(&format!("host while mei is away {i}")).await;
    }
    let all = h.chats_until(126).await;
    assert_eq!(seqs(&all), range(1, 126), "every message was accepted");
    let missed: Vec<Value> = all
        .into_iter()
        .filter(|c| c["seq"].as_u64() > Some(2))
        .collect();

    // Back on node b: exactly the missed ones, then live ones, no repeats.
    let (mut m, w) = b.join(&sale, &mei, Some(2)).await;
    assert_eq!(w["chat"], json!(missed));
    h.chat("welcome back").await;
    let next = m.next_of("chat").await;
    assert_eq!(
        (&next["seq"], &next["text"]),
        (&json!(127), &json!("welcome back"))
    );
    m.ws.close(None).await.expect("close");
    drop(m);

    // Again, rejoining node a while the host is posting: the welcome and the
    // live frames meet without a gap or a repeat.
    let (mut hs, mut hrec) = h.split();
    let flood = tokio::spawn(async move {
        for i in 0..300 {
            hs.chat(&format!("flood {i}")).await;
        }
    });
    recorded_until_seq(&mut hrec, 127 + 50).await;
    let (mut m, w) = a.join(&sale, &mei, Some(127)).await;
    let mut got = welcome_seqs(&w);
    assert!(!got.is_empty(), "joined after 50 were posted");
    let last = 127 + 300;
    if got.last() < Some(&last) {
        got.extend(seqs(&m.chats_until(last).await));
    }
    assert_eq!(got, range(128, last));
    flood.await.expect("flood");
    // Nothing more came after the last one.
    assert!(m.ping("done").await.iter().all(|e| e["type"] != "chat"));
}

// ---------------------------------------------------------------------------
// 4. A stalled reader: unit tests on the socket loop (src/ws/tests.rs)

// ---------------------------------------------------------------------------
// 5. Ban

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_closes_the_users_sockets_on_every_node_and_bars_it() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let b = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;
    let (mut h, _) = a.join(&sale, &host, None).await;
    let (mut ma, _) = a.join(&sale, &mei, None).await;
    let (mut mb, _) = b.join(&sale, &mei, None).await;
    let (mut li, _) = b.join(&sale, &env.token(Role::Viewer, "li"), None).await;
    // Before: mei may buy.
    b.buy(&mei, &sale, "before", "FZX", 1).await.expect(201);

    h.send(json!({ "type": "ban", "user_id": "mei" })).await;
    assert_eq!(ma.ended().await, Ended::Closed(4003));
    assert_eq!(mb.ended().await, Ended::Closed(4003));
    // Others stay.
    li.ping("still here").await;
    h.ping("still here").await;

    // No way back in, on either node, with this token or a new one.
    let keys = TokenKeys::new(&Secret(SECRET.into())).expect("keys");
    let fresh = keys
        .mint(
            &Identity {
                user_id: "mei".into(),
                name: Some("Mei again".into()),
                role: Role::Viewer,
            },
            Duration::from_secs(600),
            Utc::now(),
        )
        .expect("mint")
        .token;
    assert_ne!(fresh, mei);
    for app in [&a, &b] {
        for token in [&mei, &fresh] {
            let refused = app
                .connect(app.live_url(&sale, token, None))
                .await
                .err()
                .expect("a banned user's join is refused");
            assert_eq!((refused.status, refused.code()), (403, "banned"));
        }
        let r = app.buy(&fresh, &sale, "after", "FZX", 1).await.expect(403);
        assert_eq!(r.code(), "banned");
    }
    // Someone else still joins and buys.
    let (_, w) = a.join(&sale, &env.token(Role::Viewer, "zhao"), None).await;
    assert_eq!(w["you"]["user_id"], "zhao");
    a.buy(&env.token(Role::Viewer, "zhao"), &sale, "z", "FZX", 1)
        .await
        .expect(201);
}

// ---------------------------------------------------------------------------
// 6. WebSocket and REST buys racing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_rest_buys_racing_never_oversell() {
    const STOCK: usize = 50;
    const SOCKETS: usize = 25;
    // The per-socket cap of buys in flight.
    const PER_SOCKET: usize = 4;
    const REST: usize = 100;
    let mut env = TestEnv::production().await;
    let a = Arc::new(env.node().await);
    let b = Arc::new(env.node().await);
    let host = env.token(Role::Host, "alice");
    let sale = a
        .live_sale(&host, "instant", "FZX", STOCK as i64, 1000)
        .await;
    let (mut watcher, _) = b
        .join(&sale, &env.token(Role::Viewer, "watcher"), None)
        .await;

    let go = Arc::new(tokio::sync::Barrier::new(SOCKETS + REST));
    let mut ws_tasks = Vec::new();
    for i in 0..SOCKETS {
        let app = if i % 2 == 0 { &a } else { &b };
        let (mut v, _) = app
            .join(&sale, &env.token(Role::Viewer, &format!("ws{i:02}")), None)
            .await;
        let go = go.clone();
        ws_tasks.push(tokio::spawn(async move {
            go.wait().await;
            for j in 0..PER_SOCKET {
                v.buy("FZX", 1, &format!("ws{i:02}-{j}")).await;
            }
            let mut answers = Vec::new();
            while answers.len() < PER_SOCKET {
                let e = v.next().await.expect("an answer to every buy");
                if e["type"] == "order" || e["type"] == "error" {
                    answers.push(e);
                }
            }
            answers
        }));
    }
    let mut rest_tasks = Vec::new();
    for k in 0..REST {
        let app = if k % 2 == 0 { a.clone() } else { b.clone() };
        let token = env.token(Role::Viewer, &format!("rest{:02}", k % 20));
        let (sale, go) = (sale.clone(), go.clone());
        rest_tasks.push(tokio::spawn(async move {
            go.wait().await;
            app.buy(&token, &sale, &format!("rest-{k}"), "FZX", 1).await
        }));
    }

    let mut ids = HashSet::new();
    for (i, t) in ws_tasks.into_iter().enumerate() {
        let answers = t.await.expect("ws buyer");
        let refs: BTreeSet<String> = answers
            .iter()
            .map(|e| e["ref"].as_str().expect("ref").to_owned())
            .collect();
        let want: BTreeSet<String> = (0..PER_SOCKET).map(|j| format!("ws{i:02}-{j}")).collect();
        assert_eq!(refs, want, "one answer per ref");
        for e in answers {
            if e["type"] == "order" {
                assert_eq!(e["order"]["status"], "completed", "{e}");
                assert!(ids.insert(e["order"]["id"].as_str().expect("id").to_owned()));
            } else {
                assert_eq!(e["code"], "sold_out", "{e}");
            }
        }
    }
    let ws_won = ids.len();
    for t in rest_tasks {
        let r = t.await.expect("rest buyer");
        match r.status.as_u16() {
            201 => {
                let o = r.json();
                assert_eq!(o["status"], "completed", "{o}");
                assert!(ids.insert(o["id"].as_str().expect("id").to_owned()));
            }
            409 => assert_eq!(r.code(), "sold_out"),
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    assert_eq!(
        ids.len(),
        STOCK,
        "{ws_won} over WebSocket, {} over REST",
        ids.len() - ws_won
    );

    let s = a.sale(&sale).await;
    let p = product(&s, "FZX");
    assert_eq!(
        (&p["sold"], &p["remaining"], &p["reserved"], &p["status"]),
        (&json!(50), &json!(0), &json!(0), &json!("sold_out")),
        "{p}"
    );
    // Every success is a row in PostgreSQL; no other row.
    let rows: Vec<(Uuid, i64)> = sqlx::query_as("SELECT id, qty FROM orders WHERE sale_id = $1")
        .bind(Uuid::parse_str(&sale).expect("uuid"))
        .fetch_all(&env.pg().await)
        .await
        .expect("orders");
    let in_pg: HashSet<String> = rows.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(in_pg, ids);
    assert!(rows.iter().all(|(_, qty)| *qty == 1));
    // A viewer sees the final level.
    loop {
        let e = watcher.next_of("stock").await;
        if e["remaining"] == 0 && e["sold"] == STOCK {
            break;
        }
    }
}

// ---------------------------------------------------------------------------
// 7. Hostile frames

// The frame rules themselves are unit tests in src/ws/tests.rs; these two
// check that the real transport's own refusals reach the same close codes.

#[tokio::test]
async fn a_message_over_64_kib_closes_with_1009() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;
    let (mut v, _) = a.join(&sale, &env.token(Role::Viewer, "mei"), None).await;
    let text = json!({ "type": "chat", "text": "x".repeat(100 * 1024) }).to_string();
    v.send_raw(Message::Text(text.into())).await;
    assert_eq!(v.ended().await, Ended::Closed(1009));
}

/// The contract wants the socket kept open, but RFC 6455 fails the connection
/// on invalid UTF-8 and the WebSocket layer enforces it: the server explains
/// with an `error`, then closes with 1007 (see docs/protocol.md).
#[tokio::test]
async fn invalid_utf8_in_a_text_frame_gets_an_error_then_close_1007() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;
    let (mut v, _) = a.join(&sale, &env.token(Role::Viewer, "mei"), None).await;
    let bytes: &[u8] = b"{\"type\":\"chat\",\"text\":\"\xff\xfe\"}";
    v.send_raw(Message::Frame(Frame::message(
        bytes.to_vec(),
        OpCode::Data(Data::Text),
        true,
    )))
    .await;
    // A stock push may come first; the error is the next error.
    assert_eq!(v.error().await.0, "bad_request");
    assert_eq!(v.ended().await, Ended::Closed(1007));
}

#[tokio::test]
async fn an_upgrade_without_a_valid_token_is_refused_with_401() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;
    let mei = Identity {
        user_id: "mei".into(),
        name: Some("Mei".into()),
        role: Role::Viewer,
    };
    let hour = Duration::from_secs(3600);
    let forged = TokenKeys::new(&Secret("another-secret-another-secret-0123456".into()))
        .expect("keys")
        .mint(&mei, hour, Utc::now())
        .expect("mint")
        .token;
    let expired = TokenKeys::new(&Secret(SECRET.into()))
        .expect("keys")
        .mint(&mei, hour, Utc::now() - TimeDelta::hours(2))
        .expect("mint")
        .token;
    let unknown_role = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": "mei", "role": "admin", "exp": Utc::now().timestamp() + 3600 }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("key"),
    )
    .expect("encode");

    let refusals = [
        ("no token", a.bare_live_url(&sale)),
        ("garbage", a.live_url(&sale, "not-a-jwt", None)),
        ("forged", a.live_url(&sale, &forged, None)),
        ("expired", a.live_url(&sale, &expired, None)),
        ("unknown role", a.live_url(&sale, &unknown_role, None)),
    ];
    for (what, url) in refusals {
        let r = a.connect(url).await.err().expect(what);
        assert_eq!((r.status, r.code()), (401, "unauthorized"), "{what}");
    }
    // The header works as well as the query parameter, for better or worse.
    let with_header = |token: &str| {
        let mut req = a.bare_live_url(&sale).into_client_request().expect("req");
        req.headers_mut().insert(
            "Authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        req
    };
    let r = a.connect(with_header(&forged)).await.err().expect("forged");
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let good = env.token(Role::Viewer, "mei");
    let (_, w) = a.connect(with_header(&good)).await.expect("bearer header");
    assert_eq!(w["you"]["user_id"], "mei");
}

#[tokio::test]
async fn an_unknown_sale_is_404() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let mei = env.token(Role::Viewer, "mei");
    for id in [Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        let r = a
            .connect(a.live_url(&id, &mei, None))
            .await
            .err()
            .expect(&id);
        assert_eq!((r.status, r.code()), (404, "not_found"), "{id}");
    }
}

// ---------------------------------------------------------------------------
// 8. Shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shutting_down_closes_with_1001_and_resuming_elsewhere_loses_no_chat() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let c = own_node(&env, shutdown.clone()).await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;
    let (h, _) = a.join(&sale, &host, None).await;
    let (mut hs, mut hrec) = h.split();
    let (mut m, _) = c.join(&sale, &mei, None).await;
    let (mut li, _) = c.join(&sale, &env.token(Role::Viewer, "li"), None).await;

    // The host posts 300 messages from node a; node c goes down meanwhile.
    // The last 200 wait for the shutdown: on an idle machine all 300 could
    // otherwise arrive before it, leaving nothing to resume.
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let flood = tokio::spawn(async move {
        for i in 0..100 {
            hs.chat(&format!("while c stops {i}")).await;
        }
        let _ = stopped.await;
        for i in 100..300 {
            hs.chat(&format!("while c stops {i}")).await;
        }
    });
    m.chats_until(50).await;
    shutdown.cancel();
    let _ = stopping.send(());
    let (events, end) = m.rest().await;
    assert_eq!(end, Ended::Closed(1001));
    assert_eq!(li.ended().await, Ended::Closed(1001));
    let last = events
        .iter()
        .filter(|e| e["type"] == "chat")
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap_or(50);

    // Reconnecting to node a with `since`: nothing is lost, nothing repeated.
    let (mut m, w) = a.join(&sale, &mei, Some(last)).await;
    let mut got = welcome_seqs(&w);
    if got.last().copied().unwrap_or(last) < 300 {
        got.extend(seqs(&m.chats_until(300).await));
    }
    assert_eq!(got, range(last + 1, 300));
    flood.await.expect("flood");
    recorded_until_seq(&mut hrec, 300).await;
}

// ---------------------------------------------------------------------------
// 9. One key space for a WebSocket buy's ref and REST's Idempotency-Key

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_ref_and_a_rest_idempotency_key_are_one_key() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let b = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    for checkout in ["reserve", "instant"] {
        let sale = a.live_sale(&host, checkout, "FZX", 10, 5).await;
        let (mut m, _) = a.join(&sale, &mei, None).await;
        let first_status = if checkout == "instant" {
            "completed"
        } else {
            "reserved"
        };

        // WebSocket first, then REST on the other node: the same order.
        m.buy("FZX", 2, "order-1").await;
        let o = m.next_of("order").await;
        assert_eq!(o["ref"], "order-1");
        assert_eq!(o["order"]["status"], first_status, "{o}");
        let r = b.buy(&mei, &sale, "order-1", "FZX", 2).await.expect(201);
        assert_eq!(
            r.json(),
            o["order"],
            "{checkout}: REST replays the WS answer"
        );

        // REST first, then the WebSocket.
        let r2 = b
            .buy(&mei, &sale, "order-2", "FZX", 1)
            .await
            .expect(201)
            .json();
        m.buy("FZX", 1, "order-2").await;
        let o2 = m.next_of("order").await;
        assert_eq!((&o2["ref"], &o2["order"]), (&json!("order-2"), &r2));

        // Replayed as first sent even after the order moved on.
        if checkout == "reserve" {
            let id = o["order"]["id"].as_str().expect("id");
            a.pay(&host, id, "pay-1").await.expect(200);
            let done = m.next_of("order").await;
            assert_eq!(
                (&done["order"]["id"], &done["order"]["status"]),
                (&o["order"]["id"], &json!("completed")),
                "{done}"
            );
        }
        m.buy("FZX", 2, "order-1").await;
        let again = m.next_of("order").await;
        assert_eq!(
            (&again["ref"], &again["order"]),
            (&json!("order-1"), &o["order"])
        );

        // The same key with another body: a mismatch either way.
        m.buy("FZX", 1, "order-1").await;
        let (code, e) = m.error().await;
        assert_eq!(
            (code.as_str(), &e["ref"]),
            ("idempotency_mismatch", &json!("order-1"))
        );
        let r = b.buy(&mei, &sale, "order-2", "FZX", 3).await.expect(422);
        assert_eq!(r.code(), "idempotency_mismatch");

        // Another user's same key is another order.
        let li = env.token(Role::Viewer, "li");
        let other = a
            .buy(&li, &sale, "order-1", "FZX", 2)
            .await
            .expect(201)
            .json();
        assert_ne!(other["id"], o["order"]["id"]);

        let s = b.sale(&sale).await;
        let p = product(&s, "FZX");
        let held = p["sold"].as_i64().unwrap_or(0) + p["reserved"].as_i64().unwrap_or(0);
        assert_eq!((held, &p["remaining"]), (5, &json!(5)), "{p}");
    }
}

// ---------------------------------------------------------------------------
// `since` and seq continuity

#[tokio::test]
async fn a_since_ahead_of_the_chat_does_not_hide_live_messages() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;
    // A client resuming with a seq it cannot have seen in this sale (another
    // sale's, or one from before Redis lost its data).
    let (mut m, w) = a
        .join(&sale, &env.token(Role::Viewer, "mei"), Some(1000))
        .await;
    assert_eq!(w["chat"], json!([]));
    let (mut h, _) = a.join(&sale, &host, None).await;
    h.chat("doors open").await;
    assert_eq!(h.next_of("chat").await["seq"], 1);
    // Fails by timing out: the viewer never gets it.
    let c = m.next_of("chat").await;
    assert_eq!((&c["seq"], &c["text"]), (&json!(1), &json!("doors open")));
}

#[tokio::test]
async fn chat_keeps_reaching_connected_viewers_after_redis_loses_its_data() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;
    let (mut m, _) = a.join(&sale, &env.token(Role::Viewer, "mei"), None).await;
    let (mut h, _) = a.join(&sale, &host, None).await;
    for i in 0..3 {
        h.chat(&format!("before {i}")).await;
    }
    for v in [&mut m, &mut h] {
        assert_eq!(seqs(&v.chats_until(3).await), [1, 2, 3]);
    }
    assert!(env.wipe_redis().await > 0);
    // A socket joining afterwards sees what the host posts next...
    let (mut n, _) = a.join(&sale, &env.token(Role::Viewer, "li"), None).await;
    h.chat("after the loss").await;
    let after = n.next_of("chat").await;
    assert_eq!(after["text"], "after the loss");
    // ...but the contract wants seq strictly increasing per sale...
    assert!(after["seq"].as_u64() > Some(3), "seq restarted: {after}");
    // ...and every accepted message to reach every viewer keeping up.
    for v in [&mut m, &mut h] {
        assert_eq!(v.next_of("chat").await["text"], "after the loss");
    }
}
