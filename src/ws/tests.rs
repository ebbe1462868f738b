//! The socket loop driven through channels on an embedded node (in-memory
//! live state, SQLite in a temp dir): the frame-level rules need no
//! network, no PostgreSQL and no Redis.

use std::sync::Arc;

use axum::extract::ws::Message;
use futures_util::stream;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, PollSender};
use uuid::Uuid;

use super::socket::{self, Opened, ReadError, ReadFault};
use crate::clock::Clock;
use crate::config::{Mode, Secret};
use crate::identity::{Identity, Role};
use crate::Node;
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

struct Room {
    node: Node,
    shutdown: CancellationToken,
    sale_id: Uuid,
    dir: std::path::PathBuf,
}

impl Drop for Room {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
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
        let dir = std::env::temp_dir().join(format!("lychee-ws-{}", Uuid::new_v4().simple()));
        let mut settings = Settings::new(
            Mode::Embedded {
                data_dir: dir.clone(),
            },
            Secret("ws-unit-secret-ws-unit-secret-ws-unit-0".into()),
            "ws".into(),
        );
        settings.limits.chat_per_ip = 0.0;
        let shutdown = CancellationToken::new();
        let node = Node::start(settings, Arc::new(Clock::default()), shutdown.clone())
            .await
            .expect("embedded node");
        let demo = crate::demo::seed(&node.state, &dir)
            .await
            .expect("demo sale");
        Room {
            node,
            shutdown,
            sale_id: demo.sale_id,
            dir,
        }
    }

    /// Opens a socket for `who` whose token expires in `secs`.
    fn open(&self, who: Identity, secs: i64) -> Client {
        let (to_server, from_client) = mpsc::channel::<Result<Message, Fault>>(16);
        let (to_client, from_server) = mpsc::channel::<Message>(256);
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

#[tokio::test]
async fn hostile_frames_get_errors_and_keep_the_socket() {
    let room = Room::new().await;
    let mut c = room.open(viewer("mei"), 3600);
    c.json().await;
    c.send(Ok(Message::Binary(vec![1, 2, 3].into()))).await;
    assert_eq!(c.next_of("error").await["code"], "bad_request");
    c.send(Ok(Message::Text("{not json".into()))).await;
    assert_eq!(c.next_of("error").await["code"], "bad_request");
    c.text(json!({ "type": "nope", "ref": "r7" })).await;
    let e = c.next_of("error").await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("bad_request"), Some("r7"))
    );
    c.text(json!({ "type": "buy", "sku": "X", "qty": "two", "ref": "b1" }))
        .await;
    assert_eq!(c.next_of("error").await["ref"], "b1");
    // A viewer's host tool: refused, no effect, still open.
    c.text(json!({ "type": "slow_mode", "secs": 60 })).await;
    assert_eq!(c.next_of("error").await["code"], "forbidden");
    c.text(json!({ "type": "chat", "text": "\u{202E}gnp.exe" }))
        .await;
    assert_eq!(c.next_of("error").await["code"], "invalid_message");
    c.text(json!({ "type": "ping" })).await;
    c.next_of("pong").await;
}

#[tokio::test]
async fn too_many_bad_messages_close_with_1008() {
    let room = Room::new().await;
    let mut c = room.open(viewer("mei"), 3600);
    c.json().await;
    for _ in 0..25 {
        if c.tx.send(Ok(Message::Text("nope".into()))).await.is_err() {
            break;
        }
    }
    assert_eq!(c.closed_with().await, 1008);
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
    let host = Identity {
        user_id: "demo-host".into(),
        name: Some("Chen".into()),
        role: Role::Host,
    };
    let mut h = room.open(host, 3600);
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
