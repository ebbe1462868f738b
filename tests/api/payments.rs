//! Payments end to end: one suite of cases, run against the sandbox (in
//! production and embedded mode) and the providers' simulators.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lychee_live::config::Secret;
use lychee_live::identity::Role;
use lychee_live::payments::sandbox::{self, Notice};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::gateway::{Delivery, Gateway};
use crate::helpers::{product, TestApp, TestEnv, SECRET};

/// The sandbox seen from outside: its page records what the buyer did,
/// and its callbacks are built here, signed with the deployment's key.
#[derive(Default)]
pub struct SandboxGateway {
    base: Mutex<Option<String>>,
    last: Mutex<Option<(String, Vec<u8>)>>,
    refunds_fail: Mutex<bool>,
}

impl SandboxGateway {
    pub fn attach(&self, app: &TestApp) {
        *self.base.lock().unwrap() = Some(format!("http://{}", app.addr));
    }

    fn base(&self) -> String {
        self.base
            .lock()
            .unwrap()
            .clone()
            .expect("attached to a node")
    }

    fn key() -> Vec<u8> {
        sandbox::key(None, &Secret(SECRET.into()))
    }

    async fn press(&self, payment_id: &str, action: &str) -> u16 {
        let r = reqwest::Client::new()
            .post(format!("{}/sandbox/pay/{payment_id}", self.base()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("action={action}"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status != 200 {
            eprintln!(
                "sandbox page {action}: {status} {}",
                r.text().await.unwrap_or_default()
            );
        }
        status
    }

    /// Sends a callback to `base` (any node), signed at `signed_at`.
    pub async fn send(&self, base: &str, ts: &str, sig: &str, body: &[u8]) -> (u16, String) {
        let r = reqwest::Client::new()
            .post(format!("{base}/api/v1/payments/sandbox/notify"))
            .header("content-type", "application/json")
            .header(sandbox::TIMESTAMP_HEADER, ts)
            .header(sandbox::SIGNATURE_HEADER, sig)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The signed success callback of `payment`, as the gateway would send it.
    pub fn success(payment: &Value, how: Delivery) -> (String, String, Vec<u8>) {
        let id = Uuid::parse_str(payment["id"].as_str().unwrap()).unwrap();
        let mut n = Notice {
            event: "payment".into(),
            out_trade_no: id.simple().to_string(),
            txn_id: format!("sbx-{}", id.simple()),
            status: "succeeded".into(),
            amount_cents: payment["amount_cents"].as_i64().unwrap(),
            currency: payment["currency"].as_str().unwrap().into(),
            merchant: sandbox::MERCHANT.into(),
        };
        match how {
            Delivery::WrongAmount => n.amount_cents += 1,
            Delivery::WrongMerchant => n.merchant = "someone-else".into(),
            _ => {}
        }
        let signed_at = match how {
            Delivery::Stale => chrono::Utc::now() - chrono::TimeDelta::minutes(10),
            _ => chrono::Utc::now(),
        };
        let ts = signed_at.timestamp().to_string();
        let mut body = serde_json::to_vec(&n).unwrap();
        let sig = sandbox::sign(&Self::key(), &ts, &body);
        if how == Delivery::TamperedBody {
            // The signature was made over the body before this change.
            let at = body.iter().position(|&b| b == b'x').unwrap_or(2);
            body[at] ^= 0x01;
        }
        (ts, sig, body)
    }
}

#[async_trait]
impl Gateway for SandboxGateway {
    fn provider(&self) -> &'static str {
        "sandbox"
    }

    fn configure(&self, settings: &mut lychee_live::Settings) {
        settings.payments.providers = Some(vec!["sandbox".into()]);
    }

    async fn pay(&self, payment: &Value, how: Delivery) -> Option<(u16, String)> {
        let id = payment["id"].as_str().unwrap();
        let action = if *self.refunds_fail.lock().unwrap() {
            "pay_refunds_fail"
        } else {
            "pay_lost"
        };
        if self.press(id, action).await != 200 {
            return None; // expired or closed: the gateway takes nothing
        }
        if how == Delivery::Lost {
            let (ts, _, body) = Self::success(payment, Delivery::Normal);
            *self.last.lock().unwrap() = Some((ts, body));
            return None;
        }
        let (ts, sig, body) = Self::success(payment, how);
        let answer = self.send(&self.base(), &ts, &sig, &body).await;
        *self.last.lock().unwrap() = Some((ts, body));
        Some(answer)
    }

    async fn redeliver(&self, _payment_id: Uuid) -> (u16, String) {
        let (ts, body) = self
            .last
            .lock()
            .unwrap()
            .clone()
            .expect("a callback was sent");
        let sig = sandbox::sign(&Self::key(), &ts, &body);
        self.send(&self.base(), &ts, &sig, &body).await
    }

    async fn fail(&self, payment: &Value) {
        let id = payment["id"].as_str().unwrap();
        assert_eq!(self.press(id, "fail").await, 200);
    }

    fn set_refunds_fail(&self, fail: bool) {
        *self.refunds_fail.lock().unwrap() = fail;
    }

    fn refunds(&self) -> Vec<(String, i64)> {
        Vec::new()
    }
}

pub fn acked(answer: &(u16, String)) -> bool {
    (200..300).contains(&answer.0) && !answer.1.to_lowercase().contains("fail")
}

/// A node of `env` paying through `g`, reconciling every 200 ms.
pub async fn node(env: &mut TestEnv, g: &dyn Gateway) -> TestApp {
    let mut settings = env.settings();
    g.configure(&mut settings);
    settings.payments.reconcile_every = Duration::from_millis(200).into();
    settings.payments.reconcile_after = Duration::from_millis(0).into();
    env.node_with(settings).await
}

struct Case {
    app: TestApp,
    host: String,
    mei: String,
    sale: String,
}

async fn reserved(c: &Case, key: &str) -> Value {
    c.app
        .buy(&c.mei, &c.sale, key, "FZX", 2)
        .await
        .expect(201)
        .json()
}

async fn start_payment(c: &Case, order: &Value, provider: &str) -> Value {
    let id = order["id"].as_str().unwrap();
    c.app
        .post(
            &format!("/orders/{id}/payments"),
            Some(&c.mei),
            json!({ "provider": provider }),
        )
        .await
        .expect(201)
        .json()
}

async fn order_of(c: &Case, order: &Value) -> Value {
    let id = order["id"].as_str().unwrap();
    c.app
        .get(&format!("/orders/{id}"), Some(&c.mei))
        .await
        .expect(200)
        .json()
}

async fn wait_order(c: &Case, order: &Value, f: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        let o = order_of(c, order).await;
        if f(&o) {
            return o;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the order never got there: {}", order_of(c, order).await);
}

async fn case(env: &mut TestEnv, g: &dyn Gateway) -> Case {
    case_with(env, g, Duration::ZERO).await
}

/// A case whose node first asks the provider `reconcile_after` after a
/// payment starts (kept away where a test needs the callback alone).
async fn case_with(env: &mut TestEnv, g: &dyn Gateway, reconcile_after: Duration) -> Case {
    let mut settings = env.settings();
    g.configure(&mut settings);
    settings.payments.reconcile_every = Duration::from_millis(200).into();
    settings.payments.reconcile_after = reconcile_after.into();
    let app = env.node_with(settings).await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = app.live_sale(&host, "reserve", "FZX", 10, 5).await;
    app.add_address(&mei, "440000").await;
    Case {
        app,
        host,
        mei,
        sale,
    }
}

/// Success, idempotent start, duplicate callback, and the buyer's own word refused.
pub async fn success_and_duplicates(mut env: TestEnv, g: &dyn Gateway, attach: impl Fn(&TestApp)) {
    let c = case(&mut env, g).await;
    attach(&c.app);
    let order = reserved(&c, "k1").await;
    assert!(order["payment"].is_null(), "nothing paid yet: {order}");
    let p = start_payment(&c, &order, g.provider()).await;
    assert_eq!(p["status"], "pending");
    assert_eq!(p["amount_cents"], order["total_cents"]);
    assert_eq!(p["expires_at"], order["expires_at"]);
    let id = order["id"].as_str().unwrap();
    let again = c
        .app
        .post(
            &format!("/orders/{id}/payments"),
            Some(&c.mei),
            json!({ "provider": g.provider() }),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(again["id"], p["id"], "one live payment per order");
    assert_eq!(
        c.app
            .pay(&c.mei, id, "i-paid-honest")
            .await
            .expect(403)
            .code(),
        "forbidden"
    );

    let answer = g.pay(&p, Delivery::Normal).await.expect("delivered");
    assert!(acked(&answer), "{answer:?}");
    let done = order_of(&c, &order).await;
    assert_eq!(
        done["status"], "completed",
        "committed before the ack: {done}"
    );
    assert_eq!(done["payment"]["method"], g.provider());
    assert_eq!(done["payment"]["payment_id"], p["id"]);
    assert_eq!(done["payment"]["paid_cents"], order["total_cents"]);
    let pid = p["id"].as_str().unwrap();
    let paid = c
        .app
        .get(&format!("/payments/{pid}"), Some(&c.mei))
        .await
        .expect(200)
        .json();
    assert_eq!(paid["status"], "succeeded");
    assert!(paid["provider_txn_id"].is_string());
    // The host reads it too; another viewer does not.
    c.app
        .get(&format!("/payments/{pid}"), Some(&c.host))
        .await
        .expect(200);
    let li = env.token(Role::Viewer, "li");
    c.app
        .get(&format!("/payments/{pid}"), Some(&li))
        .await
        .expect(403);

    let dup = g.redeliver(Uuid::parse_str(pid).unwrap()).await;
    assert!(acked(&dup), "a duplicate is acknowledged: {dup:?}");
    let sale = c.app.sale(&c.sale).await;
    assert_eq!(product(&sale, "FZX")["sold"], 2, "completed once");
    let csv = c
        .app
        .get(&format!("/sales/{}/orders.csv", c.sale), Some(&c.host))
        .await
        .expect(200)
        .text;
    assert!(csv.contains(g.provider()), "{csv}");
}

/// A failed payment leaves the reservation payable: a new payment starts.
pub async fn failure_leaves_the_order_payable(
    mut env: TestEnv,
    g: &dyn Gateway,
    attach: impl Fn(&TestApp),
) {
    let c = case(&mut env, g).await;
    attach(&c.app);
    let order = reserved(&c, "fails").await;
    let p = start_payment(&c, &order, g.provider()).await;
    g.fail(&p).await;
    let pid = p["id"].as_str().unwrap();
    wait_payment(&c, pid, "failed").await;
    assert_eq!(order_of(&c, &order).await["status"], "reserved");
    let seen = crate::dashboard::watch_until(&c.app, &c.sale, &c.host, |s| {
        s.last().is_some_and(|d| d["payment_failures"] == 1)
    })
    .await;
    assert_eq!(seen.last().unwrap()["claims_open"], 0);
    let retry = start_payment(&c, &order, g.provider()).await;
    assert_ne!(retry["id"], p["id"]);
    assert!(acked(&g.pay(&retry, Delivery::Normal).await.unwrap()));
    assert_eq!(order_of(&c, &order).await["status"], "completed");
}

/// Forged or mismatched callbacks change nothing. (The gateway did take
/// the money, so reconciliation is kept away: it would rightly complete.)
pub async fn forgeries_change_nothing(
    mut env: TestEnv,
    g: &dyn Gateway,
    attach: impl Fn(&TestApp),
) {
    let c = case_with(&mut env, g, Duration::from_secs(3600)).await;
    attach(&c.app);
    for (i, how) in [
        Delivery::TamperedBody,
        Delivery::WrongAmount,
        Delivery::WrongMerchant,
        Delivery::Stale,
    ]
    .into_iter()
    .enumerate()
    {
        let order = reserved(&c, &format!("forged-{i}")).await;
        let p = start_payment(&c, &order, g.provider()).await;
        let answer = g.pay(&p, how).await.expect("delivered");
        assert!(!acked(&answer), "{how:?} must be refused: {answer:?}");
        let o = order_of(&c, &order).await;
        assert_eq!(o["status"], "reserved", "{how:?}: {o}");
        c.app
            .cancel(&c.mei, order["id"].as_str().unwrap())
            .await
            .expect(200);
    }
    let metrics = reqwest::get(format!("http://{}/metrics", c.app.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("lychee_payment_callbacks_refused_total"),
        "{metrics}"
    );
}

/// A lost callback: reconciliation asks the provider and completes the order.
pub async fn lost_callback_is_reconciled(
    mut env: TestEnv,
    g: &dyn Gateway,
    attach: impl Fn(&TestApp),
) {
    let c = case(&mut env, g).await;
    attach(&c.app);
    let order = reserved(&c, "lost").await;
    let p = start_payment(&c, &order, g.provider()).await;
    assert!(g.pay(&p, Delivery::Lost).await.is_none());
    let done = wait_order(&c, &order, |o| o["status"] == "completed").await;
    assert_eq!(done["payment"]["payment_id"], p["id"]);
}

async fn wait_payment(c: &Case, pid: &str, want: &str) {
    let mut status = Value::Null;
    for _ in 0..100 {
        status = c
            .app
            .get(&format!("/payments/{pid}"), Some(&c.mei))
            .await
            .json()["status"]
            .clone();
        if status == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("payment {pid} is {status}, never {want}");
}

/// Cancelling closes the payment at the provider: it cannot be paid any more.
pub async fn cancel_closes_the_payment(
    mut env: TestEnv,
    g: &dyn Gateway,
    attach: impl Fn(&TestApp),
) {
    let c = case(&mut env, g).await;
    attach(&c.app);
    let order = reserved(&c, "cancelled").await;
    let p = start_payment(&c, &order, g.provider()).await;
    c.app
        .cancel(&c.mei, order["id"].as_str().unwrap())
        .await
        .expect(200);
    let pid = p["id"].as_str().unwrap();
    let status = c
        .app
        .get(&format!("/payments/{pid}"), Some(&c.mei))
        .await
        .json()["status"]
        .clone();
    if g.provider() == "alipay" {
        // Alipay opens a trade only when the buyer opens the cashier, so
        // there is nothing to close yet: the signed pay URL stays usable
        // until its time_expire, and a payment through it is refunded.
        assert_eq!(status, "pending");
        let answer = g.pay(&p, Delivery::Normal).await.expect("Alipay takes it");
        assert!(acked(&answer), "{answer:?}");
        wait_payment(&c, pid, "refunded").await;
    } else {
        assert_eq!(status, "expired");
        assert_eq!(
            g.pay(&p, Delivery::Normal).await,
            None,
            "the gateway refuses a closed payment"
        );
    }
    assert_eq!(order_of(&c, &order).await["status"], "cancelled");
}

/// The buyer paid just as the order was cancelled: the success is
/// refunded (`late_payment`) and the order is not resurrected.
pub async fn late_success_is_refunded(
    mut env: TestEnv,
    g: &dyn Gateway,
    attach: impl Fn(&TestApp),
) {
    // Reconciliation would complete the paid order before the cancel.
    let c = case_with(&mut env, g, Duration::from_secs(3600)).await;
    attach(&c.app);
    let order = reserved(&c, "late").await;
    let p = start_payment(&c, &order, g.provider()).await;
    assert!(g.pay(&p, Delivery::Lost).await.is_none());
    c.app
        .cancel(&c.mei, order["id"].as_str().unwrap())
        .await
        .expect(200);
    let pid = p["id"].as_str().unwrap();
    let answer = g.redeliver(Uuid::parse_str(pid).unwrap()).await;
    assert!(acked(&answer), "taken, and refunded: {answer:?}");
    let o = order_of(&c, &order).await;
    assert_eq!(o["status"], "cancelled", "{o}");
    wait_payment(&c, pid, "refunded").await;
    let sale = c.app.sale(&c.sale).await;
    assert_eq!(product(&sale, "FZX")["sold"], 0);
    assert_eq!(product(&sale, "FZX")["remaining"], 10);
}

/// Refunds by the host: partial, idempotent, never more than was paid;
/// and a refund the provider refuses ends `failed`.
pub async fn refunds(mut env: TestEnv, g: &dyn Gateway, attach: impl Fn(&TestApp)) {
    let c = case(&mut env, g).await;
    attach(&c.app);
    let order = reserved(&c, "refund").await;
    let id = order["id"].as_str().unwrap().to_owned();
    let p = start_payment(&c, &order, g.provider()).await;
    assert!(acked(&g.pay(&p, Delivery::Normal).await.unwrap()));
    let refund = |key: &'static str, amount: i64| {
        let req = c
            .app
            .http
            .post(c.app.url(&format!("/orders/{id}/refunds")))
            .bearer_auth(&c.host)
            .header("Idempotency-Key", key)
            .json(&json!({ "amount_cents": amount, "reason": "two fruit were bruised" }));
        c.app.send(req)
    };
    let r = refund("r1", 5000).await.expect(201).json();
    assert_eq!(r["amount_cents"], 5000);
    let r = if r["status"] == "pending" {
        wait_order(&c, &order, |o| o["payment"]["refunded_cents"] == 5000).await;
        refund("r1", 5000).await.expect(201).json()
    } else {
        r
    };
    assert_eq!(r["status"], "succeeded", "{r}");
    let again = refund("r1", 5000).await.expect(201).json();
    assert_eq!(again["id"], r["id"], "idempotent by key");
    assert_eq!(
        refund("r1", 4000).await.expect(422).code(),
        "idempotency_mismatch"
    );
    let total = order["total_cents"].as_i64().unwrap();
    assert_eq!(
        refund("r2", total).await.expect(409).code(),
        "invalid_state"
    );
    let buyer = c
        .app
        .send(
            c.app
                .http
                .post(c.app.url(&format!("/orders/{id}/refunds")))
                .bearer_auth(&c.mei)
                .header("Idempotency-Key", "mine")
                .json(&json!({ "amount_cents": 1, "reason": "x" })),
        )
        .await;
    assert_eq!(buyer.expect(403).code(), "forbidden");
    let o = wait_order(&c, &order, |o| o["payment"]["refunded_cents"] == 5000).await;
    assert_eq!(o["status"], "completed");

    // The provider refuses this one's refunds.
    g.set_refunds_fail(true);
    let order2 = reserved(&c, "refund-2").await;
    let id2 = order2["id"].as_str().unwrap().to_owned();
    let p2 = start_payment(&c, &order2, g.provider()).await;
    assert!(acked(&g.pay(&p2, Delivery::Normal).await.unwrap()));
    let req = c
        .app
        .http
        .post(c.app.url(&format!("/orders/{id2}/refunds")))
        .bearer_auth(&c.host)
        .header("Idempotency-Key", "r3")
        .json(&json!({ "amount_cents": 100, "reason": "spoiled" }));
    let r3 = c.app.send(req).await.expect(201).json();
    assert_ne!(r3["status"], "succeeded", "{r3}");
    let o2 = order_of(&c, &order2).await;
    assert_eq!(o2["payment"]["refunded_cents"], 0);
    g.set_refunds_fail(false);
}

async fn sandboxed(
    env: TestEnv,
    run: impl AsyncFnOnce(TestEnv, &dyn Gateway, Box<dyn Fn(&TestApp) + '_>),
) {
    let g = Arc::new(SandboxGateway::default());
    let attach = {
        let g = g.clone();
        move |app: &TestApp| g.attach(app)
    };
    run(env, g.as_ref(), Box::new(attach)).await;
}

macro_rules! sandbox_cases {
    ($($name:ident),*) => {
        mod sandbox_production {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::sandboxed(crate::helpers::TestEnv::production().await, async |env, g, attach| {
                        super::$name(env, g, attach).await
                    })
                    .await;
                }
            )*
        }
        mod sandbox_embedded {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::sandboxed(crate::helpers::TestEnv::embedded(), async |env, g, attach| {
                        super::$name(env, g, attach).await
                    })
                    .await;
                }
            )*
        }
    };
}

sandbox_cases!(
    success_and_duplicates,
    failure_leaves_the_order_payable,
    forgeries_change_nothing,
    lost_callback_is_reconciled,
    cancel_closes_the_payment,
    late_success_is_refunded,
    refunds
);

/// Two nodes receive the same success at once: one completion, both ack.
#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_receiving_the_same_callback_complete_once() {
    let mut env = TestEnv::production().await;
    let g = SandboxGateway::default();
    let a = node(&mut env, &g).await;
    let b = node(&mut env, &g).await;
    g.attach(&a);
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;
    a.add_address(&mei, "440000").await;
    let order = a.buy(&mei, &sale, "k", "FZX", 3).await.expect(201).json();
    let id = order["id"].as_str().unwrap();
    let p = a
        .post(
            &format!("/orders/{id}/payments"),
            Some(&mei),
            json!({ "provider": "sandbox" }),
        )
        .await
        .expect(201)
        .json();
    let pid = p["id"].as_str().unwrap();
    assert_eq!(g.press(pid, "pay_lost").await, 200);
    let (ts, sig, body) = SandboxGateway::success(&p, Delivery::Normal);
    let (base_a, base_b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    let (ra, rb) = tokio::join!(
        g.send(&base_a, &ts, &sig, &body),
        g.send(&base_b, &ts, &sig, &body)
    );
    assert!(acked(&ra) && acked(&rb), "{ra:?} {rb:?}");
    let sale_now = a.sale(&sale).await;
    assert_eq!(product(&sale_now, "FZX")["sold"], 3);
    let o = b
        .get(&format!("/orders/{id}"), Some(&mei))
        .await
        .expect(200)
        .json();
    assert_eq!(o["status"], "completed");
}

/// Starting a payment: the rules of contract section 9, and hostile bodies.
#[tokio::test(flavor = "multi_thread")]
async fn payment_start_is_refused_where_the_contract_says() {
    let mut env = TestEnv::production().await;
    let g = SandboxGateway::default();
    let app = node(&mut env, &g).await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let li = env.token(Role::Viewer, "li");
    let sale = app.live_sale(&host, "reserve", "FZX", 10, 5).await;
    app.add_address(&mei, "440000").await;
    let order = app.buy(&mei, &sale, "k", "FZX", 1).await.expect(201).json();
    let id = order["id"].as_str().unwrap();
    let path = format!("/orders/{id}/payments");
    assert_eq!(
        app.post(&path, Some(&mei), json!({ "provider": "wechatpay" }))
            .await
            .expect(409)
            .code(),
        "invalid_state",
        "a provider not configured here"
    );
    assert_eq!(
        app.post(&path, Some(&li), json!({ "provider": "sandbox" }))
            .await
            .expect(403)
            .code(),
        "forbidden"
    );
    app.post(&path, None, json!({ "provider": "sandbox" }))
        .await
        .expect(401);
    for bad in [
        json!({}),
        json!({ "provider": 7 }),
        json!({ "provider": "sandbox", "scene": "moon" }),
    ] {
        assert_eq!(
            app.post(&path, Some(&mei), bad).await.expect(400).code(),
            "bad_request"
        );
    }
    let unknown = format!("/orders/{}/payments", Uuid::new_v4());
    app.post(&unknown, Some(&mei), json!({ "provider": "sandbox" }))
        .await
        .expect(404);
    // Unknown providers' notify routes do not exist.
    app.post("/payments/wechatpay/notify", None, json!({}))
        .await
        .expect(404);
    // A completed order takes no payment.
    app.pay(&host, id, "cash-1").await.expect(200);
    assert_eq!(
        app.post(&path, Some(&mei), json!({ "provider": "sandbox" }))
            .await
            .expect(409)
            .code(),
        "invalid_state"
    );
    // A callback for a payment nobody started is refused.
    let fake = json!({ "id": Uuid::new_v4().to_string(), "amount_cents": 100, "currency": "CNY" });
    g.attach(&app);
    let (ts, sig, body) = SandboxGateway::success(&fake, Delivery::Normal);
    assert!(!acked(
        &g.send(&format!("http://{}", app.addr), &ts, &sig, &body)
            .await
    ));
    let (_, _, body) = SandboxGateway::success(&fake, Delivery::Normal);
    assert!(
        !acked(
            &g.send(&format!("http://{}", app.addr), "1", "zz", &body)
                .await
        ),
        "garbage signature"
    );
    assert!(!acked(
        &g.send(
            &format!("http://{}", app.addr),
            &ts,
            &sig,
            b"\xff\xfe not json"
        )
        .await
    ));
}

/// The sandbox page: a real page with the buttons, 404 for unknown ids.
#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_page_shows_the_payment_and_pays_it() {
    let mut env = TestEnv::embedded();
    let g = SandboxGateway::default();
    let app = node(&mut env, &g).await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = app.live_sale(&host, "reserve", "FZX", 10, 5).await;
    app.add_address(&mei, "440000").await;
    let order = app.buy(&mei, &sale, "k", "FZX", 1).await.expect(201).json();
    let id = order["id"].as_str().unwrap();
    let p = app
        .post(
            &format!("/orders/{id}/payments"),
            Some(&mei),
            json!({ "provider": "sandbox" }),
        )
        .await
        .expect(201)
        .json();
    let url = p["checkout"]["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("http://{}/sandbox/pay/", app.addr)),
        "{url}"
    );
    let page = reqwest::get(url).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let html = page.text().await.unwrap();
    assert!(
        html.contains("¥128.00") && html.contains("value=\"pay\""),
        "{html}"
    );
    app.get(&format!("/sandbox/pay/{}", Uuid::new_v4()), None)
        .await
        .expect(404);
    app.get("/sandbox/pay/not-a-uuid", None).await.expect(404);
    g.attach(&app);
    // The real button: the node sends itself the signed callback.
    assert_eq!(g.press(p["id"].as_str().unwrap(), "pay").await, 200);
    let o = app
        .get(&format!("/orders/{id}"), Some(&mei))
        .await
        .expect(200)
        .json();
    assert_eq!(o["status"], "completed");
    assert!(o["payment_ref"].as_str().unwrap().starts_with("sbx-"));
}

/// The same cases against a provider's simulator (production mode).
macro_rules! simulator_cases {
    ($module:ident, $sim:path, $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let env = crate::helpers::TestEnv::production().await;
                    let sim = <$sim>::with_clock(env.clock.clone()).await;
                    super::$name(env, &sim, |_| {}).await;
                }
            )*
        }
    };
}

simulator_cases!(
    wechatpay_production,
    crate::sim_wechatpay::WechatSim,
    success_and_duplicates,
    failure_leaves_the_order_payable,
    forgeries_change_nothing,
    lost_callback_is_reconciled,
    cancel_closes_the_payment,
    late_success_is_refunded,
    refunds
);

mod alipay_production {
    macro_rules! alipay_case {
        ($($name:ident),*) => {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let env = crate::helpers::TestEnv::production().await;
                    let sim = crate::sim_alipay::AlipaySim::start_with_clock(env.clock.clone()).await;
                    super::$name(env, &sim, |_| {}).await;
                }
            )*
        };
    }
    alipay_case!(
        success_and_duplicates,
        failure_leaves_the_order_payable,
        forgeries_change_nothing,
        lost_callback_is_reconciled,
        cancel_closes_the_payment,
        late_success_is_refunded,
        refunds
    );
}

/// Two nodes get WeChat Pay's success callback at once: one completion.
#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_receiving_the_same_wechatpay_callback_complete_once() {
    let mut env = TestEnv::production().await;
    let sim = crate::sim_wechatpay::WechatSim::with_clock(env.clock.clone()).await;
    let a = node(&mut env, &sim).await;
    let b = node(&mut env, &sim).await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;
    a.add_address(&mei, "440000").await;
    let order = a.buy(&mei, &sale, "k", "FZX", 3).await.expect(201).json();
    let id = order["id"].as_str().unwrap();
    let p = a
        .post(
            &format!("/orders/{id}/payments"),
            Some(&mei),
            json!({ "provider": "wechatpay" }),
        )
        .await
        .expect(201)
        .json();
    let pid = Uuid::parse_str(p["id"].as_str().unwrap()).unwrap();
    sim.mark_paid(pid).unwrap();
    let (headers, body) = sim.payment_callback(pid, Delivery::Normal);
    let url = |app: &TestApp| format!("http://{}/api/v1/payments/wechatpay/notify", app.addr);
    let (ua, ub) = (url(&a), url(&b));
    let (ra, rb) = tokio::join!(
        sim.deliver(&ua, headers.clone(), body.clone()),
        sim.deliver(&ub, headers, body)
    );
    assert!(acked(&ra) && acked(&rb), "{ra:?} {rb:?}");
    assert_eq!(product(&a.sale(&sale).await, "FZX")["sold"], 3);
    let o = b
        .get(&format!("/orders/{id}"), Some(&mei))
        .await
        .expect(200)
        .json();
    assert_eq!(o["status"], "completed");
    assert_eq!(o["payment"]["method"], "wechatpay");
}

/// The buyer's socket on another node hears its order complete when the
/// provider's callback lands, and hears the refund.
#[tokio::test(flavor = "multi_thread")]
async fn the_buyer_hears_its_payment_and_refund_on_any_node() {
    let mut env = TestEnv::production().await;
    let g = SandboxGateway::default();
    let a = node(&mut env, &g).await;
    let b = node(&mut env, &g).await;
    g.attach(&a);
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;
    a.add_address(&mei, "440000").await;
    let (mut socket, _) = b.join(&sale, &mei, None).await;
    let order = a.buy(&mei, &sale, "k", "FZX", 1).await.expect(201).json();
    let id = order["id"].as_str().unwrap();
    let p = a
        .post(
            &format!("/orders/{id}/payments"),
            Some(&mei),
            json!({ "provider": "sandbox" }),
        )
        .await
        .expect(201)
        .json();
    assert!(acked(&g.pay(&p, Delivery::Normal).await.unwrap()));
    loop {
        let e = socket.next_of("order").await;
        if e["order"]["status"] == "completed" {
            assert_eq!(e["order"]["payment"]["method"], "sandbox");
            break;
        }
    }
    let req = a
        .http
        .post(a.url(&format!("/orders/{id}/refunds")))
        .bearer_auth(&host)
        .header("Idempotency-Key", "r")
        .json(&json!({ "amount_cents": 800, "reason": "one fruit split" }));
    a.send(req).await.expect(201);
    let e = socket.next_of("order").await;
    assert_eq!(e["order"]["payment"]["refunded_cents"], 800, "{e}");
}

/// `LIVE_PAYMENTS` naming an unknown provider, or a provider whose keys do
/// not load, stops the node at start-up with a clear message.
#[tokio::test(flavor = "multi_thread")]
async fn bad_payment_settings_stop_the_start() {
    let env = TestEnv::embedded();
    let mut settings = env.settings();
    settings.payments.providers = Some(vec!["paypal".into()]);
    let err = lychee_live::Node::start(
        settings,
        env.clock.clone(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .err()
    .expect("refused");
    assert!(
        err.to_string().contains("unknown provider \"paypal\""),
        "{err}"
    );
    let mut settings = env.settings();
    settings.payments.providers = Some(vec!["wechatpay".into()]);
    let err = lychee_live::Node::start(
        settings,
        env.clock.clone(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(
        err.to_string(),
        "payments: configuration: wechatpay: --wechatpay-mchid is required"
    );
    let mut settings = env.settings();
    settings.payments.providers = Some(vec!["alipay".into()]);
    let err = lychee_live::Node::start(
        settings,
        env.clock.clone(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("--alipay-app-id"), "{err}");
    let mut settings = env.settings();
    settings.payments.providers = Some(vec!["sandbox".into()]);
    settings.payments.sandbox_secret = Some(Secret("short".into()));
    let err = lychee_live::Node::start(
        settings,
        env.clock.clone(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("LIVE_SANDBOX_SECRET"), "{err}");
}

/// Refunds racing each other on two nodes never add up to more than was paid.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_refunds_never_pass_what_was_paid() {
    refunds_race(TestEnv::production().await, true).await;
}

/// The same race on the embedded mode's one node and SQLite.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_refunds_never_pass_what_was_paid_embedded() {
    refunds_race(TestEnv::embedded(), false).await;
}

async fn refunds_race(mut env: TestEnv, two_nodes: bool) {
    let g = SandboxGateway::default();
    let a = node(&mut env, &g).await;
    let b = if two_nodes {
        node(&mut env, &g).await
    } else {
        TestApp {
            addr: a.addr,
            base: a.base.clone(),
            http: a.http.clone(),
        }
    };
    g.attach(&a);
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;
    a.add_address(&mei, "440000").await;
    let order = a.buy(&mei, &sale, "k", "FZX", 1).await.expect(201).json();
    let id = order["id"].as_str().unwrap().to_owned();
    let p = a
        .post(
            &format!("/orders/{id}/payments"),
            Some(&mei),
            json!({ "provider": "sandbox" }),
        )
        .await
        .expect(201)
        .json();
    assert!(acked(&g.pay(&p, Delivery::Normal).await.unwrap()));
    // 12800 paid: 8 refunds of 4000 race; at most 3 fit.
    let tries = (0..8).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let req = app
            .http
            .post(app.url(&format!("/orders/{id}/refunds")))
            .bearer_auth(&host)
            .header("Idempotency-Key", format!("race-{i}"))
            .json(&json!({ "amount_cents": 4000, "reason": "race" }));
        app.send(req)
    });
    let answers = futures_util::future::join_all(tries).await;
    let created = answers.iter().filter(|r| r.status == 201).count();
    let refused = answers
        .iter()
        .filter(|r| r.status == 409 && r.code() == "invalid_state")
        .count();
    assert_eq!(
        (created, refused),
        (3, 5),
        "{:?}",
        answers.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    let o = a
        .get(&format!("/orders/{id}"), Some(&mei))
        .await
        .expect(200)
        .json();
    assert_eq!(o["payment"]["refunded_cents"], 12000);
}

/// A pending sandbox payment of 1 yuan, of no real order.
fn pending_payment(now: chrono::DateTime<chrono::Utc>) -> lychee_live::payments::Payment {
    lychee_live::payments::Payment {
        id: Uuid::new_v4(),
        order_id: Uuid::new_v4(),
        sale_id: Uuid::new_v4(),
        user_id: "mei".into(),
        provider: "sandbox".into(),
        amount_cents: 100,
        currency: "CNY".into(),
        status: lychee_live::payments::PaymentStatus::Pending,
        checkout: Default::default(),
        provider_txn_id: None,
        created_at: now,
        expires_at: now + chrono::TimeDelta::minutes(5),
        paid_at: None,
    }
}

/// A provider's transaction id is held by one payment: a second payment
/// reported with it (a forged or misrouted callback) is refused by the
/// unique key, on PostgreSQL as in SQLite (`payments::sql::tests`).
#[tokio::test]
async fn a_transaction_id_is_held_by_one_payment() {
    use lychee_live::payments::sql::SqlPayments;
    use lychee_live::payments::store::{PaymentStore, TxnRecord};
    let mut env = TestEnv::production().await;
    let _app = env.node().await;
    let store = SqlPayments::new(env.pg().await);
    let now = chrono::Utc::now();
    let (a, b) = (pending_payment(now), pending_payment(now));
    store.insert_pending(&a, now).await.unwrap();
    store.insert_pending(&b, now).await.unwrap();
    assert_eq!(
        store.record_txn(a.id, "T1").await.unwrap(),
        TxnRecord::Recorded
    );
    assert_eq!(
        store.record_txn(a.id, "T1").await.unwrap(),
        TxnRecord::Recorded
    );
    assert_eq!(
        store.record_txn(b.id, "T1").await.unwrap(),
        TxnRecord::Taken
    );
    assert_eq!(
        store.record_txn(a.id, "T2").await.unwrap(),
        TxnRecord::Other("T1".into())
    );
}

/// Reconciliation claims a due payment for one node at a time.
#[tokio::test(flavor = "multi_thread")]
async fn a_due_payment_is_claimed_by_one_node_at_a_time() {
    use lychee_live::payments::sql::SqlPayments;
    use lychee_live::payments::store::PaymentStore;
    let mut env = TestEnv::production().await;
    let g = SandboxGateway::default();
    // A node, so the schema is there; its own reconciliation is kept away.
    let mut settings = env.settings();
    g.configure(&mut settings);
    settings.payments.reconcile_every = Duration::from_secs(3600).into();
    let _app = env.node_with(settings).await;
    let pool = env.pg().await;
    let store = SqlPayments::new(pool);
    let now = chrono::Utc::now();
    let payment = pending_payment(now);
    store.insert_pending(&payment, now).await.unwrap();
    let lease = chrono::TimeDelta::seconds(60);
    let (x, y) = tokio::join!(
        store.claim_due_payments(now, lease, 10),
        store.claim_due_payments(now, lease, 10)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.len() + y.len(), 1, "claimed once: {x:?} {y:?}");
    assert!(store
        .claim_due_payments(now, lease, 10)
        .await
        .unwrap()
        .is_empty());
    let later = store
        .claim_due_payments(now + lease, lease, 10)
        .await
        .unwrap();
    assert_eq!(later.len(), 1, "claimable again once the lease ran out");
}

/// The payment expires with its reservation: after the deadline the
/// provider is asked, the unpaid payment is closed and reads `expired`, the
/// stock is back, and the gateway takes no money for it any more.
#[tokio::test(flavor = "multi_thread")]
async fn an_unpaid_payment_expires_with_its_reservation() {
    for mut env in [TestEnv::production().await, TestEnv::embedded()] {
        let g = SandboxGateway::default();
        let app = node(&mut env, &g).await;
        g.attach(&app);
        let host = env.token(Role::Host, "alice");
        let mei = env.token(Role::Viewer, "mei");
        let sale = app.live_sale(&host, "reserve", "FZX", 10, 5).await;
        app.add_address(&mei, "440000").await;
        let order = app.buy(&mei, &sale, "k", "FZX", 2).await.expect(201).json();
        let id = order["id"].as_str().unwrap();
        let p = app
            .post(
                &format!("/orders/{id}/payments"),
                Some(&mei),
                json!({ "provider": "sandbox" }),
            )
            .await
            .expect(201)
            .json();
        let pid = p["id"].as_str().unwrap();
        env.clock.advance(Duration::from_secs(301));
        let mut status = Value::Null;
        for _ in 0..100 {
            status = app
                .get(&format!("/payments/{pid}"), Some(&mei))
                .await
                .json()["status"]
                .clone();
            if status == "expired" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(status, "expired");
        assert_eq!(
            g.pay(&p, Delivery::Normal).await,
            None,
            "the gateway refuses it"
        );
        // The reaper releases the reservation within 2 s of its deadline,
        // on its own pass: the payment may read expired first.
        let mut o = Value::Null;
        for _ in 0..50 {
            o = app
                .get(&format!("/orders/{id}"), Some(&mei))
                .await
                .expect(200)
                .json();
            if o["status"] == "expired" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(o["status"], "expired");
        let again = app
            .post(
                &format!("/orders/{id}/payments"),
                Some(&mei),
                json!({ "provider": "sandbox" }),
            )
            .await
            .expect(409);
        assert_eq!(again.code(), "reservation_expired");
    }
}

/// The provider does not answer a refund (a lost reply): the refund stays
/// pending, the order's money is held, and reconciliation settles it once
/// the provider is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_refund_whose_reply_is_lost_is_settled_by_reconciliation() {
    let mut env = TestEnv::production().await;
    let sim = crate::sim_wechatpay::WechatSim::with_clock(env.clock.clone()).await;
    let c = case(&mut env, &sim).await;
    let order = reserved(&c, "k").await;
    let p = start_payment(&c, &order, "wechatpay").await;
    assert!(acked(&sim.pay(&p, Delivery::Normal).await.unwrap()));
    sim.set_unavailable(true);
    let id = order["id"].as_str().unwrap();
    let refund = |key: &'static str, amount: i64| {
        c.app.send(
            c.app
                .http
                .post(c.app.url(&format!("/orders/{id}/refunds")))
                .bearer_auth(&c.host)
                .header("Idempotency-Key", key)
                .json(&json!({ "amount_cents": amount, "reason": "split fruit" })),
        )
    };
    let r = refund("r1", 20000).await.expect(201).json();
    assert_eq!(r["status"], "pending", "{r}");
    // Held while pending: the rest cannot be overdrawn meanwhile.
    assert_eq!(refund("r2", 6000).await.expect(409).code(), "invalid_state");
    sim.set_unavailable(false);
    wait_order(&c, &order, |o| o["payment"]["refunded_cents"] == 20000).await;
    let again = refund("r1", 20000).await.expect(201).json();
    assert_eq!(again["status"], "succeeded");
}
