//! The provider's own rules (what a notification or an answer means, what a
//! pay URL holds) and hostile input. The published vectors are in `sign.rs`.

use super::sign::tests::{node_sdk_notify_key, JAVA_SDK_PROD_CERT_KEY, NODE_SDK_TRADE_NOTIFY};
use super::*;
use rsa::signature::Keypair;

const APP_ID: &str = "2021000122671080";
const SELLER: &str = "2088102146225135";

/// Tests play Alipay with the Java SDK's published key: it signs the
/// notifications and answers here, and stands for the app's key too.
fn key() -> SigningKey<Sha256> {
    SigningKey::new(sign::parse_private_key(JAVA_SDK_PROD_CERT_KEY).expect("fixture"))
}

fn http() -> reqwest::Client {
    crate::payments::http_client().expect("client")
}

fn alipay() -> Alipay {
    let key = key();
    Alipay {
        app_id: APP_ID.into(),
        seller_id: None,
        gateway: url::Url::parse(DEFAULT_GATEWAY).expect("url"),
        alipay_key: key.verifying_key(),
        app_key: Redacted(key),
        http: http(),
    }
}

fn now() -> DateTime<Utc> {
    parse_beijing_time("2025-05-20 13:14:00").expect("time")
}

fn form(p: &Params) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(p)
        .finish()
}

/// A notification as Alipay signs it (sign and sign_type not signed).
fn signed(mut p: Params) -> String {
    p.remove("sign");
    let content = sign::sign_content(&p, &["sign", "sign_type"]);
    p.insert("sign".into(), sign::sign(&key(), &content).expect("sign"));
    form(&p)
}

fn notification(payment_id: Uuid, status: &str) -> Params {
    [
        ("gmt_create", "2025-05-20 13:10:00"),
        ("charset", "utf-8"),
        ("gmt_payment", "2025-05-20 13:11:00"),
        ("notify_time", "2025-05-20 13:12:00"),
        ("subject", "妃子笑 5斤"),
        ("buyer_id", "2088102177846880"),
        ("invoice_amount", "168.00"),
        ("version", "1.0"),
        ("notify_id", "2025052000222131100012341234123412"),
        (
            "fund_bill_list",
            r#"[{"amount":"168.00","fundChannel":"ALIPAYACCOUNT"}]"#,
        ),
        ("notify_type", "trade_status_sync"),
        ("out_trade_no", &trade_no(payment_id)),
        ("total_amount", "168.00"),
        ("trade_status", status),
        ("trade_no", "2025052022001446880501234567"),
        ("auth_app_id", APP_ID),
        ("receipt_amount", "168.00"),
        ("point_amount", "0.00"),
        ("buyer_pay_amount", "168.00"),
        ("app_id", APP_ID),
        ("sign_type", "RSA2"),
        ("seller_id", SELLER),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn verify(a: &Alipay, body: &str) -> Result<Callback, ProviderError> {
    a.verify(&HeaderMap::new(), body.as_bytes(), now())
}

fn payment(cb: Callback) -> PaymentReport {
    match cb {
        Callback::Payment(r) => r,
        other => panic!("not a payment: {other:?}"),
    }
}

#[test]
fn a_genuine_alipay_notification_verifies_then_is_refused_as_not_ours() {
    // The Node SDK's real notification, signed by Alipay: the signature and
    // the clock pass, then its out_trade_no is not one of ours.
    let mut a = alipay();
    a.alipay_key = node_sdk_notify_key();
    let p: Params = NODE_SDK_TRADE_NOTIFY
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body = form(&p);
    let sent = parse_beijing_time("2019-08-15 15:56:25").expect("time");
    let at = |t| a.verify(&HeaderMap::new(), body.as_bytes(), t);
    match at(sent + TimeDelta::seconds(3)) {
        Err(ProviderError::Malformed(m)) => assert!(m.contains("never issued"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        at(sent + TimeDelta::days(3)),
        Err(ProviderError::Stale(_))
    ));
    assert!(matches!(
        at(sent - TimeDelta::hours(1)),
        Err(ProviderError::Stale(_))
    ));
    let without_sign_type = form(&{
        let mut p = p.clone();
        p.remove("sign_type");
        p
    });
    assert!(matches!(
        a.verify(&HeaderMap::new(), without_sign_type.as_bytes(), sent),
        Err(ProviderError::Malformed(_))
    ));
}

#[test]
fn trade_statuses_map_to_outcomes() {
    let a = alipay();
    let id = Uuid::new_v4();
    let report = payment(verify(&a, &signed(notification(id, "TRADE_SUCCESS"))).expect("verifies"));
    assert_eq!(
        report,
        PaymentReport {
            payment_id: id,
            provider_txn_id: Some("2025052022001446880501234567".into()),
            outcome: PayOutcome::Succeeded,
            amount_cents: 16800,
            currency: "CNY".into(),
            merchant: APP_ID.into(),
        }
    );
    for (status, outcome) in [
        ("TRADE_FINISHED", PayOutcome::Succeeded),
        ("WAIT_BUYER_PAY", PayOutcome::Pending),
    ] {
        let r = payment(verify(&a, &signed(notification(id, status))).expect(status));
        assert_eq!(r.outcome, outcome, "{status}");
    }
    let mut closed = notification(id, "TRADE_CLOSED");
    closed.remove("gmt_payment");
    closed.remove("trade_no");
    let r = payment(verify(&a, &signed(closed)).expect("closed"));
    assert_eq!((r.outcome, r.provider_txn_id), (PayOutcome::Failed, None));
}

#[test]
fn refund_notifications_say_the_payment_was_refunded() {
    let a = alipay();
    let id = Uuid::new_v4();
    for status in ["TRADE_SUCCESS", "TRADE_CLOSED"] {
        let mut p = notification(id, status);
        p.insert("refund_fee".into(), "10.00".into());
        p.insert("gmt_refund".into(), "2025-05-20 13:12:00.123".into());
        p.insert("out_biz_no".into(), trade_no(Uuid::new_v4()));
        let r = payment(verify(&a, &signed(p)).expect(status));
        assert_eq!(
            (r.outcome, r.amount_cents),
            (PayOutcome::Refunded, 16800),
            "{status}"
        );
    }
    // The docs' own example carries refund_fee=0.00 on a plain success.
    let mut p = notification(id, "TRADE_SUCCESS");
    p.insert("refund_fee".into(), "0.00".into());
    assert_eq!(
        payment(verify(&a, &signed(p)).expect("ok")).outcome,
        PayOutcome::Succeeded
    );
}

#[test]
fn another_app_or_seller_is_reported_as_another_merchant() {
    let mut a = alipay();
    let id = Uuid::new_v4();
    let mut p = notification(id, "TRADE_SUCCESS");
    p.insert("app_id".into(), "2021000000000001".into());
    let r = payment(verify(&a, &signed(p)).expect("verifies"));
    assert_ne!(r.merchant, a.merchant());
    a.seller_id = Some(SELLER.into());
    let r = payment(verify(&a, &signed(notification(id, "TRADE_SUCCESS"))).expect("ours"));
    assert_eq!(r.merchant, a.merchant());
    let mut p = notification(id, "TRADE_SUCCESS");
    p.insert("seller_id".into(), "2088000000000000".into());
    let r = payment(verify(&a, &signed(p)).expect("verifies"));
    assert_ne!(r.merchant, a.merchant());
}

#[test]
fn hostile_notifications_are_clear_errors() {
    let a = alipay();
    let id = Uuid::new_v4();
    let good = signed(notification(id, "TRADE_SUCCESS"));
    let bad_sig = |body: &str| matches!(verify(&a, body), Err(ProviderError::BadSignature(_)));
    let malformed = |body: &str| matches!(verify(&a, body), Err(ProviderError::Malformed(_)));

    assert!(bad_sig(
        &good.replace("total_amount=168.00", "total_amount=1.68")
    ));
    assert!(bad_sig(&good.replace("sign_type=RSA2", "sign_type=RSA")));
    let sign_at = good.find("&sign=").expect("sign");
    let sign_end = good[sign_at + 1..]
        .find('&')
        .map_or(good.len(), |i| sign_at + 1 + i);
    let without_sign = format!("{}{}", &good[..sign_at], &good[sign_end..]);
    assert!(bad_sig(&without_sign));
    assert!(bad_sig(&format!("{without_sign}&sign=")));
    assert!(bad_sig(&format!("{without_sign}&sign=%21%21not-base64")));
    assert!(bad_sig(&format!("{without_sign}&sign=QUJD")));
    assert!(bad_sig(""));

    assert!(malformed(&format!("{good}&total_amount=168.00")));
    assert!(malformed(&format!(
        "{good}&x={}",
        "9".repeat(MAX_NOTIFY_BYTES)
    )));
    assert!(malformed(&good.replace("charset=utf-8", "charset=gbk")));
    assert!(matches!(
        a.verify(&HeaderMap::new(), b"app_id=\xff\xfe", now()),
        Err(ProviderError::Malformed(_))
    ));
    assert!(malformed(&format!("{good}&x=%E4%B8")));

    for (k, v) in [
        ("total_amount", Some("1.005")),
        ("total_amount", Some("-168.00")),
        ("total_amount", Some("1e3")),
        ("total_amount", Some("99999999999999999999.00")),
        ("total_amount", None),
        ("trade_status", Some("TRADE_PENDING")),
        ("trade_status", None),
        ("out_trade_no", Some("20190815155618536-564-57")),
        ("out_trade_no", None),
        ("app_id", None),
        ("trade_no", None),
        ("notify_time", Some("2025/05/20 13:12:00")),
        ("notify_time", None),
    ] {
        let mut p = notification(id, "TRADE_SUCCESS");
        match v {
            Some(v) => p.insert(k.into(), v.into()),
            None => p.remove(k),
        };
        assert!(malformed(&signed(p)), "{k}={v:?}");
    }

    let mut future = notification(id, "TRADE_SUCCESS");
    future.insert("notify_time".into(), "2025-05-20 14:14:00".into());
    assert!(matches!(
        verify(&a, &signed(future)),
        Err(ProviderError::Stale(_))
    ));
    let mut old = notification(id, "TRADE_SUCCESS");
    old.insert("notify_time".into(), "2025-05-19 11:00:00".into());
    assert!(matches!(
        verify(&a, &signed(old)),
        Err(ProviderError::Stale(_))
    ));
    // Alipay's last retry comes about 24.5 hours after the first.
    let mut retry = notification(id, "TRADE_SUCCESS");
    retry.insert("notify_time".into(), "2025-05-19 12:44:00".into());
    assert!(verify(&a, &signed(retry)).is_ok());
}

#[test]
fn ack_and_nack_are_alipays_words() {
    let a = alipay();
    assert_eq!(
        (a.ack().status, a.ack().body.as_str()),
        (StatusCode::OK, "success")
    );
    let nack = a.nack("amount differs from the payment's");
    assert_eq!(nack.body, "fail");
    assert_eq!(nack.content_type, "text/plain; charset=utf-8");
}

/// An answer as the gateway signs it.
fn answer(name: &str, object: &str) -> String {
    let s = sign::sign(&key(), object).expect("sign");
    format!(r#"{{"{name}":{object},"sign":"{s}"}}"#)
}

fn parse(method: &str, body: &str) -> Result<Map<String, Value>, ProviderError> {
    parse_answer(method, body.as_bytes(), &key().verifying_key())
}

#[test]
fn answers_are_believed_only_when_signed() {
    let q = "alipay.trade.query";
    let name = "alipay_trade_query_response";
    let ok =
        r#"{"code":"10000","msg":"Success","out_trade_no":"x","trade_status":"TRADE_SUCCESS"}"#;
    let data = parse(q, &answer(name, ok)).expect("verified");
    assert_eq!(data["trade_status"], "TRADE_SUCCESS");

    let unsigned = format!(r#"{{"{name}":{ok}}}"#);
    assert!(matches!(
        parse(q, &unsigned),
        Err(ProviderError::BadSignature(_))
    ));
    let tampered = answer(name, ok).replace("TRADE_SUCCESS", "TRADE_FINISHED");
    assert!(matches!(
        parse(q, &tampered),
        Err(ProviderError::BadSignature(_))
    ));
    let foreign = answer("alipay_trade_close_response", ok);
    assert!(matches!(
        parse(q, &foreign),
        Err(ProviderError::Malformed(_))
    ));

    let not_exist = r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST","sub_msg":"交易不存在"}"#;
    assert!(matches!(
        parse(q, &answer(name, not_exist)),
        Err(ProviderError::NotFound("payment"))
    ));
    // Unsigned, the same words are only a refusal.
    match parse(q, &format!(r#"{{"{name}":{not_exist}}}"#)) {
        Err(ProviderError::Refused { code, message }) => {
            assert_eq!(
                (code.as_str(), message.as_str()),
                ("ACQ.TRADE_NOT_EXIST", "交易不存在")
            )
        }
        other => panic!("{other:?}"),
    }
    let app = r#"{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id","sub_msg":"无效的AppID参数"}}"#;
    assert!(
        matches!(parse(q, app), Err(ProviderError::Refused { code, .. }) if code == "isv.invalid-app-id")
    );
    for busy in [
        r#"{"code":"20000","msg":"Service Currently Unavailable","sub_code":"isp.unknow-error","sub_msg":"系统繁忙"}"#,
        r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR","sub_msg":"系统错误"}"#,
    ] {
        assert!(matches!(
            parse(q, &answer(name, busy)),
            Err(ProviderError::Unavailable(_))
        ));
        assert!(matches!(
            parse(q, &format!(r#"{{"{name}":{busy}}}"#)),
            Err(ProviderError::Unavailable(_))
        ));
    }
}

#[test]
fn escaped_slashes_verify_as_the_java_sdk_allows() {
    let name = "alipay_trade_query_response";
    let plain = r#"{"code":"10000","msg":"Success","url":"https://a/b"}"#;
    let s = sign::sign(&key(), plain).expect("sign");
    let body = format!(r#"{{"{name}":{},"sign":"{s}"}}"#, plain.replace('/', "\\/"));
    assert_eq!(
        parse("alipay.trade.query", &body).expect("verifies")["url"],
        "https://a/b"
    );
}

#[test]
fn hostile_answers_are_clear_errors() {
    let q = "alipay.trade.query";
    let name = "alipay_trade_query_response";
    let ok = r#"{"code":"10000","msg":"Success"}"#;
    let signed_ok = answer(name, ok);
    let sign_value =
        &signed_ok[signed_ok.find(r#""sign":""#).expect("sign") + 8..signed_ok.len() - 2];
    // A genuinely signed object nested before a forged one.
    let smuggled = format!(
        r#"{{"x":{{"{name}":{ok}}},"{name}":{{"code":"10000","msg":"Success","trade_status":"TRADE_SUCCESS"}},"sign":"{sign_value}"}}"#
    );
    for body in [
        "".to_owned(),
        "<html>502</html>".into(),
        "[]".into(),
        r#"{"sign":"x"}"#.into(),
        format!(r#"{{"{name}":"text","sign":"x"}}"#),
        format!(r#"{{"{name}":{ok},"sign":5}}"#),
        signed_ok[..signed_ok.len() - 1].to_owned(),
        smuggled,
    ] {
        assert!(
            matches!(
                parse(q, &body),
                Err(ProviderError::Malformed(_) | ProviderError::BadSignature(_))
            ),
            "{body}"
        );
    }
    assert!(matches!(
        parse_answer(q, b"{\"a\":\"\xff\"}", &key().verifying_key()),
        Err(ProviderError::Malformed(_))
    ));
    let bad_b64 = format!(r#"{{"{name}":{ok},"sign":"%%%"}}"#);
    assert!(matches!(
        parse(q, &bad_b64),
        Err(ProviderError::BadSignature(_))
    ));
}

fn start_request(scene: Scene) -> StartRequest {
    StartRequest {
        payment_id: Uuid::new_v4(),
        order_id: Uuid::new_v4(),
        description: "妃子笑 5斤 / A&B=C".into(),
        amount_cents: 16850,
        currency: "CNY".into(),
        expires_at: parse_beijing_time("2025-05-20 13:29:00").expect("t")
            + TimeDelta::milliseconds(999),
        notify_url: "https://live.example.com/api/v1/payments/alipay/notify".into(),
        return_url: "https://live.example.com/orders/1".into(),
        scene,
    }
}

fn pay_params(url: &str) -> Params {
    let url = url::Url::parse(url).expect("url");
    let mut p = Params::new();
    for (k, v) in url.query_pairs() {
        assert!(p.insert(k.into_owned(), v.into_owned()).is_none());
    }
    p
}

#[tokio::test]
async fn pay_urls_are_signed_requests_to_the_gateway() {
    let a = alipay();
    for (scene, method, product) in [
        (
            Scene::Desktop,
            "alipay.trade.page.pay",
            "FAST_INSTANT_TRADE_PAY",
        ),
        (Scene::Mobile, "alipay.trade.wap.pay", "QUICK_WAP_WAY"),
    ] {
        let req = start_request(scene);
        let started = a.start(&req).await.expect("started");
        let url = started.checkout.url.expect("url");
        assert!(
            url.starts_with("https://openapi.alipay.com/gateway.do?"),
            "{url}"
        );
        let p = pay_params(&url);
        for (k, v) in [
            ("app_id", APP_ID),
            ("method", method),
            ("format", "JSON"),
            ("charset", "utf-8"),
            ("sign_type", "RSA2"),
            ("version", "1.0"),
            ("notify_url", req.notify_url.as_str()),
            ("return_url", req.return_url.as_str()),
        ] {
            assert_eq!(p.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert!(parse_beijing_time(&p["timestamp"]).is_some());
        let content = sign::sign_content(&p, &["sign"]);
        assert!(content.contains("&sign_type=RSA2&"));
        sign::verify(&key().verifying_key(), &content, &p["sign"]).expect("signed");
        let biz: Value = serde_json::from_str(&p["biz_content"]).expect("json");
        assert_eq!(biz["out_trade_no"], trade_no(req.payment_id));
        assert_eq!(biz["total_amount"], "168.50");
        assert_eq!(biz["product_code"], product);
        assert_eq!(biz["time_expire"], "2025-05-20 13:29:00");
        assert_eq!(biz["subject"], "妃子笑 5斤   A B C");
        assert_eq!(
            biz.get("quit_url").is_some(),
            method == "alipay.trade.wap.pay"
        );
    }
}

#[tokio::test]
async fn only_cny_amounts_alipay_takes_are_started() {
    let a = alipay();
    for (currency, cents) in [
        ("USD", 100),
        ("CNY", 0),
        ("CNY", -1),
        ("CNY", MAX_AMOUNT_CENTS + 1),
    ] {
        let mut req = start_request(Scene::Mobile);
        req.currency = currency.into();
        req.amount_cents = cents;
        assert!(
            matches!(a.start(&req).await, Err(ProviderError::Refused { .. })),
            "{currency} {cents}"
        );
    }
    let mut req = start_request(Scene::Mobile);
    req.description = "&&//".into();
    let url = a.start(&req).await.expect("ok").checkout.url.expect("url");
    let biz: Value = serde_json::from_str(&pay_params(&url)["biz_content"]).expect("json");
    assert_eq!(biz["subject"], trade_no(req.payment_id));
}

struct Files(PathBuf);

impl Files {
    fn new() -> Files {
        let dir =
            std::env::temp_dir().join(format!("lychee-alipay-unit-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        Files(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn settings_are_checked_and_errors_name_the_flag() {
    let files = Files::new();
    let private = files.write("app.key", JAVA_SDK_PROD_CERT_KEY);
    let public = files.write(
        "alipay.pub",
        "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqObrdC7hrgAVM98tK0nv3hSQRGGKT4lBsQjHiGjeYZjOPIPHR5knm2jnnz/YGIXIofVHkA/tAlBAd5DrY7YpvI4tP5EONLtZKC2ghBMx7McI2wRD0xiqzxOQr1FuhZGJ8/AUokBzJrzY+aGX2xcOrxFYRlFilvVLTXg4LWjR1tdPkO6+i7wQZAIVMClPkwVRZEbaERRHlKqTzv2gGv5rDU8gRoe1LeaN+6BlbTqHWkQcNCUNrA8C6l17XAXGKDsm/9TFWwO8EPHHHCaQdjtV5/FdcWIt+L8SR1ss7EXTjYDFtxcKVv9rEoY1lX8T4mX+GbXfZHraG5NCF1+XioL5JwIDAQAB\n",
    );
    let own_public = {
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        let key = sign::parse_private_key(JAVA_SDK_PROD_CERT_KEY).expect("key");
        files.write(
            "own.pub",
            &key.to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("pem"),
        )
    };
    let garbage = files.write(
        "garbage",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let good = AlipayArgs {
        app_id: Some(APP_ID.into()),
        private_key_file: Some(private.clone()),
        public_key_file: Some(public.clone()),
        seller_id: Some(SELLER.into()),
        ..AlipayArgs::default()
    };
    let a = Alipay::from_args(&good, http()).expect("good settings");
    assert_eq!((a.name(), a.merchant()), ("alipay", APP_ID));
    let shown = format!("{a:?} {good:?}");
    assert!(
        !shown.contains("MII") && shown.contains("<redacted>"),
        "{shown}"
    );

    let local = AlipayArgs {
        gateway: "http://127.0.0.1:9/gateway.do".into(),
        ..good.clone()
    };
    assert!(Alipay::from_args(&local, http()).is_ok());

    let cases: Vec<(AlipayArgs, &str)> = vec![
        (
            AlipayArgs {
                app_id: None,
                ..good.clone()
            },
            "--alipay-app-id",
        ),
        (
            AlipayArgs {
                app_id: Some("app 1".into()),
                ..good.clone()
            },
            "--alipay-app-id",
        ),
        (
            AlipayArgs {
                private_key_file: None,
                ..good.clone()
            },
            "--alipay-private-key-file",
        ),
        (
            AlipayArgs {
                private_key_file: Some(files.0.join("absent")),
                ..good.clone()
            },
            "--alipay-private-key-file",
        ),
        (
            AlipayArgs {
                private_key_file: Some(garbage.clone()),
                ..good.clone()
            },
            "--alipay-private-key-file",
        ),
        (
            AlipayArgs {
                private_key_file: Some(public.clone()),
                ..good.clone()
            },
            "--alipay-private-key-file",
        ),
        (
            AlipayArgs {
                public_key_file: None,
                ..good.clone()
            },
            "--alipay-public-key-file",
        ),
        (
            AlipayArgs {
                public_key_file: Some(private.clone()),
                ..good.clone()
            },
            "--alipay-public-key-file",
        ),
        (
            AlipayArgs {
                public_key_file: Some(own_public),
                ..good.clone()
            },
            "--alipay-public-key-file",
        ),
        (
            AlipayArgs {
                gateway: "http://openapi.alipay.com/gateway.do".into(),
                ..good.clone()
            },
            "--alipay-gateway",
        ),
        (
            AlipayArgs {
                gateway: "not a url".into(),
                ..good.clone()
            },
            "--alipay-gateway",
        ),
        (
            AlipayArgs {
                gateway: format!("{DEFAULT_GATEWAY}?charset=utf-8"),
                ..good.clone()
            },
            "--alipay-gateway",
        ),
        (
            AlipayArgs {
                seller_id: Some("12345".into()),
                ..good.clone()
            },
            "--alipay-seller-id",
        ),
    ];
    for (args, flag) in cases {
        match Alipay::from_args(&args, http()) {
            Err(ProviderError::Config(m)) => {
                assert!(m.starts_with(flag), "{m}");
                assert!(!m.contains("MII"), "{m}");
            }
            other => panic!("{flag}: {other:?}"),
        }
    }
}

#[test]
fn beijing_time_round_trips() {
    let t = parse_beijing_time("2025-01-01 00:30:00").expect("t");
    assert_eq!(t.to_rfc3339(), "2024-12-31T16:30:00+00:00");
    assert_eq!(beijing_time(t), "2025-01-01 00:30:00");
    for bad in [
        "",
        "2025-01-01",
        "2025-13-01 00:00:00",
        "2025-01-01T00:30:00",
        "2025-01-01 00:30:00 ",
    ] {
        assert_eq!(parse_beijing_time(bad), None, "{bad}");
    }
}
