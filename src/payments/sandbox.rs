//! The sandbox: a stand-in gateway for the embedded mode, demos, tests and
//! rehearsals. Its checkout page (`/sandbox/pay/{id}`) plays the buyer's
//! wallet; its callbacks are signed with HMAC-SHA256 under the deployment's
//! sandbox secret and arrive through the same notify route and verification
//! as a real provider's. It takes no money: never enable it where buyers
//! could mistake it for one.

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use super::provider::{parse_trade_no, trade_no};
use super::store::{Charge, ChargeState, SandboxLedger};
use super::{
    Callback, Checkout, PayOutcome, PaymentReport, Provider, ProviderError, Redacted,
    RefundOutcome, RefundReport, RefundRequest, Reply, StartRequest, Started,
};
use crate::config::Secret;

/// The merchant every sandbox report names.
pub const MERCHANT: &str = "lychee-sandbox";
pub const SIGNATURE_HEADER: &str = "x-sandbox-signature";
pub const TIMESTAMP_HEADER: &str = "x-sandbox-timestamp";
/// A callback signed longer ago than this (or this far ahead) is a replay.
const MAX_SKEW: TimeDelta = TimeDelta::minutes(5);

type HmacSha256 = Hmac<Sha256>;

/// The sandbox callback's body (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// `payment` or `refund`.
    pub event: String,
    /// Our payment (or refund) number.
    pub out_trade_no: String,
    pub txn_id: String,
    /// `succeeded` or `failed`.
    pub status: String,
    pub amount_cents: i64,
    pub currency: String,
    pub merchant: String,
}

/// The key: given (`LIVE_SANDBOX_SECRET`), or derived from the JWT secret
/// so every node of a deployment agrees without another setting.
pub fn key(given: Option<&Secret>, jwt: &Secret) -> Vec<u8> {
    match given {
        Some(s) => s.0.as_bytes().to_vec(),
        None => {
            // HMAC takes a key of any length: this never falls through.
            let Ok(mut mac) = HmacSha256::new_from_slice(jwt.0.as_bytes()) else {
                return jwt.0.as_bytes().to_vec();
            };
            mac.update(b"lychee-live sandbox callbacks v1");
            mac.finalize().into_bytes().to_vec()
        }
    }
}

/// Hex HMAC-SHA256 over `timestamp\nbody`.
pub fn sign(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return String::new();
    };
    mac.update(timestamp.as_bytes());
    mac.update(b"\n");
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub struct Sandbox {
    key: Redacted<Vec<u8>>,
    ledger: Arc<dyn SandboxLedger>,
    /// Where the checkout page is: the node's public URL.
    base_url: Arc<std::sync::OnceLock<String>>,
}

impl Sandbox {
    pub fn new(
        key: Vec<u8>,
        ledger: Arc<dyn SandboxLedger>,
        base_url: Arc<std::sync::OnceLock<String>>,
    ) -> Self {
        Sandbox {
            key: Redacted(key),
            ledger,
            base_url,
        }
    }

    pub fn ledger(&self) -> &Arc<dyn SandboxLedger> {
        &self.ledger
    }

    /// The signed callback the gateway sends for a charge: headers and body.
    pub fn notice(
        &self,
        notice: &Notice,
        now: DateTime<Utc>,
    ) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let body = serde_json::to_vec(notice).unwrap_or_default();
        let ts = now.timestamp().to_string();
        let sig = sign(&self.key.0, &ts, &body);
        (vec![(TIMESTAMP_HEADER, ts), (SIGNATURE_HEADER, sig)], body)
    }

    fn report(&self, payment_id: Uuid, c: &Charge, refunded: i64) -> PaymentReport {
        let outcome = match c.state {
            ChargeState::Paid if refunded > 0 => PayOutcome::Refunded,
            ChargeState::Paid => PayOutcome::Succeeded,
            ChargeState::Failed | ChargeState::Closed => PayOutcome::Failed,
        };
        PaymentReport {
            payment_id,
            provider_txn_id: (c.state == ChargeState::Paid).then(|| c.txn_id.clone()),
            outcome,
            amount_cents: c.amount_cents,
            currency: c.currency.clone(),
            merchant: MERCHANT.into(),
        }
    }
}

fn store_err(e: crate::store::StoreError) -> ProviderError {
    ProviderError::Unavailable(format!("sandbox ledger: {e}"))
}

#[async_trait]
impl Provider for Sandbox {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn merchant(&self) -> &str {
        MERCHANT
    }

    async fn start(&self, req: &StartRequest) -> Result<Started, ProviderError> {
        let base = self.base_url.get().map(String::as_str).unwrap_or_default();
        Ok(Started {
            checkout: Checkout {
                url: Some(format!("{base}/sandbox/pay/{}", req.payment_id)),
                params: None,
            },
        })
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Callback, ProviderError> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| ProviderError::BadSignature(format!("no {name} header")))
        };
        let ts = header(TIMESTAMP_HEADER)?;
        let sig = unhex(header(SIGNATURE_HEADER)?)
            .ok_or_else(|| ProviderError::BadSignature("signature is not hex".into()))?;
        let mut mac = HmacSha256::new_from_slice(&self.key.0)
            .map_err(|_| ProviderError::Config("sandbox key".into()))?;
        mac.update(ts.as_bytes());
        mac.update(b"\n");
        mac.update(body);
        // Constant-time comparison, by the hmac crate.
        mac.verify_slice(&sig)
            .map_err(|_| ProviderError::BadSignature("HMAC does not match".into()))?;
        let signed_at = ts
            .parse::<i64>()
            .ok()
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .ok_or_else(|| ProviderError::Malformed("timestamp".into()))?;
        if (now - signed_at).abs() > MAX_SKEW {
            return Err(ProviderError::Stale(format!("signed at {signed_at}")));
        }
        let n: Notice = serde_json::from_slice(body)
            .map_err(|e| ProviderError::Malformed(format!("body: {e}")))?;
        let id = parse_trade_no(&n.out_trade_no)
            .ok_or_else(|| ProviderError::Malformed("out_trade_no".into()))?;
        match (n.event.as_str(), n.status.as_str()) {
            ("payment", status) => Ok(Callback::Payment(PaymentReport {
                payment_id: id,
                provider_txn_id: Some(n.txn_id),
                outcome: match status {
                    "succeeded" => PayOutcome::Succeeded,
                    "failed" => PayOutcome::Failed,
                    other => return Err(ProviderError::Malformed(format!("status {other:?}"))),
                },
                amount_cents: n.amount_cents,
                currency: n.currency,
                merchant: n.merchant,
            })),
            ("refund", status) => Ok(Callback::Refund(RefundReport {
                refund_id: id,
                provider_refund_id: Some(n.txn_id),
                outcome: match status {
                    "succeeded" => RefundOutcome::Succeeded,
                    "failed" => RefundOutcome::Failed,
                    other => return Err(ProviderError::Malformed(format!("status {other:?}"))),
                },
                amount_cents: n.amount_cents,
            })),
            (other, _) => Err(ProviderError::Malformed(format!("event {other:?}"))),
        }
    }

    fn ack(&self) -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type: "application/json",
            body: r#"{"ok":true}"#.into(),
        }
    }

    fn nack(&self, message: &str) -> Reply {
        Reply {
            status: StatusCode::BAD_REQUEST,
            content_type: "application/json",
            body: serde_json::json!({ "ok": false, "message": message }).to_string(),
        }
    }

    async fn query(&self, payment_id: Uuid) -> Result<PaymentReport, ProviderError> {
        let charge = self.ledger.charge_of(payment_id).await.map_err(store_err)?;
        match charge {
            Some(c) => {
                let refunded = self.ledger.refunded(payment_id).await.map_err(store_err)?;
                Ok(self.report(payment_id, &c, refunded))
            }
            None => Err(ProviderError::NotFound("payment")),
        }
    }

    async fn close(&self, payment_id: Uuid) -> Result<(), ProviderError> {
        let kept = self
            .ledger
            .charge(&Charge {
                payment_id,
                state: ChargeState::Closed,
                txn_id: format!("sbx-closed-{}", trade_no(payment_id)),
                amount_cents: 0,
                currency: String::new(),
                refunds_fail: false,
                at: Utc::now(),
            })
            .await
            .map_err(store_err)?;
        if kept.state == ChargeState::Paid {
            return Err(ProviderError::Refused {
                code: "ALREADY_PAID".into(),
                message: "the payment was paid; refund it instead".into(),
            });
        }
        Ok(())
    }

    async fn refund(&self, req: &RefundRequest) -> Result<RefundReport, ProviderError> {
        let charge = self
            .ledger
            .charge_of(req.payment_id)
            .await
            .map_err(store_err)?
            .filter(|c| c.state == ChargeState::Paid)
            .ok_or(ProviderError::NotFound("payment"))?;
        let refunded = self
            .ledger
            .refunded(req.payment_id)
            .await
            .map_err(store_err)?;
        let already = self
            .ledger
            .refund_of(req.refund_id)
            .await
            .map_err(store_err)?;
        let ok = match already {
            Some((_, ok)) => ok,
            None => {
                let fits = refunded + req.amount_cents <= charge.amount_cents;
                self.ledger
                    .refund(
                        req.refund_id,
                        req.payment_id,
                        req.amount_cents,
                        fits && !charge.refunds_fail,
                        Utc::now(),
                    )
                    .await
                    .map_err(store_err)?
            }
        };
        Ok(RefundReport {
            refund_id: req.refund_id,
            provider_refund_id: Some(format!("sbx-refund-{}", trade_no(req.refund_id))),
            outcome: if ok {
                RefundOutcome::Succeeded
            } else {
                RefundOutcome::Failed
            },
            amount_cents: req.amount_cents,
        })
    }

    async fn query_refund(&self, req: &RefundRequest) -> Result<RefundReport, ProviderError> {
        match self
            .ledger
            .refund_of(req.refund_id)
            .await
            .map_err(store_err)?
        {
            Some((amount_cents, ok)) => Ok(RefundReport {
                refund_id: req.refund_id,
                provider_refund_id: Some(format!("sbx-refund-{}", trade_no(req.refund_id))),
                outcome: if ok {
                    RefundOutcome::Succeeded
                } else {
                    RefundOutcome::Failed
                },
                amount_cents,
            }),
            None => Err(ProviderError::NotFound("refund")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let key = b"k".repeat(32);
        let a = sign(&key, "1700000000", b"{}");
        assert_eq!(a.len(), 64);
        assert_ne!(a, sign(&key, "1700000001", b"{}"));
        assert_ne!(a, sign(&key, "1700000000", b"{ }"));
        assert_ne!(
            a,
            sign(b"other-key-other-key-other-key-00", "1700000000", b"{}")
        );
        // RFC 4231 test case 2, through the same HMAC: the crate is the one we think.
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_derived_key_is_the_same_on_every_node_and_differs_from_the_jwt_secret() {
        let jwt = Secret("j".repeat(40));
        assert_eq!(key(None, &jwt), key(None, &jwt));
        assert_ne!(key(None, &jwt), jwt.0.as_bytes());
        assert_eq!(key(Some(&Secret("s".repeat(32))), &jwt), b"s".repeat(32));
    }

    #[test]
    fn hex_signatures_of_any_shape_are_refused_without_a_panic() {
        for bad in ["", "0", "zz", "é1", &"0".repeat(1000)] {
            let got = unhex(bad);
            assert!(got.is_none() || bad.is_empty(), "{bad}");
        }
    }
}
