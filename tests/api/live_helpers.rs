//! A WebSocket client for the live room: connect, read events (unpacking
//! `batch` frames), send messages.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
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

    /// Connects and returns the socket with its welcome already read.
    pub async fn join(&self, sale: &str, token: &str, since: Option<u64>) -> (Viewer, Value) {
        let (ws, _) = tokio_tungstenite::connect_async(self.live_url(sale, token, since))
            .await
            .expect("websocket connects");
        let mut v = Viewer {
            ws,
            queue: VecDeque::new(),
            frames: 0,
        };
        let welcome = v.next().await.expect("a first frame");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (v, welcome)
    }
}

impl Viewer {
    /// The next event, or `None` if the socket ended or 5 s passed.
    pub async fn next(&mut self) -> Option<Value> {
        self.next_within(Duration::from_secs(5)).await
    }

    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        if let Some(v) = self.queue.pop_front() {
            return Some(v);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match msg {
                Message::Text(t) => {
                    self.frames += 1;
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
                    if v["type"] == "batch" {
                        let events = v["events"].as_array().expect("batch events").clone();
                        assert!(events.len() >= 2, "a batch of one: {v}");
                        self.queue.extend(events);
                    } else {
                        self.queue.push_back(v);
                    }
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
        loop {
            let v = self
                .next()
                .await
                .unwrap_or_else(|| panic!("no {kind} event came"));
            if v["type"] == kind {
                return v;
            }
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn chat(&mut self, text: &str) {
        self.send(json!({ "type": "chat", "text": text })).await;
    }

    /// Reads until the server closes; returns the close code.
    pub async fn ended(&mut self) -> Ended {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
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
}
