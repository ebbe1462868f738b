//! `GET /api/v1/sales/{id}/live`: the live room over WebSocket.
//!
//! One task per socket: it reads the client's messages and writes what the
//! room queued for it, draining the queue into one frame (or a `batch`) per
//! write. A socket that cannot keep up loses chat (and is told), never state;
//! one that stays stuck is closed; the others never wait for it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{parse_id, AppPath, AppQuery, ClientIp};
use super::AppState;
use crate::hub::chat::{check_text, Post, Posted, WELCOME_LAST};
use crate::hub::room::{Frame, Membership, Personal};
use crate::hub::SaleEvent;
use crate::identity::{Identity, IdentityError};
use crate::orders::service::BuyRequest;

/// The contract's cap on one client message.
pub const MAX_MESSAGE: usize = 4096;
/// Bad messages tolerated within `ABUSE_WINDOW` before closing with 1008.
const ABUSE_LIMIT: usize = 20;
const ABUSE_WINDOW: Duration = Duration::from_secs(10);
/// A write that cannot finish within this closes the socket: it is stuck.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames drained into one write at most.
const MAX_BATCH: usize = 64;
/// Client messages are small (4 KiB at most); the default is 128 KiB.
const READ_BUFFER: usize = 4096;
/// Buys of one socket in flight at once.
const BUYS_IN_FLIGHT: usize = 4;
/// Longest mute: a week.
const MAX_MUTE_SECS: u32 = 7 * 24 * 3600;
const MAX_SLOW_MODE_SECS: u32 = 3600;

#[derive(Deserialize)]
pub struct LiveQuery {
    access_token: Option<String>,
    since: Option<u64>,
}

pub async fn live(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
    AppQuery(q): AppQuery<LiveQuery>,
    headers: HeaderMap,
    ClientIp(ip): ClientIp,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let sale_id = parse_id(&id, "sale")?;
    let token = super::extract::bearer_header(&headers)
        .or(q.access_token.as_deref())
        .ok_or(IdentityError::Missing)?;
    let (who, expires_at) = state.keys.verify_until(token)?;
    let upgrade = upgrade.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let facts = state
        .catalog
        .facts(sale_id, None)
        .await?
        .ok_or(ApiError::NotFound("sale not found".into()))?;
    // A ban never keeps out whoever may manage the sale.
    if !who.may_manage(&facts.host_id) && state.live.chat.is_banned(sale_id, &who.user_id).await? {
        return Err(ApiError::Banned);
    }
    state.live.moderation.seen(&who).await;
    // Refused before the upgrade (503): a full node, a user with too many
    // tabs, or one address (guests sooner) holding too many sockets.
    let slot = state.limits.socket(&who, ip)?;
    let since = q.since;
    Ok(upgrade
        // Larger than the contract's 4 KiB so we can close with 1009 ourselves.
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        // Small buffers: thousands of mostly idle sockets per node. Writes go
        // out at once; batching happens before, in `send`.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            run(socket, state, who, expires_at, ip, sale_id, since).await;
        })
        .into_response())
}

/// A client message, after `type` told which.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Chat {
        text: String,
    },
    Buy {
        sku: String,
        qty: i64,
        #[serde(rename = "ref")]
        reference: String,
        /// Ships to this address of the buyer's book (else its default).
        #[serde(default)]
        address_id: Option<uuid::Uuid>,
    },
    Ping {
        #[serde(rename = "ref")]
        reference: Option<String>,
    },
    Announce {
        text: String,
    },
    Pin {
        sku: String,
    },
    DeleteChat {
        seq: u64,
    },
    Mute {
        user_id: String,
        secs: u32,
    },
    Ban {
        user_id: String,
    },
    Unban {
        user_id: String,
    },
    SlowMode {
        secs: u32,
    },
}

/// Always the first frame of a socket.
#[derive(Serialize)]
#[serde(tag = "type", rename = "welcome")]
struct Welcome<'a> {
    you: &'a Identity,
    sale: &'a crate::catalog::Sale,
    viewers: u64,
    chat: Vec<SaleEvent>,
    slow_mode_secs: u32,
}

fn frame(value: Value) -> Frame {
    Frame::text(value.to_string())
}

fn error_frame(code: &str, message: &str, reference: Option<&str>) -> Frame {
    let mut v = json!({ "type": "error", "code": code, "message": message });
    if let Some(r) = reference {
        v["ref"] = r.into();
    }
    frame(v)
}

fn api_error_frame(e: &ApiError, reference: Option<&str>) -> Frame {
    let mut v = e.body()["error"].clone();
    v["type"] = "error".into();
    if let Some(r) = reference {
        v["ref"] = r.into();
    }
    frame(v)
}

/// A client message, or why not (with its `ref` when it had one).
fn parse_client(text: &str) -> Result<ClientMessage, (String, Option<String>)> {
    let value: Value =
        serde_json::from_str(text).map_err(|_| ("not a JSON object".to_owned(), None))?;
    let reference = value.get("ref").and_then(Value::as_str).map(str::to_owned);
    serde_json::from_value(value)
        .map_err(|e| (format!("unknown or malformed message: {e}"), reference))
}

/// What one client message leads to.
enum Outcome {
    Reply(Frame),
    Nothing,
    Bad(Frame),
    Close(u16, &'static str),
}

struct Socket {
    state: AppState,
    who: Identity,
    ip: Option<std::net::IpAddr>,
    sale_id: Uuid,
    member: Membership,
    buys: Arc<Semaphore>,
    /// The last chat seq this socket has sent, so welcome history and live
    /// frames never repeat a message.
    last_seq: u64,
    /// The room's event count after the last room frame taken (see `Frame::at`).
    room_events: Option<u64>,
    bad: VecDeque<Instant>,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    socket: WebSocket,
    state: AppState,
    who: Identity,
    expires_at: chrono::DateTime<chrono::Utc>,
    ip: Option<std::net::IpAddr>,
    sale_id: Uuid,
    since: Option<u64>,
) {
    let _open = state.live.sockets.token();
    let _gauge = OpenSocket::new();
    let (mut sink, mut stream) = socket.split();
    let member = match state.live.hub.join(sale_id, &who.user_id).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "joining a room failed");
            let _ = sink.send(close(1011, "try again")).await;
            return;
        }
    };
    // A viewer on the sale's page may buy any moment: its address book is
    // read now, not on the buy's path.
    state.orders.warm_buyer(&who.user_id);
    let mut s = Socket {
        state,
        who,
        ip,
        sale_id,
        member,
        buys: Arc::new(Semaphore::new(BUYS_IN_FLIGHT)),
        last_seq: 0,
        room_events: None,
        bad: VecDeque::new(),
    };
    let welcome = match s.welcome(since).await {
        Ok(w) => w,
        Err(e) => {
            let _ = sink
                .send(Message::Text(api_error_frame(&e, None).text))
                .await;
            let _ = sink.send(close(1011, "try again")).await;
            return;
        }
    };
    if send(&mut sink, vec![welcome]).await.is_err() {
        return;
    }
    // Made once, not per wake-up: 10,000 sockets re-registering with the
    // node's one shutdown token on every frame contend for its lock.
    let mut shutdown = std::pin::pin!(s.state.live.shutdown.clone().cancelled_owned());
    let mut stuck = std::pin::pin!(s.member.stuck.clone().cancelled_owned());
    // The server pings every `beat`; a client silent for two of them (plus
    // time for the ping's own write) is taken for gone.
    let beat = s.state.limits.heartbeat;
    let mut heartbeat = tokio::time::interval(beat);
    heartbeat.tick().await;
    let mut heard = Instant::now();
    // The socket lives no longer than the token it was opened with.
    let left = (expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    let expiry = tokio::time::sleep(left);
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.as_mut() => {
                let _ = send_close(&mut sink, 1001, "server shutting down").await;
                return;
            }
            _ = expiry.as_mut() => {
                let _ = send_close(&mut sink, 4001, "token expired: sign in again").await;
                return;
            }
            _ = heartbeat.tick() => {
                // A half-open connection never answers: drop it rather than
                // keep its memory and its place in the room.
                if heard.elapsed() > beat * 2 + WRITE_TIMEOUT.min(beat) {
                    let _ = send_close(&mut sink, 1001, "no answer to pings").await;
                    return;
                }
                let ping = tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Ping(Default::default())));
                if !matches!(ping.await, Ok(Ok(()))) {
                    return;
                }
            }
            _ = stuck.as_mut() => {
                let _ = send_close(&mut sink, 1008, "too slow").await;
                return;
            }
            msg = stream.next() => {
                heard = Instant::now();
                let outcome = match msg {
                    Some(Ok(msg)) => s.on_message(msg).await,
                    Some(Err(e)) => match read_error(&e) {
                        // RFC 6455 fails the connection on invalid UTF-8 and
                        // the WebSocket layer enforces it: say why, then close.
                        ReadError::BadUtf8 => {
                            let f = error_frame("bad_request", "text frames must be valid UTF-8", None);
                            let _ = send(&mut sink, vec![f]).await;
                            Outcome::Close(1007, "invalid UTF-8")
                        }
                        ReadError::TooBig => Outcome::Close(1009, "message over 4096 bytes"),
                        ReadError::Other => return,
                    },
                    None => return,
                };
                match outcome {
                    Outcome::Reply(f) | Outcome::Bad(f) => {
                        if send(&mut sink, vec![f]).await.is_err() { return; }
                    }
                    Outcome::Nothing => {}
                    Outcome::Close(code, why) => {
                        let _ = send_close(&mut sink, code, why).await;
                        return;
                    }
                }
            }
            personal = s.member.personal.recv() => {
                match personal {
                    Some(Personal::Frame(f)) => {
                        if send(&mut sink, vec![f]).await.is_err() { return; }
                    }
                    Some(Personal::Close(code, why)) => {
                        let _ = send_close(&mut sink, code, why).await;
                        return;
                    }
                    None => return,
                }
            }
            first = s.member.frames.recv() => {
                let frames = match s.drain(first) {
                    Some(f) => f,
                    None => return,
                };
                if !frames.is_empty() && send(&mut sink, frames).await.is_err() {
                    return;
                }
            }
        }
    }
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

/// Counts this socket in `lychee_ws_open_sockets` while it lives.
struct OpenSocket;

impl OpenSocket {
    fn new() -> Self {
        metrics::gauge!("lychee_ws_open_sockets").increment(1.0);
        OpenSocket
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        metrics::gauge!("lychee_ws_open_sockets").decrement(1.0);
    }
}

enum ReadError {
    BadUtf8,
    TooBig,
    Other,
}

/// Tells the client's faults (answered with a close code) from a broken connection.
fn read_error(e: &axum::Error) -> ReadError {
    use std::error::Error as _;
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = source {
        match s.downcast_ref::<tungstenite::Error>() {
            Some(tungstenite::Error::Utf8(_)) => return ReadError::BadUtf8,
            Some(tungstenite::Error::Capacity(_)) => return ReadError::TooBig,
            Some(_) => return ReadError::Other,
            None => source = s.source(),
        }
    }
    ReadError::Other
}

fn msg_len(m: &Message) -> usize {
    match m {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        _ => 0,
    }
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

async fn send_close(sink: &mut Sink, code: u16, reason: &'static str) -> Result<(), ()> {
    match tokio::time::timeout(WRITE_TIMEOUT, sink.send(close(code, reason))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Frames out and events delivered: looked up once, not on every write
/// (the node's recorder is installed before any socket opens).
static FANOUT: std::sync::LazyLock<(metrics::Counter, metrics::Counter)> =
    std::sync::LazyLock::new(|| {
        (
            metrics::counter!("lychee_ws_frames_out_total"),
            metrics::counter!("lychee_fanout_deliveries_total"),
        )
    });

/// Frames in one write, flushed once. Each is the room's shared bytes: no
/// copy per socket.
async fn send(sink: &mut Sink, frames: Vec<Frame>) -> Result<(), ()> {
    FANOUT.0.increment(frames.len() as u64);
    FANOUT.1.increment(frames.iter().map(Frame::events).sum());
    let write = async {
        for f in frames {
            sink.feed(Message::Text(f.text)).await?;
        }
        sink.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        // Stuck or gone: either way this socket is done.
        _ => Err(()),
    }
}

impl Socket {
    async fn welcome(&mut self, since: Option<u64>) -> Result<Frame, ApiError> {
        let live = &self.state.live;
        let history = live.chat.history(self.sale_id, since, WELCOME_LAST).await?;
        if let Some(last) = history.last() {
            self.last_seq = self.last_seq.max(last.seq);
        }
        let slow = live.chat.slow_mode(self.sale_id).await?;
        let sale = self.state.catalog.sale(self.sale_id).await?;
        let viewers = self.member.room.viewers().max(1);
        let chat: Vec<SaleEvent> = history.into_iter().map(SaleEvent::Chat).collect();
        Frame::of(&Welcome {
            you: &self.who,
            sale: &sale,
            viewers,
            chat,
            slow_mode_secs: slow,
        })
        .ok_or_else(|| ApiError::Internal("welcome not serializable".into()))
    }

    /// A room frame: counted (see `Frame::at`), then kept or skipped.
    fn take(&mut self, f: Frame, out: &mut Vec<Frame>) {
        self.room_events = Some(f.at + f.events());
        self.keep(f, out);
    }

    /// Queues `f` unless its chat was already sent (in the welcome's history);
    /// a batch holding some of it is split, so its other events still go.
    fn keep(&mut self, f: Frame, out: &mut Vec<Frame>) {
        match (f.seqs, &f.parts) {
            (None, _) => out.push(f),
            (Some((first, last)), _) if first > self.last_seq => {
                self.last_seq = last;
                out.push(f);
            }
            (Some(_), Some(parts)) => {
                for p in parts.iter() {
                    self.keep(p.clone(), out);
                }
            }
            (Some(_), None) => {}
        }
    }

    /// The first frame and whatever else is queued, minus chat already sent.
    /// `None`: the room is gone.
    fn drain(&mut self, first: Result<Frame, RecvError>) -> Option<Vec<Frame>> {
        let mut out = Vec::new();
        let mut next = Some(first);
        while let Some(r) = next.take() {
            match r {
                Ok(f) => self.take(f, &mut out),
                Err(RecvError::Lagged(frames)) => {
                    metrics::counter!("lychee_lagged_viewers_total").increment(1);
                    // The oldest frame still queued tells how many events
                    // were lost before it (a frame may hold several).
                    let oldest = self.member.frames.try_recv().ok();
                    let skipped = match (&oldest, self.room_events) {
                        (Some(f), Some(seen)) => f.at.saturating_sub(seen),
                        _ => frames,
                    };
                    // Chat is lost, state is not: tell, then resend the stock.
                    out.push(frame(json!({ "type": "lagged", "skipped": skipped })));
                    out.extend(self.member.room.stock_snapshot());
                    let count = self.member.room.viewers();
                    out.push(frame(json!({ "type": "viewers", "count": count })));
                    if let Some(f) = oldest {
                        self.take(f, &mut out);
                    }
                }
                Err(RecvError::Closed) => return None,
            }
            if out.len() >= MAX_BATCH {
                break;
            }
            next = match self.member.frames.try_recv() {
                Ok(f) => Some(Ok(f)),
                Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
                Err(TryRecvError::Empty) => None,
            };
        }
        Some(out)
    }

    fn bad(&mut self, code: &str, message: &str, reference: Option<&str>) -> Outcome {
        self.refuse(error_frame(code, message, reference))
    }

    /// Every refused message counts towards the abuse limit, whatever its code.
    fn refuse(&mut self, frame: Frame) -> Outcome {
        let now = Instant::now();
        self.bad.push_back(now);
        while self
            .bad
            .front()
            .is_some_and(|t| now.duration_since(*t) > ABUSE_WINDOW)
        {
            self.bad.pop_front();
        }
        if self.bad.len() >= ABUSE_LIMIT {
            return Outcome::Close(1008, "too many bad messages");
        }
        Outcome::Bad(frame)
    }

    async fn on_message(&mut self, msg: Message) -> Outcome {
        metrics::counter!("lychee_ws_frames_in_total").increment(1);
        let text = match msg {
            Message::Text(t) if t.len() <= MAX_MESSAGE => t,
            Message::Text(_) | Message::Binary(_) if msg_len(&msg) > MAX_MESSAGE => {
                return Outcome::Close(1009, "message over 4096 bytes")
            }
            Message::Binary(_) => return self.bad("bad_request", "send JSON text frames", None),
            Message::Text(_) => return Outcome::Close(1009, "message over 4096 bytes"),
            Message::Ping(_) | Message::Pong(_) => return Outcome::Nothing,
            Message::Close(_) => return Outcome::Close(1000, "bye"),
        };
        let parsed = match parse_client(text.as_str()) {
            Ok(m) => m,
            Err((msg, reference)) => return self.bad("bad_request", &msg, reference.as_deref()),
        };
        match self.handle(parsed).await {
            Ok(o) => o,
            Err((e, r)) => {
                let frame = api_error_frame(&e, r.as_deref());
                match e {
                    // Our fault, not the client's: no abuse.
                    ApiError::Unavailable(_) | ApiError::Internal(_) => Outcome::Reply(frame),
                    _ => self.refuse(frame),
                }
            }
        }
    }

    async fn may_manage(&self) -> Result<(), ApiError> {
        let facts = self
            .state
            .catalog
            .facts(self.sale_id, None)
            .await?
            .ok_or(ApiError::NotFound("sale not found".into()))?;
        if self.who.may_manage(&facts.host_id) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "only the sale's host or an operator may do this".into(),
            ))
        }
    }

    async fn handle(&mut self, msg: ClientMessage) -> Result<Outcome, (ApiError, Option<String>)> {
        let live = self.state.live.clone();
        let sale_id = self.sale_id;
        let plain = |e: ApiError| (e, None);
        match msg {
            ClientMessage::Ping { reference } => {
                let mut v = json!({ "type": "pong" });
                if let Some(r) = reference {
                    v["ref"] = r.into();
                }
                Ok(Outcome::Reply(frame(v)))
            }
            ClientMessage::Chat { text } => {
                let text = match check_text(&text, &live.blocked_words) {
                    Ok(t) => t,
                    Err(why) => return Ok(self.bad("invalid_message", why, None)),
                };
                // Not counted as abuse: the neighbours behind one NAT share it.
                // Given back unless posted, so refused messages do not drain it.
                let charge = self.state.limits.chat(self.ip).map_err(plain)?;
                let post = Post {
                    sale_id,
                    user_id: self.who.user_id.clone(),
                    name: self
                        .who
                        .name
                        .clone()
                        .unwrap_or_else(|| self.who.user_id.clone()),
                    text,
                    ts: self.state.clock.now_ms(),
                    moderator: self.may_manage().await.is_ok(),
                };
                let secs = |ms: i64| (ms as u64).div_ceil(1000);
                let mut posted = live.chat.post(&post).await.map_err(|e| plain(e.into()))?;
                if posted == Posted::Missing {
                    live.rebuild
                        .repair(sale_id, None)
                        .await
                        .map_err(|e| plain(e.into()))?;
                    posted = live.chat.post(&post).await.map_err(|e| plain(e.into()))?;
                }
                Ok(match posted {
                    Posted::Sent(_) => {
                        charge.keep();
                        live.stats.chat(sale_id);
                        Outcome::Nothing
                    }
                    Posted::Missing => {
                        return Err(plain(ApiError::Unavailable(
                            "the sale is being rebuilt".into(),
                        )))
                    }
                    Posted::Banned => self.bad("banned", "you are banned from this sale", None),
                    Posted::Muted { ms } => {
                        self.bad("muted", &format!("you are muted for {} s", secs(ms)), None)
                    }
                    Posted::SlowMode { ms } => self.bad(
                        "slow_mode",
                        &format!("slow mode: wait {} s", secs(ms)),
                        None,
                    ),
                    Posted::RateLimited { ms } => self.bad(
                        "rate_limited",
                        &format!("too fast: wait {} s", secs(ms)),
                        None,
                    ),
                })
            }
            ClientMessage::Buy {
                sku,
                qty,
                reference,
                address_id,
            } => {
                if let Err(e) = self.state.limits.buy(&self.who.user_id, self.ip) {
                    return Err((e, Some(reference)));
                }
                let Ok(permit) = self.buys.clone().try_acquire_owned() else {
                    return Err((ApiError::RateLimited(1), Some(reference)));
                };
                let (orders, who, me) = (
                    self.state.orders.clone(),
                    self.who.clone(),
                    self.member.me.clone(),
                );
                // The reader goes on while PostgreSQL commits; the answer is
                // queued to this socket like any personal frame.
                tokio::spawn(async move {
                    let req = BuyRequest {
                        sale_id,
                        key: reference.clone(),
                        sku,
                        qty,
                        address_id,
                    };
                    let f = match orders.buy(&who, req).await {
                        Ok(json) => Frame::text(format!(
                            r#"{{"type":"order","ref":{},"order":{json}}}"#,
                            Value::from(reference)
                        )),
                        Err(e) => api_error_frame(&ApiError::from(e), Some(&reference)),
                    };
                    let _ = me.send(Personal::Frame(f)).await;
                    drop(permit);
                });
                Ok(Outcome::Nothing)
            }
            ClientMessage::Announce { text } => {
                self.may_manage().await.map_err(plain)?;
                let text = match check_text(&text, &[]) {
                    Ok(t) => t,
                    Err(why) => return Ok(self.bad("invalid_message", why, None)),
                };
                let ts = self.state.clock.now_ms();
                live.hub
                    .bus()
                    .publish(sale_id, SaleEvent::Announcement { text, ts });
                Ok(Outcome::Nothing)
            }
            ClientMessage::Pin { sku } => {
                self.state
                    .catalog
                    .pin(&self.who, sale_id, &sku)
                    .await
                    .map_err(|e| plain(e.into()))?;
                Ok(Outcome::Nothing)
            }
            ClientMessage::DeleteChat { seq } => {
                self.may_manage().await.map_err(plain)?;
                if !live
                    .chat
                    .delete(sale_id, seq)
                    .await
                    .map_err(|e| plain(e.into()))?
                {
                    return Err(plain(ApiError::NotFound(
                        "no such message in history".into(),
                    )));
                }
                live.hub
                    .bus()
                    .publish(sale_id, SaleEvent::ChatDeleted { seq });
                Ok(Outcome::Nothing)
            }
            ClientMessage::Mute { user_id, secs } => {
                self.may_manage().await.map_err(plain)?;
                if secs > MAX_MUTE_SECS {
                    return Err(plain(ApiError::BadRequest(format!(
                        "secs must be 0..={MAX_MUTE_SECS}"
                    ))));
                }
                live.chat
                    .mute(sale_id, &user_id, secs)
                    .await
                    .map_err(|e| plain(e.into()))?;
                Ok(Outcome::Nothing)
            }
            ClientMessage::Ban { user_id } => {
                live.moderation
                    .ban(&self.who, sale_id, &user_id)
                    .await
                    .map_err(|e| plain(e.into()))?;
                Ok(Outcome::Nothing)
            }
            ClientMessage::Unban { user_id } => {
                live.moderation
                    .unban(&self.who, sale_id, &user_id)
                    .await
                    .map_err(|e| plain(e.into()))?;
                Ok(Outcome::Nothing)
            }
            ClientMessage::SlowMode { secs } => {
                self.may_manage().await.map_err(plain)?;
                if secs > MAX_SLOW_MODE_SECS {
                    return Err(plain(ApiError::BadRequest(format!(
                        "secs must be 0..={MAX_SLOW_MODE_SECS}"
                    ))));
                }
                live.chat
                    .set_slow_mode(sale_id, secs)
                    .await
                    .map_err(|e| plain(e.into()))?;
                live.hub
                    .bus()
                    .publish(sale_id, SaleEvent::SlowMode { secs });
                Ok(Outcome::Nothing)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any text: a message or a bad_request reason, never a panic.
        #[test]
        fn any_text_parses_or_is_refused(text in ".{0,600}") {
            let _ = parse_client(&text);
        }

        /// JSON objects with the known types and arbitrary fields.
        #[test]
        fn any_typed_object_parses_or_is_refused(
            kind in prop::sample::select(vec!["chat", "buy", "ping", "announce", "pin",
                "delete_chat", "mute", "ban", "slow_mode", "nope", ""]),
            key in "[a-z_]{1,10}",
            value in prop_oneof![
                any::<i64>().prop_map(|n| json!(n)),
                any::<f64>().prop_map(|n| json!(n)),
                ".{0,40}".prop_map(|s| json!(s)),
                Just(json!(null)),
                Just(json!([1, 2])),
                Just(json!({ "x": 1 })),
            ],
            reference in proptest::option::of(".{0,20}"),
        ) {
            let mut v = json!({ "type": kind });
            v[key.as_str()] = value;
            if let Some(r) = &reference {
                v["ref"] = json!(r);
            }
            if let Err((_, r)) = parse_client(&v.to_string()) {
                // The ref comes back so the client can match the error.
                if reference.is_some() && v.get("ref").is_some() {
                    prop_assert_eq!(r, reference);
                }
            }
        }
    }

    #[test]
    fn known_messages_parse() {
        assert!(matches!(
            parse_client(r#"{"type":"buy","sku":"A","qty":1,"ref":"r"}"#),
            Ok(ClientMessage::Buy { .. })
        ));
        assert_eq!(
            parse_client(r#"{"type":"buy","sku":"A","ref":"r1"}"#)
                .err()
                .and_then(|e| e.1),
            Some("r1".to_owned())
        );
    }
}
