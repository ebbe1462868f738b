//! WeChat Pay API v3 for a directly connected merchant (直连商户): JSAPI
//! and Native prepay, order query and close, domestic refunds, and the
//! payment and refund callbacks, in WeChat Pay's wire format. Requests are
//! signed with the merchant API key; answers and callbacks are verified
//! with the platform key (微信支付公钥 and/or platform certificates) before
//! anything in them is read.

mod crypto;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, FixedOffset, Offset, SecondsFormat, TimeDelta, Utc};
use reqwest::Method;
use rsa::RsaPrivateKey;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::provider::{parse_trade_no, trade_no};
use super::{
    Callback, Checkout, PayOutcome, PaymentReport, Provider, ProviderError, Redacted,
    RefundOutcome, RefundReport, RefundRequest, Reply, Scene, StartRequest, Started,
};
use crypto::PlatformKeys;

pub const DEFAULT_BASE_URL: &str = "https://api.mch.weixin.qq.com";

/// WeChat Pay merchant settings. Keys are read from files at start-up and
/// never logged; the paths themselves are not secret.
#[derive(Debug, Clone, clap::Args)]
pub struct WechatPayArgs {
    /// Merchant id (商户号, `mchid`).
    #[arg(
        id = "wechatpay-mchid",
        long = "wechatpay-mchid",
        env = "LIVE_WECHATPAY_MCHID"
    )]
    pub mchid: Option<String>,
    /// App id the payments are made in (official account or mini program `appid`).
    #[arg(
        id = "wechatpay-appid",
        long = "wechatpay-appid",
        env = "LIVE_WECHATPAY_APPID"
    )]
    pub appid: Option<String>,
    /// Serial number of the merchant API certificate (商户API证书序列号).
    #[arg(
        id = "wechatpay-merchant-serial",
        long = "wechatpay-merchant-serial",
        env = "LIVE_WECHATPAY_MERCHANT_SERIAL"
    )]
    pub merchant_serial: Option<String>,
    /// The merchant API private key, `apiclient_key.pem` (PKCS#8 PEM).
    #[arg(
        id = "wechatpay-private-key-file",
        long = "wechatpay-private-key-file",
        env = "LIVE_WECHATPAY_PRIVATE_KEY_FILE"
    )]
    pub private_key_file: Option<PathBuf>,
    /// A file holding the 32-byte APIv3 key (APIv3密钥), which decrypts callbacks.
    #[arg(
        id = "wechatpay-apiv3-key-file",
        long = "wechatpay-apiv3-key-file",
        env = "LIVE_WECHATPAY_APIV3_KEY_FILE"
    )]
    pub apiv3_key_file: Option<PathBuf>,
    /// The WeChat Pay public key (微信支付公钥, `pub_key.pem`); needs
    /// `--wechatpay-public-key-id`.
    #[arg(
        id = "wechatpay-public-key-file",
        long = "wechatpay-public-key-file",
        env = "LIVE_WECHATPAY_PUBLIC_KEY_FILE"
    )]
    pub public_key_file: Option<PathBuf>,
    /// The id of that public key (`PUB_KEY_ID_...`), as WeChat Pay names it
    /// in `Wechatpay-Serial`.
    #[arg(
        id = "wechatpay-public-key-id",
        long = "wechatpay-public-key-id",
        env = "LIVE_WECHATPAY_PUBLIC_KEY_ID"
    )]
    pub public_key_id: Option<String>,
    /// Platform certificate(s) (平台证书, PEM; several during a rotation),
    /// instead of or beside the public key.
    #[arg(
        id = "wechatpay-platform-cert-file",
        long = "wechatpay-platform-cert-file",
        env = "LIVE_WECHATPAY_PLATFORM_CERT_FILE"
    )]
    pub platform_cert_file: Option<PathBuf>,
    /// The API's base URL (the simulator's in tests).
    #[arg(
        id = "wechatpay-base-url", long = "wechatpay-base-url",
        env = "LIVE_WECHATPAY_BASE_URL",
        default_value = DEFAULT_BASE_URL
    )]
    pub base_url: String,
    /// How far a callback's or answer's signed timestamp may be from now
    /// (the SDKs' five minutes): older ones are replays.
    #[arg(
        id = "wechatpay-notify-max-skew",
        long = "wechatpay-notify-max-skew",
        env = "LIVE_WECHATPAY_NOTIFY_MAX_SKEW",
        default_value = "5m"
    )]
    pub notify_max_skew: humantime::Duration,
}

impl Default for WechatPayArgs {
    fn default() -> Self {
        WechatPayArgs {
            mchid: None,
            appid: None,
            merchant_serial: None,
            private_key_file: None,
            apiv3_key_file: None,
            public_key_file: None,
            public_key_id: None,
            platform_cert_file: None,
            base_url: DEFAULT_BASE_URL.into(),
            notify_max_skew: Duration::from_secs(300).into(),
        }
    }
}

/// The WeChat Pay provider: merchant settings and keys, and the HTTP client.
#[derive(Debug)]
pub struct WechatPay {
    http: reqwest::Client,
    /// Without a trailing slash: paths are appended as the docs write them.
    base: String,
    mchid: String,
    appid: String,
    merchant_serial: String,
    merchant_key: Redacted<RsaPrivateKey>,
    apiv3_key: Redacted<Vec<u8>>,
    /// Public, but a page of numbers in `Debug`.
    platform: Redacted<PlatformKeys>,
    max_skew: TimeDelta,
}

fn config(msg: impl Into<String>) -> ProviderError {
    ProviderError::Config(msg.into())
}

fn required<'a>(value: &'a Option<String>, flag: &str) -> Result<&'a str, ProviderError> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(config(format!("wechatpay: {flag} is required"))),
    }
}

/// Reads a key file; the error names the flag and the path, never content.
fn read_file(path: &Option<PathBuf>, flag: &str) -> Result<(PathBuf, Vec<u8>), ProviderError> {
    let path = path
        .as_ref()
        .ok_or_else(|| config(format!("wechatpay: {flag} is required")))?;
    let bytes = std::fs::read(path)
        .map_err(|e| config(format!("wechatpay: {flag} {}: {e}", path.display())))?;
    Ok((path.clone(), bytes))
}

fn bad_file(flag: &str, path: &Path, why: &str) -> ProviderError {
    config(format!("wechatpay: {flag} {}: {why}", path.display()))
}

impl WechatPay {
    pub fn from_args(args: &WechatPayArgs, http: reqwest::Client) -> Result<Self, ProviderError> {
        let mchid = required(&args.mchid, "--wechatpay-mchid")?;
        // Both go into URLs and signed strings unescaped.
        if !mchid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(config("wechatpay: --wechatpay-mchid must be alphanumeric"));
        }
        let appid = required(&args.appid, "--wechatpay-appid")?;
        let merchant_serial = required(&args.merchant_serial, "--wechatpay-merchant-serial")?;
        if !merchant_serial.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(config(
                "wechatpay: --wechatpay-merchant-serial must be the certificate's hex serial",
            ));
        }

        let flag = "--wechatpay-private-key-file";
        let (path, pem) = read_file(&args.private_key_file, flag)?;
        let pem = String::from_utf8(pem).map_err(|_| bad_file(flag, &path, "not a PEM file"))?;
        let merchant_key =
            crypto::private_key_from_pem(&pem).map_err(|why| bad_file(flag, &path, &why))?;

        let flag = "--wechatpay-apiv3-key-file";
        let (path, mut key) = read_file(&args.apiv3_key_file, flag)?;
        // The key is 32 printable characters; editors add a newline.
        while key.last().is_some_and(|b| b.is_ascii_whitespace()) {
            key.pop();
        }
        if key.len() != 32 {
            return Err(bad_file(
                flag,
                &path,
                &format!("the APIv3 key must be 32 bytes, this one has {}", key.len()),
            ));
        }

        let mut platform = PlatformKeys::default();
        match (&args.public_key_file, &args.public_key_id) {
            (Some(_), id) => {
                let id = required(
                    id,
                    "--wechatpay-public-key-id (with --wechatpay-public-key-file)",
                )?;
                let flag = "--wechatpay-public-key-file";
                let (path, pem) = read_file(&args.public_key_file, flag)?;
                let pem =
                    String::from_utf8(pem).map_err(|_| bad_file(flag, &path, "not a PEM file"))?;
                let key =
                    crypto::public_key_from_pem(&pem).map_err(|why| bad_file(flag, &path, &why))?;
                platform.insert(id.to_owned(), key);
            }
            (None, Some(_)) => {
                return Err(config(
                    "wechatpay: --wechatpay-public-key-id needs --wechatpay-public-key-file",
                ))
            }
            (None, None) => {}
        }
        if args.platform_cert_file.is_some() {
            let flag = "--wechatpay-platform-cert-file";
            let (path, pem) = read_file(&args.platform_cert_file, flag)?;
            for (serial, key) in
                crypto::platform_certificates(&pem).map_err(|why| bad_file(flag, &path, &why))?
            {
                platform.insert(serial, key);
            }
        }
        if platform.is_empty() {
            return Err(config(
                "wechatpay: the platform key is required: --wechatpay-public-key-file with \
                 --wechatpay-public-key-id, and/or --wechatpay-platform-cert-file",
            ));
        }

        let base = args.base_url.trim().trim_end_matches('/').to_owned();
        match url::Url::parse(&base) {
            Ok(u) if matches!(u.scheme(), "https" | "http") && u.query().is_none() => {}
            _ => {
                return Err(config(
                    "wechatpay: --wechatpay-base-url is not an http(s) URL",
                ))
            }
        }
        let max_skew = TimeDelta::from_std(*args.notify_max_skew)
            .map_err(|_| config("wechatpay: --wechatpay-notify-max-skew is too large"))?;

        Ok(WechatPay {
            http,
            base,
            mchid: mchid.to_owned(),
            appid: appid.to_owned(),
            merchant_serial: merchant_serial.to_owned(),
            merchant_key: Redacted(merchant_key),
            apiv3_key: Redacted(key),
            platform: Redacted(platform),
            max_skew,
        })
    }

    /// Checks WeChat Pay's signature headers over `body` (an answer or a
    /// callback) and the freshness of the signed timestamp.
    fn check_signed(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), ProviderError> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ProviderError::BadSignature(format!("no {name} header")))
        };
        let serial = header("Wechatpay-Serial")?;
        let timestamp = header("Wechatpay-Timestamp")?;
        let nonce = header("Wechatpay-Nonce")?;
        let signature = header("Wechatpay-Signature")?;
        if let Some(kind) = headers.get("Wechatpay-Signature-Type") {
            if kind.as_bytes() != crypto::SCHEME.as_bytes() {
                return Err(ProviderError::BadSignature(format!(
                    "Wechatpay-Signature-Type {} is not {}",
                    clip(&String::from_utf8_lossy(kind.as_bytes()), 40),
                    crypto::SCHEME
                )));
            }
        }
        let key = self.platform.0.get(serial).ok_or_else(|| {
            ProviderError::BadSignature(format!(
                "Wechatpay-Serial {} names no platform key of ours",
                clip(serial, 64)
            ))
        })?;
        crypto::verify(
            key,
            &crypto::answer_message(timestamp, nonce, body),
            signature,
        )
        .map_err(ProviderError::BadSignature)?;
        // Signed, so a replay is told apart from a forgery.
        let signed_at: i64 = timestamp
            .parse()
            .map_err(|_| ProviderError::Malformed("Wechatpay-Timestamp is not a number".into()))?;
        let skew = now.timestamp().abs_diff(signed_at);
        if skew > self.max_skew.num_seconds().unsigned_abs() {
            return Err(ProviderError::Stale(format!(
                "signed at {signed_at}, {skew} s from now"
            )));
        }
        Ok(())
    }

    /// One signed call. A 2xx answer is verified before its body is
    /// returned; error answers are read unverified, as the SDKs do (TLS to
    /// the gateway is what they rely on there).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Vec<u8>), ProviderError> {
        let url = format!("{}{path}", self.base);
        let parsed = url::Url::parse(&url)
            .map_err(|e| ProviderError::Malformed(format!("request URL {url}: {e}")))?;
        let signed_url = &parsed[url::Position::BeforePath..url::Position::AfterQuery];
        let body = body.map(Value::to_string).unwrap_or_default();
        let timestamp = Utc::now().timestamp();
        let nonce = crypto::nonce();
        let message =
            crypto::request_message(method.as_str(), signed_url, timestamp, &nonce, &body);
        let signature = crypto::sign(&self.merchant_key.0, message.as_bytes());
        let authorization = crypto::authorization(
            &self.mchid,
            &nonce,
            timestamp,
            &self.merchant_serial,
            &signature,
        );

        let mut request = self
            .http
            .request(method, parsed.clone())
            .header("Authorization", authorization)
            .header("Accept", "application/json");
        if !body.is_empty() {
            request = request
                .header("Content-Type", "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ProviderError::Unavailable(format!("wechatpay {signed_url}: {e}")))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ProviderError::Unavailable(format!("wechatpay {signed_url}: {e}")))?;

        if status.is_success() {
            self.check_signed(&headers, &bytes, Utc::now())?;
            return Ok((status, bytes.to_vec()));
        }
        if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
            return Ok((status, bytes.to_vec()));
        }
        // 5xx, FREQUENCY_LIMITED (429) and anything else: try again later.
        let (code, message) = error_answer(status, &bytes);
        Err(ProviderError::Unavailable(format!(
            "wechatpay {signed_url}: HTTP {status} {code} {message}"
        )))
    }

    /// A call whose 4xx answers are refusals (404 is `NotFound(what)`), and
    /// whose 2xx body is `T`.
    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &'static str,
    ) -> Result<T, ProviderError> {
        let (status, bytes) = self.call(method, path, body).await?;
        refuse_client_errors(status, &bytes, what)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ProviderError::Malformed(format!("wechatpay answer to {path}: {e}")))
    }

    fn report_payment(&self, tx: Transaction) -> Result<PaymentReport, ProviderError> {
        let payment_id = parse_trade_no(&tx.out_trade_no).ok_or_else(|| {
            ProviderError::Malformed(format!(
                "out_trade_no {} is not ours",
                clip(&tx.out_trade_no, 40)
            ))
        })?;
        let outcome = match tx.trade_state.as_str() {
            "SUCCESS" => PayOutcome::Succeeded,
            "REFUND" => PayOutcome::Refunded,
            "NOTPAY" | "USERPAYING" | "ACCEPT" => PayOutcome::Pending,
            "CLOSED" | "REVOKED" | "PAYERROR" => PayOutcome::Failed,
            other => {
                return Err(ProviderError::Malformed(format!(
                    "trade_state {}",
                    clip(other, 40)
                )))
            }
        };
        let amount = tx.amount.unwrap_or_default();
        // The order amount (`total`), which is what our payment asked for;
        // `payer_total` differs by coupons the merchant funds.
        let amount_cents = match (amount.total, outcome) {
            (Some(total), _) => total,
            (None, PayOutcome::Pending | PayOutcome::Failed) => 0,
            (None, _) => {
                return Err(ProviderError::Malformed(
                    "a paid order without amount".into(),
                ))
            }
        };
        Ok(PaymentReport {
            payment_id,
            provider_txn_id: tx.transaction_id.filter(|t| !t.is_empty()),
            outcome,
            amount_cents,
            currency: amount.currency.unwrap_or_else(|| "CNY".into()),
            merchant: tx.mchid,
        })
    }

    fn open_resource(&self, resource: &Resource) -> Result<Vec<u8>, ProviderError> {
        if resource.algorithm != "AEAD_AES_256_GCM" {
            return Err(ProviderError::Malformed(format!(
                "resource algorithm {}",
                clip(&resource.algorithm, 40)
            )));
        }
        crypto::open(
            &self.apiv3_key.0,
            &resource.nonce,
            &resource.associated_data,
            &resource.ciphertext,
        )
        .map_err(|e| match e {
            crypto::OpenError::Malformed(why) => {
                ProviderError::Malformed(format!("resource: {why}"))
            }
            crypto::OpenError::Forged => ProviderError::BadSignature(
                "the resource does not decrypt: altered, or not sealed with our APIv3 key".into(),
            ),
        })
    }
}

fn refuse_client_errors(
    status: StatusCode,
    bytes: &[u8],
    what: &'static str,
) -> Result<(), ProviderError> {
    if status == StatusCode::NOT_FOUND {
        return Err(ProviderError::NotFound(what));
    }
    if status.is_client_error() {
        let (code, message) = error_answer(status, bytes);
        return Err(ProviderError::Refused { code, message });
    }
    Ok(())
}

/// The `{"code","message"}` of an error answer, clipped; the HTTP status
/// when the body is not one.
fn error_answer(status: StatusCode, bytes: &[u8]) -> (String, String) {
    let e: ErrorAnswer = serde_json::from_slice(bytes).unwrap_or_default();
    (
        clip(
            &e.code
                .unwrap_or_else(|| format!("HTTP_{}", status.as_u16())),
            64,
        ),
        clip(&e.message.unwrap_or_default(), 200),
    )
}

/// At most `n` characters of text from outside, for error messages.
fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// At most `n` bytes, cut at a character boundary (WeChat Pay's lengths of
/// `description` and `reason` are in bytes of UTF-8).
fn clip_bytes(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `time_expire` as the docs write it: RFC 3339 in Beijing time, whole seconds.
fn beijing_time(t: DateTime<Utc>) -> String {
    let beijing = FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| Utc.fix());
    t.with_timezone(&beijing)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn refund_outcome(status: &str) -> Result<RefundOutcome, ProviderError> {
    match status {
        "SUCCESS" => Ok(RefundOutcome::Succeeded),
        "PROCESSING" => Ok(RefundOutcome::Pending),
        "ABNORMAL" | "CLOSED" => Ok(RefundOutcome::Failed),
        other => Err(ProviderError::Malformed(format!(
            "refund status {}",
            clip(other, 40)
        ))),
    }
}

fn report_refund(r: RefundResource) -> Result<RefundReport, ProviderError> {
    let refund_id = parse_trade_no(&r.out_refund_no).ok_or_else(|| {
        ProviderError::Malformed(format!(
            "out_refund_no {} is not ours",
            clip(&r.out_refund_no, 40)
        ))
    })?;
    Ok(RefundReport {
        refund_id,
        provider_refund_id: r.refund_id.filter(|id| !id.is_empty()),
        outcome: refund_outcome(&r.status)?,
        amount_cents: r.amount.refund,
    })
}

fn only_cny(currency: &str) -> Result<(), ProviderError> {
    if currency == "CNY" {
        Ok(())
    } else {
        // Refused here, before anything is sent: domestic WeChat Pay is CNY only.
        Err(ProviderError::Refused {
            code: "INVALID_CURRENCY".into(),
            message: format!("WeChat Pay takes CNY, not {}", clip(currency, 8)),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
struct ErrorAnswer {
    code: Option<String>,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Notification {
    event_type: String,
    resource: Resource,
}

#[derive(Debug, Deserialize)]
struct Resource {
    algorithm: String,
    ciphertext: String,
    #[serde(default)]
    associated_data: String,
    nonce: String,
}

#[derive(Debug, Deserialize)]
struct Transaction {
    mchid: String,
    out_trade_no: String,
    transaction_id: Option<String>,
    trade_state: String,
    amount: Option<TransactionAmount>,
}

#[derive(Debug, Default, Deserialize)]
struct TransactionAmount {
    total: Option<i64>,
    currency: Option<String>,
}

/// A refund, as the refund API answers it (`status`) and as its callback
/// carries it (`refund_status`).
#[derive(Debug, Deserialize)]
struct RefundResource {
    #[serde(default)]
    mchid: Option<String>,
    out_refund_no: String,
    refund_id: Option<String>,
    #[serde(alias = "refund_status")]
    status: String,
    amount: RefundAmount,
}

#[derive(Debug, Deserialize)]
struct RefundAmount {
    refund: i64,
}

#[derive(Debug, Deserialize)]
struct Prepay {
    prepay_id: Option<String>,
    code_url: Option<String>,
}

#[async_trait]
impl Provider for WechatPay {
    fn name(&self) -> &'static str {
        "wechatpay"
    }

    fn merchant(&self) -> &str {
        &self.mchid
    }

    async fn start(&self, req: &StartRequest) -> Result<Started, ProviderError> {
        only_cny(&req.currency)?;
        if req.amount_cents <= 0 {
            return Err(ProviderError::Malformed(format!(
                "an amount of {} fen",
                req.amount_cents
            )));
        }
        let description = match clip_bytes(req.description.trim(), 127) {
            "" => trade_no(req.order_id),
            d => d.to_owned(),
        };
        let mut body = json!({
            "appid": self.appid,
            "mchid": self.mchid,
            "description": description,
            "out_trade_no": trade_no(req.payment_id),
            "time_expire": beijing_time(req.expires_at),
            "notify_url": req.notify_url,
            "amount": {"total": req.amount_cents, "currency": "CNY"},
        });
        let openid = match &req.scene {
            Scene::WeChat { openid } => {
                body["payer"] = json!({ "openid": openid });
                Some(openid)
            }
            Scene::Mobile | Scene::Desktop => None,
        };
        let path = if openid.is_some() {
            "/v3/pay/transactions/jsapi"
        } else {
            "/v3/pay/transactions/native"
        };
        let prepay: Prepay = self
            .call_json(Method::POST, path, Some(&body), "payment")
            .await?;
        let checkout = if openid.is_some() {
            let prepay_id = prepay
                .prepay_id
                .ok_or_else(|| ProviderError::Malformed("JSAPI answer without prepay_id".into()))?;
            Checkout {
                url: None,
                params: Some(self.jsapi_params(&prepay_id, Utc::now().timestamp())),
            }
        } else {
            let code_url = prepay
                .code_url
                .ok_or_else(|| ProviderError::Malformed("Native answer without code_url".into()))?;
            Checkout {
                url: Some(code_url),
                params: None,
            }
        };
        Ok(Started { checkout })
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Callback, ProviderError> {
        self.check_signed(headers, body, now)?;
        let notification: Notification = serde_json::from_slice(body)
            .map_err(|e| ProviderError::Malformed(format!("callback body: {e}")))?;
        let plain = self.open_resource(&notification.resource)?;
        let malformed = |e: serde_json::Error| ProviderError::Malformed(format!("resource: {e}"));
        match notification.event_type.as_str() {
            "TRANSACTION.SUCCESS" => {
                let tx: Transaction = serde_json::from_slice(&plain).map_err(malformed)?;
                if tx.trade_state != "SUCCESS" {
                    return Err(ProviderError::Malformed(format!(
                        "TRANSACTION.SUCCESS with trade_state {}",
                        clip(&tx.trade_state, 40)
                    )));
                }
                Ok(Callback::Payment(self.report_payment(tx)?))
            }
            "REFUND.SUCCESS" | "REFUND.ABNORMAL" | "REFUND.CLOSED" => {
                let refund: RefundResource = serde_json::from_slice(&plain).map_err(malformed)?;
                // The report has no merchant for the service to compare.
                if refund.mchid.as_deref() != Some(self.mchid.as_str()) {
                    return Err(ProviderError::Malformed(
                        "a refund callback of another merchant".into(),
                    ));
                }
                Ok(Callback::Refund(report_refund(refund)?))
            }
            other => Err(ProviderError::Malformed(format!(
                "event_type {}",
                clip(other, 40)
            ))),
        }
    }

    fn ack(&self) -> Reply {
        // The docs: "接收成功：HTTP应答状态码需返回200或204，无需返回应答报文".
        Reply {
            status: StatusCode::OK,
            content_type: "application/json",
            body: String::new(),
        }
    }

    fn nack(&self, message: &str) -> Reply {
        // Any 4XX/5XX makes WeChat Pay retry, with `{"code":"FAIL","message"}`.
        Reply {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            content_type: "application/json",
            body: json!({"code": "FAIL", "message": message}).to_string(),
        }
    }

    async fn query(&self, payment_id: Uuid) -> Result<PaymentReport, ProviderError> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}?mchid={}",
            trade_no(payment_id),
            self.mchid
        );
        let tx: Transaction = self.call_json(Method::GET, &path, None, "payment").await?;
        let report = self.report_payment(tx)?;
        if report.payment_id != payment_id {
            return Err(ProviderError::Malformed(
                "the answer names another out_trade_no".into(),
            ));
        }
        Ok(report)
    }

    async fn close(&self, payment_id: Uuid) -> Result<(), ProviderError> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}/close",
            trade_no(payment_id)
        );
        let body = json!({ "mchid": self.mchid });
        let (status, bytes) = self.call(Method::POST, &path, Some(&body)).await?;
        refuse_client_errors(status, &bytes, "payment")
    }

    async fn refund(&self, req: &RefundRequest) -> Result<RefundReport, ProviderError> {
        only_cny(&req.currency)?;
        let mut body = json!({
            "out_refund_no": trade_no(req.refund_id),
            "amount": {"refund": req.amount_cents, "total": req.paid_cents, "currency": "CNY"},
        });
        // transaction_id is the docs' first choice; out_trade_no names the
        // same payment when we never learnt it.
        match req.provider_txn_id.as_deref().filter(|t| !t.is_empty()) {
            Some(txn) => body["transaction_id"] = json!(txn),
            None => body["out_trade_no"] = json!(trade_no(req.payment_id)),
        }
        let reason = clip_bytes(req.reason.trim(), 80);
        if !reason.is_empty() {
            body["reason"] = json!(reason);
        }
        if !req.notify_url.is_empty() {
            body["notify_url"] = json!(req.notify_url);
        }
        let refund: RefundResource = self
            .call_json(
                Method::POST,
                "/v3/refund/domestic/refunds",
                Some(&body),
                "payment",
            )
            .await?;
        self.checked_refund(refund, req.refund_id)
    }

    async fn query_refund(&self, req: &RefundRequest) -> Result<RefundReport, ProviderError> {
        let path = format!("/v3/refund/domestic/refunds/{}", trade_no(req.refund_id));
        let refund: RefundResource = self.call_json(Method::GET, &path, None, "refund").await?;
        self.checked_refund(refund, req.refund_id)
    }
}

impl WechatPay {
    /// What `wx.requestPayment` / `WeixinJSBridge.invoke('getBrandWCPayRequest')`
    /// takes, signed with the merchant key as wechatpay-go's
    /// `PrepayWithRequestPayment` does.
    fn jsapi_params(&self, prepay_id: &str, timestamp: i64) -> Value {
        let time_stamp = timestamp.to_string();
        let nonce_str = crypto::nonce();
        let package = format!("prepay_id={prepay_id}");
        let message = crypto::jsapi_message(&self.appid, &time_stamp, &nonce_str, &package);
        json!({
            "appId": self.appid,
            "timeStamp": time_stamp,
            "nonceStr": nonce_str,
            "package": package,
            "signType": "RSA",
            "paySign": crypto::sign(&self.merchant_key.0, message.as_bytes()),
        })
    }

    fn checked_refund(
        &self,
        refund: RefundResource,
        refund_id: Uuid,
    ) -> Result<RefundReport, ProviderError> {
        let report = report_refund(refund)?;
        if report.refund_id != refund_id {
            return Err(ProviderError::Malformed(
                "the answer names another out_refund_no".into(),
            ));
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests;
