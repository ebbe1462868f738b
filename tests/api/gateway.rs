//! What a payment test needs from a provider's simulator (or the sandbox):
//! the buyer pays, the callback arrives (or is lost, or is forged), refunds
//! succeed or fail. One suite of cases runs against every implementation.

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

/// How a callback reaches the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Correctly signed, as the provider sends it.
    Normal,
    /// Never sent (the gateway still reports the payment paid when queried).
    Lost,
    /// Signed, then one byte of the body changed.
    TamperedBody,
    /// Correctly signed, but for an amount one cent off the payment's.
    WrongAmount,
    /// Correctly signed, but naming another merchant.
    WrongMerchant,
    /// Correctly signed, but with a timestamp far in the past (where the
    /// provider's scheme has one; otherwise as Normal).
    Stale,
}

#[async_trait]
pub trait Gateway: Send + Sync {
    /// The provider's name in `LIVE_PAYMENTS` and URLs.
    fn provider(&self) -> &'static str;
    /// Points a node's settings at this gateway (enables the provider).
    fn configure(&self, settings: &mut lychee_live::Settings);
    /// The buyer pays `payment` (the Payment JSON our node answered, whose
    /// `checkout` the buyer followed). The gateway then reports it paid;
    /// the callback goes to the node as `how`. Returns the node's answer to
    /// the callback (status, body), or `None` when it was `Lost` or when the
    /// gateway would not take the money (the payment expired or was closed).
    async fn pay(&self, payment: &Value, how: Delivery) -> Option<(u16, String)>;
    /// The last success callback of this payment, sent again unchanged.
    async fn redeliver(&self, payment_id: Uuid) -> (u16, String);
    /// The buyer's payment fails at the gateway (and the provider's
    /// callback for that, where it sends one, is delivered).
    async fn fail(&self, payment: &Value);
    /// From now on the gateway refuses refunds (or accepts them again).
    fn set_refunds_fail(&self, fail: bool);
    /// The refunds the gateway accepted: (our refund number, cents).
    fn refunds(&self) -> Vec<(String, i64)>;
}
