//! Bans over REST: the same as the socket's `ban` and `unban`.

use axum::extract::State;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{parse_id, AppJson, AppPath, Auth};
use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sales/{id}/bans", get(list).post(ban))
        .route("/sales/{id}/bans/{user_id}", delete(unban))
}

#[derive(Deserialize)]
struct BanBody {
    user_id: String,
}

/// Every answer is the sale's bans as they now stand.
async fn answer(
    state: &AppState,
    who: &crate::identity::Identity,
    id: uuid::Uuid,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bans = state.live.moderation.bans(who, id).await?;
    Ok(Json(serde_json::json!({ "bans": bans })))
}

async fn list(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&id, "sale")?;
    answer(&state, &who, id).await
}

async fn ban(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<BanBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&id, "sale")?;
    state.live.moderation.ban(&who, id, &body.user_id).await?;
    answer(&state, &who, id).await
}

async fn unban(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath((id, user_id)): AppPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&id, "sale")?;
    state.live.moderation.unban(&who, id, &user_id).await?;
    answer(&state, &who, id).await
}
