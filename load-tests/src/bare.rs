//! `bare-server`: the ceiling for fan-out on this machine. A minimal WebSocket
//! broadcast server: every text frame a client sends goes to every socket,
//! stamped with a sequence number so the `chat` scenario can check order.
//! No auth, no Redis, no history: what lychee-live's room costs is measured
//! against this.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::broadcast;

#[derive(clap::Args, Clone)]
pub struct BareArgs {
    #[arg(long, default_value = "127.0.0.1:8099")]
    pub listen: SocketAddr,
}

#[derive(Clone)]
struct Hub {
    tx: broadcast::Sender<Utf8Bytes>,
    seq: Arc<AtomicU64>,
}

pub async fn run(a: BareArgs) -> Result<Value, String> {
    crate::common::raise_open_files();
    let hub = Hub {
        tx: broadcast::channel(1024).0,
        seq: Arc::new(AtomicU64::new(0)),
    };
    let app = Router::new()
        .route("/api/v1/sales/{id}/live", get(upgrade))
        .with_state(hub);
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("bare broadcast server on {}", a.listen);
    axum::serve(listener, app)
        .await
        .map_err(|e| e.to_string())?;
    Ok(serde_json::json!({ "scenario": "bare-server", "invariants_ok": true }))
}

async fn upgrade(State(hub): State<Hub>, ws: WebSocketUpgrade) -> impl IntoResponse {
    ws.read_buffer_size(4096)
        .write_buffer_size(0)
        .on_upgrade(move |socket| serve(socket, hub))
}

async fn serve(socket: WebSocket, hub: Hub) {
    let (mut sink, mut stream) = socket.split();
    let mut rx = hub.tx.subscribe();
    if sink
        .send(Message::Text(Utf8Bytes::from_static(
            r#"{"type":"welcome"}"#,
        )))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let seq = hub.seq.fetch_add(1, Ordering::Relaxed) + 1;
                    // `{"type":"chat","text":...}` -> `{"type":"chat","seq":N,"text":...}`
                    let body = t.as_str().strip_prefix('{').unwrap_or(t.as_str());
                    let body = body.replacen(r#","type":"chat""#, "", 1).replacen(r#""type":"chat","#, "", 1);
                    let frame = format!(r#"{{"type":"chat","seq":{seq},{body}"#);
                    let _ = hub.tx.send(Utf8Bytes::from(frame));
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            frame = rx.recv() => match frame {
                Ok(f) => if sink.send(Message::Text(f)).await.is_err() { return },
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let lagged = format!(r#"{{"type":"lagged","skipped":{n}}}"#);
                    if sink.send(Message::Text(Utf8Bytes::from(lagged))).await.is_err() { return }
                }
                Err(_) => return,
            },
        }
    }
}
