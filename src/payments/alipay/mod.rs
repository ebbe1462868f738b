//! Alipay open platform (API 2.0, RSA2 keys, no certificates): page pay on
//! a desktop, WAP pay on a phone, the trade's asynchronous notification,
//! and `alipay.trade.query` / `close` / `refund` /
//! `fastpay.refund.query`, each answer's signature verified.
//!
//! Refunds are settled synchronously: `alipay.trade.refund` answers whether
//! money moved, and `alipay.trade.fastpay.refund.query` is the authority
//! after that. The notification Alipay sends after a refund (the trade's
//! `trade_status_sync` with `refund_fee`, `gmt_refund`, `out_biz_no`) says
//! only how much of the trade was refunded in total, so it is reported as
//! the payment being `Refunded` (it was paid), never as one refund's result.

mod sign;

use std::path::PathBuf;

use async_trait::async_trait;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeDelta, Utc};
use rsa::pkcs1v15::{SigningKey, VerifyingKey};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use uuid::Uuid;

use super::provider::{parse_trade_no, parse_yuan, trade_no, yuan};
use super::{
    Callback, Checkout, PayOutcome, PaymentReport, Provider, ProviderError, Redacted,
    RefundOutcome, RefundReport, RefundRequest, Reply, Scene, StartRequest, Started,
};
use sign::Params;

const DEFAULT_GATEWAY: &str = "https://openapi.alipay.com/gateway.do";

/// Merchant settings of the Alipay provider (`--payments alipay`).
#[derive(Debug, Clone, clap::Args)]
pub struct AlipayArgs {
    /// The app's APPID on the Alipay open platform.
    #[arg(
        id = "alipay-app-id",
        long = "alipay-app-id",
        env = "LIVE_ALIPAY_APP_ID"
    )]
    pub app_id: Option<String>,
    /// File with the app's RSA2 private key (2048 bits): PKCS#8 or PKCS#1
    /// PEM, or the bare base64 that Alipay's key tool writes.
    #[arg(
        id = "alipay-private-key-file",
        long = "alipay-private-key-file",
        env = "LIVE_ALIPAY_PRIVATE_KEY_FILE"
    )]
    pub private_key_file: Option<PathBuf>,
    /// File with Alipay's public key for this app (支付宝公钥, the key mode;
    /// certificates are not supported): PEM or bare base64.
    #[arg(
        id = "alipay-public-key-file",
        long = "alipay-public-key-file",
        env = "LIVE_ALIPAY_PUBLIC_KEY_FILE"
    )]
    pub public_key_file: Option<PathBuf>,
    /// The open platform's gateway. Sandbox:
    /// https://openapi-sandbox.dl.alipaydev.com/gateway.do
    #[arg(id = "alipay-gateway", long = "alipay-gateway", env = "LIVE_ALIPAY_GATEWAY", default_value = DEFAULT_GATEWAY)]
    pub gateway: String,
    /// The merchant's PID (2088 and 12 digits): when set, a notification for
    /// another seller is not ours.
    #[arg(
        id = "alipay-seller-id",
        long = "alipay-seller-id",
        env = "LIVE_ALIPAY_SELLER_ID"
    )]
    pub seller_id: Option<String>,
}

impl Default for AlipayArgs {
    fn default() -> Self {
        AlipayArgs {
            app_id: None,
            private_key_file: None,
            public_key_file: None,
            gateway: DEFAULT_GATEWAY.into(),
            seller_id: None,
        }
    }
}

/// Alipay's clocks and formats are Beijing time (UTC+8 all year).
const BEIJING: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    // Evaluated at compile time: a wrong offset fails the build, never a run.
    None => panic!("UTC+8 is a valid offset"),
};

const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

fn beijing_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&BEIJING).format(TIME_FORMAT).to_string()
}

fn parse_beijing_time(s: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(s, TIME_FORMAT).ok()?;
    Some(
        naive
            .and_local_timezone(BEIJING)
            .single()?
            .with_timezone(&Utc),
    )
}

/// Alipay retries a notification 8 times over about 25 hours (2m, 10m,
/// 10m, 1h, 2h, 6h, 15h); a `notify_time` older than that is a replay.
const NOTIFY_MAX_AGE: TimeDelta = TimeDelta::hours(26);
/// Clocks drift; more than this ahead of ours is not a real notification.
const NOTIFY_MAX_AHEAD: TimeDelta = TimeDelta::minutes(15);
/// A trade notification has about 30 parameters of a few dozen bytes.
const MAX_NOTIFY_BYTES: usize = 64 * 1024;
const MAX_NOTIFY_PARAMS: usize = 200;
/// The biggest answer the four APIs we call give is a few KiB.
const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// total_amount range of the trade APIs: [0.01, 100000000].
const MAX_AMOUNT_CENTS: i64 = 10_000_000_000;

/// The Alipay provider: one app on the open platform.
pub struct Alipay {
    app_id: String,
    seller_id: Option<String>,
    gateway: url::Url,
    app_key: Redacted<SigningKey<Sha256>>,
    alipay_key: VerifyingKey<Sha256>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Alipay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alipay")
            .field("app_id", &self.app_id)
            .field("seller_id", &self.seller_id)
            .field("gateway", &self.gateway.as_str())
            .field("app_key", &self.app_key)
            .finish_non_exhaustive()
    }
}

fn config(flag: &str, why: impl std::fmt::Display) -> ProviderError {
    ProviderError::Config(format!("--{flag}: {why}"))
}

fn read_key_file(flag: &str, path: Option<&PathBuf>) -> Result<String, ProviderError> {
    let path = path.ok_or_else(|| config(flag, "not set"))?;
    std::fs::read_to_string(path).map_err(|e| config(flag, format!("{}: {e}", path.display())))
}

impl Alipay {
    pub fn from_args(args: &AlipayArgs, http: reqwest::Client) -> Result<Alipay, ProviderError> {
        let app_id = args
            .app_id
            .as_deref()
            .map(str::trim)
            .ok_or_else(|| config("alipay-app-id", "not set"))?;
        if app_id.is_empty() || app_id.len() > 32 || !app_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(config("alipay-app-id", "an APPID is up to 32 digits"));
        }
        let seller_id = match args.seller_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s)
                if s.len() == 16
                    && s.starts_with("2088")
                    && s.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Some(s.to_owned())
            }
            Some(_) => return Err(config("alipay-seller-id", "a PID is 2088 and 12 digits")),
        };
        let private = read_key_file("alipay-private-key-file", args.private_key_file.as_ref())?;
        let private =
            sign::parse_private_key(&private).map_err(|e| config("alipay-private-key-file", e))?;
        let public = read_key_file("alipay-public-key-file", args.public_key_file.as_ref())?;
        let public =
            sign::parse_public_key(&public).map_err(|e| config("alipay-public-key-file", e))?;
        if public == private.to_public_key() {
            return Err(config(
                "alipay-public-key-file",
                "this is the app's own public key; give Alipay's public key (支付宝公钥)",
            ));
        }
        let gateway =
            url::Url::parse(args.gateway.trim()).map_err(|e| config("alipay-gateway", e))?;
        // Plain HTTP would expose every signed request; only a gateway on
        // this machine (a simulator) may use it.
        let loopback = matches!(
            gateway.host(),
            Some(url::Host::Ipv4(ip)) if ip.is_loopback()
        ) || matches!(gateway.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
            || gateway.host_str() == Some("localhost");
        if gateway.scheme() != "https" && !(gateway.scheme() == "http" && loopback) {
            return Err(config("alipay-gateway", "must be https"));
        }
        if gateway.query().is_some()
            || gateway.fragment().is_some()
            || !gateway.username().is_empty()
        {
            return Err(config(
                "alipay-gateway",
                "a URL without query, fragment or user",
            ));
        }
        Ok(Alipay {
            app_id: app_id.to_owned(),
            seller_id,
            gateway,
            app_key: Redacted(SigningKey::new(private)),
            alipay_key: VerifyingKey::new(public),
            http,
        })
    }

    /// The common request parameters around `biz_content`, signed.
    fn signed_params(
        &self,
        method: &str,
        biz: &Value,
        now: DateTime<Utc>,
        urls: Option<(&str, &str)>,
    ) -> Result<Params, ProviderError> {
        let mut p = Params::new();
        for (k, v) in [
            ("app_id", self.app_id.as_str()),
            ("method", method),
            ("format", "JSON"),
            ("charset", "utf-8"),
            ("sign_type", "RSA2"),
            ("version", "1.0"),
        ] {
            p.insert(k.into(), v.into());
        }
        p.insert("timestamp".into(), beijing_time(now));
        p.insert("biz_content".into(), biz.to_string());
        if let Some((notify_url, return_url)) = urls {
            p.insert("notify_url".into(), notify_url.into());
            p.insert("return_url".into(), return_url.into());
        }
        let content = sign::sign_content(&p, &["sign"]);
        let signature = sign::sign(&self.app_key.0, &content)
            .map_err(|e| ProviderError::Config(format!("alipay: {e}")))?;
        p.insert("sign".into(), signature);
        Ok(p)
    }

    /// Calls one API and returns its verified `*_response` object (code 10000).
    async fn call(&self, method: &str, biz: Value) -> Result<Map<String, Value>, ProviderError> {
        let params = self.signed_params(method, &biz, Utc::now(), None)?;
        let unavailable = |e: reqwest::Error| {
            ProviderError::Unavailable(format!("{method}: {}", e.without_url()))
        };
        let mut resp = self
            .http
            .post(self.gateway.clone())
            .form(&params)
            .send()
            .await
            .map_err(unavailable)?;
        let status = resp.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ProviderError::Unavailable(format!(
                "{method}: HTTP {status}"
            )));
        }
        if !status.is_success() {
            return Err(ProviderError::Refused {
                code: format!("http_{}", status.as_u16()),
                message: format!("{method}: the gateway answered HTTP {status}"),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unavailable)? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(ProviderError::Malformed(format!(
                    "{method}: answer over {MAX_ANSWER_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        parse_answer(method, &body, &self.alipay_key)
    }

    fn verify_notification(
        &self,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Callback, ProviderError> {
        let p = verified_notification(body, &self.alipay_key)?;
        let notify_time = field(&p, "notify_time")?;
        let sent = parse_beijing_time(notify_time).ok_or_else(|| {
            ProviderError::Malformed("notify_time is not yyyy-MM-dd HH:mm:ss".into())
        })?;
        if sent < now - NOTIFY_MAX_AGE || sent > now + NOTIFY_MAX_AHEAD {
            return Err(ProviderError::Stale(format!(
                "notify_time {notify_time} (Beijing)"
            )));
        }
        let report = report_from(&p, "notification")?;
        Ok(Callback::Payment(self.own_seller(&p, report)))
    }

    /// A notification for another seller of the same app names that seller
    /// as its merchant, so the service refuses it as another merchant's.
    fn own_seller(&self, p: &Params, mut report: PaymentReport) -> PaymentReport {
        if let Some(ours) = &self.seller_id {
            match p.get("seller_id") {
                Some(theirs) if theirs == ours => {}
                other => {
                    report.merchant = format!("seller:{}", other.map(String::as_str).unwrap_or(""))
                }
            }
        }
        report
    }
}

/// The notification's parameters once its signature holds.
fn verified_notification(body: &[u8], key: &VerifyingKey<Sha256>) -> Result<Params, ProviderError> {
    if body.len() > MAX_NOTIFY_BYTES {
        return Err(ProviderError::Malformed(format!(
            "notification over {MAX_NOTIFY_BYTES} bytes"
        )));
    }
    let p = sign::parse_form(body, MAX_NOTIFY_PARAMS).map_err(ProviderError::Malformed)?;
    let signature = match p.get("sign") {
        Some(s) if !s.is_empty() => s,
        _ => return Err(ProviderError::BadSignature("no sign".into())),
    };
    // Alipay's sign_type is not itself signed; we accept only RSA2 (RSA1 is
    // SHA-1 and the app's keys are RSA2).
    if let Some(t) = p.get("sign_type") {
        if t != "RSA2" {
            return Err(ProviderError::BadSignature(format!(
                "sign_type {:?}",
                sign::short(t)
            )));
        }
    }
    if let Some(c) = p.get("charset") {
        if !c.eq_ignore_ascii_case("utf-8") {
            return Err(ProviderError::Malformed(format!(
                "charset {:?}",
                sign::short(c)
            )));
        }
    }
    let content = sign::sign_content(&p, &["sign", "sign_type"]);
    sign::verify(key, &content, signature).map_err(ProviderError::BadSignature)?;
    Ok(p)
}

fn field<'a>(p: &'a Params, name: &str) -> Result<&'a str, ProviderError> {
    match p.get(name).map(String::as_str) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ProviderError::Malformed(format!("no {name}"))),
    }
}

fn amount(p: &Params, name: &str) -> Result<i64, ProviderError> {
    let v = field(p, name)?;
    parse_yuan(v)
        .ok_or_else(|| ProviderError::Malformed(format!("{name} is not an amount in yuan")))
}

/// A payment as a notification or `alipay.trade.query` tells it.
fn report_from(p: &Params, what: &str) -> Result<PaymentReport, ProviderError> {
    let out_trade_no = field(p, "out_trade_no")?;
    let payment_id = parse_trade_no(out_trade_no).ok_or_else(|| {
        ProviderError::Malformed(format!("{what} for an out_trade_no we never issued"))
    })?;
    let status = field(p, "trade_status")?;
    let txn = p.get("trade_no").filter(|t| !t.is_empty()).cloned();
    // After a refund Alipay keeps the trade TRADE_SUCCESS (partly refunded)
    // or closes it (wholly refunded); either way it had been paid.
    let refunded = ["refund_fee", "gmt_refund", "out_biz_no"].iter().any(|k| {
        p.get(*k)
            .is_some_and(|v| !v.is_empty() && v != "0.00" && v != "0")
    });
    let paid_before = p
        .get("gmt_payment")
        .or(p.get("send_pay_date"))
        .is_some_and(|v| !v.is_empty());
    let outcome = match status {
        "TRADE_SUCCESS" | "TRADE_FINISHED" if refunded => PayOutcome::Refunded,
        "TRADE_SUCCESS" | "TRADE_FINISHED" => PayOutcome::Succeeded,
        "WAIT_BUYER_PAY" => PayOutcome::Pending,
        "TRADE_CLOSED" if refunded || paid_before => PayOutcome::Refunded,
        "TRADE_CLOSED" => PayOutcome::Failed,
        other => {
            return Err(ProviderError::Malformed(format!(
                "trade_status {:?}",
                sign::short(other)
            )))
        }
    };
    if txn.is_none() && matches!(outcome, PayOutcome::Succeeded | PayOutcome::Refunded) {
        return Err(ProviderError::Malformed(format!(
            "a paid trade without trade_no in the {what}"
        )));
    }
    Ok(PaymentReport {
        payment_id,
        provider_txn_id: txn,
        outcome,
        amount_cents: amount(p, "total_amount")?,
        currency: "CNY".into(),
        merchant: field(p, "app_id")?.to_owned(),
    })
}

/// Sub-codes whose docs say "retry the same request".
const TRANSIENT_SUB_CODES: &[&str] = &[
    "ACQ.SYSTEM_ERROR",
    "aop.ACQ.SYSTEM_ERROR",
    "isp.unknow-error",
];

/// An answer: `{"<method>_response": {...}, "sign": "..."}` (or
/// `error_response` when the gateway refused the call itself). A success
/// must be signed; an unsigned refusal (the gateway cannot sign for an app
/// it does not know) is believed only as far as "refused" or "try later".
fn parse_answer(
    method: &str,
    body: &[u8],
    key: &VerifyingKey<Sha256>,
) -> Result<Map<String, Value>, ProviderError> {
    let malformed = |why: &str| ProviderError::Malformed(format!("{method}: {why}"));
    let text = std::str::from_utf8(body).map_err(|_| malformed("answer is not UTF-8"))?;
    let doc: Value = serde_json::from_str(text).map_err(|_| malformed("answer is not JSON"))?;
    let doc = doc
        .as_object()
        .ok_or_else(|| malformed("answer is not an object"))?;
    let own = format!("{}_response", method.replace('.', "_"));
    let name = if doc.contains_key(&own) {
        own.as_str()
    } else {
        "error_response"
    };
    let parsed = doc
        .get(name)
        .ok_or_else(|| malformed("no *_response in the answer"))?;
    let signature = match doc.get("sign") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.as_str()),
        Some(_) => return Err(malformed("sign is not a string")),
    };
    let raw = sign::answer_content(text, name).ok_or_else(|| malformed("no signed object"))?;
    let data: Map<String, Value> =
        serde_json::from_str(raw).map_err(|_| malformed("signed object is not JSON"))?;
    // What was signed must be what the answer says (the key could also
    // appear inside a string before the real one).
    if parsed.as_object() != Some(&data) {
        return Err(malformed("ambiguous answer"));
    }
    let text_of = |k: &str| data.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let code = text_of("code");
    match signature {
        Some(s) => sign::verify_answer(key, raw, s)
            .map_err(|e| ProviderError::BadSignature(format!("{method} answer: {e}")))?,
        None if code == "10000" => {
            return Err(ProviderError::BadSignature(format!(
                "{method}: unsigned success answer"
            )))
        }
        None => {}
    }
    if code == "10000" {
        return Ok(data);
    }
    let sub_code = text_of("sub_code");
    if code == "20000" || TRANSIENT_SUB_CODES.contains(&sub_code.as_str()) {
        return Err(ProviderError::Unavailable(format!(
            "{method}: {code} {sub_code}"
        )));
    }
    if signature.is_some() && sub_code == "ACQ.TRADE_NOT_EXIST" {
        return Err(ProviderError::NotFound("payment"));
    }
    let message = [text_of("sub_msg"), text_of("msg")]
        .into_iter()
        .find(|m| !m.is_empty())
        .unwrap_or_default();
    Err(ProviderError::Refused {
        code: if sub_code.is_empty() { code } else { sub_code },
        // The gateway's isv.invalid-signature message quotes a whole signing
        // string; a log line needs less.
        message: message.chars().take(200).collect(),
    })
}

/// The object's string fields as parameters (amounts arrive as strings).
fn as_params(data: &Map<String, Value>) -> Params {
    data.iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
        .collect()
}

/// What Alipay shows as the subject: at most 256 characters, without the
/// `/ = &` its docs forbid there.
fn subject(description: &str, fallback: &str) -> String {
    let s: String = description
        .chars()
        .map(|c| {
            if matches!(c, '/' | '=' | '&') || c.is_control() {
                ' '
            } else {
                c
            }
        })
        .take(256)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        fallback.to_owned()
    } else {
        s.to_owned()
    }
}

#[async_trait]
impl Provider for Alipay {
    fn name(&self) -> &'static str {
        "alipay"
    }

    fn merchant(&self) -> &str {
        &self.app_id
    }

    async fn start(&self, req: &StartRequest) -> Result<Started, ProviderError> {
        if req.currency != "CNY" {
            return Err(ProviderError::Refused {
                code: "unsupported_currency".into(),
                message: "Alipay trades here are in CNY".into(),
            });
        }
        if !(1..=MAX_AMOUNT_CENTS).contains(&req.amount_cents) {
            return Err(ProviderError::Refused {
                code: "invalid_amount".into(),
                message: "total_amount is 0.01 to 100000000 yuan".into(),
            });
        }
        let (method, product_code) = match req.scene {
            Scene::Desktop => ("alipay.trade.page.pay", "FAST_INSTANT_TRADE_PAY"),
            Scene::Mobile | Scene::WeChat { .. } => ("alipay.trade.wap.pay", "QUICK_WAP_WAY"),
        };
        let out_trade_no = trade_no(req.payment_id);
        let mut biz = json!({
            "out_trade_no": out_trade_no,
            "total_amount": yuan(req.amount_cents),
            "subject": subject(&req.description, &out_trade_no),
            "product_code": product_code,
            // Absolute, so Alipay refuses the money after the reservation ends.
            "time_expire": beijing_time(req.expires_at),
        });
        if method == "alipay.trade.wap.pay" && !req.return_url.is_empty() {
            // Where a buyer who gives up in the WAP cashier goes back to.
            biz["quit_url"] = json!(req.return_url);
        }
        let params = self.signed_params(
            method,
            &biz,
            Utc::now(),
            Some((&req.notify_url, &req.return_url)),
        )?;
        let mut url = self.gateway.clone();
        url.query_pairs_mut().extend_pairs(&params);
        Ok(Started {
            checkout: Checkout {
                url: Some(url.into()),
                params: None,
            },
        })
    }

    fn verify(
        &self,
        _headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Callback, ProviderError> {
        self.verify_notification(body, now)
    }

    fn ack(&self) -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type: "text/plain; charset=utf-8",
            body: "success".into(),
        }
    }

    /// Anything but `success` makes Alipay retry; the reason stays here.
    fn nack(&self, _message: &str) -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type: "text/plain; charset=utf-8",
            body: "fail".into(),
        }
    }

    async fn query(&self, payment_id: Uuid) -> Result<PaymentReport, ProviderError> {
        let asked = trade_no(payment_id);
        let data = self
            .call("alipay.trade.query", json!({ "out_trade_no": asked }))
            .await?;
        let mut p = as_params(&data);
        if p.get("out_trade_no") != Some(&asked) {
            return Err(ProviderError::Malformed(
                "alipay.trade.query: another out_trade_no".into(),
            ));
        }
        // The answer, signed for our app, names no app itself.
        p.insert("app_id".into(), self.app_id.clone());
        report_from(&p, "alipay.trade.query answer")
    }

    async fn close(&self, payment_id: Uuid) -> Result<(), ProviderError> {
        self.call(
            "alipay.trade.close",
            json!({ "out_trade_no": trade_no(payment_id) }),
        )
        .await
        .map(drop)
    }

    async fn refund(&self, req: &RefundRequest) -> Result<RefundReport, ProviderError> {
        if !(1..=MAX_AMOUNT_CENTS).contains(&req.amount_cents) {
            return Err(ProviderError::Refused {
                code: "invalid_amount".into(),
                message: "refund_amount is 0.01 to 100000000 yuan".into(),
            });
        }
        let data = self
            .call(
                "alipay.trade.refund",
                json!({
                    "out_trade_no": trade_no(req.payment_id),
                    "refund_amount": yuan(req.amount_cents),
                    "out_request_no": trade_no(req.refund_id),
                    "refund_reason": subject(&req.reason, "refund"),
                }),
            )
            .await?;
        if data.get("fund_change").and_then(Value::as_str) == Some("Y") {
            return Ok(RefundReport {
                refund_id: req.refund_id,
                provider_refund_id: None,
                outcome: RefundOutcome::Succeeded,
                amount_cents: req.amount_cents,
            });
        }
        // "N": no money moved by this call, e.g. the same out_request_no
        // again; the refund query says whether it had already been done.
        self.query_refund(req).await
    }

    async fn query_refund(&self, req: &RefundRequest) -> Result<RefundReport, ProviderError> {
        let asked = trade_no(req.refund_id);
        let data = self
            .call(
                "alipay.trade.fastpay.refund.query",
                json!({
                    "out_trade_no": trade_no(req.payment_id),
                    "out_request_no": asked,
                }),
            )
            .await?;
        let p = as_params(&data);
        // The docs: no refund data means Alipay never took this refund
        // request; the same out_request_no may be sent again.
        match p.get("out_request_no") {
            None => return Err(ProviderError::NotFound("refund")),
            Some(n) if *n != asked => {
                return Err(ProviderError::Malformed(
                    "refund query: another out_request_no".into(),
                ))
            }
            Some(_) => {}
        }
        // Without REFUND_SUCCESS the docs allow "not processed yet" (a query
        // soon after the refund): only the refund call's refusal is final.
        let outcome = match p.get("refund_status").map(String::as_str) {
            Some("REFUND_SUCCESS") => RefundOutcome::Succeeded,
            _ => RefundOutcome::Pending,
        };
        let amount_cents = match p.get("refund_amount") {
            Some(_) => amount(&p, "refund_amount")?,
            None => req.amount_cents,
        };
        Ok(RefundReport {
            refund_id: req.refund_id,
            provider_refund_id: None,
            outcome,
            amount_cents,
        })
    }
}

#[cfg(test)]
mod tests;
