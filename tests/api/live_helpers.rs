//! A WebSocket client for the live room: connect, read events (unpacking
//! `batch` frames), send messages.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::TestApp;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Viewer {
    pub ws: Ws,
    queue: VecDeque<Value>,
    /// Raw text frames received (to check batching).
    pub frames: usize,
}

/// How a socket ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Closed(u16),
    Dropped,
}

/// An upgrade the server refused: its status and JSON body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
}

impl Refused {
    /// The contract's error code, asserting the error shape on the way.
    pub fn code(&self) -> &str {
        assert!(
            self.body["error"]["message"].is_string(),
            "no message in {}",
            self.body
        );
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.body))
    }
}

impl TestApp {
    pub fn live_url(&self, sale: &str, token: &str, since: Option<u64>) -> String {
        let mut url = format!(
            "ws://{}/api/v1/sales/{sale}/live?access_token={token}",
            self.addr
        );
        if let Some(s) = since {
            url.push_str(&format!("&since={s}"));
        }
        url
    }

    /// The socket's URL without a token.
    pub fn bare_live_url(&self, sale: &str) -> String {
        format!("ws://{}/api/v1/sales/{sale}/live", self.addr)
    }

    /// Connects and returns the socket with its welcome already read.
    pub async fn join(&self, sale: &str, token: &str, since: Option<u64>) -> (Viewer, Value) {
        self.connect(self.live_url(sale, token, since))
            .await
            .unwrap_or_else(|r| panic!("websocket refused: {r:?}"))
    }

    /// Connects with any request (a URL, or one with headers); a refused
    /// upgrade is `Err` with its status and body.
    pub async fn connect<R>(&self, req: R) -> Result<(Viewer, Value), Refused>
    where
        R: IntoClientRequest + Unpin,
    {
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(Viewer::welcomed(ws).await),
            Err(WsError::Http(res)) => {
                let body = res.body().as_deref().unwrap_or_default();
                Err(Refused {
                    status: res.status().as_u16(),
                    body: serde_json::from_slice(body).unwrap_or_else(|e| {
                        panic!("refusal not JSON ({e}): {}", String::from_utf8_lossy(body))
                    }),
                })
            }
            Err(e) => panic!("websocket connect failed: {e}"),
        }
    }
}

impl Viewer {
    async fn welcomed(ws: Ws) -> (Viewer, Value) {
        let mut v = Viewer {
            ws,
            queue: VecDeque::new(),
            frames: 0,
        };
        let welcome = v.next().await.expect("a first frame");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (v, welcome)
    }

    /// The next event, or `None` if the socket ended or 5 s passed.
    pub async fn next(&mut self) -> Option<Value> {
        self.next_within(Duration::from_secs(5)).await
    }

    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        if let Some(v) = self.queue.pop_front() {
            return Some(v);
        }
        let deadline = Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match msg {
                Message::Text(t) => {
                    self.frames += 1;
                    unpack(t.as_str(), &mut self.queue);
                    if let Some(v) = self.queue.pop_front() {
                        return Some(v);
                    }
                }
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// The next event of this type, skipping others.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        self.until(kind).await.pop().expect("at least the match")
    }

    /// Every event up to and including the next one of this type.
    pub async fn until(&mut self, kind: &str) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let v = self.next().await.unwrap_or_else(|| {
                panic!("no {kind} event came; before it: {seen:?}");
            });
            let done = v["type"] == kind;
            seen.push(v);
            if done {
                return seen;
            }
        }
    }

    /// The next `error` event's code (and the event), skipping others.
    pub async fn error(&mut self) -> (String, Value) {
        let e = self.next_of("error").await;
        let code = e["code"].as_str().expect("error code").to_owned();
        assert!(e["message"].is_string(), "no message in {e}");
        (code, e)
    }

    /// A ping round trip: proves the socket is open and the server has
    /// handled everything sent before. Returns the events that came first.
    pub async fn ping(&mut self, reference: &str) -> Vec<Value> {
        self.send(json!({ "type": "ping", "ref": reference })).await;
        let mut seen = self.until("pong").await;
        let pong = seen.pop().expect("pong");
        assert_eq!(pong["ref"], reference, "{pong}");
        seen
    }

    /// Chat events until one with `seq >= last` (inclusive), other events skipped.
    pub async fn chats_until(&mut self, last: u64) -> Vec<Value> {
        let mut chats = self.events_until_seq(last).await;
        chats.retain(|e| e["type"] == "chat");
        chats
    }

    /// Every event until a chat with `seq >= last` (inclusive).
    pub async fn events_until_seq(&mut self, last: u64) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let v = self.next().await.unwrap_or_else(|| {
                panic!("chat {last} never came; got {} events", events.len());
            });
            let done = v["type"] == "chat" && v["seq"].as_u64() >= Some(last);
            events.push(v);
            if done {
                return events;
            }
        }
    }

    /// Reads until a `viewers` event with this count, or fails after `wait`.
    pub async fn viewers_reach(&mut self, count: u64, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .next_within(left)
                .await
                .unwrap_or_else(|| panic!("viewers never reached {count} in {wait:?}"));
            if v["type"] == "viewers" && v["count"] == count {
                return;
            }
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.send_raw(Message::Text(v.to_string().into())).await;
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    pub async fn chat(&mut self, text: &str) {
        self.send(json!({ "type": "chat", "text": text })).await;
    }

    pub async fn buy(&mut self, sku: &str, qty: i64, reference: &str) {
        self.send(json!({ "type": "buy", "sku": sku, "qty": qty, "ref": reference }))
            .await;
    }

    /// Reads until the server ends the socket (within 5 s); how it ended.
    pub async fn ended(&mut self) -> Ended {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(Some(f))))) => return Ended::Closed(u16::from(f.code)),
                Ok(Some(Ok(Message::Close(None)))) => {
                    return Ended::Closed(u16::from(CloseCode::Status))
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) | Ok(None) => return Ended::Dropped,
                Err(_) => panic!("the socket did not end within 5 s"),
            }
        }
    }

    /// Every event until the server ends the socket (within 5 s), and how it ended.
    pub async fn rest(&mut self) -> (Vec<Value>, Ended) {
        let mut events: Vec<Value> = self.queue.drain(..).collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(_))) | Ok(None) => return (events, Ended::Dropped),
                Err(_) => panic!("the socket did not end within 5 s"),
            };
            match msg {
                Message::Text(t) => {
                    let mut q = VecDeque::new();
                    unpack(t.as_str(), &mut q);
                    events.extend(q);
                }
                Message::Close(Some(f)) => return (events, Ended::Closed(u16::from(f.code))),
                Message::Close(None) => {
                    return (events, Ended::Closed(u16::from(CloseCode::Status)))
                }
                _ => {}
            }
        }
    }

    /// Splits the socket: a sender, and a task that reads every event as it
    /// comes (so the server never waits on this client) and timestamps it.
    pub fn split(self) -> (Sender, Recorder) {
        let (sink, stream) = self.ws.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        for v in self.queue {
            let _ = tx.send((now, v));
        }
        tokio::spawn(record(stream, tx));
        (Sender { sink }, Recorder { rx })
    }
}

fn unpack(text: &str, queue: &mut VecDeque<Value>) {
    let v: Value = serde_json::from_str(text).expect("JSON frame");
    if v["type"] == "batch" {
        let events = v["events"].as_array().expect("batch events");
        assert!(events.len() >= 2, "a batch of one: {v}");
        queue.extend(events.iter().cloned());
    } else {
        queue.push_back(v);
    }
}

async fn record(mut stream: SplitStream<Ws>, tx: mpsc::UnboundedSender<(Instant, Value)>) {
    let mut queue = VecDeque::new();
    while let Some(Ok(msg)) = stream.next().await {
        match msg {
            Message::Text(t) => {
                let at = Instant::now();
                unpack(t.as_str(), &mut queue);
                for v in queue.drain(..) {
                    if tx.send((at, v)).is_err() {
                        return;
                    }
                }
            }
            Message::Close(_) => return,
            _ => {}
        }
    }
}

/// The writing half of a split socket.
pub struct Sender {
    sink: SplitSink<Ws, Message>,
}

impl Sender {
    pub async fn chat(&mut self, text: &str) {
        self.sink
            .send(Message::Text(
                json!({ "type": "chat", "text": text }).to_string().into(),
            ))
            .await
            .expect("send");
    }
}

/// The reading half of a split socket: events with when they arrived.
pub struct Recorder {
    rx: mpsc::UnboundedReceiver<(Instant, Value)>,
}

impl Recorder {
    /// The next event within `wait`; `None` if the socket ended or time ran out.
    pub async fn next_within(&mut self, wait: Duration) -> Option<(Instant, Value)> {
        tokio::time::timeout(wait, self.rx.recv()).await.ok()?
    }
}
