//! Uploads over REST: a claim's photo in as raw bytes, and out again to
//! those who may see it.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::error::ApiError;
use super::extract::{parse_id, AppPath, Auth};
use super::AppState;
use crate::uploads::{UploadError, UploadMeta, Uploads, MAX_BYTES};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/uploads",
            // This route alone takes more than the 64 KiB every other body
            // is held to; the limit counts the bytes as they arrive, so a
            // larger body is cut off at 2 MiB, whatever Content-Length says.
            post(create).layer(DefaultBodyLimit::max(MAX_BYTES)),
        )
        .route("/uploads/{id}", get(read))
}

#[derive(Serialize)]
struct Created<'a> {
    #[serde(flatten)]
    meta: &'a UploadMeta,
    url: String,
}

/// The body is the image itself; its `Content-Type` header is not asked,
/// the bytes are.
async fn create(
    State(state): State<AppState>,
    Auth(who): Auth,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::from(UploadError::TooLarge)
        } else {
            ApiError::BadRequest(r.body_text())
        }
    })?;
    let meta = state.uploads.create(&who, body).await?;
    let url = Uploads::url(meta.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, url.clone())],
        Json(Created { meta: &meta, url }),
    )
        .into_response())
}

/// Served so that no browser runs it: its checked type, never sniffed, and
/// a policy that allows nothing should the bytes be a polyglot.
async fn read(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "upload")?;
    let upload = state.uploads.read(&who, id).await?;
    let kind = upload.meta.content_type;
    let disposition = format!("inline; filename=\"{id}.{}\"", kind.extension());
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(kind.mime())),
        (
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&disposition)
                .map_err(|e| ApiError::Internal(format!("content disposition: {e}")))?,
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        // The reader's own: shared caches must not keep another's photos.
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=3600"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; sandbox"),
        ),
    ];
    Ok((headers, upload.data).into_response())
}
