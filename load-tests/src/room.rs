//! `room`: a short scripted session (a host and two viewers on the given
//! nodes), printing every frame each socket sends and receives. It produces
//! the annotated transcript in docs/protocol.md and is a smoke check of the
//! room across nodes.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use lychee_live::config::Secret;
use lychee_live::identity::{Identity, Role, TokenKeys};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{call, live_sale};

#[derive(clap::Args, Clone)]
pub struct RoomArgs {
    /// Node URLs: the host and the first viewer use the first, the second viewer the last.
    #[arg(long = "node", default_value = "http://127.0.0.1:8080")]
    pub nodes: Vec<String>,
    #[arg(long, env = "LIVE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Party {
    name: &'static str,
    ws: Ws,
}

impl Party {
    async fn say(&mut self, v: Value) -> Result<(), String> {
        println!("{} -> {}", self.name, v);
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .map_err(|e| e.to_string())
    }

    /// Prints what arrives within `wait`.
    async fn hear(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            match msg {
                Message::Text(t) => println!("{} <- {}", self.name, t.as_str()),
                Message::Close(c) => {
                    println!("{} <- close {:?}", self.name, c.map(|c| u16::from(c.code)));
                    return;
                }
                _ => {}
            }
        }
    }
}

fn token(keys: &TokenKeys, role: Role, sub: &str, name: &str) -> Result<String, String> {
    let who = Identity {
        user_id: sub.into(),
        name: Some(name.into()),
        role,
    };
    keys.mint(&who, Duration::from_secs(3600), chrono::Utc::now())
        .map(|m| m.token)
        .map_err(|e| e.to_string())
}

async fn join(node: &str, sale: &str, token: &str, name: &'static str) -> Result<Party, String> {
    let url = format!(
        "{}/api/v1/sales/{sale}/live?access_token={token}",
        node.replacen("http", "ws", 1)
    );
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Party { name, ws })
}

pub async fn run(a: RoomArgs) -> Result<Value, String> {
    let keys = TokenKeys::new(&Secret(a.jwt_secret.clone())).map_err(|e| e.to_string())?;
    let http = reqwest::Client::new();
    let (first, last) = (&a.nodes[0], &a.nodes[a.nodes.len() - 1]);
    let host_token = token(&keys, Role::Host, "alice", "Farmer Chen")?;
    let sale = live_sale(&http, first, &host_token, "reserve", 3, 2).await?;
    let short = Duration::from_millis(400);
    let mut host = join(first, &sale, &host_token, "host").await?;
    host.hear(short).await;
    let mut mei = join(
        first,
        &sale,
        &token(&keys, Role::Viewer, "mei", "Mei")?,
        "mei",
    )
    .await?;
    mei.hear(short).await;
    let mut li = join(last, &sale, &token(&keys, Role::Viewer, "li", "Li")?, "li").await?;
    li.hear(short).await;
    host.say(json!({ "type": "announce", "text": "Picked at dawn, 3 boxes only!" }))
        .await?;
    host.say(json!({ "type": "pin", "sku": "RUSH" })).await?;
    mei.say(json!({ "type": "chat", "text": "How sweet are they?" }))
        .await?;
    for p in [&mut host, &mut mei, &mut li] {
        p.hear(short).await;
    }
    li.say(json!({ "type": "buy", "sku": "RUSH", "qty": 2, "ref": "li-1" }))
        .await?;
    li.hear(short).await;
    mei.hear(Duration::from_millis(1200)).await;
    mei.say(json!({ "type": "chat", "text": "buy a counterfeit here" }))
        .await?;
    mei.say(json!({ "type": "ping", "ref": "p1" })).await?;
    mei.hear(short).await;
    host.say(json!({ "type": "slow_mode", "secs": 10 })).await?;
    host.say(json!({ "type": "delete_chat", "seq": 1 })).await?;
    host.say(json!({ "type": "mute", "user_id": "mei", "secs": 60 }))
        .await?;
    mei.hear(short).await;
    mei.say(json!({ "type": "chat", "text": "hello?" })).await?;
    mei.hear(short).await;
    host.say(json!({ "type": "ban", "user_id": "li" })).await?;
    li.hear(short).await;
    let (s, v) = call(
        http.post(format!("{first}/api/v1/sales/{sale}/end"))
            .bearer_auth(&host_token),
    )
    .await?;
    println!("host: POST /sales/{{id}}/end -> {s} {}", v["status"]);
    mei.hear(short).await;
    Ok(json!({ "scenario": "room", "sale_id": sale, "invariants_ok": true }))
}
