//! `AlipaySim`: Alipay's open-platform gateway on 127.0.0.1:0, with its own
//! keys (the app's pair and Alipay's pair, generated here). It checks every
//! request as the real gateway does, with its own small implementation of
//! the RSA2 rules rather than the adapter's (a shared bug would pass both),
//! answers in Alipay's format with signed answers, plays the buyer's
//! cashier (a pay URL opened, paid or failed, `time_expire` honoured) and
//! sends the trade notifications to the node.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeDelta, Utc};
use lychee_live::clock::Clock;
use lychee_live::payments::alipay::AlipayArgs;
use lychee_live::payments::provider::{parse_yuan, yuan};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::signature::{Keypair, SignatureEncoding, Signer, Verifier};
use rsa::RsaPrivateKey;
use serde_json::{json, Map, Value};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::gateway::{Delivery, Gateway};

type Params = BTreeMap<String, String>;

struct Keys {
    app: RsaPrivateKey,
    alipay: RsaPrivateKey,
    /// A key Alipay never saw for this app.
    stranger: RsaPrivateKey,
}

/// Three 2048-bit keys take seconds in a debug build: once per test binary.
static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let key = || RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key generation");
    Keys {
        app: key(),
        alipay: key(),
        stranger: key(),
    }
});

const BEIJING: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(o) => o,
    None => panic!("UTC+8"),
};
const TIME: &str = "%Y-%m-%d %H:%M:%S";

fn beijing(t: DateTime<Utc>) -> String {
    t.with_timezone(&BEIJING).format(TIME).to_string()
}

fn parse_beijing(s: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(s, TIME).ok()?;
    Some(
        naive
            .and_local_timezone(BEIJING)
            .single()?
            .with_timezone(&Utc),
    )
}

/// The signed string, Alipay's way: sorted, empty values left out.
fn content(p: &Params, skip: &[&str]) -> String {
    p.iter()
        .filter(|(k, v)| !k.is_empty() && !v.is_empty() && !skip.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn rsa2_sign(key: &RsaPrivateKey, text: &str) -> String {
    let signer = SigningKey::<Sha256>::new(key.clone());
    B64.encode(signer.sign(text.as_bytes()).to_bytes())
}

fn rsa2_verify(key: &RsaPrivateKey, text: &str, sign: &str) -> bool {
    let verifier: VerifyingKey<Sha256> = SigningKey::<Sha256>::new(key.clone()).verifying_key();
    let Ok(raw) = B64.decode(sign) else {
        return false;
    };
    let Ok(sig) = Signature::try_from(raw.as_slice()) else {
        return false;
    };
    verifier.verify(text.as_bytes(), &sig).is_ok()
}

fn form(p: &Params) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(p)
        .finish()
}

/// Form pairs, refusing a repeated name as the gateway's parser does not
/// promise which one it keeps.
fn parse_pairs(raw: &str, into: &mut Params) -> Result<(), SimError> {
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        if into.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(SimError::new(
                "isv.invalid-parameter",
                format!("repeated {k}"),
            ));
        }
    }
    Ok(())
}

/// Why the gateway (or its cashier) refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError {
    pub code: String,
    pub message: String,
}

impl SimError {
    fn new(code: &str, message: impl Into<String>) -> SimError {
        SimError {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// A trade as the gateway holds it (created when its pay URL is opened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trade {
    pub out_trade_no: String,
    pub trade_no: String,
    pub method: String,
    pub total_cents: i64,
    pub subject: String,
    pub notify_url: String,
    pub time_expire: DateTime<Utc>,
    /// WAIT_BUYER_PAY, TRADE_SUCCESS or TRADE_CLOSED.
    pub status: &'static str,
    pub created: DateTime<Utc>,
    pub paid: Option<DateTime<Utc>>,
    pub refunded_cents: i64,
    /// The genuine success notification, what `redeliver` sends.
    pub notification: Option<String>,
}

#[derive(Default)]
struct SimState {
    trades: HashMap<String, Trade>,
    /// (out_trade_no, out_request_no) -> cents, in acceptance order below.
    refunds: HashMap<(String, String), i64>,
    accepted: Vec<(String, i64)>,
    refunds_fail: bool,
    ignore_time_expire: bool,
    refund_notifications: bool,
    bad_signatures: usize,
    calls: Vec<String>,
}

struct Shared {
    app_id: String,
    seller_id: String,
    clock: Arc<Clock>,
    http: reqwest::Client,
    // std Mutex: short sections, never held across an await.
    state: Mutex<SimState>,
}

/// Alipay's gateway for one app. Dropping it stops the server and removes
/// its key files.
pub struct AlipaySim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    dir: PathBuf,
    shutdown: CancellationToken,
}

impl Drop for AlipaySim {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl AlipaySim {
    /// A gateway on the wall clock.
    pub async fn start() -> AlipaySim {
        AlipaySim::start_with_clock(Arc::new(Clock::default())).await
    }

    /// A gateway on the node's clock (`TestEnv::clock`), so `time_expire`
    /// and `notify_time` move with the test's time.
    pub async fn start_with_clock(clock: Arc<Clock>) -> AlipaySim {
        let dir =
            std::env::temp_dir().join(format!("lychee-alipay-sim-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("sim dir");
        let keys = &*KEYS;
        // The forms Alipay's tools hand out: the app key as the key tool's
        // bare PKCS#8 base64, Alipay's public key as the platform shows it.
        let app = B64.encode(keys.app.to_pkcs8_der().expect("pkcs8").as_bytes());
        std::fs::write(dir.join("app_private_key.txt"), app).expect("write key");
        let alipay_public = keys
            .alipay
            .to_public_key()
            .to_public_key_der()
            .expect("spki");
        std::fs::write(
            dir.join("alipay_public_key.txt"),
            B64.encode(alipay_public.as_bytes()),
        )
        .expect("write key");
        let stranger = keys.stranger.to_pkcs1_pem(LineEnding::LF).expect("pem");
        std::fs::write(dir.join("stranger_private_key.pem"), stranger.as_bytes())
            .expect("write key");

        let shared = Arc::new(Shared {
            app_id: "2021000149612345".into(),
            seller_id: "2088721012345678".into(),
            clock,
            http: lychee_live::payments::http_client().expect("HTTP client"),
            state: Mutex::new(SimState::default()),
        });
        let app = Router::new()
            .route("/gateway.do", get(cashier).post(api))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        AlipaySim {
            addr,
            shared,
            dir,
            shutdown,
        }
    }

    pub fn app_id(&self) -> &str {
        &self.shared.app_id
    }

    pub fn seller_id(&self) -> &str {
        &self.shared.seller_id
    }

    pub fn gateway_url(&self) -> String {
        format!("http://{}/gateway.do", self.addr)
    }

    /// Settings of an app this gateway knows, seller id included.
    pub fn args(&self) -> AlipayArgs {
        AlipayArgs {
            app_id: Some(self.shared.app_id.clone()),
            private_key_file: Some(self.dir.join("app_private_key.txt")),
            public_key_file: Some(self.dir.join("alipay_public_key.txt")),
            gateway: self.gateway_url(),
            seller_id: Some(self.shared.seller_id.clone()),
        }
    }

    /// The same settings with a private key Alipay does not know for the
    /// app: every request it signs is refused.
    pub fn stranger_args(&self) -> AlipayArgs {
        AlipayArgs {
            private_key_file: Some(self.dir.join("stranger_private_key.pem")),
            ..self.args()
        }
    }

    /// Requests refused for their signature so far (pay URLs included).
    pub fn bad_signatures(&self) -> usize {
        self.lock().bad_signatures
    }

    /// The API methods called, in order (pay URLs not included).
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn trade(&self, out_trade_no: &str) -> Option<Trade> {
        self.lock().trades.get(out_trade_no).cloned()
    }

    /// From now on a trade can be paid after its `time_expire` (a buyer who
    /// paid in the last second, whose notification comes later).
    pub fn set_ignore_time_expire(&self, ignore: bool) {
        self.lock().ignore_time_expire = ignore;
    }

    /// Whether refunds also send the trade notification Alipay sends after
    /// one (trade_status_sync with refund_fee, gmt_refund, out_biz_no).
    /// Off by default: refunds settle by their answers.
    pub fn set_refund_notifications(&self, on: bool) {
        self.lock().refund_notifications = on;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.shared.state.lock().expect("sim state")
    }

    /// The buyer's browser opens a pay URL: the cashier checks it as the
    /// gateway does and creates (or finds) the trade, WAIT_BUYER_PAY.
    pub fn open(&self, url: &str) -> Result<Trade, SimError> {
        self.shared.open(url)
    }

    /// The buyer pays an opened trade; returns the genuine notification.
    /// `Err` when the cashier refuses (closed, expired).
    pub fn mark_paid(&self, out_trade_no: &str) -> Result<String, SimError> {
        self.shared.mark_paid(out_trade_no)
    }

    /// A notification of the trade as it is now, with `status` and these
    /// parameters changed (`""` removes one), signed by Alipay's key.
    pub fn notification(
        &self,
        out_trade_no: &str,
        status: &str,
        changes: &[(&str, &str)],
    ) -> String {
        let trade = self.trade(out_trade_no).expect("no such trade");
        let mut p = self.shared.notification_params(&trade, status);
        for (k, v) in changes {
            if v.is_empty() {
                p.remove(*k);
            } else {
                p.insert(k.to_string(), v.to_string());
            }
        }
        self.shared.signed_notification(p)
    }

    /// Posts a notification body to a notify URL as Alipay does.
    pub async fn post_notification(&self, notify_url: &str, body: String) -> (u16, String) {
        self.shared.post(notify_url, body).await
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().expect("sim state")
    }

    fn expired(&self, state: &SimState, trade: &Trade) -> bool {
        !state.ignore_time_expire && self.clock.now() > trade.time_expire
    }

    /// Checks a signed request's common parameters as the gateway does.
    fn check(&self, p: &Params, state: &mut SimState) -> Result<(), SimError> {
        if p.get("app_id") != Some(&self.app_id) {
            return Err(SimError::new("isv.invalid-app-id", "无效的AppID参数"));
        }
        if p.get("sign_type").map(String::as_str) != Some("RSA2") {
            return Err(SimError::new(
                "isv.invalid-signature-type",
                "无效的签名类型",
            ));
        }
        let signed = content(p, &["sign"]);
        let sign = p.get("sign").map(String::as_str).unwrap_or("");
        if !rsa2_verify(&KEYS.app, &signed, sign) {
            state.bad_signatures += 1;
            return Err(SimError::new(
                "isv.invalid-signature",
                format!("验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，网关生成的验签字符串为：{signed}"),
            ));
        }
        for (k, v) in [("charset", "utf-8"), ("version", "1.0")] {
            if p.get(k).map(String::as_str) != Some(v) {
                return Err(SimError::new("isv.invalid-parameter", k));
            }
        }
        if p.get("format")
            .is_some_and(|f| !f.eq_ignore_ascii_case("json"))
        {
            return Err(SimError::new("isv.invalid-format", "format"));
        }
        let ts = p.get("timestamp").map(String::as_str).unwrap_or("");
        if parse_beijing(ts).is_none() {
            return Err(SimError::new("isv.invalid-timestamp", "非法的时间戳参数"));
        }
        Ok(())
    }

    fn biz(p: &Params) -> Result<Map<String, Value>, SimError> {
        let raw = p.get("biz_content").map(String::as_str).unwrap_or("{}");
        serde_json::from_str(raw).map_err(|_| SimError::new("isv.invalid-parameter", "biz_content"))
    }

    fn open(&self, url: &str) -> Result<Trade, SimError> {
        let url =
            url::Url::parse(url).map_err(|_| SimError::new("isv.invalid-parameter", "url"))?;
        let mut p = Params::new();
        parse_pairs(url.query().unwrap_or(""), &mut p)?;
        let mut state = self.lock();
        self.check(&p, &mut state)?;
        let method = p.get("method").cloned().unwrap_or_default();
        let product = match method.as_str() {
            "alipay.trade.page.pay" => "FAST_INSTANT_TRADE_PAY",
            "alipay.trade.wap.pay" => "QUICK_WAP_WAY",
            _ => return Err(SimError::new("isv.invalid-method", "不存在的方法名")),
        };
        let biz = Shared::biz(&p)?;
        let text = |k: &str| biz.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        if text("product_code") != product {
            return Err(SimError::new("ACQ.PRODUCT_CODE_ERROR", "product_code"));
        }
        let out_trade_no = text("out_trade_no");
        if out_trade_no.is_empty() || out_trade_no.len() > 64 {
            return Err(SimError::new("isv.missing-parameter", "out_trade_no"));
        }
        let total_cents = parse_yuan(&text("total_amount"))
            .filter(|c| (1..=10_000_000_000).contains(c))
            .ok_or_else(|| SimError::new("ACQ.TOTAL_FEE_EXCEED", "total_amount"))?;
        let subject = text("subject");
        if subject.is_empty() || subject.chars().count() > 256 || subject.contains(['/', '=', '&'])
        {
            return Err(SimError::new("isv.invalid-parameter", "subject"));
        }
        let time_expire = parse_beijing(&text("time_expire"))
            .ok_or_else(|| SimError::new("isv.invalid-parameter", "time_expire"))?;
        let notify_url = p.get("notify_url").cloned().unwrap_or_default();
        if url::Url::parse(&notify_url).is_err() {
            return Err(SimError::new("isv.invalid-parameter", "notify_url"));
        }
        if method == "alipay.trade.wap.pay" && text("quit_url").is_empty() {
            return Err(SimError::new("isv.missing-parameter", "quit_url"));
        }
        let now = self.clock.now();
        let state = &mut *state;
        if let Some(trade) = state.trades.get(&out_trade_no) {
            if trade.total_cents != total_cents || trade.subject != subject {
                return Err(SimError::new("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改"));
            }
            if trade.status != "WAIT_BUYER_PAY" {
                return Err(SimError::new("ACQ.TRADE_HAS_CLOSE", "交易已关闭"));
            }
            return Ok(trade.clone());
        }
        let trade = Trade {
            out_trade_no: out_trade_no.clone(),
            trade_no: format!(
                "{}22001{:017}",
                now.with_timezone(&BEIJING).format("%Y%m%d"),
                rand::random::<u64>() % 100_000_000_000_000_000
            ),
            method,
            total_cents,
            subject,
            notify_url,
            time_expire,
            status: "WAIT_BUYER_PAY",
            created: now,
            paid: None,
            refunded_cents: 0,
            notification: None,
        };
        if self.expired(state, &trade) {
            return Err(SimError::new(
                "ACQ.TRADE_HAS_CLOSE",
                "交易已关闭（超过time_expire）",
            ));
        }
        state.trades.insert(out_trade_no, trade.clone());
        Ok(trade)
    }

    fn mark_paid(&self, out_trade_no: &str) -> Result<String, SimError> {
        let now = self.clock.now();
        let mut state = self.lock();
        let state = &mut *state;
        let trade = state
            .trades
            .get(out_trade_no)
            .ok_or_else(|| SimError::new("ACQ.TRADE_NOT_EXIST", "交易不存在"))?;
        let expired = self.expired(state, trade);
        let trade = state.trades.get_mut(out_trade_no).expect("present");
        if trade.status == "WAIT_BUYER_PAY" && expired {
            trade.status = "TRADE_CLOSED";
        }
        if trade.status == "TRADE_SUCCESS" {
            return Ok(trade.notification.clone().expect("paid trades have one"));
        }
        if trade.status != "WAIT_BUYER_PAY" {
            return Err(SimError::new("ACQ.TRADE_HAS_CLOSE", "交易已关闭"));
        }
        trade.status = "TRADE_SUCCESS";
        trade.paid = Some(now);
        let trade = trade.clone();
        let body = self.signed_notification(self.notification_params(&trade, "TRADE_SUCCESS"));
        if let Some(t) = state.trades.get_mut(out_trade_no) {
            t.notification = Some(body.clone());
        }
        Ok(body)
    }

    fn notification_params(&self, trade: &Trade, status: &str) -> Params {
        let now = self.clock.now();
        let total = yuan(trade.total_cents);
        let paid = trade.paid.is_some();
        let mut p: Params = [
            ("notify_time", beijing(now)),
            ("notify_type", "trade_status_sync".into()),
            (
                "notify_id",
                format!(
                    "{}00222{:018}",
                    now.with_timezone(&BEIJING).format("%Y%m%d"),
                    rand::random::<u64>() % 1_000_000_000_000_000_000
                ),
            ),
            ("charset", "utf-8".into()),
            ("version", "1.0".into()),
            ("sign_type", "RSA2".into()),
            ("app_id", self.app_id.clone()),
            ("auth_app_id", self.app_id.clone()),
            ("seller_id", self.seller_id.clone()),
            ("seller_email", "lychee@example.com".into()),
            ("buyer_id", "2088102177846880".into()),
            ("buyer_logon_id", "159****5620".into()),
            ("trade_no", trade.trade_no.clone()),
            ("out_trade_no", trade.out_trade_no.clone()),
            ("trade_status", status.into()),
            ("subject", trade.subject.clone()),
            ("total_amount", total.clone()),
            ("gmt_create", beijing(trade.created)),
            ("point_amount", "0.00".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if paid {
            for k in ["receipt_amount", "invoice_amount", "buyer_pay_amount"] {
                p.insert(k.into(), total.clone());
            }
            p.insert(
                "gmt_payment".into(),
                trade.paid.map(beijing).unwrap_or_default(),
            );
            p.insert(
                "fund_bill_list".into(),
                json!([{ "amount": total, "fundChannel": "ALIPAYACCOUNT" }]).to_string(),
            );
        }
        if status == "TRADE_CLOSED" {
            p.insert("gmt_close".into(), beijing(now));
        }
        p
    }

    /// Signed as Alipay signs notifications: sign and sign_type left out.
    fn signed_notification(&self, mut p: Params) -> String {
        p.remove("sign");
        let sign = rsa2_sign(&KEYS.alipay, &content(&p, &["sign", "sign_type"]));
        p.insert("sign".into(), sign);
        form(&p)
    }

    /// An answer as the gateway writes it: the `*_response` object and the
    /// signature of exactly that text.
    fn answer(&self, method: &str, object: Map<String, Value>, signed: bool) -> String {
        let name = match method {
            "" => "error_response".to_owned(),
            m => format!("{}_response", m.replace('.', "_")),
        };
        let text = Value::Object(object).to_string();
        if signed {
            let sign = rsa2_sign(&KEYS.alipay, &text);
            format!(r#"{{"{name}":{text},"sign":"{sign}"}}"#)
        } else {
            format!(r#"{{"{name}":{text}}}"#)
        }
    }

    fn refusal(&self, method: &str, e: &SimError) -> String {
        let (code, msg) = match e.code.as_str() {
            c if c.starts_with("isv.") => ("40002", "Invalid Arguments"),
            _ => ("40004", "Business Failed"),
        };
        let object = json!({ "code": code, "msg": msg, "sub_code": e.code, "sub_msg": e.message });
        let object = object.as_object().cloned().unwrap_or_default();
        match e.code.as_str() {
            // It cannot sign for an app it does not know, nor name the method.
            "isv.invalid-app-id" => self.answer("", object, false),
            _ => self.answer(method, object, true),
        }
    }

    /// One API call; the answer text, and notifications to send after it.
    fn call(&self, raw_query: Option<&str>, body: &[u8]) -> (String, Vec<(String, String)>) {
        let mut p = Params::new();
        let parsed = parse_pairs(raw_query.unwrap_or(""), &mut p).and_then(|()| {
            let body = std::str::from_utf8(body)
                .map_err(|_| SimError::new("isv.invalid-parameter", "charset"))?;
            parse_pairs(body, &mut p)
        });
        let method = p.get("method").cloned().unwrap_or_default();
        let mut state = self.lock();
        state.calls.push(method.clone());
        if let Err(e) = parsed.and_then(|()| self.check(&p, &mut state)) {
            return (self.refusal(&method, &e), Vec::new());
        }
        let result = Shared::biz(&p).and_then(|biz| self.dispatch(&mut state, &method, &biz));
        match result {
            Ok((object, notes)) => (self.answer(&method, object, true), notes),
            Err(e) => (self.refusal(&method, &e), Vec::new()),
        }
    }

    #[allow(clippy::type_complexity)]
    fn dispatch(
        &self,
        state: &mut SimState,
        method: &str,
        biz: &Map<String, Value>,
    ) -> Result<(Map<String, Value>, Vec<(String, String)>), SimError> {
        let text = |k: &str| biz.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let out_trade_no = text("out_trade_no");
        let now = self.clock.now();
        let mut answer = Map::new();
        answer.insert("code".into(), "10000".into());
        answer.insert("msg".into(), "Success".into());
        let mut notes = Vec::new();
        if !matches!(
            method,
            "alipay.trade.query"
                | "alipay.trade.close"
                | "alipay.trade.refund"
                | "alipay.trade.fastpay.refund.query"
        ) {
            return Err(SimError::new("isv.invalid-method", "不存在的方法名"));
        }
        let expired = match state.trades.get(&out_trade_no) {
            None => return Err(SimError::new("ACQ.TRADE_NOT_EXIST", "交易不存在")),
            Some(t) => self.expired(state, t),
        };
        let ignore = state.ignore_time_expire;
        let trade = state.trades.get_mut(&out_trade_no).expect("present");
        if trade.status == "WAIT_BUYER_PAY" && expired && !ignore {
            trade.status = "TRADE_CLOSED";
        }
        answer.insert("out_trade_no".into(), out_trade_no.clone().into());
        answer.insert("trade_no".into(), trade.trade_no.clone().into());
        match method {
            "alipay.trade.query" => {
                answer.insert("trade_status".into(), trade.status.into());
                answer.insert("total_amount".into(), yuan(trade.total_cents).into());
                answer.insert("buyer_logon_id".into(), "159****5620".into());
                let paid = trade.paid.map_or(0, |_| trade.total_cents);
                answer.insert("buyer_pay_amount".into(), yuan(paid).into());
                if let Some(at) = trade.paid {
                    answer.insert("send_pay_date".into(), beijing(at).into());
                }
            }
            "alipay.trade.close" => {
                if trade.status != "WAIT_BUYER_PAY" {
                    return Err(SimError::new("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"));
                }
                trade.status = "TRADE_CLOSED";
            }
            "alipay.trade.refund" => {
                if state.refunds_fail {
                    return Err(SimError::new(
                        "ACQ.SELLER_BALANCE_NOT_ENOUGH",
                        "卖家余额不足",
                    ));
                }
                let trade = state.trades.get_mut(&out_trade_no).expect("present");
                let request_no = text("out_request_no");
                let cents = parse_yuan(&text("refund_amount"))
                    .filter(|c| *c > 0)
                    .ok_or_else(|| SimError::new("isv.invalid-parameter", "refund_amount"))?;
                if request_no.is_empty() {
                    return Err(SimError::new("isv.missing-parameter", "out_request_no"));
                }
                let fund_change = match state
                    .refunds
                    .get(&(out_trade_no.clone(), request_no.clone()))
                {
                    Some(&before) if before == cents => "N",
                    Some(_) => {
                        return Err(SimError::new(
                            "ACQ.DISCORDANT_REPEAT_REQUEST",
                            "请求参数不一致",
                        ))
                    }
                    None => {
                        if trade.paid.is_none() {
                            return Err(SimError::new("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"));
                        }
                        if trade.refunded_cents + cents > trade.total_cents {
                            return Err(SimError::new(
                                "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
                                "退款金额超限",
                            ));
                        }
                        trade.refunded_cents += cents;
                        if trade.refunded_cents == trade.total_cents {
                            trade.status = "TRADE_CLOSED";
                        }
                        state
                            .refunds
                            .insert((out_trade_no.clone(), request_no.clone()), cents);
                        state.accepted.push((request_no.clone(), cents));
                        if state.refund_notifications {
                            let mut p = self.notification_params(trade, trade.status);
                            p.insert("refund_fee".into(), yuan(trade.refunded_cents));
                            p.insert("gmt_refund".into(), format!("{}.000", beijing(now)));
                            p.insert("out_biz_no".into(), request_no.clone());
                            notes.push((trade.notify_url.clone(), self.signed_notification(p)));
                        }
                        "Y"
                    }
                };
                answer.insert("fund_change".into(), fund_change.into());
                answer.insert("refund_fee".into(), yuan(trade.refunded_cents).into());
                answer.insert("buyer_logon_id".into(), "159****5620".into());
                answer.insert("gmt_refund_pay".into(), beijing(now).into());
            }
            _ => {
                let request_no = text("out_request_no");
                if let Some(&cents) = state
                    .refunds
                    .get(&(out_trade_no.clone(), request_no.clone()))
                {
                    let trade = &state.trades[&out_trade_no];
                    answer.insert("out_request_no".into(), request_no.into());
                    answer.insert("total_amount".into(), yuan(trade.total_cents).into());
                    answer.insert("refund_amount".into(), yuan(cents).into());
                    answer.insert("refund_status".into(), "REFUND_SUCCESS".into());
                }
            }
        }
        Ok((answer, notes))
    }

    async fn post(&self, notify_url: &str, body: String) -> (u16, String) {
        let resp = self
            .http
            .post(notify_url)
            .header(
                header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(body)
            .send()
            .await
            .expect("the node takes the notification");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }
}

/// The cashier page a buyer's browser gets for a pay URL.
async fn cashier(State(shared): State<Arc<Shared>>, RawQuery(q): RawQuery) -> impl IntoResponse {
    let url = format!("http://cashier/gateway.do?{}", q.unwrap_or_default());
    let page = match shared.open(&url) {
        Ok(t) => format!(
            "<h1>支付宝收银台</h1><p>{} {}</p>",
            t.out_trade_no,
            yuan(t.total_cents)
        ),
        Err(e) => format!("<h1>错误</h1><p>{e}</p>"),
    };
    ([(header::CONTENT_TYPE, "text/html;charset=utf-8")], page)
}

async fn api(
    State(shared): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let (answer, notes) = shared.call(q.as_deref(), &body);
    for (url, note) in notes {
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.post(&url, note).await;
        });
    }
    // What the real gateway says its JSON is.
    ([(header::CONTENT_TYPE, "text/html;charset=utf-8")], answer)
}

fn out_trade_no(payment: &Value) -> String {
    let id = payment["id"].as_str().expect("payment id");
    Uuid::parse_str(id).expect("uuid").simple().to_string()
}

#[async_trait]
impl Gateway for AlipaySim {
    fn provider(&self) -> &'static str {
        "alipay"
    }

    fn configure(&self, settings: &mut lychee_live::Settings) {
        settings.payments.providers = Some(vec!["alipay".into()]);
        settings.payments.alipay = self.args();
    }

    /// Opens the checkout URL (checked as the gateway checks it), pays, and
    /// delivers the notification as `how`. After `time_expire` the cashier
    /// closes the trade instead: nothing is sent (`None`). `redeliver` later
    /// sends the genuine notification, whatever `how` was.
    async fn pay(&self, payment: &Value, how: Delivery) -> Option<(u16, String)> {
        let url = payment["checkout"]["url"]
            .as_str()
            .expect("payment has checkout.url");
        let trade = match self.open(url) {
            Ok(trade) => trade,
            // Past time_expire: the cashier shows the trade closed.
            Err(e) if e.code == "ACQ.TRADE_HAS_CLOSE" => return None,
            Err(e) => panic!("the gateway refuses the pay URL: {e}"),
        };
        let genuine = match self.mark_paid(&trade.out_trade_no) {
            Ok(body) => body,
            Err(_) => return None,
        };
        let o = &trade.out_trade_no;
        let body = match how {
            Delivery::Normal => genuine,
            Delivery::Lost => return None,
            Delivery::TamperedBody => {
                // One byte of a signed value: the notify_id's first digit.
                let at = genuine.find("notify_id=").expect("notify_id") + "notify_id=".len();
                let mut bytes = genuine.into_bytes();
                bytes[at] = if bytes[at] == b'9' {
                    b'8'
                } else {
                    bytes[at] + 1
                };
                String::from_utf8(bytes).expect("ascii")
            }
            Delivery::WrongAmount => {
                let off = yuan(trade.total_cents + 1);
                self.notification(
                    o,
                    "TRADE_SUCCESS",
                    &[
                        ("total_amount", &off),
                        ("receipt_amount", &off),
                        ("buyer_pay_amount", &off),
                        ("invoice_amount", &off),
                    ],
                )
            }
            Delivery::WrongMerchant => self.notification(
                o,
                "TRADE_SUCCESS",
                &[
                    ("app_id", "2021000100000001"),
                    ("auth_app_id", "2021000100000001"),
                ],
            ),
            Delivery::Stale => {
                let old = beijing(self.shared.clock.now() - TimeDelta::days(3));
                self.notification(o, "TRADE_SUCCESS", &[("notify_time", &old)])
            }
        };
        Some(self.post_notification(&trade.notify_url, body).await)
    }

    async fn redeliver(&self, payment_id: Uuid) -> (u16, String) {
        let trade = self
            .trade(&payment_id.simple().to_string())
            .expect("a trade of this payment");
        let body = trade.notification.expect("the payment was paid");
        self.post_notification(&trade.notify_url, body).await
    }

    /// The buyer's payment fails: the trade closes and Alipay's
    /// TRADE_CLOSED notification is delivered.
    async fn fail(&self, payment: &Value) {
        let url = payment["checkout"]["url"]
            .as_str()
            .expect("payment has checkout.url");
        // An expired URL does not open, but its trade may exist already.
        let o = self
            .open(url)
            .map_or_else(|_| out_trade_no(payment), |t| t.out_trade_no);
        let notify_url = {
            let mut state = self.lock();
            // A trade never created is never notified about.
            let Some(trade) = state.trades.get_mut(&o) else {
                return;
            };
            assert!(trade.paid.is_none(), "a paid trade cannot fail");
            trade.status = "TRADE_CLOSED";
            trade.notify_url.clone()
        };
        let body = self.notification(&o, "TRADE_CLOSED", &[]);
        self.post_notification(&notify_url, body).await;
    }

    fn set_refunds_fail(&self, fail: bool) {
        self.lock().refunds_fail = fail;
    }

    fn refunds(&self) -> Vec<(String, i64)> {
        self.lock().accepted.clone()
    }
}
