//! Buying, paying, cancelling, reading orders, and the CSV export.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{parse_id, AppJson, AppPath, Auth, ClientIp};
use super::AppState;
use crate::orders::export::csv_stream;
use crate::orders::service::BuyRequest;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sales/{id}/orders", post(buy))
        .route("/sales/{id}/orders.csv", get(export_csv))
        .route("/orders/{id}", get(get_order))
        .route("/orders/{id}/pay", post(pay))
        .route("/orders/{id}/cancel", post(cancel))
        .route("/orders/{id}/address", put(attach_address))
        .route("/me/orders", get(my_orders))
}

#[derive(Deserialize)]
struct BuyBody {
    sku: String,
    qty: i64,
    /// Ships to this address of the buyer's book (else its default).
    address_id: Option<uuid::Uuid>,
}

async fn buy(
    State(state): State<AppState>,
    Auth(who): Auth,
    ClientIp(ip): ClientIp,
    AppPath(id): AppPath<String>,
    headers: HeaderMap,
    AppJson(body): AppJson<BuyBody>,
) -> Result<Response, ApiError> {
    let sale_id = parse_id(&id, "sale")?;
    state.limits.buy(&who.user_id, ip)?;
    let key = headers
        .get("idempotency-key")
        .ok_or_else(|| ApiError::BadRequest("the Idempotency-Key header is required".into()))?
        .to_str()
        .map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))?;
    let req = BuyRequest {
        sale_id,
        key: key.to_owned(),
        sku: body.sku,
        qty: body.qty,
        address_id: body.address_id,
    };
    let json = state.orders.buy(&who, req).await?;
    // The stored bytes as first sent: a replay is byte-for-byte the same.
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        json,
    )
        .into_response())
}

async fn get_order(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "order")?;
    let order = state.orders.get(&who, id).await?;
    Ok(Json(state.claims.with_claims(order).await?))
}

#[derive(Deserialize)]
struct PayBody {
    payment_ref: String,
    note: Option<String>,
}

async fn pay(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<PayBody>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "order")?;
    Ok(Json(
        state
            .orders
            .confirm_manual(&who, id, &body.payment_ref, body.note.as_deref())
            .await?,
    ))
}

#[derive(Deserialize)]
struct AddressBody {
    address_id: uuid::Uuid,
}

async fn attach_address(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<AddressBody>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "order")?;
    Ok(Json(
        state
            .orders
            .attach_address(&who, id, body.address_id)
            .await?,
    ))
}

async fn cancel(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "order")?;
    let order = state.orders.cancel(&who, id).await?;
    state.payments.close_pending(id).await;
    Ok(Json(order))
}

async fn my_orders(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> Result<impl IntoResponse, ApiError> {
    let mut orders = Vec::new();
    for o in state.orders.mine(&who).await? {
        orders.push(state.claims.with_claims(o).await?);
    }
    Ok(Json(serde_json::json!({ "orders": orders })))
}

async fn export_csv(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "sale")?;
    state.catalog.managed(&who, id).await?;
    let stream = csv_stream(state.orders.store().clone(), id);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"sale-{id}-orders.csv\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
