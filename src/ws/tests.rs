//! The socket loop driven through channels on an embedded node (in-memory
//! live state, SQLite in a temp dir): the frame-level rules need no
//! network, no PostgreSQL and no Redis.

use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::stream;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use super::socket::{self, Opened, ReadError, ReadFault};
use crate::identity::{Identity, Role};
use crate::testing::Embedded;
use crate::Settings;

/// A read error a test makes the transport report.
#[derive(Debug)]
enum Fault {
    Utf8,
    Big,
}

impl ReadError for Fault {
    fn fault(&self) -> ReadFault {
        match self {
            Fault::Utf8 => ReadFault::BadUtf8,
            Fault::Big => ReadFault::TooBig,
        }
    }
}

/// The demo sale's room on an embedded node.
struct Room(Embedded);

impl std::ops::Deref for Room {
    type Target = Embedded;
    fn deref(&self) -> &Embedded {
        &self.0
    }
}

fn viewer(id: &str) -> Identity {
    Identity {
        user_id: id.into(),
        name: None,
        role: Role::Viewer,
    }
}

impl Room {
    async fn new() -> Room {
        Room::with(|_| {}).await
    }

    async fn with(change: impl FnOnce(&mut Settings)) -> Room {
        Room(
            Embedded::start(|s| {
                s.blocked_words = vec!["counterfeit".into()];
                change(s);
            })
            .await,
        )
    }

    /// Opens a socket for `who` whose token expires in `secs`.
    fn open(&self, who: Identity, secs: i64) -> Client {
        self.open_buffered(who, secs, 256)
    }

    /// A socket whose transport holds `buffer` frames the client has not
    /// read: a full one blocks the server's writes, as a full TCP window.
    fn open_buffered(&self, who: Identity, secs: i64, buffer: usize) -> Client {
        let (to_server, from_client) = mpsc::channel::<Result<Message, Fault>>(16);
        let (to_client, from_server) = mpsc::channel::<Message>(buffer);
        let opened = Opened {
            live: self.node.state.live.clone(),
            limits: self.node.state.limits.clone(),
            who,
            expires_at: chrono::Utc::now() + chrono::TimeDelta::seconds(secs),
            ip: None,
            sale_id: self.sale_id,
            since: None,
        };
        let reads = stream::unfold(from_client, |mut rx| async move {
            rx.recv().await.map(|m| (m, rx))
        });
        let task = tokio::spawn(socket::run(
            PollSender::new(to_client),
            Box::pin(reads),
            opened,
        ));
        Client {
            tx: to_server,
            rx: from_server,
            task,
        }
    }
}

struct Client {
    tx: mpsc::Sender<Result<Message, Fault>>,
    rx: mpsc::Receiver<Message>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    async fn send(&self, m: Result<Message, Fault>) {
        self.tx.send(m).await.expect("socket reads");
    }

    async fn text(&self, v: Value) {
        self.send(Ok(Message::Text(v.to_string().into()))).await;
    }

    async fn next(&mut self) -> Message {
        tokio::time::timeout(std::time::Duration::from_secs(5), self.rx.recv())
            .await
            .expect("a frame within 5 s")
            .expect("socket open")
    }

    /// The next JSON frame, skipping pings and the room's viewer counts.
    async fn json(&mut self) -> Value {
        loop {
            match self.next().await {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
                    if v["type"] != "viewers" {
                        return v;
                    }
                }
                Message::Ping(_) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next event of `kind`, inside a `batch` or not; others skipped.
    async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let v = self.json().await;
            let events = match v["type"].as_str() {
                Some("batch") => v["events"].as_array().cloned().unwrap_or_default(),
                _ => vec![v],
            };
            if let Some(e) = events.into_iter().find(|e| e["type"] == kind) {
                return e;
            }
        }
    }

    /// The close frame's code, after any text frames before it.
    async fn closed_with(&mut self) -> u16 {
        loop {
            match self.next().await {
                Message::Close(Some(c)) => {
                    // The loop ends after its close.
                    let _ = (&mut self.task).await;
                    return c.code;
                }
                Message::Close(None) => panic!("a close without a code"),
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn the_first_frame_is_the_welcome_and_pings_are_answered() {
    let room = Room::new().await;
    let mut c = room.open(viewer("mei"), 3600);
    let w = c.json().await;
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["you"]["user_id"], "mei");
    assert_eq!(w["sale"]["id"], room.sale_id.to_string());
    c.text(json!({ "type": "ping", "ref": "p1" })).await;
    assert_eq!(
        c.next_of("pong").await,
        json!({ "type": "pong", "ref": "p1" })
    );
}

fn host() -> Identity {
    Identity {
        user_id: "demo-host".into(),
        name: Some("Chen".into()),
        role: Role::Host,
    }
}

impl Client {
    /// The next `error`'s code and body.
    async fn error(&mut self) -> (String, Value) {
        let e = self.next_of("error").await;
        assert!(e["message"].is_string(), "no message in {e}");
        (e["code"].as_str().unwrap_or_default().to_owned(), e)
    }

    /// A ping round trip: the socket is open and has handled all sent before.
    async fn ping(&mut self, reference: &str) {
        self.text(json!({ "type": "ping", "ref": reference })).await;
        assert_eq!(self.next_of("pong").await["ref"], reference);
    }
}

#[tokio::test]
async fn hostile_frames_get_errors_and_keep_the_socket() {
    let room = Room::new().await;
    let mut c = room.open(viewer("mei"), 3600);
    c.json().await;
    let bad: Vec<(&str, Message)> = vec![
        ("binary", Message::Binary(vec![0x7b, 0x7d].into())),
        ("not JSON", Message::Text("hello there".into())),
        ("a JSON array", Message::Text("[1, 2]".into())),
        ("no type", Message::Text(r#"{"text":"hi"}"#.into())),
        (
            "chat without text",
            Message::Text(r#"{"type":"chat"}"#.into()),
        ),
        (
            "chat text a number",
            Message::Text(r#"{"type":"chat","text":5}"#.into()),
        ),
        (
            "mute without secs",
            Message::Text(r#"{"type":"mute","user_id":"li"}"#.into()),
        ),
    ];
    for (what, msg) in bad {
        c.send(Ok(msg)).await;
        let (code, e) = c.error().await;
        assert_eq!(code, "bad_request", "{what}: {e}");
        c.ping(what).await;
    }
    // Seventeen bad messages in all: under the abuse limit of twenty.
    c.text(json!({ "type": "teleport", "ref": "r7" })).await;
    let e = c.error().await.1;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("bad_request"), Some("r7"))
    );
    // A malformed buy names its ref.
    c.text(json!({ "type": "buy", "sku": "FZX-5KG", "ref": "b1" }))
        .await;
    assert_eq!(c.error().await.1["ref"], "b1");
    c.text(json!({ "type": "buy", "sku": "FZX-5KG", "qty": 0, "ref": "b2" }))
        .await;
    let (code, e) = c.error().await;
    assert_eq!((code.as_str(), &e["ref"]), ("bad_request", &json!("b2")));
    // A viewer's host tool: refused, no effect, still open.
    c.text(json!({ "type": "slow_mode", "secs": 60 })).await;
    assert_eq!(c.error().await.0, "forbidden");

    // Chat text rules: invalid_message, and nothing is sent.
    for text in [
        "buy Counterfeit boxes here",
        "two\nlines",
        "bell\u{7}",
        "\u{202E}gnp.exe",
        "   ",
        &"x".repeat(281),
    ] {
        c.text(json!({ "type": "chat", "text": text })).await;
        let (code, e) = c.error().await;
        assert_eq!(code, "invalid_message", "{text:?}: {e}");
    }
    let longest = "荔".repeat(280);
    c.text(json!({ "type": "chat", "text": format!("  {longest}  ") }))
        .await;
    let chat = c.next_of("chat").await;
    assert_eq!((&chat["seq"], &chat["text"]), (&json!(1), &json!(longest)));
    c.ping("still open").await;
}

#[tokio::test]
async fn twenty_bad_messages_close_with_1008_nineteen_do_not() {
    let room = Room::new().await;
    let mut c = room.open(viewer("mei"), 3600);
    c.json().await;
    for i in 0..19 {
        if i % 2 == 0 {
            c.send(Ok(Message::Text("nonsense".into()))).await;
        } else {
            c.text(json!({ "type": "chat", "text": "counterfeit" }))
                .await;
        }
        c.error().await;
    }
    c.ping("19 is tolerated").await;
    c.send(Ok(Message::Text("nonsense".into()))).await;
    assert_eq!(c.closed_with().await, 1008);
}

#[tokio::test]
async fn a_hosts_bad_requests_count_toward_the_abuse_limit() {
    let room = Room::new().await;
    let mut h = room.open(host(), 3600);
    h.json().await;
    for _ in 0..19 {
        h.text(json!({ "type": "slow_mode", "secs": 999_999 }))
            .await;
        assert_eq!(h.error().await.0, "bad_request");
    }
    h.text(json!({ "type": "slow_mode", "secs": 999_999 }))
        .await;
    assert_eq!(h.closed_with().await, 1008);
}

#[tokio::test]
async fn a_message_of_4096_bytes_is_read_and_4097_closes_with_1009() {
    let room = Room::new().await;
    let ping_of = |len: usize| {
        let empty = json!({ "type": "ping", "ref": "" }).to_string().len();
        let r = "r".repeat(len - empty);
        let text = json!({ "type": "ping", "ref": r }).to_string();
        assert_eq!(text.len(), len);
        (text, r)
    };
    let mut c = room.open(viewer("mei"), 3600);
    c.json().await;
    let (text, r) = ping_of(4096);
    c.send(Ok(Message::Text(text.into()))).await;
    assert_eq!(c.next_of("pong").await["ref"], json!(r));
    let (text, _) = ping_of(4097);
    c.send(Ok(Message::Text(text.into()))).await;
    assert_eq!(c.closed_with().await, 1009);

    let mut binary = room.open(viewer("li"), 3600);
    binary.json().await;
    binary
        .send(Ok(Message::Binary(vec![b'x'; 5000].into())))
        .await;
    assert_eq!(binary.closed_with().await, 1009);
}

#[tokio::test]
async fn oversized_and_bad_utf8_reads_close_with_their_codes() {
    let room = Room::new().await;
    let mut big = room.open(viewer("a"), 3600);
    big.json().await;
    big.send(Ok(Message::Text("x".repeat(4097).into()))).await;
    assert_eq!(big.closed_with().await, 1009);

    let mut capped = room.open(viewer("b"), 3600);
    capped.json().await;
    capped.send(Err(Fault::Big)).await;
    assert_eq!(capped.closed_with().await, 1009);

    let mut utf8 = room.open(viewer("c"), 3600);
    utf8.json().await;
    utf8.send(Err(Fault::Utf8)).await;
    assert_eq!(utf8.next_of("error").await["code"], "bad_request");
    assert_eq!(utf8.closed_with().await, 1007);
}

#[tokio::test]
async fn an_expired_token_closes_with_4001() {
    let room = Room::new().await;
    let mut c = room.open(viewer("mei"), 0);
    assert_eq!(c.json().await["type"], "welcome");
    assert_eq!(c.closed_with().await, 4001);
}

#[tokio::test]
async fn shutdown_closes_with_1001() {
    let room = Room::new().await;
    let mut c = room.open(viewer("mei"), 3600);
    c.json().await;
    room.shutdown.cancel();
    assert_eq!(c.closed_with().await, 1001);
}

#[tokio::test]
async fn chat_comes_back_through_the_room_and_host_tools_reach_viewers() {
    let room = Room::new().await;
    let mut h = room.open(host(), 3600);
    let mut v = room.open(viewer("mei"), 3600);
    h.json().await;
    v.json().await;
    v.text(json!({ "type": "chat", "text": "好吃吗" })).await;
    let chat = v.next_of("chat").await;
    assert_eq!(
        (chat["type"].as_str(), chat["text"].as_str()),
        (Some("chat"), Some("好吃吗"))
    );
    assert_eq!(h.next_of("chat").await["seq"], chat["seq"]);
    h.text(json!({ "type": "mute", "user_id": "mei", "secs": 604_801 }))
        .await;
    assert_eq!(h.next_of("error").await["code"], "bad_request");
    h.text(json!({ "type": "slow_mode", "secs": 30 })).await;
    assert_eq!(
        v.next_of("slow_mode").await,
        json!({ "type": "slow_mode", "secs": 30 })
    );
}

/// `n` announcements, one per fan-out window: `n` room frames.
async fn announce(room: &Room, n: usize) {
    for i in 0..n {
        room.node.state.live.hub.bus().publish(
            room.sale_id,
            crate::hub::SaleEvent::Announcement {
                text: format!("a{i}"),
                ts: 0,
            },
        );
        tokio::time::sleep(crate::hub::room::FANOUT_WINDOW + Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reader_that_falls_behind_is_told_it_lagged_and_gets_the_stock_again() {
    let room = Room::with(|s| s.limits.room_queue = 1).await;
    // One frame of transport buffer: the second unread frame blocks the
    // socket's write, and the room goes on without it.
    let mut slow = room.open_buffered(viewer("slow"), 3600, 1);
    assert_eq!(slow.json().await["type"], "welcome");
    announce(&room, 6).await;
    let mut seen = Vec::new();
    let lagged = loop {
        let e = slow.json().await;
        if e["type"] == "lagged" {
            break e;
        }
        seen.push(e);
    };
    assert!(lagged["skipped"].as_u64().unwrap_or(0) >= 1, "{lagged}");
    // State is resent: every product's stock, then the frames still queued.
    let skus: std::collections::BTreeSet<String> = room
        .node
        .state
        .live
        .catalog
        .live_levels(room.sale_id)
        .await
        .expect("levels")
        .into_iter()
        .map(|l| l.sku)
        .collect();
    let mut resent = std::collections::BTreeSet::new();
    loop {
        let e = slow.json().await;
        match e["type"].as_str() {
            Some("stock") => {
                resent.insert(e["sku"].as_str().unwrap_or_default().to_owned());
            }
            Some("batch") | Some("announcement") => break,
            _ => {}
        }
    }
    assert!(!skus.is_empty());
    assert_eq!(resent, skus, "after {seen:?}");
    slow.ping("still open").await;
}

#[tokio::test]
async fn a_reader_whose_writes_stay_stuck_is_dropped_and_leaves_the_room() {
    let room = Room::with(|s| s.limits.socket_write_timeout = Duration::from_millis(300)).await;
    let mut normal = room.open(viewer("mei"), 3600);
    let mut stalled = room.open_buffered(viewer("slow"), 3600, 1);
    normal.json().await;
    stalled.json().await;
    let hub_room = room
        .node
        .state
        .live
        .hub
        .room(room.sale_id)
        .expect("the sale's room");
    assert_eq!(hub_room.local_count(), 2);
    announce(&room, 3).await;
    // The stalled socket gives up within its write timeout, the other reads on.
    tokio::time::timeout(Duration::from_secs(3), &mut stalled.task)
        .await
        .expect("the stuck socket ended")
        .expect("no panic");
    assert_eq!(hub_room.local_count(), 1);
    assert_eq!(normal.next_of("announcement").await["text"], "a0");
    normal.ping("open").await;
}
