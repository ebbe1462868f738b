//! One live socket: reads the client's messages and writes what the room
//! queued for it, draining the queue into one frame (or a `batch`) per
//! write. A socket that cannot keep up loses chat (and is told), never
//! state; one that stays stuck is closed; the others never wait for it.
//!
//! Generic over the transport (a `Sink` of messages and a `Stream` of
//! them), so unit tests drive it with channels.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::protocol::{parse_client, Frame, Request, MAX_MESSAGE};
use crate::http::error::ApiError;
use crate::http::limits::Limits;
use crate::hub::live::{Live, LiveError};
use crate::hub::room::{Membership, Personal};
use crate::identity::Identity;
use crate::orders::service::BuyRequest;

/// Bad messages tolerated within `ABUSE_WINDOW` before closing with 1008.
const ABUSE_LIMIT: usize = 20;
const ABUSE_WINDOW: Duration = Duration::from_secs(10);
/// A write that cannot finish within this closes the socket: it is stuck.
/// (`LimitSettings::socket_write_timeout`; tests shorten it.)
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames drained into one write at most.
const MAX_BATCH: usize = 64;
/// Buys of one socket in flight at once.
const BUYS_IN_FLIGHT: usize = 4;

/// Why reading failed: the client's fault (answered with a close code) or
/// a broken connection.
pub enum ReadFault {
    BadUtf8,
    TooBig,
    Broken,
}

/// Tells a transport's read error apart.
pub trait ReadError {
    fn fault(&self) -> ReadFault;
}

impl ReadError for axum::Error {
    fn fault(&self) -> ReadFault {
        use std::error::Error as _;
        let mut source: Option<&(dyn std::error::Error + 'static)> = self.source();
        while let Some(s) = source {
            match s.downcast_ref::<tungstenite::Error>() {
                Some(tungstenite::Error::Utf8(_)) => return ReadFault::BadUtf8,
                Some(tungstenite::Error::Capacity(_)) => return ReadFault::TooBig,
                Some(_) => return ReadFault::Broken,
                None => source = s.source(),
            }
        }
        ReadFault::Broken
    }
}

/// Who opened the socket, on which sale, and what it may use.
pub struct Opened {
    pub live: Arc<Live>,
    pub limits: Arc<Limits>,
    pub who: Identity,
    /// The token's expiry: the socket closes with 4001 then.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub ip: Option<IpAddr>,
    pub sale_id: Uuid,
    pub since: Option<u64>,
}

/// What one client message leads to.
enum Outcome {
    Reply(Frame),
    Nothing,
    Close(u16, &'static str),
}

struct Socket {
    live: Arc<Live>,
    limits: Arc<Limits>,
    who: Identity,
    ip: Option<IpAddr>,
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

/// Serves one socket until it closes, the node shuts down or the token expires.
#[tracing::instrument(skip_all, fields(sale_id = %opened.sale_id, user = %opened.who.user_id))]
pub async fn run<S, R, E>(sink: S, mut stream: R, opened: Opened)
where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: ReadError,
{
    let Opened {
        live,
        limits,
        who,
        expires_at,
        ip,
        sale_id,
        since,
    } = opened;
    let mut out = Out {
        sink,
        timeout: limits.socket_write,
    };
    let _open = live.sockets.token();
    let _gauge = OpenSocket::new();
    let member = match live.hub.join(sale_id, &who.user_id).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "joining a room failed");
            let _ = out.close(1011, "try again").await;
            return;
        }
    };
    // A viewer on the sale's page may buy any moment: its address book is
    // read now, not on the buy's path.
    live.orders.warm_buyer(&who.user_id);
    let mut s = Socket {
        live,
        limits,
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
            let _ = out
                .send(vec![Frame::error_body(e.body()["error"].clone(), None)])
                .await;
            let _ = out.close(1011, "try again").await;
            return;
        }
    };
    if out.send(vec![welcome]).await.is_err() {
        return;
    }
    // Made once, not per wake-up: 10,000 sockets re-registering with the
    // node's one shutdown token on every frame contend for its lock.
    let mut shutdown = std::pin::pin!(s.live.shutdown.clone().cancelled_owned());
    let mut stuck = std::pin::pin!(s.member.stuck.clone().cancelled_owned());
    // The server pings every `beat`; a client silent for two of them (plus
    // time for the ping's own write) is taken for gone.
    let beat = s.limits.heartbeat;
    let mut heartbeat = tokio::time::interval(beat);
    heartbeat.tick().await;
    let mut heard = tokio::time::Instant::now();
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
                let _ = out.close(1001, "server shutting down").await;
                return;
            }
            _ = expiry.as_mut() => {
                let _ = out.close(4001, "token expired: sign in again").await;
                return;
            }
            _ = heartbeat.tick() => {
                // A half-open connection never answers: drop it rather than
                // keep its memory and its place in the room.
                if heard.elapsed() > beat * 2 + out.timeout.min(beat) {
                    let _ = out.close(1001, "no answer to pings").await;
                    return;
                }
                if out.ping().await.is_err() {
                    return;
                }
            }
            _ = stuck.as_mut() => {
                let _ = out.close(1008, "too slow").await;
                return;
            }
            msg = stream.next() => {
                heard = tokio::time::Instant::now();
                let outcome = match msg {
                    Some(Ok(msg)) => s.on_message(msg).await,
                    Some(Err(e)) => match e.fault() {
                        // RFC 6455 fails the connection on invalid UTF-8 and
                        // the WebSocket layer enforces it: say why, then close.
                        ReadFault::BadUtf8 => {
                            let f = Frame::error(&ApiError::BadRequest("text frames must be valid UTF-8".into()), None);
                            let _ = out.send(vec![f]).await;
                            Outcome::Close(1007, "invalid UTF-8")
                        }
                        ReadFault::TooBig => Outcome::Close(1009, "message over 4096 bytes"),
                        ReadFault::Broken => return,
                    },
                    None => return,
                };
                match outcome {
                    Outcome::Reply(f) => {
                        if out.send(vec![f]).await.is_err() { return; }
                    }
                    Outcome::Nothing => {}
                    Outcome::Close(code, why) => {
                        let _ = out.close(code, why).await;
                        return;
                    }
                }
            }
            personal = s.member.personal.recv() => {
                match personal {
                    Some(Personal::Frame(f)) => {
                        if out.send(vec![f]).await.is_err() { return; }
                    }
                    Some(Personal::Close(code, why)) => {
                        let _ = out.close(code, why).await;
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
                if !frames.is_empty() && out.send(frames).await.is_err() {
                    return;
                }
            }
        }
    }
}

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

fn msg_len(m: &Message) -> usize {
    match m {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        _ => 0,
    }
}

pub fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
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

/// The socket's writing half: every write bounded by `timeout`, after which
/// the socket is taken for stuck (or gone) and ends.
struct Out<S> {
    sink: S,
    timeout: Duration,
}

impl<S: Sink<Message> + Unpin> Out<S> {
    /// Frames in one write, flushed once. Each is the room's shared bytes:
    /// no copy per socket.
    async fn send(&mut self, frames: Vec<Frame>) -> Result<(), ()> {
        FANOUT.0.increment(frames.len() as u64);
        FANOUT.1.increment(frames.iter().map(Frame::events).sum());
        let sink = &mut self.sink;
        let write = async {
            for f in frames {
                sink.feed(Message::Text(f.text)).await?;
            }
            sink.flush().await
        };
        Self::bounded(self.timeout, write).await
    }

    async fn close(&mut self, code: u16, reason: &'static str) -> Result<(), ()> {
        Self::bounded(self.timeout, self.sink.send(close(code, reason))).await
    }

    async fn ping(&mut self) -> Result<(), ()> {
        Self::bounded(
            self.timeout,
            self.sink.send(Message::Ping(Default::default())),
        )
        .await
    }

    async fn bounded<F, T>(timeout: Duration, write: F) -> Result<(), ()>
    where
        F: std::future::Future<Output = Result<(), T>>,
    {
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => Ok(()),
            // Stuck or gone: either way this socket is done.
            _ => Err(()),
        }
    }
}

impl Socket {
    async fn welcome(&mut self, since: Option<u64>) -> Result<Frame, ApiError> {
        let w = self.live.welcome(self.sale_id, since).await?;
        if let Some(last) = w.chat.last() {
            self.last_seq = self.last_seq.max(last.seq);
        }
        let viewers = self.member.room.viewers().max(1);
        Frame::welcome(&self.who, &w.sale, viewers, w.chat, w.slow_mode_secs)
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
                    out.push(Frame::lagged(skipped));
                    out.extend(self.member.room.stock_snapshot());
                    out.push(Frame::viewers(self.member.room.viewers()));
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

    fn bad(&mut self, message: impl Into<String>, reference: Option<&str>) -> Outcome {
        self.refuse(Frame::error(
            &ApiError::BadRequest(message.into()),
            reference,
        ))
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
        Outcome::Reply(frame)
    }

    async fn on_message(&mut self, msg: Message) -> Outcome {
        metrics::counter!("lychee_ws_frames_in_total").increment(1);
        let text = match msg {
            Message::Text(t) if t.len() <= MAX_MESSAGE => t,
            Message::Text(_) | Message::Binary(_) if msg_len(&msg) > MAX_MESSAGE => {
                return Outcome::Close(1009, "message over 4096 bytes")
            }
            Message::Binary(_) => return self.bad("send JSON text frames", None),
            Message::Text(_) => return Outcome::Close(1009, "message over 4096 bytes"),
            Message::Ping(_) | Message::Pong(_) => return Outcome::Nothing,
            Message::Close(_) => return Outcome::Close(1000, "bye"),
        };
        let request = match parse_client(text.as_str()) {
            Ok(m) => m,
            Err((msg, reference)) => return self.bad(msg, reference.as_deref()),
        };
        match self.handle(request).await {
            Ok(o) => o,
            Err((e, r)) => {
                let frame = Frame::error_body(e.body()["error"].clone(), r.as_deref());
                match e {
                    // Our fault, not the client's: no abuse.
                    ApiError::Unavailable(_) | ApiError::Internal(_) => Outcome::Reply(frame),
                    _ => self.refuse(frame),
                }
            }
        }
    }

    async fn handle(&mut self, request: Request) -> Result<Outcome, (ApiError, Option<String>)> {
        let plain = |e: LiveError| (ApiError::from(e), None);
        match request {
            Request::Ping(reference) => Ok(Outcome::Reply(Frame::pong(reference))),
            Request::Chat(text) => {
                // Not counted as abuse: the neighbours behind one NAT share it.
                // Given back unless posted, so refused messages do not drain it.
                let charge = self.limits.chat(self.ip).map_err(|e| (e, None))?;
                match self.live.post_chat(self.sale_id, &self.who, &text).await {
                    Ok(Ok(())) => {
                        charge.keep();
                        Ok(Outcome::Nothing)
                    }
                    Ok(Err(refusal)) => Ok(self.refuse(Frame::refusal(&refusal))),
                    Err(e) => Err(plain(e)),
                }
            }
            Request::Buy {
                sku,
                qty,
                reference,
                address_id,
            } => {
                if let Err(e) = self.limits.buy(&self.who.user_id, self.ip) {
                    return Err((e, Some(reference)));
                }
                let Ok(permit) = self.buys.clone().try_acquire_owned() else {
                    return Err((ApiError::RateLimited(1), Some(reference)));
                };
                let (live, who, me) = (self.live.clone(), self.who.clone(), self.member.me.clone());
                let sale_id = self.sale_id;
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
                    let f = match live.buy(&who, req).await {
                        Ok(json) => Frame::order(&reference, &json),
                        Err(e) => Frame::error_body(
                            ApiError::from(e).body()["error"].clone(),
                            Some(&reference),
                        ),
                    };
                    let _ = me.send(Personal::Frame(f)).await;
                    drop(permit);
                });
                Ok(Outcome::Nothing)
            }
            Request::Moderate(command) => {
                self.live
                    .moderate(self.sale_id, &self.who, command)
                    .await
                    .map_err(plain)?;
                Ok(Outcome::Nothing)
            }
        }
    }
}
