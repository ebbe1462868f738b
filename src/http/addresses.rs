//! The buyer's address book over REST, and the province list its pages use.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::extract::{parse_id, AppJson, AppPath, Auth};
use super::AppState;
use crate::fulfilment::address::{provinces, NewAddress};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/me/addresses", get(list).post(create))
        .route("/me/addresses/{id}", delete(remove))
        .route("/provinces", get(province_list))
}

async fn create(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppJson(body): AppJson<NewAddress>,
) -> Result<impl IntoResponse, ApiError> {
    let address = state.addresses.create(&who, body).await?;
    Ok((StatusCode::CREATED, Json(address)))
}

async fn list(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> Result<impl IntoResponse, ApiError> {
    let addresses = state.addresses.list(&who).await?;
    // Personal data: no shared cache may keep it.
    Ok((
        [(header::CACHE_CONTROL, "private, no-store")],
        Json(json!({ "addresses": addresses })),
    ))
}

async fn remove(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id, "address")?;
    state.addresses.delete(&who, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The same for everyone and every release's lifetime: cacheable.
async fn province_list() -> impl IntoResponse {
    let list: Vec<provinces::Province> = provinces::all().collect();
    (
        [(header::CACHE_CONTROL, "public, max-age=86400")],
        Json(json!({ "provinces": list })),
    )
}
