//! After-sales claims (contract section 11): opened by the buyer with
//! photos within the window, settled by the host with a refund or a no.

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{TestApp, TestEnv};
use crate::uploads::PNG_1X1;
use lychee_live::identity::Role;

async fn upload(app: &TestApp, token: &str) -> String {
    let r = app
        .send(
            app.http
                .post(app.url("/uploads"))
                .bearer_auth(token)
                .header("content-type", "image/png")
                .body(PNG_1X1.to_vec()),
        )
        .await
        .expect(201)
        .json();
    r["id"].as_str().unwrap().to_owned()
}

/// A delivered order of 3 boxes (paid by hand, 38,400 cents).
async fn delivered(app: &TestApp, host: &str, mei: &str, sale: &str, key: &str) -> Value {
    let o = app.buy(mei, sale, key, "FZX", 3).await.expect(201).json();
    let id = o["id"].as_str().unwrap().to_owned();
    app.pay(host, &id, "cash").await.expect(200);
    app.send(
        app.http
            .post(app.url(&format!("/sales/{sale}/shipments")))
            .bearer_auth(host)
            .header("content-type", "text/csv")
            .body(format!("order_id,courier,waybill\n{id},SF,SF-{key}\n")),
    )
    .await
    .expect(200);
    app.post(
        &format!("/orders/{id}/fulfilment"),
        Some(host),
        json!({ "status": "delivered" }),
    )
    .await
    .expect(200)
    .json()
}

async fn claims_are_opened_and_settled(mut env: TestEnv) {
    let app = env.node().await;
    // The test's clock moves days ahead; tokens must outlive that.
    let long = Duration::from_secs(30 * 24 * 3600);
    let host = env.token_for(Role::Host, "alice", long);
    let mei = env.token_for(Role::Viewer, "mei", long);
    let li = env.token_for(Role::Viewer, "li", long);
    let sale = app.live_sale(&host, "reserve", "FZX", 100, 100).await;
    app.add_address(&mei, "440000").await;
    let order = delivered(&app, &host, &mei, &sale, "a").await;
    let id = order["id"].as_str().unwrap();
    let claim_path = format!("/orders/{id}/claims");
    let photo = upload(&app, &mei).await;
    let other_photo = upload(&app, &li).await;

    // Hostile and out-of-bounds bodies.
    for bad in [
        json!({ "kind": "spoiled", "qty_affected": 0, "description": "x" }),
        json!({ "kind": "spoiled", "qty_affected": 4, "description": "x" }),
        json!({ "kind": "rotten", "qty_affected": 1, "description": "x" }),
        json!({ "kind": "spoiled", "qty_affected": 1, "description": "   " }),
        json!({ "kind": "spoiled", "qty_affected": 1, "description": "x".repeat(1001) }),
        json!({ "kind": "spoiled", "qty_affected": 1, "description": "bad\u{0}byte" }),
        json!({ "kind": "spoiled", "qty_affected": 1, "description": "x", "photos": [photo, photo, photo, photo] }),
        json!({ "kind": "spoiled", "qty_affected": 1, "description": "x", "photos": [other_photo] }),
        json!({ "kind": "spoiled", "qty_affected": 1, "description": "x", "photos": ["nope"] }),
    ] {
        assert_eq!(
            app.post(&claim_path, Some(&mei), bad.clone())
                .await
                .expect(400)
                .code(),
            "bad_request",
            "{bad}"
        );
    }
    assert_eq!(
        app.post(
            &claim_path,
            Some(&li),
            json!({ "kind": "spoiled", "qty_affected": 1, "description": "x" })
        )
        .await
        .expect(403)
        .code(),
        "forbidden"
    );
    let claim = app
        .post(
            &claim_path,
            Some(&mei),
            json!({ "kind": "spoiled", "qty_affected": 2, "description": "Two boxes arrived brown and soft.",
                    "photos": [photo] }),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(claim["status"], "open");
    assert_eq!(claim["photos"], json!([format!("/api/v1/uploads/{photo}")]));
    assert!(claim["resolution"].is_null());
    // One open claim per order.
    let again = app
        .post(
            &claim_path,
            Some(&mei),
            json!({ "kind": "damaged", "qty_affected": 1, "description": "x" }),
        )
        .await;
    assert_eq!(again.expect(409).code(), "invalid_state");
    // The host sees it, and its photo; another viewer does not.
    let listed = app
        .get(&format!("/sales/{sale}/claims"), Some(&host))
        .await
        .expect(200)
        .json();
    assert_eq!(listed["claims"][0]["id"], claim["id"]);
    app.get(&format!("/sales/{sale}/claims"), Some(&mei))
        .await
        .expect(403);
    app.get(&format!("/uploads/{photo}"), Some(&host))
        .await
        .expect(200);
    app.get(&format!("/uploads/{photo}"), Some(&li))
        .await
        .expect(404);
    let read = app
        .get(&format!("/orders/{id}"), Some(&mei))
        .await
        .expect(200)
        .json();
    assert_eq!(read["claims"][0]["id"], claim["id"]);

    // Settled by a refund of part of the order.
    let cid = claim["id"].as_str().unwrap();
    let resolve = format!("/claims/{cid}/resolve");
    assert_eq!(
        app.post(
            &resolve,
            Some(&mei),
            json!({ "action": "reject", "note": "no" })
        )
        .await
        .expect(404)
        .code(),
        "not_found"
    );
    assert_eq!(
        app.post(&resolve, Some(&host), json!({ "action": "reject" }))
            .await
            .expect(400)
            .code(),
        "bad_request"
    );
    assert_eq!(
        app.post(&resolve, Some(&host), json!({ "action": "reship?" }))
            .await
            .expect(400)
            .code(),
        "bad_request"
    );
    assert_eq!(
        app.post(
            &resolve,
            Some(&host),
            json!({ "action": "refund", "refund_cents": 38401 })
        )
        .await
        .expect(409)
        .code(),
        "invalid_state",
        "never more than was paid"
    );
    let settled = app
        .post(
            &resolve,
            Some(&host),
            json!({ "action": "refund", "refund_cents": 25600, "note": "sorry" }),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(settled["status"], "settled");
    assert_eq!(
        settled["resolution"],
        json!({ "action": "refund", "refund_cents": 25600, "note": "sorry" })
    );
    assert!(settled["resolved_at"].is_string());
    assert_eq!(
        app.post(
            &resolve,
            Some(&host),
            json!({ "action": "refund", "refund_cents": 1 })
        )
        .await
        .expect(409)
        .code(),
        "invalid_state"
    );
    let o = app
        .get(&format!("/orders/{id}"), Some(&mei))
        .await
        .expect(200)
        .json();
    assert_eq!(o["payment"]["refunded_cents"], 25600);
    assert_eq!(o["claims"][0]["status"], "settled");

    // A second claim once the first is settled; rejected with a reason.
    let second = app
        .post(
            &claim_path,
            Some(&mei),
            json!({ "kind": "short_weight", "qty_affected": 1, "description": "Light box." }),
        )
        .await
        .expect(201)
        .json();
    let rejected = app
        .post(
            &format!("/claims/{}/resolve", second["id"].as_str().unwrap()),
            Some(&host),
            json!({ "action": "reject", "note": "Weighed 5.02 kg at packing." }),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(rejected["status"], "rejected");

    // Windows: not before shipping, not after the product's hours.
    let fresh = app.buy(&mei, &sale, "b", "FZX", 1).await.expect(201).json();
    let fid = fresh["id"].as_str().unwrap();
    let c = json!({ "kind": "not_received", "qty_affected": 1, "description": "Nothing came." });
    assert_eq!(
        app.post(&format!("/orders/{fid}/claims"), Some(&mei), c.clone())
            .await
            .expect(409)
            .code(),
        "invalid_state"
    );
    app.pay(&host, fid, "cash").await.expect(200);
    assert_eq!(
        app.post(&format!("/orders/{fid}/claims"), Some(&mei), c.clone())
            .await
            .expect(409)
            .code(),
        "invalid_state"
    );
    let late = delivered(&app, &host, &mei, &sale, "c").await;
    env.clock.advance(Duration::from_secs(49 * 3600));
    let lid = late["id"].as_str().unwrap();
    assert_eq!(
        app.post(&format!("/orders/{lid}/claims"), Some(&mei), c)
            .await
            .expect(409)
            .code(),
        "invalid_state"
    );
    assert_eq!(
        app.post(
            &format!("/orders/{}/claims", Uuid::new_v4()),
            Some(&mei),
            json!({ "kind": "spoiled", "qty_affected": 1, "description": "x" })
        )
        .await
        .expect(404)
        .code(),
        "not_found"
    );
}

#[tokio::test]
async fn claims_are_opened_and_settled_in_production() {
    claims_are_opened_and_settled(TestEnv::production().await).await;
}

#[tokio::test]
async fn claims_are_opened_and_settled_embedded() {
    claims_are_opened_and_settled(TestEnv::embedded()).await;
}

/// A reship takes stock like a buy, after the sale ended too, and goes to
/// the packing list as a zero-price order; with no stock left it is 409.
async fn a_claim_is_settled_by_a_reship(mut env: TestEnv) {
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = app.live_sale(&host, "reserve", "FZX", 5, 5).await;
    app.add_address(&mei, "440000").await;
    let order = delivered(&app, &host, &mei, &sale, "a").await;
    let id = order["id"].as_str().unwrap();
    app.post(&format!("/sales/{sale}/end"), Some(&host), json!({}))
        .await
        .expect(200);
    let path = format!("/orders/{id}/claims");
    let claim = |qty: i64| {
        app.post(
            &path,
            Some(&mei),
            json!({ "kind": "damaged", "qty_affected": qty, "description": "Crushed in transit." }),
        )
    };
    let first = claim(2).await.expect(201).json();
    let resolve = format!("/claims/{}/resolve", first["id"].as_str().unwrap());
    let settled = app
        .post(
            &resolve,
            Some(&host),
            json!({ "action": "reship", "note": "new boxes today" }),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(settled["status"], "settled");
    assert_eq!(settled["resolution"]["action"], "reship");
    let reship_id = settled["resolution"]["reship_order_id"].as_str().unwrap();
    let reship = app
        .get(&format!("/orders/{reship_id}"), Some(&mei))
        .await
        .expect(200)
        .json();
    assert_eq!(reship["status"], "completed");
    assert_eq!(reship["qty"], 2);
    assert_eq!(reship["total_cents"], 0);
    assert_eq!(reship["ship_to"], order["ship_to"]);
    assert_eq!(reship["fulfilment"], "unfulfilled");
    let s = app.sale(&sale).await;
    assert_eq!(crate::helpers::product(&s, "FZX")["remaining"], 0);
    let list = app
        .get(&format!("/sales/{sale}/packing.csv"), Some(&host))
        .await
        .expect(200)
        .text;
    assert!(list.contains(reship_id), "{list}");
    // The boxes sent again earned nothing: the GMV is the order's alone.
    let paid = order["total_cents"].clone();
    let seen = crate::dashboard::watch_until(&app, &sale, &host, |s| !s.is_empty()).await;
    assert_eq!(seen.last().unwrap()["gmv_cents"], paid);
    // Nothing left to send: the next reship is refused and the claim stays open.
    let second = claim(1).await.expect(201).json();
    let resolve = format!("/claims/{}/resolve", second["id"].as_str().unwrap());
    assert_eq!(
        app.post(&resolve, Some(&host), json!({ "action": "reship" }))
            .await
            .expect(409)
            .code(),
        "sold_out"
    );
    let listed = app
        .get(&format!("/sales/{sale}/claims"), Some(&host))
        .await
        .expect(200)
        .json();
    assert_eq!(listed["claims"][0]["status"], "open");
}

#[tokio::test]
async fn a_claim_is_settled_by_a_reship_in_production() {
    a_claim_is_settled_by_a_reship(TestEnv::production().await).await;
}

#[tokio::test]
async fn a_claim_is_settled_by_a_reship_embedded() {
    a_claim_is_settled_by_a_reship(TestEnv::embedded()).await;
}
