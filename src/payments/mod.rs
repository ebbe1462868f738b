//! Payments: a reserved order is paid through a provider (WeChat Pay,
//! Alipay, or the built-in sandbox); lychee-live never takes a buyer's word
//! that it paid. Payments and refunds are rows beside the orders.

pub mod alipay;
pub mod provider;
pub mod reconcile;
mod refunds;
pub mod sandbox;
pub mod service;
pub mod sql;
pub mod store;
pub mod wechatpay;

pub use provider::{
    Callback, Checkout, PayOutcome, PaymentReport, Provider, ProviderError, Redacted,
    RefundOutcome, RefundReport, RefundRequest, Reply, Scene, StartRequest, Started,
};

use std::time::Duration;

pub use service::{PaymentError, Payments};
pub use store::{Payment, PaymentStatus, Refund, RefundStatus};

use crate::config::Secret;

/// Payment settings of a node (contract section 8: `--payments`), with
/// each provider's merchant settings.
#[derive(Debug, Clone, clap::Args)]
pub struct PaymentArgs {
    /// Comma-separated providers to enable: sandbox, wechatpay, alipay.
    /// Default: sandbox in the embedded mode, none in production.
    #[arg(long = "payments", env = "LIVE_PAYMENTS", value_delimiter = ',')]
    pub providers: Option<Vec<String>>,
    /// HMAC-SHA256 key of the sandbox's callbacks (at least 32 bytes), the
    /// same on every node. Unset: derived from the JWT secret.
    #[arg(long, env = "LIVE_SANDBOX_SECRET", hide_env_values = true)]
    pub sandbox_secret: Option<Secret>,
    /// The node's public base URL (`https://live.example.com`), as the
    /// providers and buyers reach it: callbacks go to
    /// `{public_url}/api/v1/payments/{provider}/notify`. Unset: the listen address.
    #[arg(long, env = "LIVE_PUBLIC_URL")]
    pub public_url: Option<url::Url>,
    /// How often each node asks providers about pending payments and refunds.
    #[arg(long, env = "LIVE_RECONCILE_EVERY", default_value = "10s")]
    pub reconcile_every: humantime::Duration,
    /// A pending payment is first asked about this long after it started
    /// (its callback is normally there by then), then at every pass.
    #[arg(long, env = "LIVE_RECONCILE_AFTER", default_value = "20s")]
    pub reconcile_after: humantime::Duration,
    #[command(flatten)]
    pub wechatpay: wechatpay::WechatPayArgs,
    #[command(flatten)]
    pub alipay: alipay::AlipayArgs,
}

impl Default for PaymentArgs {
    fn default() -> Self {
        PaymentArgs {
            providers: None,
            sandbox_secret: None,
            public_url: None,
            reconcile_every: Duration::from_secs(10).into(),
            reconcile_after: Duration::from_secs(20).into(),
            wechatpay: Default::default(),
            alipay: Default::default(),
        }
    }
}

/// How long a call to a provider may take before it counts as unreachable.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
const PROVIDER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Makes ring the process's TLS crypto. reqwest is built without one (so
/// aws-lc-rs is not compiled), and every reqwest client of the process,
/// the load generator's and the tests' included, needs it installed first.
/// Installing twice is harmless.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The HTTPS client every provider calls its gateway with: rustls on ring
/// with the system's roots, bounded timeouts, no redirects (a gateway that
/// redirects is not the gateway).
pub fn http_client() -> Result<reqwest::Client, ProviderError> {
    install_crypto();
    reqwest::Client::builder()
        .connect_timeout(PROVIDER_CONNECT_TIMEOUT)
        .timeout(PROVIDER_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("lychee-live/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProviderError::Config(format!("HTTP client: {e}")))
}
