//! The operators' live numbers: an SSE stream per sale, and `/metrics`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures_util::Stream;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{parse_id, AppPath, Auth};
use super::AppState;
use crate::dashboard::{LatencyFigures, ProductFigures, Snapshot};

/// `GET /api/v1/sales/{id}/dashboard`: one `data:` JSON a second.
pub async fn stream(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let sale_id = parse_id(&id, "sale")?;
    state.catalog.managed(&who, sale_id).await?;
    let stream = futures_util::stream::unfold(
        (state, tokio::time::interval(Duration::from_secs(1))),
        move |(state, mut tick)| async move {
            tick.tick().await;
            let event = match snapshot(&state, sale_id).await {
                Ok(s) => Event::default().json_data(&s).unwrap_or_default(),
                // A missed second, not the end of the stream.
                Err(e) => Event::default().event("error").data(e.to_string()),
            };
            Some((Ok(event), (state, tick)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The last complete second of the sale, summed over every node.
async fn snapshot(state: &AppState, sale_id: Uuid) -> Result<Snapshot, ApiError> {
    let now = state.clock.now_ms();
    let second = now.div_euclid(1000) - 1;
    let figures = state
        .live
        .stats
        .store()
        .read(sale_id, second)
        .await
        .map_err(|e| ApiError::Unavailable(format!("dashboard figures unavailable: {e}")))?;
    let viewers = state
        .live
        .presence
        .total(sale_id, now)
        .await
        .map_err(|e| ApiError::Unavailable(format!("viewer counts unavailable: {e}")))?;
    let sale = state.catalog.sale(sale_id).await?;
    let gmv_cents = state.orders.store().gmv(sale_id).await?;
    Ok(Snapshot {
        ts: now,
        viewers,
        chat_per_sec: figures.chat,
        buy_attempts_per_sec: figures.buy_attempts,
        orders_per_sec: figures.orders,
        gmv_cents,
        products: sale
            .products
            .iter()
            .map(|p| ProductFigures {
                sku: p.sku.clone(),
                remaining: p.remaining,
                reserved: p.reserved,
                sold: p.sold,
            })
            .collect(),
        buy_latency_ms: LatencyFigures {
            p50: figures.latency_quantile(0.5),
            p99: figures.latency_quantile(0.99),
        },
    })
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
