//! The WeChat Pay adapter against the simulator, called directly (no node):
//! signed requests, JSAPI parameters, order states, close, refunds, and
//! callback verification, genuine and forged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{TimeDelta, Utc};
use lychee_live::payments::wechatpay::WechatPay;
use lychee_live::payments::{
    http_client, Callback, PayOutcome, Provider, ProviderError, RefundOutcome, RefundRequest,
    Scene, StartRequest,
};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::sha2::Sha256;
use rsa::signature::Verifier;
use uuid::Uuid;

use crate::gateway::{Delivery, Gateway};
use crate::helpers::SECRET;
use crate::sim_wechatpay::{WechatSim, OTHER_MCHID, SIM_APPID, SIM_MCHID};

const NOTIFY: &str = "http://127.0.0.1:9/api/v1/payments/wechatpay/notify";

fn adapter(sim: &WechatSim) -> WechatPay {
    WechatPay::from_args(&sim.args(), http_client().expect("client")).expect("adapter")
}

fn start_request(scene: Scene) -> StartRequest {
    StartRequest {
        payment_id: Uuid::new_v4(),
        order_id: Uuid::new_v4(),
        description: "荔枝 妃子笑 5斤".into(),
        amount_cents: 16800,
        currency: "CNY".into(),
        expires_at: Utc::now() + TimeDelta::minutes(15),
        notify_url: NOTIFY.into(),
        return_url: "http://127.0.0.1:9/orders".into(),
        scene,
    }
}

fn refund_request(req: &StartRequest, txn: Option<String>, cents: i64) -> RefundRequest {
    RefundRequest {
        refund_id: Uuid::new_v4(),
        payment_id: req.payment_id,
        provider_txn_id: txn,
        amount_cents: cents,
        paid_cents: req.amount_cents,
        currency: "CNY".into(),
        reason: "late_payment".into(),
        notify_url: NOTIFY.into(),
    }
}

fn payment_json(id: Uuid) -> serde_json::Value {
    serde_json::json!({ "id": id })
}

#[tokio::test]
async fn native_prepay_is_signed_and_carries_the_order() {
    let sim = WechatSim::start().await;
    let wx = adapter(&sim);
    let req = start_request(Scene::Desktop);
    let started = wx.start(&req).await.expect("prepay");
    let url = started.checkout.url.expect("code_url");
    assert!(url.starts_with("weixin://wxpay/bizpayurl?pr="), "{url}");
    assert_eq!(started.checkout.params, None);
    assert_eq!(sim.bad_signatures(), 0);

    let order = sim.order(req.payment_id).expect("the sim holds it");
    assert_eq!(order.trade_type, "NATIVE");
    assert_eq!(order.total, 16800);
    assert_eq!(order.currency, "CNY");
    assert_eq!(order.notify_url, NOTIFY);
    assert_eq!(order.description, "荔枝 妃子笑 5斤");
    assert!(
        order.time_expire.ends_with("+08:00"),
        "{}",
        order.time_expire
    );
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&order.time_expire)
            .expect("rfc3339")
            .timestamp(),
        req.expires_at.timestamp()
    );
    // Mobile browsers get the Native QR code too.
    let mobile = wx
        .start(&start_request(Scene::Mobile))
        .await
        .expect("prepay");
    assert!(mobile.checkout.url.is_some());
}

#[tokio::test]
async fn a_wrong_merchant_key_is_refused_by_wechat_pay() {
    let sim = WechatSim::start().await;
    let wx = WechatPay::from_args(
        &sim.args_with_wrong_merchant_key(),
        http_client().expect("c"),
    )
    .expect("adapter");
    match wx.start(&start_request(Scene::Desktop)).await {
        Err(ProviderError::Refused { code, .. }) => assert_eq!(code, "SIGN_ERROR"),
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.bad_signatures(), 1);
}

#[tokio::test]
async fn jsapi_params_verify_with_the_merchant_public_key() {
    let sim = WechatSim::start().await;
    let wx = adapter(&sim);
    let req = start_request(Scene::WeChat {
        openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
    });
    let started = wx.start(&req).await.expect("prepay");
    assert_eq!(started.checkout.url, None);
    let p = started.checkout.params.expect("params");
    let s = |k: &str| {
        p[k].as_str()
            .unwrap_or_else(|| panic!("{k} in {p}"))
            .to_owned()
    };
    let order = sim.order(req.payment_id).expect("order");
    assert_eq!(order.trade_type, "JSAPI");
    assert_eq!(
        order.openid.as_deref(),
        Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")
    );
    assert_eq!(s("appId"), SIM_APPID);
    assert_eq!(s("package"), format!("prepay_id={}", order.prepay_id));
    assert_eq!(s("signType"), "RSA");
    let ts: i64 = s("timeStamp").parse().expect("seconds");
    assert!((Utc::now().timestamp() - ts).abs() < 60);
    assert!(!s("nonceStr").is_empty() && s("nonceStr").len() <= 32);

    let message = format!(
        "{}\n{}\n{}\n{}\n",
        s("appId"),
        s("timeStamp"),
        s("nonceStr"),
        s("package")
    );
    let raw = B64.decode(s("paySign")).expect("base64");
    let sig = Signature::try_from(raw.as_slice()).expect("signature");
    VerifyingKey::<Sha256>::new(sim.merchant_public_key())
        .verify(message.as_bytes(), &sig)
        .expect("paySign verifies");
}

#[tokio::test]
async fn query_follows_the_order_through_its_states() {
    let sim = WechatSim::start().await;
    let wx = adapter(&sim);
    let unknown = Uuid::new_v4();
    assert!(matches!(
        wx.query(unknown).await,
        Err(ProviderError::NotFound(_))
    ));

    let req = start_request(Scene::Desktop);
    wx.start(&req).await.expect("prepay");
    let r = wx.query(req.payment_id).await.expect("query");
    assert_eq!(
        (r.outcome, r.provider_txn_id.clone()),
        (PayOutcome::Pending, None)
    );

    assert_eq!(
        sim.pay(&payment_json(req.payment_id), Delivery::Lost).await,
        None
    );
    let r = wx.query(req.payment_id).await.expect("query");
    assert_eq!(r.outcome, PayOutcome::Succeeded);
    assert_eq!(
        r.provider_txn_id,
        sim.order(req.payment_id).expect("o").transaction_id
    );
    assert_eq!(
        (r.amount_cents, r.currency.as_str(), r.merchant.as_str()),
        (16800, "CNY", SIM_MCHID)
    );
    assert_eq!(r.payment_id, req.payment_id);

    let refund = refund_request(&req, r.provider_txn_id.clone(), 800);
    wx.refund(&refund).await.expect("refund");
    assert_eq!(
        wx.query(req.payment_id).await.expect("q").outcome,
        PayOutcome::Refunded
    );

    let failed = start_request(Scene::Desktop);
    wx.start(&failed).await.expect("prepay");
    sim.fail(&payment_json(failed.payment_id)).await;
    assert_eq!(
        wx.query(failed.payment_id).await.expect("q").outcome,
        PayOutcome::Failed
    );
    assert_eq!(sim.bad_signatures(), 0);
}

#[tokio::test]
async fn close_ends_an_unpaid_order_and_is_refused_for_a_paid_one() {
    let sim = WechatSim::start().await;
    let wx = adapter(&sim);
    let req = start_request(Scene::Desktop);
    wx.start(&req).await.expect("prepay");
    wx.close(req.payment_id).await.expect("close");
    assert_eq!(
        wx.query(req.payment_id).await.expect("q").outcome,
        PayOutcome::Failed
    );
    // A closed order cannot be paid.
    assert_eq!(
        sim.pay(&payment_json(req.payment_id), Delivery::Normal)
            .await,
        None
    );
    assert_eq!(sim.order(req.payment_id).expect("o").state, "CLOSED");

    let paid = start_request(Scene::Desktop);
    wx.start(&paid).await.expect("prepay");
    sim.mark_paid(paid.payment_id).expect("paid");
    match wx.close(paid.payment_id).await {
        Err(ProviderError::Refused { code, .. }) => assert_eq!(code, "ORDERPAID"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        wx.close(Uuid::new_v4()).await,
        Err(ProviderError::NotFound(_))
    ));
}

#[tokio::test]
async fn an_order_cannot_be_paid_after_its_time_expire() {
    let clock = std::sync::Arc::new(lychee_live::clock::Clock::default());
    let sim = WechatSim::with_clock(clock.clone()).await;
    let wx = adapter(&sim);
    let req = start_request(Scene::Desktop);
    wx.start(&req).await.expect("prepay");
    clock.advance(Duration::from_secs(16 * 60));
    assert!(sim.mark_paid(req.payment_id).is_err());
    assert_eq!(
        sim.pay(&payment_json(req.payment_id), Delivery::Normal)
            .await,
        None
    );
    assert_eq!(
        wx.query(req.payment_id).await.expect("q").outcome,
        PayOutcome::Pending
    );
}

#[tokio::test]
async fn refunds_succeed_fail_and_are_queried() {
    let sim = WechatSim::start().await;
    let wx = adapter(&sim);
    let req = start_request(Scene::Desktop);
    wx.start(&req).await.expect("prepay");
    let txn = sim.mark_paid(req.payment_id).expect("paid");

    let first = refund_request(&req, Some(txn.clone()), 800);
    let r = wx.refund(&first).await.expect("refund");
    assert_eq!(
        (r.refund_id, r.outcome, r.amount_cents),
        (first.refund_id, RefundOutcome::Succeeded, 800)
    );
    assert!(r.provider_refund_id.is_some());
    assert_eq!(wx.query_refund(&first).await.expect("query"), r);
    // The same refund again is the same refund, not a second one.
    assert_eq!(wx.refund(&first).await.expect("again"), r);

    sim.set_refunds_fail(true);
    let second = refund_request(&req, None, 1000);
    match wx.refund(&second).await {
        Err(ProviderError::Refused { code, message }) => {
            assert_eq!(code, "NOT_ENOUGH");
            assert!(!message.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        wx.query_refund(&second).await,
        Err(ProviderError::NotFound(_))
    ));
    sim.set_refunds_fail(false);

    // Named by out_trade_no when the transaction id is unknown; pending
    // until WeChat Pay finishes it.
    sim.set_refunds_pending(true);
    let second = RefundRequest {
        notify_url: String::new(),
        ..second
    };
    let r = wx.refund(&second).await.expect("refund");
    assert_eq!(r.outcome, RefundOutcome::Pending);
    sim.complete_refund(&second.refund_id.simple().to_string(), "SUCCESS")
        .await;
    assert_eq!(
        wx.query_refund(&second).await.expect("q").outcome,
        RefundOutcome::Succeeded
    );

    // More than is left is refused.
    let too_much = refund_request(&req, Some(txn), 16800);
    assert!(matches!(
        wx.refund(&too_much).await,
        Err(ProviderError::Refused { .. })
    ));
    assert_eq!(
        sim.refunds(),
        vec![
            (first.refund_id.simple().to_string(), 800),
            (second.refund_id.simple().to_string(), 1000)
        ]
    );
    let mut usd = refund_request(&req, None, 1);
    usd.currency = "USD".into();
    assert!(matches!(
        wx.refund(&usd).await,
        Err(ProviderError::Refused { .. })
    ));
    assert_eq!(sim.bad_signatures(), 0);
}

#[tokio::test]
async fn answers_that_do_not_verify_or_do_not_come_are_errors() {
    let sim = WechatSim::start().await;
    let wx = adapter(&sim);
    let req = start_request(Scene::Desktop);
    wx.start(&req).await.expect("prepay");

    sim.set_corrupt_answers(true);
    assert!(matches!(
        wx.query(req.payment_id).await,
        Err(ProviderError::BadSignature(_))
    ));
    assert!(matches!(
        wx.start(&start_request(Scene::Desktop)).await,
        Err(ProviderError::BadSignature(_))
    ));
    sim.set_corrupt_answers(false);

    sim.set_unavailable(true);
    let e = wx.query(req.payment_id).await.expect_err("500");
    assert!(e.is_transient(), "{e:?}");
    sim.set_unavailable(false);

    let mut args = sim.args();
    args.base_url = "http://127.0.0.1:9".into();
    let gone = WechatPay::from_args(&args, http_client().expect("c")).expect("adapter");
    assert!(matches!(
        gone.query(req.payment_id).await,
        Err(ProviderError::Unavailable(_))
    ));

    let mut usd = start_request(Scene::Desktop);
    usd.currency = "USD".into();
    assert!(matches!(
        wx.start(&usd).await,
        Err(ProviderError::Refused { .. })
    ));
    assert!(sim.order(usd.payment_id).is_none());
}

#[tokio::test]
async fn callbacks_verify_and_forgeries_do_not() {
    let sim = WechatSim::start().await;
    let wx = adapter(&sim);
    let req = start_request(Scene::Desktop);
    wx.start(&req).await.expect("prepay");
    let txn = sim.mark_paid(req.payment_id).expect("paid");
    let now = Utc::now();

    let (h, body) = sim.payment_callback(req.payment_id, Delivery::Normal);
    match wx.verify(&h, &body, now).expect("genuine") {
        Callback::Payment(r) => {
            assert_eq!(r.payment_id, req.payment_id);
            assert_eq!(r.provider_txn_id.as_deref(), Some(txn.as_str()));
            assert_eq!(r.outcome, PayOutcome::Succeeded);
            assert_eq!(
                (r.amount_cents, r.currency.as_str(), r.merchant.as_str()),
                (16800, "CNY", SIM_MCHID)
            );
        }
        other => panic!("{other:?}"),
    }

    let (h, body) = sim.payment_callback(req.payment_id, Delivery::TamperedBody);
    assert!(matches!(
        wx.verify(&h, &body, now),
        Err(ProviderError::BadSignature(_))
    ));

    let (mut h, body) = sim.payment_callback(req.payment_id, Delivery::Normal);
    h.insert(
        "Wechatpay-Serial",
        "PUB_KEY_ID_0119999999999999999999999999999999"
            .parse()
            .expect("v"),
    );
    assert!(matches!(
        wx.verify(&h, &body, now),
        Err(ProviderError::BadSignature(_))
    ));

    let (h, body) = sim.payment_callback(req.payment_id, Delivery::Stale);
    assert!(matches!(
        wx.verify(&h, &body, now),
        Err(ProviderError::Stale(_))
    ));

    let (h, body) = sim.forged_payment_callback(req.payment_id);
    assert!(matches!(
        wx.verify(&h, &body, now),
        Err(ProviderError::BadSignature(_))
    ));

    // Genuinely signed but wrong: reported as they are, for the service to refuse.
    let (h, body) = sim.payment_callback(req.payment_id, Delivery::WrongAmount);
    match wx.verify(&h, &body, now).expect("signed") {
        Callback::Payment(r) => assert_eq!(r.amount_cents, 16801),
        other => panic!("{other:?}"),
    }
    let (h, body) = sim.payment_callback(req.payment_id, Delivery::WrongMerchant);
    match wx.verify(&h, &body, now).expect("signed") {
        Callback::Payment(r) => assert_eq!(r.merchant, OTHER_MCHID),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn refund_callbacks_verify() {
    let sim = WechatSim::start().await;
    let wx = adapter(&sim);
    let req = start_request(Scene::Desktop);
    wx.start(&req).await.expect("prepay");
    let txn = sim.mark_paid(req.payment_id).expect("paid");
    let refund = refund_request(&req, Some(txn), 16800);
    wx.refund(&refund).await.expect("refund");
    let no = refund.refund_id.simple().to_string();
    for (event, outcome) in [
        ("REFUND.SUCCESS", RefundOutcome::Succeeded),
        ("REFUND.ABNORMAL", RefundOutcome::Failed),
        ("REFUND.CLOSED", RefundOutcome::Failed),
    ] {
        let (h, body) = sim.refund_callback(&no, event);
        match wx.verify(&h, &body, Utc::now()).expect(event) {
            Callback::Refund(r) => {
                assert_eq!(
                    (r.refund_id, r.outcome, r.amount_cents),
                    (refund.refund_id, outcome, 16800)
                )
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A notify route as the node's would be: the adapter verifies, then acks
/// or nacks. Returns its URL and the bodies it took.
async fn receiver(wx: WechatPay) -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let taken = Arc::new(Mutex::new(Vec::new()));
    let wx = Arc::new(wx);
    let (t, w) = (taken.clone(), wx.clone());
    let app = axum::Router::new().route(
        "/api/v1/payments/wechatpay/notify",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (t, w) = (t.clone(), w.clone());
            async move {
                let reply = match w.verify(&headers, &body, Utc::now()) {
                    Ok(_) => {
                        t.lock().expect("taken").push(body.to_vec());
                        w.ack()
                    }
                    Err(e) => w.nack(&e.to_string()),
                };
                (reply.status, reply.body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/api/v1/payments/wechatpay/notify",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, taken)
}

#[tokio::test]
async fn the_gateway_delivers_callbacks_to_the_notify_url() {
    let sim = WechatSim::start().await;
    let mut settings = lychee_live::Settings::new(
        lychee_live::config::Mode::Embedded {
            data_dir: std::env::temp_dir(),
        },
        lychee_live::config::Secret(SECRET.into()),
        "t".into(),
    );
    sim.configure(&mut settings);
    assert_eq!(sim.provider(), "wechatpay");
    assert_eq!(
        settings.payments.providers,
        Some(vec!["wechatpay".to_owned()])
    );
    let wx = WechatPay::from_args(&settings.payments.wechatpay, http_client().expect("c"))
        .expect("adapter");
    let (url, taken) = receiver(adapter(&sim)).await;

    let mut paid = Vec::new();
    for how in [
        Delivery::Normal,
        Delivery::TamperedBody,
        Delivery::Stale,
        Delivery::Lost,
    ] {
        let mut req = start_request(Scene::Desktop);
        req.notify_url = url.clone();
        wx.start(&req).await.expect("prepay");
        let answer = sim.pay(&payment_json(req.payment_id), how).await;
        match how {
            Delivery::Normal => assert_eq!(answer, Some((200, String::new()))),
            Delivery::Lost => assert_eq!(answer, None),
            _ => {
                let (status, body) = answer.expect("delivered");
                assert_eq!(status, 500);
                let v: serde_json::Value = serde_json::from_str(&body).expect("json");
                assert_eq!(v["code"], "FAIL");
            }
        }
        paid.push(req.payment_id);
    }
    assert_eq!(taken.lock().expect("taken").len(), 1);

    // A retry is the same notification, byte for byte, signed afresh; a
    // lost or refused first delivery is retried with the genuine one.
    for id in &paid {
        assert_eq!(sim.redeliver(*id).await, (200, String::new()));
    }
    let taken = taken.lock().expect("taken").clone();
    assert_eq!(taken.len(), 5);
    assert_eq!(taken[0], taken[1]);
}
