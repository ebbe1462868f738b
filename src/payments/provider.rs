//! What every payment provider does, in the provider's own wire format and
//! signature scheme behind one trait: the service above it knows no gateway.

use async_trait::async_trait;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Our payment id as the provider's merchant order number (`out_trade_no`):
/// 32 hex digits fit WeChat Pay's `[A-Za-z0-9_-|*]{6,32}` and Alipay's 64.
pub fn trade_no(payment_id: Uuid) -> String {
    payment_id.simple().to_string()
}

/// The inverse of [`trade_no`]; `None` for a number we never issued.
pub fn parse_trade_no(s: &str) -> Option<Uuid> {
    if s.len() != 32 {
        return None;
    }
    Uuid::try_parse(s).ok()
}

/// A payment to open at the provider.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    /// What the buyer sees in its wallet (the product's name).
    pub description: String,
    pub amount_cents: i64,
    pub currency: String,
    /// The provider closes the payment at this instant (the reservation's end).
    pub expires_at: DateTime<Utc>,
    /// Where the provider sends its callback: `{public_url}/api/v1/payments/{name}/notify`.
    pub notify_url: String,
    /// Where the buyer's browser returns after paying (Alipay's `return_url`).
    pub return_url: String,
    /// How the buyer pays, as it asked (`POST /orders/{id}/payments`).
    pub scene: Scene,
}

/// The buyer's situation, which decides the provider's product.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scene {
    /// A phone browser: WeChat Pay Native QR code (`code_url`) / Alipay WAP pay.
    #[default]
    Mobile,
    /// A desktop browser: WeChat Pay Native QR code / Alipay page pay.
    Desktop,
    /// Inside WeChat (official account or mini program) with the buyer's
    /// `openid`: JSAPI prepay, paid with `wx.requestPayment(params)`.
    WeChat { openid: String },
}

/// Where the buyer goes (or what its wallet SDK needs) to pay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Checkout {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<serde_json::Value>,
}

/// A payment the provider opened.
#[derive(Debug, Clone)]
pub struct Started {
    pub checkout: Checkout,
}

/// What the provider says about one payment, from a callback or a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentReport {
    /// Our payment id (the `out_trade_no` it names).
    pub payment_id: Uuid,
    /// The provider's transaction id; absent while nothing was paid.
    pub provider_txn_id: Option<String>,
    pub outcome: PayOutcome,
    /// In cents (fen), as the provider reports it.
    pub amount_cents: i64,
    pub currency: String,
    /// The merchant (WeChat Pay `mchid`, Alipay `app_id`) the payment went to.
    pub merchant: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayOutcome {
    /// The money was taken.
    Succeeded,
    /// Not paid yet (the buyer may still pay).
    Pending,
    /// Closed, revoked or failed: it will not be paid.
    Failed,
    /// Paid and (partly or wholly) refunded since: it was paid.
    Refunded,
}

/// A refund to send through the provider.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub refund_id: Uuid,
    pub payment_id: Uuid,
    pub provider_txn_id: Option<String>,
    pub amount_cents: i64,
    /// The payment's whole amount (WeChat Pay asks for both).
    pub paid_cents: i64,
    pub currency: String,
    pub reason: String,
    /// Where the provider sends refund callbacks, if it does.
    pub notify_url: String,
}

/// What the provider says about one refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundReport {
    /// Our refund id (`out_refund_no`).
    pub refund_id: Uuid,
    pub provider_refund_id: Option<String>,
    pub outcome: RefundOutcome,
    pub amount_cents: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundOutcome {
    Succeeded,
    Pending,
    Failed,
}

/// A verified callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    Payment(PaymentReport),
    Refund(RefundReport),
}

/// An HTTP answer in the provider's format (WeChat Pay: status and JSON;
/// Alipay: the text `success` or `fail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The callback or answer is not signed by the provider (or was altered).
    #[error("signature does not verify: {0}")]
    BadSignature(String),
    /// A signed callback outside the accepted clock window (a replay).
    #[error("stale callback: {0}")]
    Stale(String),
    /// Well signed but not understood.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The provider refused the request (its code and message).
    #[error("the provider refused: {code}: {message}")]
    Refused { code: String, message: String },
    /// The provider could not be reached or answered 5xx: try again later.
    #[error("provider unreachable: {0}")]
    Unavailable(String),
    /// The provider knows no such payment or refund.
    #[error("the provider knows no such {0}")]
    NotFound(&'static str),
    /// Bad settings at start-up (a key file that does not parse, ...).
    #[error("configuration: {0}")]
    Config(String),
}

impl ProviderError {
    /// Whether trying the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ProviderError::Unavailable(_))
    }
}

/// One payment provider. Implementations hold their merchant settings and
/// keys; they never log a key, a token or a buyer's personal data.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// `sandbox`, `wechatpay` or `alipay`: the name in URLs, rows and JSON.
    fn name(&self) -> &'static str;
    /// The merchant a genuine report names (compared with every report).
    fn merchant(&self) -> &str;
    /// Opens the payment at the provider; the provider must refuse to take
    /// money after `expires_at`.
    async fn start(&self, req: &StartRequest) -> Result<Started, ProviderError>;
    /// Verifies a callback's signature (and freshness) and parses it. Must
    /// not trust anything in `body` before the signature holds.
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Callback, ProviderError>;
    /// The answer that tells the provider its callback was taken.
    fn ack(&self) -> Reply;
    /// The answer that tells the provider its callback was refused or could
    /// not be processed now (the provider retries where it does).
    fn nack(&self, message: &str) -> Reply;
    /// Asks the provider about a payment (by our `out_trade_no`).
    async fn query(&self, payment_id: Uuid) -> Result<PaymentReport, ProviderError>;
    /// Closes an unpaid payment, so it cannot be paid after its order expired.
    async fn close(&self, payment_id: Uuid) -> Result<(), ProviderError>;
    /// Sends a refund; the answer may be final or `Pending`.
    async fn refund(&self, req: &RefundRequest) -> Result<RefundReport, ProviderError>;
    /// Asks the provider about a refund.
    async fn query_refund(&self, req: &RefundRequest) -> Result<RefundReport, ProviderError>;
}

/// A key or secret read from a file or the environment: `Debug` shows
/// nothing of it, so settings can be logged whole.
#[derive(Clone, Default)]
pub struct Redacted<T>(pub T);

impl<T> std::fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Cents as yuan with two decimals (`16800` -> `168.00`), Alipay's amounts.
pub fn yuan(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}

/// `168.00` / `168.5` / `168` -> 16800 / 16850 / 16800; more than two
/// decimals, a sign or anything else is `None`.
pub fn parse_yuan(s: &str) -> Option<i64> {
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 2
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let frac: i64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().ok()? * 10,
        _ => frac.parse().ok()?,
    };
    whole.checked_mul(100)?.checked_add(frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trade_numbers_round_trip_and_foreign_ones_are_refused() {
        let id = Uuid::new_v4();
        assert_eq!(parse_trade_no(&trade_no(id)), Some(id));
        assert_eq!(trade_no(id).len(), 32);
        for bad in ["", "1217752501201407033233368018", &id.to_string(), "zz"] {
            assert_eq!(parse_trade_no(bad), None, "{bad}");
        }
    }

    #[test]
    fn yuan_amounts_are_exact() {
        assert_eq!(yuan(16800), "168.00");
        assert_eq!(yuan(1), "0.01");
        assert_eq!(parse_yuan("168.00"), Some(16800));
        assert_eq!(parse_yuan("0.01"), Some(1));
        assert_eq!(parse_yuan("168.5"), Some(16850));
        assert_eq!(parse_yuan("168"), Some(16800));
        for bad in [
            "",
            ".5",
            "1.005",
            "-1.00",
            "1e3",
            "1,00",
            " 1.00",
            "99999999999999999999",
        ] {
            assert_eq!(parse_yuan(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_are_not_debug_printed() {
        assert_eq!(format!("{:?}", Redacted("k".to_owned())), "<redacted>");
    }
}
