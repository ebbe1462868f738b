//! The accept loop. `axum::serve` has no timeouts, so a client that opens a
//! connection and never finishes its request (or never reads its response)
//! would hold a socket and a task forever; this loop gives hyper a timer for
//! its header deadline, gives every request body a deadline of its own,
//! wraps every socket in a write-stall timeout, and caps how many
//! connections the node, and one client address, may hold open.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::proxy::TrustedProxies;

/// How long slow or silent clients are given.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A request head must arrive whole within this of the connection opening
    /// or of the previous response: it drops slowloris clients and idle
    /// keep-alive connections alike (hyper uses one timer for both).
    pub header: Duration,
    /// A request body must arrive whole within this of its head; otherwise
    /// the answer is 408 and the connection closes. (A body trickled a byte
    /// at a time would hold a connection forever: hyper times only heads.)
    /// Responses are not timed by it: WebSockets and event streams live on.
    pub request: Duration,
    /// A write that cannot make progress for this long (the peer stopped
    /// reading, or is gone without a FIN) drops the connection, WebSockets
    /// and event streams included.
    pub write: Duration,
}

/// How many connections are let in, counted from accept to close (an
/// upgraded WebSocket holds its connection's place until it ends).
#[derive(Debug, Clone)]
pub struct Caps {
    /// In all: under the process's open-file limit, so accept never fails
    /// for lack of descriptors and Redis and PostgreSQL still get theirs.
    pub max_connections: usize,
    /// From one peer address, except trusted proxies (they carry everyone).
    pub max_connections_per_ip: usize,
    pub trusted_proxies: TrustedProxies,
}

/// Open connections get this long to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown`, then waits (up to `DRAIN`)
/// for the requests in flight. Upgraded WebSockets are not waited for here:
/// they watch `shutdown` themselves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    caps: Caps,
    shutdown: CancellationToken,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    let open = TaskTracker::new();
    let conns = Arc::new(Connections::new(caps));
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let slot = match conns.admit(addr.ip()) {
            Ok(slot) => slot,
            Err(reason) => {
                // Closed at once: no task, no buffers, no answer to wait for.
                metrics::counter!("lychee_http_connections_refused_total", "reason" => reason)
                    .increment(1);
                drop(tcp);
                continue;
            }
        };
        // Frames are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let mut io = TimeoutStream::new(tcp);
        io.set_write_timeout(Some(timeouts.write));
        let io = Counted {
            io: Box::pin(io),
            _slot: slot,
        };
        let conn = http
            .serve_connection(
                TokioIo::new(io),
                TowerToHyperService::new(RequestService::new(app.clone(), addr, timeouts.request)),
            )
            .with_upgrades();
        let shutdown = shutdown.clone();
        open.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = shutdown.cancelled() => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    open.close();
    if tokio::time::timeout(DRAIN, open.wait()).await.is_err() {
        tracing::warn!("connections still open after {DRAIN:?}; leaving them");
    }
}

/// Per-connection failures (the peer reset before accept) are the peer's
/// business; anything else (out of file descriptors) is retried after a pause
/// instead of spinning.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; pausing");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Open connections, in all and per peer address.
struct Connections {
    caps: Caps,
    // Short sections, no await: std mutex.
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl Connections {
    fn new(caps: Caps) -> Self {
        Connections {
            caps,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    /// A place for a connection from `peer`, or why not.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<ConnectionSlot, &'static str> {
        let peer = peer.to_canonical();
        let per_ip = !self.caps.trusted_proxies.contains(peer);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.0 >= self.caps.max_connections {
            return Err("node");
        }
        if per_ip {
            let mine = open.1.entry(peer).or_insert(0);
            if *mine >= self.caps.max_connections_per_ip {
                return Err("ip");
            }
            *mine += 1;
        }
        open.0 += 1;
        Ok(ConnectionSlot {
            conns: self.clone(),
            peer: per_ip.then_some(peer),
        })
    }
}

/// One connection's place, given back when it closes.
struct ConnectionSlot {
    conns: Arc<Connections>,
    /// `None` for a trusted proxy: not counted per address.
    peer: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.conns.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(peer) = self.peer {
            if let Some(n) = open.1.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    open.1.remove(&peer);
                }
            }
        }
    }
}

/// A connection's socket, holding its place: the place goes with the socket
/// into an upgraded WebSocket, and is given back when the socket closes.
struct Counted<T> {
    io: T,
    _slot: ConnectionSlot,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The router as one connection sees it: tells handlers the peer, and gives
/// each request body its deadline.
#[derive(Clone)]
struct RequestService {
    app: Router,
    peer: SocketAddr,
    timeout: Duration,
    /// Set when a body missed its deadline. One request at a time per
    /// HTTP/1 connection, and the connection closes after that answer, so
    /// one flag per connection is enough.
    expired: Arc<AtomicBool>,
}

impl RequestService {
    fn new(app: Router, peer: SocketAddr, timeout: Duration) -> Self {
        RequestService {
            app,
            peer,
            timeout,
            expired: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl tower::Service<Request<Incoming>> for RequestService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let deadline = Instant::now() + self.timeout;
        let expired = self.expired.clone();
        let req = req.map(|body| TimedBody {
            body,
            deadline,
            timer: None,
            expired: expired.clone(),
        });
        let answer = self.app.clone().oneshot(req);
        Box::pin(async move {
            let res = answer.await?;
            if expired.load(Ordering::Relaxed) {
                return Ok(request_timeout());
            }
            Ok(res)
        })
    }
}

/// 408 in the contract's error shape, and the connection closes: the rest
/// of the body is not worth waiting for.
fn request_timeout() -> Response {
    let body = serde_json::json!({ "error": {
        "code": "request_timeout",
        "message": "the request body did not arrive in time",
    }});
    let mut res = (StatusCode::REQUEST_TIMEOUT, axum::Json(body)).into_response();
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

/// A request body that fails once its deadline passes.
struct TimedBody<B> {
    body: B,
    deadline: Instant,
    /// Made on the first read of a body that has one: bodiless requests
    /// (most of them, WebSocket upgrades included) never arm a timer.
    timer: Option<Pin<Box<Sleep>>>,
    expired: Arc<AtomicBool>,
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if !this.body.is_end_stream() {
            let deadline = this.deadline;
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.as_mut().poll(cx).is_ready() {
                this.expired.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(BodyTimedOut.into())));
            }
        }
        Pin::new(&mut this.body).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
