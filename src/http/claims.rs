//! Claims over REST.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::extract::{parse_id, AppJson, AppPath, Auth};
use super::AppState;
use crate::claims::{NewClaim, Resolve};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/orders/{id}/claims", post(open))
        .route("/claims/{id}/resolve", post(resolve))
        .route("/sales/{id}/claims", get(of_sale))
}

async fn open(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<NewClaim>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "order")?;
    let claim = state.claims.open(&who, id, body).await?;
    Ok((StatusCode::CREATED, Json(claim)).into_response())
}

async fn resolve(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<Resolve>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "claim")?;
    Ok(Json(state.claims.resolve(&who, id, body).await?))
}

async fn of_sale(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "sale")?;
    Ok(Json(
        json!({ "claims": state.claims.of_sale(&who, id).await? }),
    ))
}
