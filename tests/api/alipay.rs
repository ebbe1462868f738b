//! The Alipay adapter against `AlipaySim`, called directly (no node): what
//! it signs is accepted, what the gateway signs is believed, and nothing
//! else. The end-to-end cases through a node use `AlipaySim` as a `Gateway`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use lychee_live::clock::Clock;
use lychee_live::payments::alipay::Alipay;
use lychee_live::payments::{
    Callback, PayOutcome, PaymentReport, Provider, ProviderError, RefundOutcome, RefundRequest,
    Scene, StartRequest,
};
use serde_json::json;
use uuid::Uuid;

use crate::gateway::{Delivery, Gateway};
use crate::sim_alipay::AlipaySim;

fn adapter(args: &lychee_live::payments::alipay::AlipayArgs) -> Alipay {
    let http = lychee_live::payments::http_client().expect("client");
    Alipay::from_args(args, http).expect("settings")
}

fn request(clock: &Clock, scene: Scene, notify_url: &str) -> StartRequest {
    StartRequest {
        payment_id: Uuid::new_v4(),
        order_id: Uuid::new_v4(),
        description: "桂味荔枝 2.5kg".into(),
        amount_cents: 12900,
        currency: "CNY".into(),
        expires_at: clock.now() + TimeDelta::minutes(15),
        notify_url: notify_url.into(),
        return_url: "http://127.0.0.1:1/orders/1".into(),
        scene,
    }
}

struct Setup {
    clock: Arc<Clock>,
    sim: AlipaySim,
    alipay: Alipay,
}

async fn setup() -> Setup {
    let clock = Arc::new(Clock::default());
    let sim = AlipaySim::start_with_clock(clock.clone()).await;
    let alipay = adapter(&sim.args());
    Setup { clock, sim, alipay }
}

async fn open(s: &Setup, scene: Scene) -> (StartRequest, String) {
    let req = request(&s.clock, scene, "http://127.0.0.1:1/notify");
    let url = s
        .alipay
        .start(&req)
        .await
        .expect("started")
        .checkout
        .url
        .expect("url");
    let trade = s.sim.open(&url).expect("the gateway takes the pay URL");
    (req, trade.out_trade_no)
}

fn refund(req: &StartRequest, cents: i64) -> RefundRequest {
    RefundRequest {
        refund_id: Uuid::new_v4(),
        payment_id: req.payment_id,
        provider_txn_id: None,
        amount_cents: cents,
        paid_cents: req.amount_cents,
        currency: "CNY".into(),
        reason: "spoiled".into(),
        notify_url: req.notify_url.clone(),
    }
}

#[tokio::test]
async fn alipay_pay_urls_verify_at_the_gateway_and_a_stranger_key_is_refused() {
    // On the wall clock, as the lead's node would be without a test clock.
    let sim = AlipaySim::start().await;
    let alipay = adapter(&sim.args());
    assert_eq!(sim.args().seller_id.as_deref(), Some(sim.seller_id()));
    let s = Setup {
        clock: Arc::new(Clock::default()),
        sim,
        alipay,
    };
    for (scene, method) in [
        (Scene::Desktop, "alipay.trade.page.pay"),
        (Scene::Mobile, "alipay.trade.wap.pay"),
    ] {
        let req = request(
            &s.clock,
            scene,
            "http://127.0.0.1:1/api/v1/payments/alipay/notify",
        );
        let url = s
            .alipay
            .start(&req)
            .await
            .expect("started")
            .checkout
            .url
            .expect("url");
        assert!(url.starts_with(&s.sim.gateway_url()));
        let trade = s.sim.open(&url).expect("accepted");
        assert_eq!(trade.method, method);
        assert_eq!(trade.out_trade_no, req.payment_id.simple().to_string());
        assert_eq!(trade.total_cents, 12900);
        assert_eq!(trade.notify_url, req.notify_url);
        assert_eq!(trade.time_expire, req.expires_at.trunc_subsecs(0));
        assert_eq!(trade.status, "WAIT_BUYER_PAY");
        // The buyer opening it again finds the same trade.
        assert_eq!(s.sim.open(&url).expect("again"), trade);
    }
    assert_eq!(s.sim.bad_signatures(), 0);

    let stranger = adapter(&s.sim.stranger_args());
    let req = request(&s.clock, Scene::Desktop, "http://127.0.0.1:1/notify");
    let url = stranger
        .start(&req)
        .await
        .expect("started")
        .checkout
        .url
        .expect("url");
    assert_eq!(
        s.sim.open(&url).expect_err("refused").code,
        "isv.invalid-signature"
    );
    let tampered = url.replace("12900", "1");
    assert!(s.sim.open(&tampered).is_err());
    match stranger.query(req.payment_id).await {
        Err(ProviderError::Refused { code, .. }) => assert_eq!(code, "isv.invalid-signature"),
        other => panic!("{other:?}"),
    }
    // The stranger's pay URL, the tampered one, the stranger's query.
    assert_eq!(s.sim.bad_signatures(), 3);
}

#[tokio::test]
async fn alipay_query_follows_the_trade() {
    let s = setup().await;
    let req = request(&s.clock, Scene::Mobile, "http://127.0.0.1:1/notify");
    // Before the buyer opens the cashier, Alipay has no trade.
    assert!(matches!(
        s.alipay.query(req.payment_id).await,
        Err(ProviderError::NotFound(_))
    ));
    let url = s
        .alipay
        .start(&req)
        .await
        .expect("started")
        .checkout
        .url
        .expect("url");
    let trade = s.sim.open(&url).expect("opened");
    let pending = s.alipay.query(req.payment_id).await.expect("query");
    assert_eq!(pending.outcome, PayOutcome::Pending);
    s.sim.mark_paid(&trade.out_trade_no).expect("paid");
    assert_eq!(
        s.alipay.query(req.payment_id).await.expect("query"),
        PaymentReport {
            payment_id: req.payment_id,
            provider_txn_id: Some(trade.trade_no.clone()),
            outcome: PayOutcome::Succeeded,
            amount_cents: 12900,
            currency: "CNY".into(),
            merchant: s.sim.app_id().into(),
        }
    );
    assert_eq!(
        s.sim.calls(),
        [
            "alipay.trade.query",
            "alipay.trade.query",
            "alipay.trade.query"
        ]
    );
}

#[tokio::test]
async fn alipay_close_closes_only_unpaid_trades() {
    let s = setup().await;
    let (req, _) = open(&s, Scene::Desktop).await;
    s.alipay.close(req.payment_id).await.expect("closed");
    assert_eq!(
        s.alipay.query(req.payment_id).await.expect("query").outcome,
        PayOutcome::Failed
    );

    let (paid, out_trade_no) = open(&s, Scene::Desktop).await;
    s.sim.mark_paid(&out_trade_no).expect("paid");
    match s.alipay.close(paid.payment_id).await {
        Err(ProviderError::Refused { code, .. }) => assert_eq!(code, "ACQ.TRADE_STATUS_ERROR"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.alipay.close(Uuid::new_v4()).await,
        Err(ProviderError::NotFound(_))
    ));
}

#[tokio::test]
async fn alipay_time_expire_is_honoured() {
    let s = setup().await;
    let (req, out_trade_no) = open(&s, Scene::Mobile).await;
    let url = s
        .alipay
        .start(&req)
        .await
        .expect("started")
        .checkout
        .url
        .expect("url");
    s.clock.advance(Duration::from_secs(16 * 60));
    assert_eq!(
        s.alipay.query(req.payment_id).await.expect("query").outcome,
        PayOutcome::Failed
    );
    assert!(s.sim.mark_paid(&out_trade_no).is_err());
    assert!(s.sim.open(&url).is_err());
    let late = request(&s.clock, Scene::Mobile, "http://127.0.0.1:1/notify");
    let late = StartRequest {
        expires_at: s.clock.now() - TimeDelta::seconds(1),
        ..late
    };
    let url = s
        .alipay
        .start(&late)
        .await
        .expect("started")
        .checkout
        .url
        .expect("url");
    assert_eq!(
        s.sim.open(&url).expect_err("closed").code,
        "ACQ.TRADE_HAS_CLOSE"
    );
}

#[tokio::test]
async fn alipay_refunds_succeed_repeat_and_fail_as_the_gateway_says() {
    let s = setup().await;
    let (req, out_trade_no) = open(&s, Scene::Desktop).await;
    let early = refund(&req, 100);
    match s.alipay.refund(&early).await {
        Err(ProviderError::Refused { code, .. }) => assert_eq!(code, "ACQ.TRADE_STATUS_ERROR"),
        other => panic!("unpaid: {other:?}"),
    }
    s.sim.mark_paid(&out_trade_no).expect("paid");

    let part = refund(&req, 2900);
    let done = s.alipay.refund(&part).await.expect("refund");
    assert_eq!(
        (done.refund_id, done.outcome, done.amount_cents),
        (part.refund_id, RefundOutcome::Succeeded, 2900)
    );
    // The same refund again moves no money (fund_change N) and says so.
    let again = s.alipay.refund(&part).await.expect("again");
    assert_eq!(
        (again.outcome, again.amount_cents),
        (RefundOutcome::Succeeded, 2900)
    );
    let asked = s.alipay.query_refund(&part).await.expect("refund query");
    assert_eq!(
        (asked.outcome, asked.amount_cents),
        (RefundOutcome::Succeeded, 2900)
    );
    assert!(matches!(
        s.alipay.query_refund(&refund(&req, 1)).await,
        Err(ProviderError::NotFound("refund"))
    ));

    match s.alipay.refund(&refund(&req, 10001)).await {
        Err(ProviderError::Refused { code, .. }) => {
            assert_eq!(code, "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL")
        }
        other => panic!("too much: {other:?}"),
    }
    s.sim.set_refunds_fail(true);
    match s.alipay.refund(&refund(&req, 100)).await {
        Err(e @ ProviderError::Refused { .. }) => assert!(!e.is_transient()),
        other => panic!("refused: {other:?}"),
    }
    s.sim.set_refunds_fail(false);
    let rest = refund(&req, 10000);
    assert_eq!(
        s.alipay.refund(&rest).await.expect("rest").outcome,
        RefundOutcome::Succeeded
    );
    assert_eq!(
        s.alipay.query(req.payment_id).await.expect("query").outcome,
        PayOutcome::Refunded
    );
    assert_eq!(
        s.sim.refunds(),
        [
            (part.refund_id.simple().to_string(), 2900),
            (rest.refund_id.simple().to_string(), 10000)
        ]
    );
}

#[tokio::test]
async fn alipay_notifications_verify_only_as_alipay_signs_them() {
    let s = setup().await;
    let (req, o) = open(&s, Scene::Mobile).await;
    s.sim.mark_paid(&o).expect("paid");
    let trade = s.sim.trade(&o).expect("trade");
    let verify = |body: &str| {
        s.alipay
            .verify(&HeaderMap::new(), body.as_bytes(), s.clock.now())
    };
    let report = |body: &str| match verify(body) {
        Ok(Callback::Payment(r)) => r,
        other => panic!("{other:?}"),
    };

    let genuine = trade.notification.clone().expect("notification");
    let r = report(&genuine);
    assert_eq!(
        (r.payment_id, r.outcome, r.amount_cents),
        (req.payment_id, PayOutcome::Succeeded, 12900)
    );
    assert_eq!(
        (r.provider_txn_id.as_deref(), r.merchant.as_str()),
        (Some(trade.trade_no.as_str()), s.alipay.merchant())
    );
    assert_eq!(
        report(&s.sim.notification(&o, "TRADE_FINISHED", &[])).outcome,
        PayOutcome::Succeeded
    );

    let other_app = report(&s.sim.notification(
        &o,
        "TRADE_SUCCESS",
        &[("app_id", "2021000100000001")],
    ));
    assert_ne!(other_app.merchant, s.alipay.merchant());
    let other_seller = report(&s.sim.notification(
        &o,
        "TRADE_SUCCESS",
        &[("seller_id", "2088000000000001")],
    ));
    assert_ne!(other_seller.merchant, s.alipay.merchant());

    let bad = |body: &str| matches!(verify(body), Err(ProviderError::BadSignature(_)));
    assert!(bad(
        &genuine.replace("total_amount=129.00", "total_amount=1.29")
    ));
    let sign_at = genuine.find("sign=").expect("sign");
    assert!(bad(&format!(
        "{}sign=AAAA{}",
        &genuine[..sign_at],
        &genuine[sign_at + 9..]
    )));
    assert!(bad(&format!("{}sign=%25%25%25&", &genuine[..sign_at])));
    let without: String = genuine
        .split('&')
        .filter(|kv| !kv.starts_with("sign="))
        .collect::<Vec<_>>()
        .join("&");
    assert!(bad(&without));

    let old = (s.clock.now() - TimeDelta::days(3))
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("tz"));
    let stale = s.sim.notification(
        &o,
        "TRADE_SUCCESS",
        &[("notify_time", &old.format("%Y-%m-%d %H:%M:%S").to_string())],
    );
    assert!(matches!(verify(&stale), Err(ProviderError::Stale(_))));
}

/// A stand-in for the node's notify route: the adapter's verification and
/// the service's comparisons, answering as the provider expects.
#[derive(Clone)]
struct Node {
    alipay: Arc<Alipay>,
    clock: Arc<Clock>,
    expected_cents: i64,
    seen: Arc<Mutex<Vec<Result<PayOutcome, String>>>>,
}

async fn notify(State(node): State<Node>, body: Bytes) -> String {
    let now: DateTime<Utc> = node.clock.now();
    let verdict = match node.alipay.verify(&HeaderMap::new(), &body, now) {
        Ok(Callback::Payment(r)) if r.merchant != node.alipay.merchant() => Err("merchant".into()),
        Ok(Callback::Payment(r)) if r.amount_cents != node.expected_cents => Err("amount".into()),
        Ok(Callback::Payment(r)) => Ok(r.outcome),
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(e.to_string()),
    };
    let reply = match verdict {
        Ok(_) => node.alipay.ack(),
        Err(ref why) => node.alipay.nack(why),
    };
    node.seen.lock().expect("seen").push(verdict);
    reply.body
}

#[tokio::test]
async fn alipay_sim_delivers_each_kind_of_notification_through_the_gateway_trait() {
    let clock = Arc::new(Clock::default());
    let sim = AlipaySim::start_with_clock(clock.clone()).await;
    let mut settings = lychee_live::Settings::new(
        lychee_live::config::Mode::Embedded {
            data_dir: std::env::temp_dir(),
        },
        lychee_live::config::Secret(crate::helpers::SECRET.into()),
        "ll".into(),
    );
    sim.configure(&mut settings);
    assert_eq!(settings.payments.providers, Some(vec!["alipay".to_owned()]));
    assert_eq!(sim.provider(), "alipay");
    let alipay = Arc::new(adapter(&settings.payments.alipay));
    let node = Node {
        alipay: alipay.clone(),
        clock: clock.clone(),
        expected_cents: 12900,
        seen: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let notify_url = format!(
        "http://{}/api/v1/payments/alipay/notify",
        listener.local_addr().expect("addr")
    );
    let app = axum::Router::new()
        .route("/api/v1/payments/alipay/notify", post(notify))
        .with_state(node.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let start = |scene| {
        let alipay = alipay.clone();
        let req = request(&clock, scene, &notify_url);
        async move {
            let started = alipay.start(&req).await.expect("started");
            (
                req.payment_id,
                json!({ "id": req.payment_id, "checkout": started.checkout }),
            )
        }
    };
    let last = || node.seen.lock().expect("seen").last().cloned();

    let cases = [
        (Delivery::Normal, Some("success"), Ok(PayOutcome::Succeeded)),
        (Delivery::TamperedBody, Some("fail"), Err("signature")),
        (Delivery::WrongAmount, Some("fail"), Err("amount")),
        (Delivery::WrongMerchant, Some("fail"), Err("merchant")),
        (Delivery::Stale, Some("fail"), Err("stale")),
        (Delivery::Lost, None, Ok(PayOutcome::Succeeded)),
    ];
    for (how, answer, verdict) in cases {
        let (payment_id, payment) = start(Scene::Desktop).await;
        let before = node.seen.lock().expect("seen").len();
        let got = sim.pay(&payment, how).await;
        assert_eq!(got.as_ref().map(|(_, b)| b.as_str()), answer, "{how:?}");
        if answer.is_some() {
            match (last().expect("delivered"), verdict) {
                (Ok(o), Ok(v)) => assert_eq!(o, v, "{how:?}"),
                (Err(e), Err(v)) => assert!(e.contains(v), "{how:?}: {e}"),
                (got, want) => panic!("{how:?}: {got:?} vs {want:?}"),
            }
        } else {
            assert_eq!(node.seen.lock().expect("seen").len(), before, "{how:?}");
        }
        // Whatever reached the node, the genuine notification can follow.
        assert_eq!(
            sim.redeliver(payment_id).await,
            (200, "success".into()),
            "{how:?}"
        );
        assert_eq!(last(), Some(Ok(PayOutcome::Succeeded)));
        assert_eq!(
            alipay.query(payment_id).await.expect("query").outcome,
            PayOutcome::Succeeded
        );
    }

    let (payment_id, payment) = start(Scene::Mobile).await;
    sim.fail(&payment).await;
    assert_eq!(last(), Some(Ok(PayOutcome::Failed)));
    assert_eq!(
        alipay.query(payment_id).await.expect("query").outcome,
        PayOutcome::Failed
    );

    // Past time_expire the cashier takes no money and nothing is sent.
    let (payment_id, payment) = start(Scene::Mobile).await;
    clock.advance(Duration::from_secs(20 * 60));
    assert_eq!(sim.pay(&payment, Delivery::Normal).await, None);
    assert!(matches!(
        alipay.query(payment_id).await,
        Err(ProviderError::NotFound(_))
    ));
    // Unless the test wants a payment in the last second, notified late.
    sim.set_ignore_time_expire(true);
    let got = sim.pay(&payment, Delivery::Normal).await;
    assert_eq!(got, Some((200, "success".into())));

    // Refunds through the trait.
    let (payment_id, payment) = start(Scene::Desktop).await;
    sim.pay(&payment, Delivery::Normal).await;
    let req = RefundRequest {
        refund_id: Uuid::new_v4(),
        payment_id,
        provider_txn_id: None,
        amount_cents: 500,
        paid_cents: 12900,
        currency: "CNY".into(),
        reason: "short weight".into(),
        notify_url: String::new(),
    };
    sim.set_refunds_fail(true);
    assert!(alipay.refund(&req).await.is_err());
    sim.set_refunds_fail(false);
    sim.set_refund_notifications(true);
    assert_eq!(
        alipay.refund(&req).await.expect("refund").outcome,
        RefundOutcome::Succeeded
    );
    assert_eq!(sim.refunds(), [(req.refund_id.simple().to_string(), 500)]);
    // Alipay's notification after a refund says the payment was refunded.
    for _ in 0..100 {
        if last() == Some(Ok(PayOutcome::Refunded)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no refund notification: {:?}", last());
}
