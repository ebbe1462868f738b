//! The operators' live numbers: an SSE stream per sale, and `/metrics`.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures_util::Stream;

use super::error::ApiError;
use super::extract::{parse_id, AppPath, AuthUntil};
use super::AppState;
use crate::dashboard::feed::Frame;

/// A user over the stream cap may retry after this (a closed tab's stream
/// is noticed at its next second).
const RETRY_STREAM_SECS: u64 = 5;

/// `GET /api/v1/sales/{id}/dashboard`: one `data:` JSON a second, the
/// node's shared snapshot of the sale (see `dashboard::feed`).
pub async fn stream(
    State(state): State<AppState>,
    AuthUntil(who, expires_at): AuthUntil,
    AppPath(id): AppPath<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let sale_id = parse_id(&id, "sale")?;
    state.catalog.managed(&who, sale_id).await?;
    let subscription = state
        .dashboards
        .subscribe(&who.user_id, sale_id)
        .map_err(|_| ApiError::RateLimited(RETRY_STREAM_SECS))?;
    // The stream lives no longer than the token it was opened with: its last
    // event says so, and the page signs in again.
    let left = (expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    let expiry = Box::pin(tokio::time::sleep(left));
    let stream = futures_util::stream::unfold(Some((subscription, expiry)), |open| async move {
        let (mut sub, mut expiry) = open?;
        loop {
            let changed = tokio::select! {
                changed = sub.frames.changed() => changed,
                _ = expiry.as_mut() => {
                    let end = Event::default().event("expired").data("token expired: sign in again");
                    return Some((Ok(end), None));
                }
            };
            // Ends with the feed (shutdown); a frame skipped by a slow
            // client is simply replaced by the newer one.
            changed.ok()?;
            let frame = sub.frames.borrow_and_update().clone();
            let event = match frame {
                Some(Frame::Data(json)) => Event::default().data(&*json),
                // A missed second, not the end of the stream.
                Some(Frame::Error(e)) => Event::default().event("error").data(&*e),
                None => continue,
            };
            return Some((Ok(event), Some((sub, expiry))));
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// `GET /metrics`: Prometheus text of this node.
pub async fn metrics() -> impl IntoResponse {
    let body = crate::dashboard::metrics::handle()
        .map(|h| h.render())
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}
