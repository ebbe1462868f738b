//! Extractors that turn every rejection into the contract's error format.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;
use crate::identity::{Identity, IdentityError};

/// `Json` whose rejections are ours: 400, 413 or 415, never plain text.
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(AppJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
        _ => ApiError::BadRequest(match r {
            JsonRejection::JsonDataError(e) => format!("invalid body: {}", e.body_text()),
            JsonRejection::JsonSyntaxError(_) => "the body is not valid JSON".into(),
            other => other.body_text(),
        }),
    }
}

/// A path whose segments fail to decode is a bad request, in our format.
pub struct AppPath<T>(pub T);

impl<T, S> FromRequestParts<S> for AppPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| AppPath(p.0))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// A query string that does not parse is a bad request, in our format.
pub struct AppQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for AppQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| AppQuery(q.0))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// The caller, from `Authorization: Bearer <token>`; 401 otherwise.
pub struct Auth(pub Identity);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let AuthUntil(who, _) = AuthUntil::from_request_parts(parts, state).await?;
        Ok(Auth(who))
    }
}

/// The caller and when its token expires: for streams that must end then.
pub struct AuthUntil(pub Identity, pub chrono::DateTime<chrono::Utc>);

impl FromRequestParts<AppState> for AuthUntil {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_header(&parts.headers).ok_or(IdentityError::Missing)?;
        let (who, until) = state.keys.verify_until(token)?;
        tracing::Span::current().record("user", who.user_id.as_str());
        Ok(AuthUntil(who, until))
    }
}

pub fn bearer_header(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The client's address: the peer's, or behind a trusted proxy the one it
/// forwarded (`proxy::TrustedProxies::client`). Absent in oneshot tests.
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| {
                state
                    .limits
                    .trusted_proxies
                    .client(c.0.ip(), &parts.headers)
            }),
        ))
    }
}

/// Parses an id from the path; a malformed one names nothing that exists.
pub fn parse_id(raw: &str, what: &str) -> Result<uuid::Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound(format!("{what} not found")))
}
