//! The adapter's verification and parsing, offline: the Go SDK's published
//! callback end to end, callbacks signed here with the Go SDK's test key
//! (whose certificate is `F5765756002FDD77`), and hostile input.

use super::crypto::{self, PlatformKeys};
use super::*;
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::crypto::vectors::*;

const MCHID: &str = "1900000109";
const APIV3: &[u8; 32] = b"a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";
const SERIAL: &str = "F5765756002FDD77";

fn go_key() -> RsaPrivateKey {
    crypto::private_key_from_pem(&GO_TEST_KEY.replace("TESTING KEY", "PRIVATE KEY"))
        .expect("Go SDK key")
}

fn provider(apiv3: &[u8]) -> WechatPay {
    let mut platform = PlatformKeys::default();
    for pem in [GO_VERIFIER_CERT, GO_NOTIFY_CERT] {
        for (serial, key) in crypto::platform_certificates(pem.as_bytes()).expect("cert") {
            platform.insert(serial, key);
        }
    }
    WechatPay {
        http: crate::payments::http_client().expect("client"),
        base: "http://127.0.0.1:9".into(),
        mchid: MCHID.into(),
        appid: "wxd678efh567hg6787".into(),
        merchant_serial: "5F1C72E2A8931B72A2E13AF8DEE92471EB397115".into(),
        merchant_key: Redacted(go_key()),
        apiv3_key: Redacted(apiv3.to_vec()),
        platform: Redacted(platform),
        max_skew: TimeDelta::minutes(5),
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    h
}

fn seal(key: &[u8], nonce: &str, ad: &str, plain: &[u8]) -> String {
    let sealed = Aes256Gcm::new_from_slice(key)
        .expect("key")
        .encrypt(
            &Nonce::from(<[u8; 12]>::try_from(nonce.as_bytes()).expect("12 bytes")),
            Payload {
                msg: plain,
                aad: ad.as_bytes(),
            },
        )
        .expect("seal");
    B64.encode(sealed)
}

/// A callback as WeChat Pay sends it, signed at `at` with the Go test key.
fn callback_body(event: &str, original_type: &str, resource: &Value, key: &[u8]) -> Vec<u8> {
    let nonce = "fdasflkja484";
    json!({
        "id": "EV-2018022511223320873",
        "create_time": "2015-05-20T13:29:35+08:00",
        "resource_type": "encrypt-resource",
        "event_type": event,
        "summary": "支付成功",
        "resource": {
            "original_type": original_type,
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": seal(key, nonce, original_type, resource.to_string().as_bytes()),
            "associated_data": original_type,
            "nonce": nonce,
        }
    })
    .to_string()
    .into_bytes()
}

fn sign_headers(body: &[u8], at: i64, serial: &str) -> HeaderMap {
    let ts = at.to_string();
    let nonce = "fdasfwfefwefwefwefwefwefwefwefwe";
    let sig = crypto::sign(&go_key(), &crypto::answer_message(&ts, nonce, body));
    headers(&[
        ("Wechatpay-Serial", serial),
        ("Wechatpay-Timestamp", &ts),
        ("Wechatpay-Nonce", nonce),
        ("Wechatpay-Signature", &sig),
        ("Wechatpay-Signature-Type", "WECHATPAY2-SHA256-RSA2048"),
    ])
}

fn transaction(payment_id: Uuid, state: &str) -> Value {
    json!({
        "appid": "wxd678efh567hg6787",
        "mchid": MCHID,
        "out_trade_no": trade_no(payment_id),
        "transaction_id": "4200000985202103031441826014",
        "trade_type": "JSAPI",
        "trade_state": state,
        "trade_state_desc": "支付成功",
        "bank_type": "CMC",
        "success_time": "2018-06-08T10:34:56+08:00",
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {"total": 16800, "payer_total": 16700, "currency": "CNY", "payer_currency": "CNY"}
    })
}

fn refund_resource(refund_id: Uuid, status: &str, mchid: &str) -> Value {
    json!({
        "mchid": mchid,
        "out_trade_no": "1217752501201407033233368018",
        "transaction_id": "1217752501201407033233368018",
        "out_refund_no": trade_no(refund_id),
        "refund_id": "50000000382019052709732678859",
        "refund_status": status,
        "success_time": "2018-06-08T10:34:56+08:00",
        "user_received_account": "招商银行信用卡0403",
        "amount": {"total": 16800, "refund": 800, "payer_total": 16800, "payer_refund": 800}
    })
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

// wechatpay-go core/notify/notify_test.go, through `verify`: signature and
// decryption hold (the published key is 16 bytes), then the event is not a
// payment, which is a refusal of its content and not of its signature.
#[test]
fn go_sdk_callback_verifies_through_the_provider() {
    let p = provider(b"testMchAPIv3Key0");
    let h = headers(&[
        ("Content-Type", "application/json"),
        ("Wechatpay-Nonce", "EcZ9Cmy4Xyx1i6RlJQzLcCyEqDa26NBz"),
        ("Wechatpay-Timestamp", "1624523846"),
        ("Wechatpay-Serial", "D7CE59D1F522D701"),
        ("Wechatpay-Signature", GO_NOTIFY_SIGNATURE),
    ]);
    let at = DateTime::from_timestamp(1624523846, 0).expect("time");
    let body = GO_NOTIFY_BODY.as_bytes();
    match p.verify(&h, body, at) {
        Err(ProviderError::Malformed(m)) => {
            assert!(m.contains("PAYSCORE.USER_OPEN_SERVICE"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // Five minutes is the window, as in the SDKs; one second more is a replay.
    assert!(matches!(
        p.verify(&h, body, at + TimeDelta::seconds(300)),
        Err(ProviderError::Malformed(_))
    ));
    assert!(matches!(
        p.verify(&h, body, at + TimeDelta::seconds(301)),
        Err(ProviderError::Stale(_))
    ));
    assert!(matches!(
        p.verify(&h, body, at - TimeDelta::seconds(301)),
        Err(ProviderError::Stale(_))
    ));

    let mut tampered = body.to_vec();
    let i = GO_NOTIFY_BODY.find("payscore").expect("payscore");
    tampered[i] = b'P';
    assert!(matches!(
        p.verify(&h, &tampered, at),
        Err(ProviderError::BadSignature(_))
    ));

    // The same signature, named by a serial we do not hold.
    let mut other = h.clone();
    other.insert(
        "Wechatpay-Serial",
        "PUB_KEY_ID_0000000000".parse().expect("v"),
    );
    assert!(matches!(
        p.verify(&other, body, at),
        Err(ProviderError::BadSignature(_))
    ));
}

#[test]
fn a_payment_callback_is_reported_with_the_order_amount() {
    let p = provider(APIV3);
    let id = Uuid::new_v4();
    let body = callback_body(
        "TRANSACTION.SUCCESS",
        "transaction",
        &transaction(id, "SUCCESS"),
        APIV3,
    );
    let h = sign_headers(&body, now().timestamp(), SERIAL);
    assert_eq!(
        p.verify(&h, &body, now()).expect("verifies"),
        Callback::Payment(PaymentReport {
            payment_id: id,
            provider_txn_id: Some("4200000985202103031441826014".into()),
            outcome: PayOutcome::Succeeded,
            amount_cents: 16800,
            currency: "CNY".into(),
            merchant: MCHID.into(),
        })
    );
    // Without the optional signature-type header it verifies the same.
    let mut h2 = h.clone();
    h2.remove("Wechatpay-Signature-Type");
    assert!(p.verify(&h2, &body, now()).is_ok());
}

#[test]
fn refund_callbacks_are_reported() {
    let p = provider(APIV3);
    for (event, status, outcome) in [
        ("REFUND.SUCCESS", "SUCCESS", RefundOutcome::Succeeded),
        ("REFUND.ABNORMAL", "ABNORMAL", RefundOutcome::Failed),
        ("REFUND.CLOSED", "CLOSED", RefundOutcome::Failed),
    ] {
        let id = Uuid::new_v4();
        let body = callback_body(event, "refund", &refund_resource(id, status, MCHID), APIV3);
        let h = sign_headers(&body, now().timestamp(), SERIAL);
        assert_eq!(
            p.verify(&h, &body, now()).expect("verifies"),
            Callback::Refund(RefundReport {
                refund_id: id,
                provider_refund_id: Some("50000000382019052709732678859".into()),
                outcome,
                amount_cents: 800,
            })
        );
    }
    let body = callback_body(
        "REFUND.SUCCESS",
        "refund",
        &refund_resource(Uuid::new_v4(), "SUCCESS", "1230000109"),
        APIV3,
    );
    let h = sign_headers(&body, now().timestamp(), SERIAL);
    assert!(matches!(
        p.verify(&h, &body, now()),
        Err(ProviderError::Malformed(_))
    ));
}

#[test]
fn hostile_headers_are_bad_signatures() {
    let p = provider(APIV3);
    let body = callback_body(
        "TRANSACTION.SUCCESS",
        "transaction",
        &transaction(Uuid::new_v4(), "SUCCESS"),
        APIV3,
    );
    let good = sign_headers(&body, now().timestamp(), SERIAL);
    let huge = "A".repeat(100_000);
    let probe = format!(
        "WECHATPAY/SIGNTEST/{}",
        good["Wechatpay-Signature"].to_str().expect("ascii")
    );
    let mut cases: Vec<HeaderMap> = Vec::new();
    for name in [
        "Wechatpay-Serial",
        "Wechatpay-Timestamp",
        "Wechatpay-Nonce",
        "Wechatpay-Signature",
    ] {
        let mut h = good.clone();
        h.remove(name);
        cases.push(h.clone());
        h.insert(name, "".parse().expect("v"));
        cases.push(h.clone());
        h.insert(
            name,
            axum::http::HeaderValue::from_bytes("微信".as_bytes()).expect("v"),
        );
        cases.push(h.clone());
        h.insert(name, huge.parse().expect("v"));
        cases.push(h);
    }
    for (name, value) in [
        ("Wechatpay-Signature", "%%%not base64%%%"),
        ("Wechatpay-Signature", "QUJD"),
        ("Wechatpay-Signature", probe.as_str()),
        (
            "Wechatpay-Serial",
            "440024045C4A427599D09BB4E3DE0279F2E813FD",
        ),
        ("Wechatpay-Serial", "f5765756002fdd77"),
        ("Wechatpay-Timestamp", "1"),
        ("Wechatpay-Nonce", "another"),
        ("Wechatpay-Signature-Type", "WECHATPAY2-SM2-WITH-SM3"),
    ] {
        let mut h = good.clone();
        h.insert(name, value.parse().expect("v"));
        cases.push(h);
    }
    cases.push(HeaderMap::new());
    for h in cases {
        match p.verify(&h, &body, now()) {
            Err(ProviderError::BadSignature(m)) => assert!(m.len() < 200, "{m}"),
            other => panic!("{h:?}: {other:?}"),
        }
    }
    assert!(p.verify(&good, &body, now()).is_ok());
}

#[test]
fn signed_but_hostile_bodies_are_clear_errors() {
    let p = provider(APIV3);
    let ok_tx = transaction(Uuid::new_v4(), "SUCCESS");
    let other_key = [9u8; 32];
    let truncated = {
        let body = callback_body("TRANSACTION.SUCCESS", "transaction", &ok_tx, APIV3);
        let mut v: Value = serde_json::from_slice(&body).expect("json");
        let ct = v["resource"]["ciphertext"].as_str().expect("ct").to_owned();
        let raw = B64.decode(ct).expect("b64");
        v["resource"]["ciphertext"] = json!(B64.encode(&raw[..raw.len() - 1]));
        v.to_string().into_bytes()
    };
    let too_short = {
        let mut v: Value = serde_json::from_slice(&callback_body(
            "TRANSACTION.SUCCESS",
            "transaction",
            &ok_tx,
            APIV3,
        ))
        .expect("json");
        v["resource"]["ciphertext"] = json!(B64.encode([1u8; 15]));
        v.to_string().into_bytes()
    };
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_slice(&callback_body(
            "TRANSACTION.SUCCESS",
            "transaction",
            &ok_tx,
            APIV3,
        ))
        .expect("json");
        f(&mut v);
        v.to_string().into_bytes()
    };
    let id = Uuid::new_v4();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "malformed"),
        (b"not json".to_vec(), "malformed"),
        (vec![b'['; 100_000], "malformed"),
        (b"{}".to_vec(), "malformed"),
        (
            with(&|v| v["resource"]["algorithm"] = json!("AEAD_SM4_GCM")),
            "malformed",
        ),
        (
            with(&|v| v["resource"]["nonce"] = json!("short")),
            "malformed",
        ),
        (
            with(&|v| v["resource"]["ciphertext"] = json!("!!!")),
            "malformed",
        ),
        (
            with(&|v| v["resource"]["ciphertext"] = json!(null)),
            "malformed",
        ),
        (too_short, "malformed"),
        (truncated, "forged"),
        (
            with(&|v| v["resource"]["associated_data"] = json!("refund")),
            "forged",
        ),
        (
            callback_body("TRANSACTION.SUCCESS", "transaction", &ok_tx, &other_key),
            "forged",
        ),
        (
            callback_body("TRANSACTION.SUCCESS", "transaction", &json!("text"), APIV3),
            "malformed",
        ),
        (
            callback_body(
                "TRANSACTION.SUCCESS",
                "transaction",
                &transaction(id, "NOTPAY"),
                APIV3,
            ),
            "malformed",
        ),
        (
            callback_body(
                "TRANSACTION.SUCCESS",
                "transaction",
                &{
                    let mut t = transaction(id, "SUCCESS");
                    t["out_trade_no"] = json!("1217752501201407033233368018");
                    t
                },
                APIV3,
            ),
            "malformed",
        ),
        (
            callback_body(
                "TRANSACTION.SUCCESS",
                "transaction",
                &{
                    let mut t = transaction(id, "SUCCESS");
                    t["amount"] = json!(null);
                    t
                },
                APIV3,
            ),
            "malformed",
        ),
        (
            callback_body("TRANSACTION.FAIL", "transaction", &ok_tx, APIV3),
            "malformed",
        ),
    ];
    for (body, want) in cases {
        let h = sign_headers(&body, now().timestamp(), SERIAL);
        let got = p.verify(&h, &body, now());
        let ok = matches!(
            (want, &got),
            ("malformed", Err(ProviderError::Malformed(_)))
                | ("forged", Err(ProviderError::BadSignature(_)))
        );
        assert!(
            ok,
            "{want}: {got:?} for {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
}

#[test]
fn answers_to_callbacks_follow_the_docs() {
    let p = provider(APIV3);
    assert_eq!(p.ack().status, StatusCode::OK);
    assert_eq!(p.ack().body, "");
    let nack = p.nack("busy \"now\"");
    assert!(nack.status.is_server_error());
    let v: Value = serde_json::from_str(&nack.body).expect("json");
    assert_eq!(v, json!({"code": "FAIL", "message": "busy \"now\""}));
}

#[test]
fn jsapi_params_are_signed_for_request_payment() {
    let p = provider(APIV3);
    let params = p.jsapi_params("wx201410272009395522657a690389285100", 1414561699);
    let s = |k: &str| params[k].as_str().expect(k).to_owned();
    assert_eq!(s("appId"), "wxd678efh567hg6787");
    assert_eq!(s("timeStamp"), "1414561699");
    assert_eq!(
        s("package"),
        "prepay_id=wx201410272009395522657a690389285100"
    );
    assert_eq!(s("signType"), "RSA");
    let message =
        crypto::jsapi_message(&s("appId"), &s("timeStamp"), &s("nonceStr"), &s("package"));
    let (_, key) = crypto::platform_certificates(GO_VERIFIER_CERT.as_bytes())
        .expect("cert")
        .remove(0);
    assert_eq!(
        crypto::verify(&key, message.as_bytes(), &s("paySign")),
        Ok(())
    );
}

#[test]
fn time_expire_is_beijing_time_as_the_docs_write_it() {
    let t = DateTime::parse_from_rfc3339("2018-06-08T02:34:56.789Z")
        .expect("t")
        .with_timezone(&Utc);
    assert_eq!(beijing_time(t), "2018-06-08T10:34:56+08:00");
}

#[test]
fn byte_limits_cut_at_character_boundaries() {
    assert_eq!(clip_bytes("荔枝荔枝", 7), "荔枝");
    assert_eq!(clip_bytes("lychee", 127), "lychee");
    assert_eq!(clip_bytes("荔", 2), "");
}

#[test]
fn trade_states_map_to_outcomes() {
    let p = provider(APIV3);
    let id = Uuid::new_v4();
    for (state, outcome) in [
        ("SUCCESS", PayOutcome::Succeeded),
        ("REFUND", PayOutcome::Refunded),
        ("NOTPAY", PayOutcome::Pending),
        ("USERPAYING", PayOutcome::Pending),
        ("CLOSED", PayOutcome::Failed),
        ("REVOKED", PayOutcome::Failed),
        ("PAYERROR", PayOutcome::Failed),
    ] {
        let tx: Transaction = serde_json::from_value(transaction(id, state)).expect("tx");
        assert_eq!(p.report_payment(tx).expect(state).outcome, outcome);
    }
    // An unpaid order may come without amount or transaction id.
    let tx: Transaction = serde_json::from_value(json!({
        "mchid": MCHID, "out_trade_no": trade_no(id), "trade_state": "NOTPAY"
    }))
    .expect("tx");
    let r = p.report_payment(tx).expect("pending");
    assert_eq!((r.provider_txn_id, r.amount_cents), (None, 0));
    let tx: Transaction = serde_json::from_value(transaction(id, "LOST")).expect("tx");
    assert!(matches!(
        p.report_payment(tx),
        Err(ProviderError::Malformed(_))
    ));
    for status in ["SUCCESS", "PROCESSING", "ABNORMAL", "CLOSED"] {
        assert!(refund_outcome(status).is_ok());
    }
    assert!(refund_outcome("DONE").is_err());
}

struct Dir(std::path::PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Settings pointing at files holding the Go SDK's test material.
fn args_in(dir: &Dir) -> WechatPayArgs {
    std::fs::create_dir_all(&dir.0).expect("dir");
    let write = |name: &str, content: &str| {
        let path = dir.0.join(name);
        std::fs::write(&path, content).expect("write");
        Some(path)
    };
    WechatPayArgs {
        mchid: Some(MCHID.into()),
        appid: Some("wxd678efh567hg6787".into()),
        merchant_serial: Some("5F1C72E2A8931B72A2E13AF8DEE92471EB397115".into()),
        private_key_file: write(
            "apiclient_key.pem",
            &GO_TEST_KEY.replace("TESTING KEY", "PRIVATE KEY"),
        ),
        apiv3_key_file: write("apiv3.key", "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb\n"),
        public_key_file: write("pub_key.pem", GO_PUBLIC_KEY),
        public_key_id: Some("PUB_KEY_ID_0119000001092025010100000000000001".into()),
        platform_cert_file: write("platform.pem", GO_NOTIFY_CERT),
        ..WechatPayArgs::default()
    }
}

fn temp_dir() -> Dir {
    Dir(std::env::temp_dir().join(format!("wechatpay-unit-{}", Uuid::new_v4().simple())))
}

#[test]
fn settings_load_and_never_show_keys() {
    let dir = temp_dir();
    let args = args_in(&dir);
    let p = WechatPay::from_args(&args, crate::payments::http_client().expect("client"))
        .expect("loads");
    assert_eq!(p.merchant(), MCHID);
    assert!(p
        .platform
        .0
        .get("PUB_KEY_ID_0119000001092025010100000000000001")
        .is_some());
    assert!(p.platform.0.get("D7CE59D1F522D701").is_some());
    let shown = format!("{p:?} {args:?}");
    for secret in [
        "MIIEvgIBADANBgkqhkiG9w0BAQEFAASC",
        "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb",
        "2VCTd91f",
    ] {
        assert!(!shown.contains(secret), "{shown}");
    }
    // Either platform key alone is enough.
    let only_cert = WechatPayArgs {
        public_key_file: None,
        public_key_id: None,
        ..args.clone()
    };
    assert!(WechatPay::from_args(&only_cert, p.http.clone()).is_ok());
    let only_key = WechatPayArgs {
        platform_cert_file: None,
        ..args.clone()
    };
    assert!(WechatPay::from_args(&only_key, p.http.clone()).is_ok());
}

#[test]
fn bad_settings_name_the_flag_and_not_the_key() {
    let dir = temp_dir();
    let args = args_in(&dir);
    let http = crate::payments::http_client().expect("client");
    let secret_looking = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t";
    let garbage = dir.0.join("garbage");
    std::fs::write(&garbage, secret_looking).expect("write");
    let short_key = dir.0.join("short.key");
    std::fs::write(&short_key, "0123456789012345678901234567890\n").expect("write");
    let missing = dir.0.join("missing.pem");
    let cases: Vec<(WechatPayArgs, &str)> = vec![
        (
            WechatPayArgs {
                mchid: None,
                ..args.clone()
            },
            "--wechatpay-mchid",
        ),
        (
            WechatPayArgs {
                mchid: Some("19/../x".into()),
                ..args.clone()
            },
            "--wechatpay-mchid",
        ),
        (
            WechatPayArgs {
                appid: Some(" ".into()),
                ..args.clone()
            },
            "--wechatpay-appid",
        ),
        (
            WechatPayArgs {
                merchant_serial: None,
                ..args.clone()
            },
            "--wechatpay-merchant-serial",
        ),
        (
            WechatPayArgs {
                private_key_file: None,
                ..args.clone()
            },
            "--wechatpay-private-key-file",
        ),
        (
            WechatPayArgs {
                private_key_file: Some(missing.clone()),
                ..args.clone()
            },
            "--wechatpay-private-key-file",
        ),
        (
            WechatPayArgs {
                private_key_file: Some(garbage.clone()),
                ..args.clone()
            },
            "--wechatpay-private-key-file",
        ),
        (
            WechatPayArgs {
                apiv3_key_file: None,
                ..args.clone()
            },
            "--wechatpay-apiv3-key-file",
        ),
        (
            WechatPayArgs {
                apiv3_key_file: Some(garbage.clone()),
                ..args.clone()
            },
            "--wechatpay-apiv3-key-file",
        ),
        (
            WechatPayArgs {
                apiv3_key_file: Some(short_key),
                ..args.clone()
            },
            "32 bytes",
        ),
        (
            WechatPayArgs {
                public_key_file: Some(garbage.clone()),
                ..args.clone()
            },
            "--wechatpay-public-key-file",
        ),
        (
            WechatPayArgs {
                public_key_id: None,
                ..args.clone()
            },
            "--wechatpay-public-key-id",
        ),
        (
            WechatPayArgs {
                public_key_file: None,
                platform_cert_file: None,
                ..args.clone()
            },
            "--wechatpay-public-key-id",
        ),
        (
            WechatPayArgs {
                public_key_file: None,
                public_key_id: None,
                platform_cert_file: None,
                ..args.clone()
            },
            "platform key is required",
        ),
        (
            WechatPayArgs {
                platform_cert_file: Some(garbage.clone()),
                ..args.clone()
            },
            "--wechatpay-platform-cert-file",
        ),
        (
            WechatPayArgs {
                base_url: "ftp://x".into(),
                ..args.clone()
            },
            "--wechatpay-base-url",
        ),
    ];
    for (bad, flag) in cases {
        match WechatPay::from_args(&bad, http.clone()) {
            Err(ProviderError::Config(m)) => {
                assert!(m.contains(flag), "{flag}: {m}");
                assert!(!m.contains(secret_looking), "{m}");
            }
            other => panic!("{flag}: {other:?}"),
        }
    }
}

#[test]
fn only_cny_is_sent() {
    assert!(only_cny("CNY").is_ok());
    assert!(matches!(
        only_cny("USD"),
        Err(ProviderError::Refused { .. })
    ));
}
