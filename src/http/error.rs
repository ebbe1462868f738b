//! The contract's errors: every failure becomes `{"error": {"code", "message"}}`
//! with its status, here and nowhere else.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::catalog::service::CatalogError;
use crate::claims::ClaimError;
use crate::fulfilment::address::AddressError;
use crate::identity::IdentityError;
use crate::inventory::{InventoryError, Rejection};
use crate::orders::rebuild::RebuildError;
use crate::orders::OrderError;
use crate::payments::PaymentError;
use crate::store::StoreError;
use crate::uploads::UploadError;

/// Every `code` a client may see, REST and WebSocket (contract sections 2
/// and 6): the pages have a message for each in every language, and a test
/// in `src/web` fails when one is missing here or there.
pub const ERROR_CODES: &[&str] = &[
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "sold_out",
    "limit_exceeded",
    "not_on_sale",
    "sale_not_live",
    "duplicate_sku",
    "reservation_expired",
    "invalid_state",
    "undeliverable",
    "address_required",
    "banned",
    "payload_too_large",
    "unsupported_media_type",
    "idempotency_mismatch",
    "rate_limited",
    "unavailable",
    "internal",
    "muted",
    "slow_mode",
    "invalid_message",
];

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        extra: Map<String, Value>,
    },
    #[error("you are banned from this sale")]
    Banned,
    #[error("the request body exceeds 64 KiB")]
    PayloadTooLarge,
    #[error("send the body as JSON with Content-Type: application/json")]
    UnsupportedMediaType,
    /// 413 `payload_too_large` naming the limit of a route that takes more
    /// than 64 KiB (an upload).
    #[error("{0}")]
    TooLarge(String),
    /// 415 `unsupported_media_type` for a body that is not JSON by design,
    /// saying what the route accepts (an upload's image types).
    #[error("{0}")]
    UnsupportedMedia(String),
    #[error("this Idempotency-Key was used with another body")]
    IdempotencyMismatch,
    #[error("too many requests; retry after {0} s")]
    RateLimited(u64),
    #[error("{0}")]
    Unavailable(String),
    /// A chat or announcement text the room's rules refuse.
    #[error("{0}")]
    InvalidMessage(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidMessage(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::Banned => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge | ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType | ApiError::UnsupportedMedia(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidMessage(_) => "invalid_message",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict { code, .. } => code,
            ApiError::Banned => "banned",
            ApiError::PayloadTooLarge | ApiError::TooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType | ApiError::UnsupportedMedia(_) => {
                "unsupported_media_type"
            }
            ApiError::IdempotencyMismatch => "idempotency_mismatch",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The JSON body: also what a WebSocket `error` event carries.
    pub fn body(&self) -> Value {
        let message = match self {
            // The cause stays in the log.
            ApiError::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        let mut error = Map::new();
        error.insert("code".into(), self.code().into());
        error.insert("message".into(), message.into());
        if let ApiError::Conflict { extra, .. } = self {
            error.extend(extra.clone());
        }
        json!({ "error": error })
    }

    fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Conflict {
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(cause) => tracing::error!(%cause, "internal error"),
            ApiError::Unavailable(cause) => tracing::warn!(%cause, "unavailable"),
            _ => {}
        }
        let mut res = (self.status_code(), axum::Json(self.body())).into_response();
        if let ApiError::RateLimited(secs) = self {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::SaleNotLive => ApiError::conflict("sale_not_live", "the sale is not live"),
            Rejection::NotOnSale => {
                ApiError::conflict("not_on_sale", "this product is not on sale")
            }
            Rejection::SoldOut => ApiError::conflict("sold_out", "fewer left than asked"),
            Rejection::LimitExceeded { bought, limit } => {
                let mut extra = Map::new();
                extra.insert("bought".into(), bought.into());
                extra.insert("limit".into(), limit.into());
                ApiError::Conflict {
                    code: "limit_exceeded",
                    message: format!("at most {limit} per buyer; you hold {bought}"),
                    extra,
                }
            }
            Rejection::Banned => ApiError::Banned,
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Missing | IdentityError::Invalid | IdentityError::UnknownRole => {
                ApiError::Unauthorized(e.to_string())
            }
            IdentityError::BadSubject | IdentityError::BadName => {
                ApiError::BadRequest(e.to_string())
            }
            IdentityError::Signing => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if matches!(
            e,
            StoreError::Unavailable(_) | StoreError::Database(_) | StoreError::Conflict(_)
        ) {
            metrics::counter!("lychee_db_errors_total").increment(1);
        }
        match e {
            StoreError::Unavailable(_) => {
                ApiError::Unavailable("the database is unavailable".into())
            }
            StoreError::Duplicate => ApiError::conflict("invalid_state", "already exists"),
            StoreError::Conflict(_) => {
                ApiError::Unavailable("the database is busy; try again".into())
            }
            // Validation should have caught it: say what, not the database's words.
            StoreError::Refused(e) => {
                tracing::warn!(error = %e, "the database refused a value");
                ApiError::BadRequest("a value was refused; check the text for control characters and the dates' range".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<InventoryError> for ApiError {
    fn from(e: InventoryError) -> Self {
        match e {
            InventoryError::Unavailable(_) => {
                metrics::counter!("lychee_redis_errors_total").increment(1);
                tracing::warn!(error = %e, "inventory unavailable");
                ApiError::Unavailable("live stock is unavailable; try again".into())
            }
            InventoryError::Protocol(p) => ApiError::Internal(p),
        }
    }
}

impl From<crate::hub::chat::ChatError> for ApiError {
    fn from(e: crate::hub::chat::ChatError) -> Self {
        match e {
            crate::hub::chat::ChatError::Unavailable(_) => {
                metrics::counter!("lychee_redis_errors_total").increment(1);
                tracing::warn!(error = %e, "chat unavailable");
                ApiError::Unavailable("chat is unavailable; try again".into())
            }
            crate::hub::chat::ChatError::Protocol(p) => ApiError::Internal(p),
        }
    }
}

impl From<crate::hub::moderation::ModerationError> for ApiError {
    fn from(e: crate::hub::moderation::ModerationError) -> Self {
        use crate::hub::moderation::ModerationError as M;
        match e {
            M::Forbidden(why) => ApiError::Forbidden(why.into()),
            M::BadUser => ApiError::BadRequest(e.to_string()),
            M::Catalog(e) => e.into(),
            M::Chat(e) => e.into(),
            M::Inventory(e) => e.into(),
            M::Orders(e) => e.into(),
        }
    }
}

impl From<crate::hub::live::LiveError> for ApiError {
    fn from(e: crate::hub::live::LiveError) -> Self {
        use crate::hub::live::LiveError as L;
        match e {
            L::NotFound(_) => ApiError::NotFound(e.to_string()),
            L::Forbidden => ApiError::Forbidden(e.to_string()),
            L::BadRequest(m) => ApiError::BadRequest(m),
            L::InvalidText(why) => ApiError::InvalidMessage(why.to_owned()),
            L::Rebuilding => ApiError::Unavailable("the sale is being rebuilt".into()),
            L::Catalog(e) => e.into(),
            L::Chat(e) => e.into(),
            L::Moderation(e) => e.into(),
            L::Rebuild(e) => e.into(),
        }
    }
}

impl From<RebuildError> for ApiError {
    fn from(e: RebuildError) -> Self {
        match e {
            RebuildError::Store(e) => e.into(),
            RebuildError::Inventory(e) => e.into(),
            RebuildError::Busy => {
                ApiError::Unavailable("the sale is being rebuilt; try again".into())
            }
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Invalid(m) => ApiError::BadRequest(m),
            CatalogError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            CatalogError::Forbidden => {
                ApiError::Forbidden("only the sale's host or an operator may do this".into())
            }
            CatalogError::InvalidState(m) => ApiError::conflict("invalid_state", m),
            CatalogError::SaleNotLive => {
                ApiError::conflict("sale_not_live", "the sale is not live")
            }
            CatalogError::DuplicateSku => {
                ApiError::conflict("duplicate_sku", "this SKU already exists in the sale")
            }
            CatalogError::Store(e) => e.into(),
            CatalogError::Inventory(e) => e.into(),
            CatalogError::Rebuild(e) => e.into(),
        }
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::Invalid(m) => ApiError::BadRequest(m),
            OrderError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            OrderError::Forbidden => ApiError::Forbidden("not your order".into()),
            e @ OrderError::HostConfirms => ApiError::Forbidden(e.to_string()),
            OrderError::Rejected(r) => r.into(),
            OrderError::IdempotencyMismatch => ApiError::IdempotencyMismatch,
            OrderError::ReservationExpired => {
                ApiError::conflict("reservation_expired", "the reservation has expired")
            }
            OrderError::InvalidState(m) => ApiError::conflict("invalid_state", m),
            e @ (OrderError::Undeliverable | OrderError::AddressRequired) => {
                ApiError::conflict(e.code(), e.to_string())
            }
            OrderError::Unavailable(m) => ApiError::Unavailable(m.into()),
            OrderError::Catalog(e) => e.into(),
            OrderError::Store(e) => e.into(),
            OrderError::Inventory(e) => e.into(),
            OrderError::Rebuild(e) => e.into(),
        }
    }
}

impl From<PaymentError> for ApiError {
    fn from(e: PaymentError) -> Self {
        match e {
            PaymentError::Invalid(m) => ApiError::BadRequest(m),
            PaymentError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            PaymentError::Forbidden => ApiError::Forbidden("not yours".into()),
            PaymentError::InvalidState(m) => ApiError::conflict("invalid_state", m),
            PaymentError::ReservationExpired => {
                ApiError::conflict("reservation_expired", "the reservation has expired")
            }
            PaymentError::IdempotencyMismatch => ApiError::IdempotencyMismatch,
            // The provider's own words can name internals: they stay in the log.
            PaymentError::Provider(e) => {
                tracing::warn!(error = %e, "payment provider call failed");
                ApiError::Unavailable("the payment provider is not answering; try again".into())
            }
            PaymentError::Store(e) => e.into(),
            PaymentError::Order(e) => e.into(),
        }
    }
}

impl From<AddressError> for ApiError {
    fn from(e: AddressError) -> Self {
        match e {
            AddressError::Invalid(m) => ApiError::BadRequest(m),
            AddressError::NotFound => ApiError::NotFound(e.to_string()),
            AddressError::Full => ApiError::conflict("invalid_state", e.to_string()),
            AddressError::Store(e) => e.into(),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        match e {
            e @ UploadError::TooLarge => ApiError::TooLarge(e.to_string()),
            UploadError::Unsupported(m) => ApiError::UnsupportedMedia(m),
            UploadError::Invalid(m) => ApiError::BadRequest(m),
            e @ UploadError::UnknownPhoto => ApiError::BadRequest(e.to_string()),
            e @ UploadError::NotFound => ApiError::NotFound(e.to_string()),
            e @ (UploadError::TooManyUnattached | UploadError::AlreadyAttached) => {
                ApiError::conflict("invalid_state", e.to_string())
            }
            UploadError::RateLimited(secs) => ApiError::RateLimited(secs),
            UploadError::Store(e) => e.into(),
            UploadError::Orders(e) => e.into(),
        }
    }
}

impl From<ClaimError> for ApiError {
    fn from(e: ClaimError) -> Self {
        match e {
            ClaimError::Invalid(m) => ApiError::BadRequest(m),
            ClaimError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            ClaimError::Forbidden => ApiError::Forbidden("not yours".into()),
            ClaimError::InvalidState(m) => ApiError::conflict("invalid_state", m),
            ClaimError::Store(e) => e.into(),
            ClaimError::Order(e) => e.into(),
            ClaimError::Payment(e) => e.into(),
            ClaimError::Upload(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The buy path counts its outcomes by `OrderError::code`: the answer
    /// must carry the same code, whatever layer the error came from.
    #[test]
    fn an_order_error_answers_with_the_code_metrics_count() {
        let store = || {
            [
                StoreError::Unavailable("down".into()),
                StoreError::Database("x".into()),
                StoreError::Corrupt("x".into()),
                StoreError::Duplicate,
                StoreError::Conflict("x".into()),
                StoreError::Refused("x".into()),
            ]
        };
        let inventory = || {
            [
                InventoryError::Unavailable("x".into()),
                InventoryError::Protocol("x".into()),
            ]
        };
        let mut errors = vec![
            OrderError::Invalid("x".into()),
            OrderError::NotFound("order"),
            OrderError::Forbidden,
            OrderError::HostConfirms,
            OrderError::Rejected(Rejection::SaleNotLive),
            OrderError::Rejected(Rejection::NotOnSale),
            OrderError::Rejected(Rejection::SoldOut),
            OrderError::Rejected(Rejection::LimitExceeded {
                bought: 1,
                limit: 1,
            }),
            OrderError::Rejected(Rejection::Banned),
            OrderError::IdempotencyMismatch,
            OrderError::ReservationExpired,
            OrderError::InvalidState("x"),
            OrderError::Undeliverable,
            OrderError::AddressRequired,
            OrderError::Unavailable("x"),
            OrderError::Rebuild(RebuildError::Busy),
            OrderError::Catalog(CatalogError::Invalid("x".into())),
            OrderError::Catalog(CatalogError::NotFound("sale")),
            OrderError::Catalog(CatalogError::Forbidden),
            OrderError::Catalog(CatalogError::InvalidState("x")),
            OrderError::Catalog(CatalogError::SaleNotLive),
            OrderError::Catalog(CatalogError::DuplicateSku),
            OrderError::Catalog(CatalogError::Rebuild(RebuildError::Busy)),
        ];
        errors.extend(store().map(OrderError::Store));
        errors.extend(store().map(|e| OrderError::Catalog(CatalogError::Store(e))));
        errors.extend(store().map(|e| OrderError::Rebuild(RebuildError::Store(e))));
        errors.extend(inventory().map(OrderError::Inventory));
        errors.extend(inventory().map(|e| OrderError::Catalog(CatalogError::Inventory(e))));
        errors.extend(inventory().map(|e| OrderError::Rebuild(RebuildError::Inventory(e))));
        for e in errors {
            let counted = e.code();
            let shown = format!("{e:?}");
            let answered = ApiError::from(e).code();
            assert_eq!(answered, counted, "{shown}");
            assert!(ERROR_CODES.contains(&counted), "{counted} is not listed");
        }
    }
}
