//! HTTP: thin handlers that parse, authorize, call the domain and map errors.

mod addresses;
mod claims;
mod dashboard;
pub mod error;
pub mod extract;
mod fulfilment;
pub mod limits;
mod moderation;
mod orders;
mod payments;
pub mod proxy;
pub mod ratelimit;
mod sales;
pub mod server;
mod uploads;
mod ws;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::catalog::validate::StreamHosts;
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::dashboard::feed::Feeds;
use crate::hub::live::Live;
use crate::identity::signin::SigninCodes;
use crate::identity::TokenKeys;
use crate::orders::Orders;
use error::ApiError;
use ratelimit::RateLimiter;

/// The contract's cap on any request body.
pub const MAX_BODY: usize = 64 * 1024;

/// What every request shares. Cloned per request by axum's `State`: one
/// reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    /// Verifies bearer tokens and mints guest tokens.
    pub keys: Arc<TokenKeys>,
    /// Sales and products, with live counts.
    pub catalog: Arc<Catalog>,
    /// The buy path, payments and order reads.
    pub orders: Arc<Orders>,
    /// Whether `POST /api/v1/guests` is open.
    pub guests: bool,
    /// Guest sign-ups per IP, so one client cannot mint tokens by the thousand.
    pub guest_limiter: Arc<RateLimiter<Option<IpAddr>>>,
    /// One-time codes of the embedded banner's sign-in links (empty, so
    /// every code is refused, in production).
    pub signin: Arc<SigninCodes>,
    /// Sign-in attempts per IP, as guests, so codes cannot be tried in bulk.
    pub signin_limiter: Arc<RateLimiter<Option<IpAddr>>>,
    /// Buy rate per user and per IP, socket caps.
    pub limits: Arc<limits::Limits>,
    /// Browser origins allowed by CORS; empty: CORS off.
    pub cors_origins: Vec<String>,
    /// Hosts a sale's `stream_url` may point at: checked on create, and the
    /// pages' CSP `frame-src`.
    pub stream_hosts: Arc<StreamHosts>,
    /// Domain time (tests move it).
    pub clock: Arc<Clock>,
    /// The dashboard's snapshots, one per sale and second on this node for
    /// all its streams, and the per-user cap on those streams.
    pub dashboards: Arc<Feeds>,
    /// The live rooms: WebSocket fan-out and chat.
    pub live: Arc<Live>,
    /// Payments through providers, refunds, reconciliation.
    pub payments: Arc<crate::payments::Payments>,
    /// Packing lists, shipments, delivery.
    pub shipping: Arc<crate::fulfilment::service::Shipping>,
    /// The buyers' address books: their REST endpoints, and where a buy
    /// finds the address it ships to.
    pub addresses: Arc<crate::fulfilment::address::AddressBook>,
    /// Claims' photos: their upload, check and reading (`Uploads::attach`
    /// is for claims).
    pub uploads: Arc<crate::uploads::Uploads>,
    /// After-sales claims: opened by buyers, settled by hosts.
    pub claims: Arc<crate::claims::Claims>,
}

pub fn app(state: AppState) -> Router {
    let cors = cors(&state.cors_origins);
    let router = Router::new()
        .nest(
            "/api/v1",
            sales::router()
                .merge(orders::router())
                .merge(moderation::router())
                .merge(payments::router())
                .merge(fulfilment::router())
                .merge(claims::router())
                .merge(addresses::router())
                .merge(uploads::router())
                .route("/sales/{id}/live", get(ws::live))
                .route("/sales/{id}/dashboard", get(dashboard::stream)),
        )
        .merge(payments::sandbox_router())
        .route("/metrics", get(dashboard::metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::web::router(crate::web::Policy::new(
            &state.stream_hosts,
        )))
        // After routing, so the span is named by the matched route.
        .route_layer(axum::middleware::from_fn(request_span))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state);
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// Every request's span: its matched route (never the raw path, which may
/// carry a query with a token), the route's ids and, once authenticated,
/// the user (`extract::AuthUntil` records it). A log line inside a handler,
/// an internal error's included, carries them.
async fn request_span(
    params: axum::extract::RawPathParams,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    // Borrowed and shared, not copied: this runs on every buy.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let id = params.iter().find(|(k, _)| *k == "id").map(|(_, v)| v);
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        route = route.as_ref().map_or("", |r| r.as_str()),
        id = id.unwrap_or(""),
        user = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let res = next.run(req).instrument(span.clone()).await;
    span.record("status", res.status().as_u16());
    res
}

/// CORS for an explicit list of origins, off when the list is empty.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{header, HeaderName, HeaderValue, Method};
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| match HeaderValue::from_str(o.trim()) {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(origin = %o, "not a valid origin; ignored");
                None
            }
        })
        .collect();
    if allowed.is_empty() {
        return None;
    }
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(allowed)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([header::RETRY_AFTER]),
    )
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when both stores answer; a load balancer stops sending traffic otherwise.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let db = state.catalog.store().ping().await.is_ok();
    let live = state.orders.inventory().ping().await.is_ok();
    let status = if db && live {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({ "database": db, "inventory": live })),
    )
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> impl IntoResponse {
    let err = ApiError::BadRequest("method not allowed on this endpoint".into());
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(err.body()))
}
