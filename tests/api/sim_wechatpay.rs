//! `WechatSim`: WeChat Pay API v3's side, on 127.0.0.1:0, for tests. It
//! holds its own keys (merchant and platform key pairs, an APIv3 key,
//! written to a temporary directory removed on drop), refuses any request
//! whose `Authorization` does not verify with the merchant public key (401
//! `SIGN_ERROR`, counted), answers prepay, query, close, refund and refund
//! query in WeChat Pay's format with signed answer headers, and sends
//! signed and encrypted callbacks to each prepay's `notify_url`.
//!
//! It is written from the docs, independently of the adapter: sharing the
//! adapter's code would test the adapter against itself.
//!
//! Time: callbacks are signed, and `time_expire` is judged, on the node's
//! [`Clock`] (tests move it); answers are signed on the wall clock, as the
//! adapter checks them against it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use aes_gcm::aead::{Aead, OsRng, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, FixedOffset, TimeDelta, Utc};
use lychee_live::clock::Clock;
use lychee_live::payments::wechatpay::WechatPayArgs;
use rand::distr::{Alphanumeric, SampleString};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::gateway::{Delivery, Gateway};

pub const SIM_MCHID: &str = "1900000109";
pub const SIM_APPID: &str = "wxd678efh567hg6787";
/// The merchant API certificate's serial the adapter must name.
pub const SIM_MERCHANT_SERIAL: &str = "3775B6A45ACD588826D15E583A95F5DD22A2D4E2";
/// The 微信支付公钥 id WeChat Pay names in `Wechatpay-Serial`.
pub const SIM_PUB_KEY_ID: &str = "PUB_KEY_ID_0119000001092025010100000000000001";
/// Another merchant, for `Delivery::WrongMerchant`.
pub const OTHER_MCHID: &str = "1230000109";

/// RSA-2048 key generation takes seconds in a debug build: one set of key
/// pairs per test process, shared by every simulator.
struct Keys {
    merchant: RsaPrivateKey,
    platform: RsaPrivateKey,
    /// Neither the merchant's nor the platform's: signs forgeries.
    stranger: RsaPrivateKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let make = || std::thread::spawn(|| RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA key"));
        let (a, b, c) = (make(), make(), make());
        Keys {
            merchant: a.join().expect("key thread"),
            platform: b.join().expect("key thread"),
            stranger: c.join().expect("key thread"),
        }
    })
}

fn sign(key: &RsaPrivateKey, message: &[u8]) -> String {
    B64.encode(
        SigningKey::<Sha256>::new(key.clone())
            .sign(message)
            .to_bytes(),
    )
}

fn nonce(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), n)
}

fn beijing(t: DateTime<Utc>) -> String {
    let cst = FixedOffset::east_opt(8 * 3600).expect("+08:00");
    t.with_timezone(&cst)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// A prepaid order as the simulator holds it.
#[derive(Debug, Clone)]
pub struct SimOrder {
    pub out_trade_no: String,
    pub trade_type: &'static str,
    pub appid: String,
    pub mchid: String,
    pub description: String,
    pub notify_url: String,
    pub total: i64,
    pub currency: String,
    /// As the request sent it (RFC 3339).
    pub time_expire: String,
    pub openid: Option<String>,
    pub prepay_id: String,
    pub code_url: String,
    /// NOTPAY, SUCCESS, REFUND, CLOSED or PAYERROR.
    pub state: &'static str,
    pub transaction_id: Option<String>,
    pub success_time: Option<String>,
    pub refunded: i64,
}

#[derive(Debug, Clone)]
struct SimRefund {
    out_refund_no: String,
    refund_id: String,
    out_trade_no: String,
    transaction_id: String,
    total: i64,
    refund: i64,
    status: &'static str,
    notify_url: Option<String>,
    create_time: String,
}

#[derive(Default)]
struct Books {
    orders: HashMap<String, SimOrder>,
    refunds: HashMap<String, SimRefund>,
    /// Accepted refunds in order: (out_refund_no, fen).
    accepted: Vec<(String, i64)>,
    /// Each paid order's genuine callback body, for retries.
    sent: HashMap<String, Vec<u8>>,
}

struct Sim {
    clock: Arc<Clock>,
    apiv3: [u8; 32],
    /// std Mutex: held for map look-ups only, never across an `.await`.
    books: Mutex<Books>,
    refunds_fail: AtomicBool,
    refunds_pending: AtomicBool,
    unavailable: AtomicBool,
    corrupt_answers: AtomicBool,
    bad_signatures: AtomicUsize,
    http: reqwest::Client,
}

/// Removes the key files when the simulator goes.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct WechatSim {
    addr: SocketAddr,
    sim: Arc<Sim>,
    dir: TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for WechatSim {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl WechatSim {
    /// A simulator on its own clock.
    pub async fn start() -> WechatSim {
        WechatSim::with_clock(Arc::new(Clock::default())).await
    }

    /// A simulator on the node's clock (`TestEnv::clock`), so callbacks are
    /// fresh and orders expire as the node sees time.
    pub async fn with_clock(clock: Arc<Clock>) -> WechatSim {
        let keys = tokio::task::spawn_blocking(keys).await.expect("keys");
        let dir = TempDir(
            std::env::temp_dir().join(format!("lychee-wechatsim-{}", Uuid::new_v4().simple())),
        );
        std::fs::create_dir_all(&dir.0).expect("sim dir");
        let mut apiv3 = [0u8; 32];
        apiv3.copy_from_slice(nonce(32).as_bytes());
        let write = |name: &str, content: &[u8]| {
            std::fs::write(dir.0.join(name), content).expect("write sim key");
        };
        let pkcs8 = |k: &RsaPrivateKey| {
            k.to_pkcs8_pem(LineEnding::LF)
                .expect("PKCS#8")
                .as_bytes()
                .to_vec()
        };
        write("apiclient_key.pem", &pkcs8(&keys.merchant));
        write("stranger_key.pem", &pkcs8(&keys.stranger));
        write(
            "pub_key.pem",
            RsaPublicKey::from(&keys.platform)
                .to_public_key_pem(LineEnding::LF)
                .expect("SPKI")
                .as_bytes(),
        );
        write("apiv3.key", &apiv3);

        let sim = Arc::new(Sim {
            clock,
            apiv3,
            books: Mutex::new(Books::default()),
            refunds_fail: AtomicBool::new(false),
            refunds_pending: AtomicBool::new(false),
            unavailable: AtomicBool::new(false),
            corrupt_answers: AtomicBool::new(false),
            bad_signatures: AtomicUsize::new(0),
            http: lychee_live::payments::http_client().expect("client"),
        });
        let app = axum::Router::new().fallback(handle).with_state(sim.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WechatSim {
            addr,
            sim,
            dir,
            server,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The adapter's settings for this simulator (public-key mode).
    pub fn args(&self) -> WechatPayArgs {
        WechatPayArgs {
            mchid: Some(SIM_MCHID.into()),
            appid: Some(SIM_APPID.into()),
            merchant_serial: Some(SIM_MERCHANT_SERIAL.into()),
            private_key_file: Some(self.dir.0.join("apiclient_key.pem")),
            apiv3_key_file: Some(self.dir.0.join("apiv3.key")),
            public_key_file: Some(self.dir.0.join("pub_key.pem")),
            public_key_id: Some(SIM_PUB_KEY_ID.into()),
            platform_cert_file: None,
            base_url: self.base_url(),
            ..WechatPayArgs::default()
        }
    }

    /// The same settings with a private key that is not the merchant's.
    pub fn args_with_wrong_merchant_key(&self) -> WechatPayArgs {
        WechatPayArgs {
            private_key_file: Some(self.dir.0.join("stranger_key.pem")),
            ..self.args()
        }
    }

    /// What verifies the merchant's signatures (`paySign` too).
    pub fn merchant_public_key(&self) -> RsaPublicKey {
        RsaPublicKey::from(&keys().merchant)
    }

    /// Requests refused because their `Authorization` did not verify.
    pub fn bad_signatures(&self) -> usize {
        self.sim.bad_signatures.load(Ordering::SeqCst)
    }

    pub fn order(&self, payment_id: Uuid) -> Option<SimOrder> {
        self.sim
            .books()
            .orders
            .get(&out_trade_no(payment_id))
            .cloned()
    }

    /// Every answer 500 `SYSTEM_ERROR` (or normal again).
    pub fn set_unavailable(&self, on: bool) {
        self.sim.unavailable.store(on, Ordering::SeqCst);
    }

    /// Answers signed over something else than their body.
    pub fn set_corrupt_answers(&self, on: bool) {
        self.sim.corrupt_answers.store(on, Ordering::SeqCst);
    }

    /// Refunds answered `PROCESSING` until [`WechatSim::complete_refund`]
    /// (default: `SUCCESS` at once).
    pub fn set_refunds_pending(&self, on: bool) {
        self.sim.refunds_pending.store(on, Ordering::SeqCst);
    }

    /// The buyer pays: the order becomes SUCCESS with a transaction id.
    /// Refused (and nothing paid) for an unknown, closed or failed order,
    /// or after its `time_expire` on the simulator's clock.
    pub fn mark_paid(&self, payment_id: Uuid) -> Result<String, String> {
        let now = self.sim.clock.now();
        let mut books = self.sim.books();
        let order = books
            .orders
            .get_mut(&out_trade_no(payment_id))
            .ok_or_else(|| format!("no prepay for payment {payment_id}"))?;
        match order.state {
            "SUCCESS" | "REFUND" => {
                return Ok(order.transaction_id.clone().unwrap_or_default());
            }
            "NOTPAY" => {}
            other => return Err(format!("the order is {other}")),
        }
        let expires = DateTime::parse_from_rfc3339(&order.time_expire)
            .map_err(|e| format!("time_expire: {e}"))?;
        if now > expires {
            return Err(format!("the order expired at {}", order.time_expire));
        }
        let txn = format!("4200{}", &Uuid::new_v4().as_u128().to_string()[..24]);
        order.state = "SUCCESS";
        order.transaction_id = Some(txn.clone());
        order.success_time = Some(beijing(now));
        Ok(txn)
    }

    /// The payment's TRANSACTION.SUCCESS callback as `how` would deliver it
    /// (headers, body); the order must be paid.
    pub fn payment_callback(&self, payment_id: Uuid, how: Delivery) -> (HeaderMap, Vec<u8>) {
        let order = self.order(payment_id).expect("a prepaid order");
        assert!(
            order.transaction_id.is_some(),
            "payment_callback of an unpaid order"
        );
        let mut resource = transaction_json(&order);
        match how {
            Delivery::WrongAmount => {
                resource["amount"]["total"] = json!(order.total + 1);
                resource["amount"]["payer_total"] = json!(order.total + 1);
            }
            Delivery::WrongMerchant => resource["mchid"] = json!(OTHER_MCHID),
            _ => {}
        }
        let body =
            self.sim
                .notification("TRANSACTION.SUCCESS", "transaction", "支付成功", &resource);
        let at = match how {
            Delivery::Stale => self.sim.clock.now() - TimeDelta::minutes(10),
            _ => self.sim.clock.now(),
        };
        let headers = self.sim.callback_headers(&body, at, &keys().platform);
        if how == Delivery::TamperedBody {
            return (headers, tamper(&body));
        }
        (headers, body)
    }

    /// A callback signed with a key that is not the platform's (still
    /// naming the platform key's id).
    pub fn forged_payment_callback(&self, payment_id: Uuid) -> (HeaderMap, Vec<u8>) {
        let (_, body) = self.payment_callback(payment_id, Delivery::Normal);
        let headers = self
            .sim
            .callback_headers(&body, self.sim.clock.now(), &keys().stranger);
        (headers, body)
    }

    /// The refund's callback (`REFUND.SUCCESS`, `REFUND.ABNORMAL` or
    /// `REFUND.CLOSED`), correctly signed.
    pub fn refund_callback(&self, out_refund_no: &str, event: &str) -> (HeaderMap, Vec<u8>) {
        let refund = self
            .sim
            .books()
            .refunds
            .get(out_refund_no)
            .cloned()
            .expect("an accepted refund");
        let status = event.strip_prefix("REFUND.").expect("a REFUND.* event");
        let resource = json!({
            "mchid": SIM_MCHID,
            "out_trade_no": refund.out_trade_no,
            "transaction_id": refund.transaction_id,
            "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id,
            "refund_status": status,
            "success_time": beijing(self.sim.clock.now()),
            "user_received_account": "支付用户零钱",
            "amount": {"total": refund.total, "refund": refund.refund,
                       "payer_total": refund.total, "payer_refund": refund.refund},
        });
        let body = self
            .sim
            .notification(event, "refund", "退款成功", &resource);
        let headers = self
            .sim
            .callback_headers(&body, self.sim.clock.now(), &keys().platform);
        (headers, body)
    }

    /// A pending refund ends as `status` (SUCCESS, ABNORMAL or CLOSED); its
    /// callback goes to the refund's `notify_url` when it had one.
    pub async fn complete_refund(
        &self,
        out_refund_no: &str,
        status: &str,
    ) -> Option<(u16, String)> {
        let url = {
            let mut books = self.sim.books();
            let refund = books.refunds.get_mut(out_refund_no).expect("a refund");
            refund.status = match status {
                "SUCCESS" => "SUCCESS",
                "ABNORMAL" => "ABNORMAL",
                _ => "CLOSED",
            };
            refund.notify_url.clone()
        }?;
        let (headers, body) = self.refund_callback(out_refund_no, &format!("REFUND.{status}"));
        Some(self.deliver(&url, headers, body).await)
    }

    /// POSTs a callback as WeChat Pay does; the node's answer.
    pub async fn deliver(&self, url: &str, headers: HeaderMap, body: Vec<u8>) -> (u16, String) {
        let response = self
            .sim
            .http
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .expect("callback delivered");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    fn notify_url(&self, payment_id: Uuid) -> String {
        self.order(payment_id).expect("a prepaid order").notify_url
    }
}

fn out_trade_no(payment_id: Uuid) -> String {
    payment_id.simple().to_string()
}

fn payment_id_of(payment: &Value) -> Uuid {
    payment["id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .expect("the Payment JSON's id")
}

/// One byte of the body changed, the JSON still valid: a character of the
/// ciphertext (what an attacker would alter).
fn tamper(body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    let at = std::str::from_utf8(&body)
        .expect("utf-8")
        .find("\"ciphertext\":\"")
        .expect("ciphertext")
        + "\"ciphertext\":\"".len();
    body[at] = if body[at] == b'A' { b'B' } else { b'A' };
    body
}

fn transaction_json(order: &SimOrder) -> Value {
    let mut tx = json!({
        "appid": order.appid,
        "mchid": order.mchid,
        "out_trade_no": order.out_trade_no,
        "trade_type": order.trade_type,
        "trade_state": order.state,
        "trade_state_desc": match order.state {
            "SUCCESS" => "支付成功",
            "REFUND" => "转入退款",
            "NOTPAY" => "未支付",
            "CLOSED" => "已关闭",
            _ => "支付失败",
        },
        "attach": "",
        "amount": {"total": order.total, "currency": order.currency},
    });
    if let Some(txn) = &order.transaction_id {
        tx["transaction_id"] = json!(txn);
        tx["bank_type"] = json!("OTHERS");
        tx["success_time"] = json!(order.success_time);
        tx["amount"]["payer_total"] = json!(order.total);
        tx["amount"]["payer_currency"] = json!("CNY");
    }
    if let Some(openid) = &order.openid {
        tx["payer"] = json!({ "openid": openid });
    }
    tx
}

fn refund_json(r: &SimRefund) -> Value {
    json!({
        "refund_id": r.refund_id,
        "out_refund_no": r.out_refund_no,
        "transaction_id": r.transaction_id,
        "out_trade_no": r.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": r.create_time,
        "status": r.status,
        "funds_account": "AVAILABLE",
        "amount": {
            "total": r.total, "refund": r.refund, "payer_total": r.total,
            "payer_refund": r.refund, "settlement_refund": r.refund,
            "settlement_total": r.total, "discount_refund": 0, "currency": "CNY",
        },
    })
}

type Answer = (StatusCode, Option<Value>);

fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    (status, Some(json!({"code": code, "message": message})))
}

impl Sim {
    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().expect("sim books")
    }

    /// A callback body: the resource sealed with the APIv3 key.
    fn notification(
        &self,
        event: &str,
        original_type: &str,
        summary: &str,
        resource: &Value,
    ) -> Vec<u8> {
        let nonce = nonce(12);
        let sealed = Aes256Gcm::new_from_slice(&self.apiv3)
            .expect("APIv3 key")
            .encrypt(
                &Nonce::from(<[u8; 12]>::try_from(nonce.as_bytes()).expect("12 bytes")),
                Payload {
                    msg: resource.to_string().as_bytes(),
                    aad: original_type.as_bytes(),
                },
            )
            .expect("seal");
        json!({
            "id": Uuid::new_v4().to_string(),
            "create_time": beijing(self.clock.now()),
            "resource_type": "encrypt-resource",
            "event_type": event,
            "summary": summary,
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": B64.encode(sealed),
                "associated_data": original_type,
                "nonce": nonce,
            },
        })
        .to_string()
        .into_bytes()
    }

    fn callback_headers(&self, body: &[u8], at: DateTime<Utc>, key: &RsaPrivateKey) -> HeaderMap {
        let mut h = self.signature_headers(body, at.timestamp(), key);
        h.insert("Content-Type", HeaderValue::from_static("application/json"));
        h.insert(
            "Wechatpay-Signature-Type",
            HeaderValue::from_static("WECHATPAY2-SHA256-RSA2048"),
        );
        h
    }

    fn signature_headers(&self, body: &[u8], at: i64, key: &RsaPrivateKey) -> HeaderMap {
        let ts = at.to_string();
        let nonce = nonce(32);
        let mut message = format!("{ts}\n{nonce}\n").into_bytes();
        message.extend_from_slice(body);
        message.push(b'\n');
        let mut h = HeaderMap::new();
        let v = |s: &str| HeaderValue::from_str(s).expect("header value");
        h.insert("Wechatpay-Serial", v(SIM_PUB_KEY_ID));
        h.insert("Wechatpay-Timestamp", v(&ts));
        h.insert("Wechatpay-Nonce", v(&nonce));
        h.insert("Wechatpay-Signature", v(&sign(key, &message)));
        h.insert("Request-ID", v(&Uuid::new_v4().to_string()));
        h
    }

    fn answer(&self, (status, body): Answer) -> Response {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let signed = if self.corrupt_answers.load(Ordering::SeqCst) {
            format!("{body} ")
        } else {
            body.clone()
        };
        let mut headers =
            self.signature_headers(signed.as_bytes(), Utc::now().timestamp(), &keys().platform);
        if !body.is_empty() {
            headers.insert("Content-Type", HeaderValue::from_static("application/json"));
        }
        (status, headers, body).into_response()
    }

    /// The `Authorization` check WeChat Pay does on every request.
    fn check_authorization(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), String> {
        let auth = headers
            .get("Authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or("no Authorization")?;
        let fields = auth
            .strip_prefix("WECHATPAY2-SHA256-RSA2048 ")
            .ok_or("not WECHATPAY2-SHA256-RSA2048")?;
        let mut map = HashMap::new();
        for pair in fields.split(',') {
            let (k, v) = pair.split_once('=').ok_or("a field without =")?;
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or("an unquoted field")?;
            map.insert(k.trim(), v);
        }
        let field = |k: &str| map.get(k).copied().ok_or(format!("no {k}"));
        if field("mchid")? != SIM_MCHID {
            return Err("mchid".into());
        }
        if field("serial_no")? != SIM_MERCHANT_SERIAL {
            return Err("serial_no names no merchant certificate".into());
        }
        let ts: i64 = field("timestamp")?.parse().map_err(|_| "timestamp")?;
        if (Utc::now().timestamp() - ts).abs() > 300 {
            return Err("timestamp out of range".into());
        }
        let nonce = field("nonce_str")?;
        let body = std::str::from_utf8(body).map_err(|_| "body is not UTF-8")?;
        let message = format!("{method}\n{path_and_query}\n{ts}\n{nonce}\n{body}\n");
        let raw = B64
            .decode(field("signature")?)
            .map_err(|_| "signature is not base64")?;
        let sig = Signature::try_from(raw.as_slice()).map_err(|_| "signature")?;
        VerifyingKey::<Sha256>::new(RsaPublicKey::from(&keys().merchant))
            .verify(message.as_bytes(), &sig)
            .map_err(|_| "签名错误".to_owned())
    }

    fn route(&self, method: &Method, path: &str, query: Option<&str>, body: &[u8]) -> Answer {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let json = || {
            serde_json::from_slice::<Value>(body)
                .map_err(|_| error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "body is not JSON"))
        };
        let result = match (method.as_str(), segments.as_slice()) {
            ("POST", ["v3", "pay", "transactions", kind @ ("jsapi" | "native")]) => {
                json().and_then(|b| self.prepay(kind, &b))
            }
            ("GET", ["v3", "pay", "transactions", "out-trade-no", no]) => self.query(no, query),
            ("POST", ["v3", "pay", "transactions", "out-trade-no", no, "close"]) => {
                json().and_then(|b| self.close(no, &b))
            }
            ("POST", ["v3", "refund", "domestic", "refunds"]) => {
                json().and_then(|b| self.refund(&b))
            }
            ("GET", ["v3", "refund", "domestic", "refunds", no]) => self.query_refund(no),
            _ => Err(error(
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_EXISTS",
                "no such API",
            )),
        };
        result.unwrap_or_else(|e| e)
    }

    fn prepay(&self, kind: &str, b: &Value) -> Result<Answer, Answer> {
        let s = |k: &str| b[k].as_str().map(str::to_owned);
        let param = |what: &str| error(StatusCode::BAD_REQUEST, "PARAM_ERROR", what);
        if s("appid").as_deref() != Some(SIM_APPID) || s("mchid").as_deref() != Some(SIM_MCHID) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "APPID_MCHID_NOT_MATCH",
                "appid和mch_id不匹配",
            ));
        }
        let description = s("description")
            .filter(|d| !d.is_empty() && d.len() <= 127)
            .ok_or_else(|| param("description"))?;
        let no = s("out_trade_no")
            .filter(|n| {
                (6..=32).contains(&n.len())
                    && n.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"_-|*".contains(&c))
            })
            .ok_or_else(|| param("out_trade_no"))?;
        let notify_url = s("notify_url")
            .filter(|u| url::Url::parse(u).is_ok())
            .ok_or_else(|| param("notify_url"))?;
        let time_expire = s("time_expire")
            .filter(|t| DateTime::parse_from_rfc3339(t).is_ok())
            .ok_or_else(|| param("time_expire"))?;
        let total = b["amount"]["total"]
            .as_i64()
            .filter(|t| *t > 0)
            .ok_or_else(|| param("amount.total"))?;
        let currency = b["amount"]["currency"].as_str().unwrap_or("CNY").to_owned();
        if currency != "CNY" {
            return Err(param("amount.currency"));
        }
        let openid = b["payer"]["openid"].as_str().map(str::to_owned);
        if kind == "jsapi" && openid.as_deref().is_none_or(str::is_empty) {
            return Err(param("payer.openid"));
        }
        let mut books = self.books();
        if let Some(existing) = books.orders.get(&no) {
            return match existing.state {
                "NOTPAY" if existing.total == total && existing.description == description => {
                    Ok(prepay_answer(existing))
                }
                "NOTPAY" => Err(error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    "201 商户订单号重复",
                )),
                "CLOSED" => Err(error(StatusCode::BAD_REQUEST, "ORDER_CLOSED", "订单已关闭")),
                _ => Err(error(StatusCode::BAD_REQUEST, "ORDERPAID", "该订单已支付")),
            };
        }
        let order = SimOrder {
            out_trade_no: no.clone(),
            trade_type: if kind == "jsapi" { "JSAPI" } else { "NATIVE" },
            appid: SIM_APPID.into(),
            mchid: SIM_MCHID.into(),
            description,
            notify_url,
            total,
            currency,
            time_expire,
            openid,
            prepay_id: format!("wx{}", nonce(30)),
            code_url: format!("weixin://wxpay/bizpayurl?pr={}", nonce(7)),
            state: "NOTPAY",
            transaction_id: None,
            success_time: None,
            refunded: 0,
        };
        let answer = prepay_answer(&order);
        books.orders.insert(no, order);
        Ok(answer)
    }

    fn query(&self, no: &str, query: Option<&str>) -> Result<Answer, Answer> {
        if query != Some(&format!("mchid={SIM_MCHID}")) {
            return Err(error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "mchid"));
        }
        let books = self.books();
        let order = books
            .orders
            .get(no)
            .ok_or_else(|| error(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在"))?;
        Ok((StatusCode::OK, Some(transaction_json(order))))
    }

    fn close(&self, no: &str, b: &Value) -> Result<Answer, Answer> {
        if b["mchid"].as_str() != Some(SIM_MCHID) {
            return Err(error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "mchid"));
        }
        let mut books = self.books();
        let order = books
            .orders
            .get_mut(no)
            .ok_or_else(|| error(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在"))?;
        match order.state {
            "SUCCESS" | "REFUND" => Err(error(StatusCode::BAD_REQUEST, "ORDERPAID", "订单已支付")),
            _ => {
                order.state = "CLOSED";
                Ok((StatusCode::NO_CONTENT, None))
            }
        }
    }

    fn refund(&self, b: &Value) -> Result<Answer, Answer> {
        let param = |what: &str| error(StatusCode::BAD_REQUEST, "PARAM_ERROR", what);
        let out_refund_no = b["out_refund_no"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| param("out_refund_no"))?
            .to_owned();
        let refund = b["amount"]["refund"]
            .as_i64()
            .filter(|r| *r > 0)
            .ok_or_else(|| param("amount.refund"))?;
        let total = b["amount"]["total"]
            .as_i64()
            .ok_or_else(|| param("amount.total"))?;
        if b["amount"]["currency"].as_str() != Some("CNY") {
            return Err(param("amount.currency"));
        }
        if self.refunds_fail.load(Ordering::SeqCst) {
            return Err(error(
                StatusCode::FORBIDDEN,
                "NOT_ENOUGH",
                "基本账户余额不足，请充值后重新发起",
            ));
        }
        let mut books = self.books();
        if let Some(existing) = books.refunds.get(&out_refund_no) {
            // The same out_refund_no again is the same refund.
            return Ok((StatusCode::OK, Some(refund_json(existing))));
        }
        let order = match (b["transaction_id"].as_str(), b["out_trade_no"].as_str()) {
            (Some(txn), _) => books
                .orders
                .values_mut()
                .find(|o| o.transaction_id.as_deref() == Some(txn)),
            (None, Some(no)) => books.orders.get_mut(no),
            (None, None) => return Err(param("transaction_id/out_trade_no")),
        }
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "订单不存在"))?;
        if !matches!(order.state, "SUCCESS" | "REFUND") {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "订单未支付",
            ));
        }
        if total != order.total {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "订单金额与退款请求的订单金额不一致",
            ));
        }
        if order.refunded + refund > order.total {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "申请退款金额超过订单可退金额",
            ));
        }
        order.refunded += refund;
        order.state = "REFUND";
        let r = SimRefund {
            out_refund_no: out_refund_no.clone(),
            refund_id: format!("5030{}", &Uuid::new_v4().as_u128().to_string()[..25]),
            out_trade_no: order.out_trade_no.clone(),
            transaction_id: order.transaction_id.clone().unwrap_or_default(),
            total,
            refund,
            status: if self.refunds_pending.load(Ordering::SeqCst) {
                "PROCESSING"
            } else {
                "SUCCESS"
            },
            notify_url: b["notify_url"].as_str().map(str::to_owned),
            create_time: beijing(self.clock.now()),
        };
        let answer = refund_json(&r);
        books.accepted.push((out_refund_no.clone(), refund));
        books.refunds.insert(out_refund_no, r);
        Ok((StatusCode::OK, Some(answer)))
    }

    fn query_refund(&self, no: &str) -> Result<Answer, Answer> {
        let books = self.books();
        let r = books
            .refunds
            .get(no)
            .ok_or_else(|| error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "退款单不存在"))?;
        Ok((StatusCode::OK, Some(refund_json(r))))
    }
}

fn prepay_answer(order: &SimOrder) -> Answer {
    let body = if order.trade_type == "JSAPI" {
        json!({ "prepay_id": order.prepay_id })
    } else {
        json!({ "code_url": order.code_url })
    };
    (StatusCode::OK, Some(body))
}

async fn handle(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if let Err(why) = sim.check_authorization(&method, path_and_query, &headers, &body) {
        sim.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return sim.answer(error(StatusCode::UNAUTHORIZED, "SIGN_ERROR", &why));
    }
    if sim.unavailable.load(Ordering::SeqCst) {
        return sim.answer(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "系统错误",
        ));
    }
    let answer = sim.route(&method, uri.path(), uri.query(), &body);
    sim.answer(answer)
}

#[async_trait]
impl Gateway for WechatSim {
    fn provider(&self) -> &'static str {
        "wechatpay"
    }

    fn configure(&self, settings: &mut lychee_live::Settings) {
        settings.payments.providers = Some(vec!["wechatpay".into()]);
        settings.payments.wechatpay = self.args();
    }

    /// Pays and delivers; `None` when `Lost`, or when WeChat Pay would not
    /// take the money (the order expired, was closed or failed): then
    /// nothing is paid and no callback goes.
    async fn pay(&self, payment: &Value, how: Delivery) -> Option<(u16, String)> {
        let id = payment_id_of(payment);
        if self.mark_paid(id).is_err() {
            return None;
        }
        if how == Delivery::Lost {
            let genuine = self.payment_callback(id, Delivery::Normal).1;
            self.sim.books().sent.insert(out_trade_no(id), genuine);
            return None;
        }
        let (headers, body) = self.payment_callback(id, how);
        let genuine = if how == Delivery::Normal {
            body.clone()
        } else {
            self.payment_callback(id, Delivery::Normal).1
        };
        self.sim.books().sent.insert(out_trade_no(id), genuine);
        Some(self.deliver(&self.notify_url(id), headers, body).await)
    }

    /// WeChat Pay's retry: the genuine success callback's body, byte for
    /// byte (same notification id), signed afresh, whatever the first
    /// delivery was.
    async fn redeliver(&self, payment_id: Uuid) -> (u16, String) {
        let sent = self
            .sim
            .books()
            .sent
            .get(&out_trade_no(payment_id))
            .cloned();
        let body = sent.unwrap_or_else(|| self.payment_callback(payment_id, Delivery::Normal).1);
        let headers = self
            .sim
            .callback_headers(&body, self.sim.clock.now(), &keys().platform);
        self.deliver(&self.notify_url(payment_id), headers, body)
            .await
    }

    /// The buyer's payment fails (PAYERROR); WeChat Pay sends no callback for that.
    async fn fail(&self, payment: &Value) {
        let no = out_trade_no(payment_id_of(payment));
        let mut books = self.sim.books();
        let order = books.orders.get_mut(&no).expect("a prepaid order");
        if order.state == "NOTPAY" {
            order.state = "PAYERROR";
        }
    }

    fn set_refunds_fail(&self, fail: bool) {
        self.sim.refunds_fail.store(fail, Ordering::SeqCst);
    }

    fn refunds(&self) -> Vec<(String, i64)> {
        self.sim.books().accepted.clone()
    }
}
