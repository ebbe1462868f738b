//! Fulfilment over REST: the packing list, shipments (JSON or the packing
//! house's CSV) and one order's moves.

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{parse_id, AppJson, AppPath, Auth};
use super::{AppState, MAX_BODY};
use crate::fulfilment::service::{csv_rows, ShipmentRow};
use crate::fulfilment::Fulfilment;

/// A shipments CSV may be this large (contract section 2); JSON keeps the
/// 64 KiB of every other body.
const MAX_CSV: usize = 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sales/{id}/packing.csv", get(packing))
        .route(
            "/sales/{id}/shipments",
            post(shipments).layer(DefaultBodyLimit::max(MAX_CSV)),
        )
        .route("/orders/{id}/fulfilment", post(move_one))
}

async fn packing(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "sale")?;
    state.catalog.managed(&who, id).await?;
    let ships_by = state
        .catalog
        .store()
        .products(id)
        .await?
        .into_iter()
        .filter_map(|p| Some((p.sku, p.ships_by?)))
        .collect();
    let stream = crate::fulfilment::packing::csv_stream(state.orders.store().clone(), id, ships_by);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"sale-{id}-packing.csv\""),
            ),
            // Full phones and addresses: no cache keeps them.
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Deserialize)]
struct ShipmentsBody {
    shipments: Vec<ShipmentRow>,
}

async fn shipments(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let sale_id = parse_id(&id, "sale")?;
    let body = body.map_err(|_| ApiError::PayloadTooLarge)?;
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let rows = match kind.as_str() {
        "text/csv" => csv_rows(&body).map_err(ApiError::BadRequest)?,
        "application/json" => {
            if body.len() > MAX_BODY {
                return Err(ApiError::PayloadTooLarge);
            }
            serde_json::from_slice::<ShipmentsBody>(&body)
                .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?
                .shipments
        }
        _ => return Err(ApiError::UnsupportedMediaType),
    };
    let outcome = state.shipping.ship_many(&who, sale_id, rows).await?;
    Ok(Json(outcome).into_response())
}

#[derive(Deserialize)]
struct MoveBody {
    status: Fulfilment,
}

async fn move_one(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<MoveBody>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "order")?;
    Ok(Json(state.shipping.move_one(&who, id, body.status).await?))
}
