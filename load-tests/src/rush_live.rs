//! The rush's WebSocket side: buyers that buy over their live socket, and
//! viewers that only watch the stock count.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{connect_ws, events, source_addr, Ws};
use crate::http1::Conn;

/// How one buy attempt ended.
pub enum Answer {
    /// The order's id.
    Order(String),
    /// The refusal's label: `<status> <code>` over REST, `ws <code>` over a socket.
    Refused(String),
    Transport,
}

/// No answer within this is a transport failure (the server answers in
/// well under a second, even when refusing).
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// Local addresses the load generator's sockets are spread over.
pub const SOURCES: usize = 16;

pub fn live_url(node: &str, sale: &str, token: &str) -> String {
    let ws = node.replacen("http", "ws", 1);
    format!("{ws}/api/v1/sales/{sale}/live?access_token={token}")
}

/// A buyer's way to the node.
pub enum Transport {
    Rest { conn: Box<Conn> },
    Ws { socket: Box<Ws> },
}

impl Transport {
    /// A connection for `POST .../orders` as `tokens` in turn, open before the
    /// clock starts.
    pub async fn rest(node: &str, sale: &str, tokens: &[String]) -> Result<Self, String> {
        let url = format!("{node}/api/v1/sales/{sale}/orders");
        let mut conn = Conn::post(&url, tokens, r#"{"sku":"RUSH","qty":1}"#)?;
        conn.open().await?;
        Ok(Transport::Rest {
            conn: Box::new(conn),
        })
    }

    pub async fn ws(node: &str, sale: &str, token: &str, i: usize) -> Result<Self, String> {
        let mut socket = connect_ws(&live_url(node, sale, token), source_addr(i, SOURCES)).await?;
        // The welcome comes first; the clock starts later.
        next_text(&mut socket).await?;
        Ok(Transport::Ws {
            socket: Box::new(socket),
        })
    }

    /// One attempt; `reference` is the idempotency key.
    pub async fn buy(&mut self, reference: &str) -> Answer {
        match self {
            Transport::Rest { conn } => match conn.send(reference).await {
                Ok((status, body)) => {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if status == 201 {
                        Answer::Order(v["id"].as_str().unwrap_or_default().to_owned())
                    } else {
                        let code = v["error"]["code"].as_str().unwrap_or("?");
                        Answer::Refused(format!("{status} {code}"))
                    }
                }
                Err(_) => Answer::Transport,
            },
            Transport::Ws { socket } => {
                let msg = json!({ "type": "buy", "sku": "RUSH", "qty": 1, "ref": reference });
                if socket
                    .send(Message::Text(msg.to_string().into()))
                    .await
                    .is_err()
                {
                    return Answer::Transport;
                }
                match tokio::time::timeout(ANSWER_WAIT, answer_to(socket, reference)).await {
                    Ok(Some(a)) => a,
                    _ => Answer::Transport,
                }
            }
        }
    }
}

/// Reads the socket (stock counts, chat) until the frame answering `reference`.
async fn answer_to(socket: &mut Ws, reference: &str) -> Option<Answer> {
    // Only frames naming the ref are parsed: the rest is the room's traffic.
    let needle = format!("\"ref\":{}", Value::from(reference));
    loop {
        let text = next_text(socket).await.ok()?;
        if !text.contains(&needle) {
            continue;
        }
        let v: Value = serde_json::from_str(&text).ok()?;
        for e in events(v).iter().filter(|e| e["ref"] == reference) {
            match e["type"].as_str() {
                Some("order") => {
                    return Some(Answer::Order(
                        e["order"]["id"].as_str().unwrap_or_default().to_owned(),
                    ))
                }
                Some("error") => {
                    return Some(Answer::Refused(format!(
                        "ws {}",
                        e["code"].as_str().unwrap_or("?")
                    )))
                }
                _ => {}
            }
        }
    }
}

async fn next_text(socket: &mut Ws) -> Result<String, String> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(_))) | None => return Err("socket closed".into()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
        }
    }
}

/// A viewer's frame count and the last `remaining` it saw; `None` if its
/// socket failed.
pub type Viewer = tokio::task::JoinHandle<Option<(u64, Option<i64>)>>;

/// What the watching viewers saw.
#[derive(Default)]
pub struct Watched {
    pub viewers: usize,
    pub frames: u64,
    /// Viewers whose last stock count of the SKU equals the final one.
    pub saw_final: usize,
    pub failed: usize,
}

/// Viewers that connect now (spread over `nodes`) and read until `stop`;
/// each returns its frame count and the last `remaining` it saw.
pub async fn watch_viewers(
    nodes: &[String],
    sale: &str,
    tokens: Vec<String>,
    stop: watch::Receiver<bool>,
) -> Vec<Viewer> {
    let mut tasks = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.into_iter().enumerate() {
        let url = live_url(&nodes[i % nodes.len()], sale, &token);
        let mut stop = stop.clone();
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        tasks.push(tokio::spawn(async move {
            let socket = connect_ws(&url, source_addr(i, SOURCES)).await;
            let _ = connected_tx.send(());
            let mut socket = socket.ok()?;
            let (mut frames, mut remaining) = (0u64, None);
            loop {
                tokio::select! {
                    _ = stop.changed() => return Some((frames, remaining)),
                    msg = socket.next() => match msg {
                        Some(Ok(Message::Text(t))) => {
                            frames += 1;
                            if let Some(r) = last_remaining(t.as_str()) {
                                remaining = Some(r);
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => return None,
                    },
                }
            }
        }));
        // Connect one at a time: a thousand handshakes at once time out.
        let _ = connected.await;
    }
    tasks
}

/// The last `remaining` of the RUSH SKU in a frame (single or batch).
fn last_remaining(text: &str) -> Option<i64> {
    if !text.contains("\"stock\"") {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    events(v)
        .iter()
        .rev()
        .find(|e| e["type"] == "stock" && e["sku"] == "RUSH")
        .and_then(|e| e["remaining"].as_i64())
}

/// Stops the viewers and sums what they saw against the final count.
pub async fn collect(
    tasks: Vec<Viewer>,
    stop: watch::Sender<bool>,
    final_remaining: Option<i64>,
) -> Watched {
    let _ = stop.send(true);
    let mut w = Watched {
        viewers: tasks.len(),
        ..Watched::default()
    };
    for t in tasks {
        match t.await {
            Ok(Some((frames, remaining))) => {
                w.frames += frames;
                if remaining.is_some() && remaining == final_remaining {
                    w.saw_final += 1;
                }
            }
            _ => w.failed += 1,
        }
    }
    w
}
