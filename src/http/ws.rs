//! `GET /api/v1/sales/{id}/live`: checks before the upgrade, then the
//! socket (`ws::socket`) serves the live room.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{parse_id, AppPath, AppQuery, ClientIp};
use super::AppState;
use crate::identity::IdentityError;
use crate::ws::socket::{self, Opened};

/// Client messages are small (4 KiB at most); the default is 128 KiB.
const READ_BUFFER: usize = 4096;

#[derive(Deserialize)]
pub struct LiveQuery {
    access_token: Option<String>,
    since: Option<u64>,
}

pub async fn live(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
    AppQuery(q): AppQuery<LiveQuery>,
    headers: HeaderMap,
    ClientIp(ip): ClientIp,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let sale_id = parse_id(&id, "sale")?;
    let token = super::extract::bearer_header(&headers)
        .or(q.access_token.as_deref())
        .ok_or(IdentityError::Missing)?;
    let (who, expires_at) = state.keys.verify_until(token)?;
    let upgrade = upgrade.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    // A ban never keeps out whoever may manage the sale (404 for no sale).
    if !state.live.may_manage(sale_id, &who).await?
        && state
            .live
            .moderation
            .inventory
            .is_banned(sale_id, &who.user_id)
            .await?
    {
        return Err(ApiError::Banned);
    }
    state.live.moderation.seen(&who).await;
    // Refused before the upgrade (503): a full node, a user with too many
    // tabs, or one address (guests sooner) holding too many sockets.
    let slot = state.limits.socket(&who, ip)?;
    let since = q.since;
    Ok(upgrade
        // Larger than the contract's 4 KiB so we can close with 1009 ourselves.
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        // Small buffers: thousands of mostly idle sockets per node. Writes go
        // out at once; batching happens before, in `send`.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |ws| async move {
            let _slot = slot;
            let (sink, stream) = ws.split();
            let opened = Opened {
                live: state.live.clone(),
                limits: state.limits.clone(),
                who,
                expires_at,
                ip,
                sale_id,
                since,
            };
            socket::run(sink, stream, opened).await;
        })
        .into_response())
}
