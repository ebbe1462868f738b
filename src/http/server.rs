//! The accept loop. `axum::serve` has no timeouts, so a client that opens a
//! connection and never finishes its request (or never reads its response)
//! would hold a socket and a task forever; this loop gives hyper a timer for
//! its header deadline and wraps every socket in a write-stall timeout.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long slow or silent clients are given.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A request head must arrive whole within this of the connection opening
    /// or of the previous response: it drops slowloris clients and idle
    /// keep-alive connections alike (hyper uses one timer for both).
    pub header: Duration,
    /// A write that cannot make progress for this long (the peer stopped
    /// reading, or is gone without a FIN) drops the connection, WebSockets
    /// and event streams included.
    pub write: Duration,
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
    shutdown: CancellationToken,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    let open = TaskTracker::new();
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
        // Frames are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let mut io = TimeoutStream::new(tcp);
        io.set_write_timeout(Some(timeouts.write));
        let svc = app.clone().map_request(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(addr));
            req
        });
        let conn = http
            .serve_connection(TokioIo::new(Box::pin(io)), TowerToHyperService::new(svc))
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
