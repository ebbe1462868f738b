//! Delivery areas and the address an order ships to (contract section 10).

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{product, TestApp, TestEnv};
use lychee_live::identity::Role;

/// A live reserve sale whose one product ships to Guangdong and Fujian only.
async fn south_only(app: &TestApp, host: &str, stock: i64) -> String {
    let sale = app
        .create_sale(host, json!({ "title": "Conghua", "checkout": "reserve" }))
        .await
        .expect(201)
        .json();
    let id = sale["id"].as_str().unwrap().to_owned();
    let p = app
        .add_product(
            host,
            &id,
            json!({ "sku": "FZX", "name": "Feizixiao 5 kg", "price_cents": 12800, "stock": stock,
                    "per_user_limit": 5, "ships_to": { "include": ["440000", "350000"] },
                    "claim_window_hours": 72 }),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(p["ships_to"], json!({ "include": ["440000", "350000"] }));
    assert_eq!(p["claim_window_hours"], 72);
    app.start(host, &id).await.expect(200);
    app.open(host, &id, "FZX").await.expect(200);
    id
}

async fn products_validate_their_areas(mut env: TestEnv) {
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = app
        .create_sale(&host, json!({ "title": "Areas" }))
        .await
        .expect(201)
        .json();
    let id = sale["id"].as_str().unwrap();
    let base = json!({ "name": "Box", "price_cents": 100, "stock": 1 });
    let with = |sku: &str, extra: Value| {
        let mut b = base.clone();
        b["sku"] = sku.into();
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    for (i, bad) in [
        json!({ "ships_to": { "include": ["440001"] } }),
        json!({ "ships_to": { "include": ["44000"] } }),
        json!({ "ships_to": { "include": ["990000"] } }),
        json!({ "ships_to": { "include": [] } }),
        json!({ "ships_to": { "include": ["440000", "440000"] } }),
        json!({ "ships_to": { "exclude": [440000] } }),
        json!({ "ships_to": { "includes": ["440000"] } }),
        json!({ "ships_to": ["440000"] }),
        json!({ "ships_to": { "include": ["440000\u{0}"] } }),
        json!({ "claim_window_hours": 0 }),
        json!({ "claim_window_hours": 721 }),
        json!({ "claim_window_hours": "48" }),
    ]
    .into_iter()
    .enumerate()
    {
        let r = app
            .add_product(&host, id, with(&format!("BAD{i}"), bad.clone()))
            .await;
        assert_eq!(r.expect(400).code(), "bad_request", "{bad}");
    }
    let everywhere = app
        .add_product(&host, id, with("ALL", json!({})))
        .await
        .expect(201)
        .json();
    assert!(everywhere["ships_to"].is_null());
    assert_eq!(everywhere["claim_window_hours"], 48);
    let ok = app
        .add_product(
            &host,
            id,
            with("NOTIBET", json!({ "ships_to": { "exclude": ["540000", "650000"] }, "claim_window_hours": 720 })),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(ok["ships_to"], json!({ "exclude": ["540000", "650000"] }));
    let read = app.sale(id).await;
    assert_eq!(product(&read, "NOTIBET")["ships_to"], ok["ships_to"]);
}

#[tokio::test]
async fn products_validate_their_areas_in_production() {
    products_validate_their_areas(TestEnv::production().await).await;
}

#[tokio::test]
async fn products_validate_their_areas_embedded() {
    products_validate_their_areas(TestEnv::embedded()).await;
}

async fn a_buy_ships_to_an_address_in_the_area(mut env: TestEnv) {
    let mut settings = env.settings();
    settings.payments.providers = Some(vec!["sandbox".into()]);
    let app = env.node_with(settings).await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let li = env.token(Role::Viewer, "li");
    let sale = south_only(&app, &host, 10).await;

    // No address at all: the order is taken, without one.
    let bare = app
        .buy(&li, &sale, "li-1", "FZX", 1)
        .await
        .expect(201)
        .json();
    assert!(bare["ship_to"].is_null());
    assert_eq!(bare["fulfilment"], "unfulfilled");

    // Mei's default is in Beijing: refused before any stock is taken.
    let beijing = app.add_address(&mei, "110000").await;
    let r = app.buy(&mei, &sale, "mei-1", "FZX", 2).await;
    assert_eq!(r.expect(409).code(), "undeliverable");
    assert_eq!(product(&app.sale(&sale).await, "FZX")["remaining"], 9);
    // Naming an address in Guangdong ships there, a copy kept on the order.
    let canton = app.add_address(&mei, "440000").await;
    let req = app
        .http
        .post(app.url(&format!("/sales/{sale}/orders")))
        .bearer_auth(&mei)
        .header("Idempotency-Key", "mei-2")
        .json(&json!({ "sku": "FZX", "qty": 2, "address_id": canton["id"] }));
    let o = app.send(req).await.expect(201).json();
    assert_eq!(o["ship_to"]["province"], "440000");
    assert_eq!(o["ship_to"]["id"], canton["id"]);
    assert_eq!(product(&app.sale(&sale).await, "FZX")["remaining"], 7);
    // The same key with another address is another request.
    let req = app
        .http
        .post(app.url(&format!("/sales/{sale}/orders")))
        .bearer_auth(&mei)
        .header("Idempotency-Key", "mei-2")
        .json(&json!({ "sku": "FZX", "qty": 2, "address_id": beijing["id"] }));
    assert_eq!(
        app.send(req).await.expect(422).code(),
        "idempotency_mismatch"
    );
    // Someone else's address, or none such: 404, and no stock moves.
    for foreign in [
        bare["id"].clone(),
        json!(Uuid::new_v4().to_string()),
        canton["id"].clone(),
    ] {
        let token = if foreign == canton["id"] { &li } else { &mei };
        let req = app
            .http
            .post(app.url(&format!("/sales/{sale}/orders")))
            .bearer_auth(token)
            .header("Idempotency-Key", format!("x-{foreign}"))
            .json(&json!({ "sku": "FZX", "qty": 1, "address_id": foreign }));
        assert_eq!(app.send(req).await.expect(404).code(), "not_found");
    }
    let req = app
        .http
        .post(app.url(&format!("/sales/{sale}/orders")))
        .bearer_auth(&mei)
        .header("Idempotency-Key", "bad-id")
        .json(&json!({ "sku": "FZX", "qty": 1, "address_id": "not-a-uuid" }));
    assert_eq!(app.send(req).await.expect(400).code(), "bad_request");
    assert_eq!(product(&app.sale(&sale).await, "FZX")["remaining"], 7);

    // Payment needs an address; attaching one is checked like a buy.
    let id = bare["id"].as_str().unwrap();
    let start = app
        .post(
            &format!("/orders/{id}/payments"),
            Some(&li),
            json!({ "provider": "sandbox" }),
        )
        .await;
    assert_eq!(start.expect(409).code(), "address_required");
    let li_beijing = app.add_address(&li, "110000").await;
    let put = |token: &str, address: &Value| {
        app.send(
            app.http
                .put(app.url(&format!("/orders/{id}/address")))
                .bearer_auth(token)
                .json(&json!({ "address_id": address["id"] })),
        )
    };
    assert_eq!(
        put(&li, &li_beijing).await.expect(409).code(),
        "undeliverable"
    );
    assert_eq!(put(&mei, &canton).await.expect(403).code(), "forbidden");
    assert_eq!(put(&li, &canton).await.expect(404).code(), "not_found");
    let li_fujian = app.add_address(&li, "350000").await;
    let attached = put(&li, &li_fujian).await.expect(200).json();
    assert_eq!(attached["ship_to"]["province"], "350000");
    let read = app
        .get(&format!("/orders/{id}"), Some(&li))
        .await
        .expect(200)
        .json();
    assert_eq!(read["ship_to"]["id"], li_fujian["id"]);
    app.post(
        &format!("/orders/{id}/payments"),
        Some(&li),
        json!({ "provider": "sandbox" }),
    )
    .await
    .expect(201);
    // Paid by hand: still unfulfilled, so the address may still change, and
    // the copy stays when the address book changes.
    app.pay(&host, id, "cash-1").await.expect(200);
    let canton_li = app.add_address(&li, "440000").await;
    assert_eq!(
        put(&li, &canton_li).await.expect(200).json()["ship_to"]["province"],
        "440000"
    );
    app.send(
        app.http
            .delete(app.url(&format!(
                "/me/addresses/{}",
                canton_li["id"].as_str().unwrap()
            )))
            .bearer_auth(&li),
    )
    .await
    .expect(204);
    let kept = app
        .get(&format!("/orders/{id}"), Some(&li))
        .await
        .expect(200)
        .json();
    assert_eq!(kept["ship_to"]["id"], canton_li["id"], "an immutable copy");
    assert_eq!(
        kept["ship_to"]["phone"], "13812345678",
        "its buyer sees it whole"
    );
    let host_view = app
        .get(&format!("/orders/{id}"), Some(&host))
        .await
        .expect(200)
        .json();
    assert_eq!(
        host_view["ship_to"]["phone"], "13812345678",
        "the host ships it"
    );
}

#[tokio::test]
async fn a_buy_ships_to_an_address_in_the_area_in_production() {
    a_buy_ships_to_an_address_in_the_area(TestEnv::production().await).await;
}

#[tokio::test]
async fn a_buy_ships_to_an_address_in_the_area_embedded() {
    a_buy_ships_to_an_address_in_the_area(TestEnv::embedded()).await;
}

/// 500 buyers rush a product that ships to Guangdong; half of them live in
/// Beijing. Only the deliverable ones take stock, on two nodes.
#[tokio::test(flavor = "multi_thread")]
async fn undeliverable_buyers_take_no_stock_under_a_rush() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let b = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = south_only(&a, &host, 1000).await;
    let buyers: Vec<(String, bool)> = (0..500)
        .map(|i| (env.token(Role::Viewer, &format!("buyer-{i}")), i % 2 == 0))
        .collect();
    for chunk in buyers.chunks(50) {
        futures_util::future::join_all(
            chunk
                .iter()
                .map(|(t, south)| a.add_address(t, if *south { "440000" } else { "110000" })),
        )
        .await;
    }
    let answers = futures_util::future::join_all(buyers.iter().enumerate().map(|(i, (t, _))| {
        let app = if i % 2 == 0 { &a } else { &b };
        app.buy(t, &sale, "rush", "FZX", 1)
    }))
    .await;
    let mut created = 0;
    for ((_, south), r) in buyers.iter().zip(&answers) {
        if *south {
            assert_eq!(r.status, 201, "{}", r.text);
            created += 1;
        } else {
            assert_eq!((r.status.as_u16(), r.code()), (409, "undeliverable".into()));
        }
    }
    assert_eq!(created, 250);
    let p = product(&b.sale(&sale).await, "FZX").clone();
    assert_eq!(p["remaining"], 750);
    assert_eq!(p["reserved"], 250);
}

/// Buys until one is taken (another node's notice may still be on its way),
/// or fails after two seconds; a refused buy takes no stock.
async fn buy_when_deliverable(app: &TestApp, token: &str, sale: &str, key: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let r = app.buy(token, sale, key, "FZX", 1).await;
        if r.status == 201 {
            return r.json();
        }
        assert_eq!(r.expect(409).code(), "undeliverable");
        assert!(
            std::time::Instant::now() < deadline,
            "the other node's change never showed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A node answers buys from the address books it keeps; a change made on
/// another node reaches it at once (the books are kept for a minute when
/// no notice comes), and an address added there a moment ago can be named.
#[tokio::test(flavor = "multi_thread")]
async fn a_book_changed_on_one_node_is_used_by_the_other_at_once() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let b = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = south_only(&a, &host, 10).await;

    let beijing = a.add_address(&mei, "110000").await;
    let r = b.buy(&mei, &sale, "mei-1", "FZX", 1).await;
    assert_eq!(r.expect(409).code(), "undeliverable");
    // Node b keeps mei's book now. The new default, added on node a:
    let canton = a
        .post(
            "/me/addresses",
            Some(&mei),
            json!({ "name": "Chen Mei", "phone": "13812345678", "province": "440000",
                    "city": "Guangzhou", "line": "1 Lychee Road", "is_default": true }),
        )
        .await
        .expect(201)
        .json();
    let o = buy_when_deliverable(&b, &mei, &sale, "mei-2").await;
    assert_eq!(o["ship_to"]["id"], canton["id"]);

    // Deleting it on a makes Beijing the default again, on b too.
    let del = a
        .http
        .delete(a.url(&format!("/me/addresses/{}", canton["id"].as_str().unwrap())))
        .bearer_auth(&mei);
    a.send(del).await.expect(204);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut n = 0;
    loop {
        n += 1;
        let r = b.buy(&mei, &sale, &format!("mei-3-{n}"), "FZX", 1).await;
        if r.status == 409 {
            assert_eq!(r.code(), "undeliverable");
            break;
        }
        assert_eq!(r.expect(201).json()["ship_to"]["id"], canton["id"]);
        assert!(
            std::time::Instant::now() < deadline,
            "the delete never showed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // An address added on a and named on b straight away is found.
    let fujian = a.add_address(&mei, "350000").await;
    let req = b
        .http
        .post(b.url(&format!("/sales/{sale}/orders")))
        .bearer_auth(&mei)
        .header("Idempotency-Key", "mei-4")
        .json(&json!({ "sku": "FZX", "qty": 1, "address_id": fujian["id"] }));
    let o = b.send(req).await.expect(201).json();
    assert_eq!(o["ship_to"]["province"], "350000");
    assert_ne!(beijing["id"], fujian["id"]);
}
