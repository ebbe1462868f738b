//! Fulfilment (contract section 10): the packing list, shipments by JSON or
//! CSV, and each order's moves, told to its buyer on any node.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{TestApp, TestEnv};
use lychee_live::identity::Role;

struct Sale {
    host: String,
    mei: String,
    id: String,
}

/// A paid order (host's manual confirmation) of `qty`, shipping to the
/// buyer's default address.
async fn paid(app: &TestApp, s: &Sale, key: &str) -> Value {
    let o = app
        .buy(&s.mei, &s.id, key, "FZX", 1)
        .await
        .expect(201)
        .json();
    let id = o["id"].as_str().unwrap();
    app.pay(&s.host, id, &format!("cash-{key}"))
        .await
        .expect(200)
        .json()
}

async fn sale(env: &TestEnv, app: &TestApp) -> Sale {
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let id = app.live_sale(&host, "reserve", "FZX", 100, 100).await;
    Sale { host, mei, id }
}

async fn shipments_csv(
    app: &TestApp,
    token: &str,
    sale: &str,
    csv: String,
) -> crate::helpers::Reply {
    app.send(
        app.http
            .post(app.url(&format!("/sales/{sale}/shipments")))
            .bearer_auth(token)
            .header("content-type", "text/csv")
            .body(csv),
    )
    .await
}

async fn move_to(app: &TestApp, token: &str, order: &Value, status: &str) -> crate::helpers::Reply {
    let id = order["id"].as_str().unwrap();
    app.post(
        &format!("/orders/{id}/fulfilment"),
        Some(token),
        json!({ "status": status }),
    )
    .await
}

async fn a_box_goes_from_paid_to_delivered(mut env: TestEnv) {
    let app = env.node().await;
    let s = sale(&env, &app).await;
    // The buyer's default address, with a line a spreadsheet would run.
    app.post(
        "/me/addresses",
        Some(&s.mei),
        json!({ "name": "Chen Mei", "phone": "13812345678", "province": "440000",
                "city": "Guangzhou", "line": "=HYPERLINK(\"http://x\")" }),
    )
    .await
    .expect(201);
    let first = paid(&app, &s, "a").await;
    let second = paid(&app, &s, "b").await;
    // Li has no address: listed apart, at the end.
    let li = env.token(Role::Viewer, "li");
    let bare = app.buy(&li, &s.id, "l", "FZX", 1).await.expect(201).json();
    app.pay(&s.host, bare["id"].as_str().unwrap(), "cash-l")
        .await
        .expect(200);

    let list = app
        .get(&format!("/sales/{}/packing.csv", s.id), Some(&s.host))
        .await
        .expect(200);
    assert_eq!(list.headers["cache-control"], "no-store");
    let lines: Vec<&str> = list.text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        "order_id,completed_at,recipient,phone,province,province_name,city,district,line,postcode,sku,qty,ships_by,fulfilment,note"
    );
    assert_eq!(lines.len(), 4, "{}", list.text);
    assert!(lines[1].starts_with(first["id"].as_str().unwrap()));
    assert!(
        lines[1].contains(",13812345678,440000,广东省,Guangzhou,"),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].contains(",\"'=HYPERLINK(\"\"http://x\"\")\","),
        "{}",
        lines[1]
    );
    assert!(
        lines[3].starts_with(bare["id"].as_str().unwrap()),
        "no address last"
    );
    assert!(lines[3].ends_with("no address: ask the buyer"));
    app.get(&format!("/sales/{}/packing.csv", s.id), Some(&s.mei))
        .await
        .expect(403);

    // One by one: packed, then the CSV ships; moves out of order are 409.
    assert_eq!(
        move_to(&app, &s.host, &first, "packed")
            .await
            .expect(200)
            .json()["fulfilment"],
        "packed"
    );
    assert_eq!(
        move_to(&app, &s.host, &first, "packed")
            .await
            .expect(200)
            .json()["fulfilment"],
        "packed"
    );
    assert_eq!(
        move_to(&app, &s.host, &first, "delivered")
            .await
            .expect(409)
            .code(),
        "invalid_state"
    );
    assert_eq!(
        move_to(&app, &s.host, &first, "shipped")
            .await
            .expect(400)
            .code(),
        "bad_request"
    );
    assert_eq!(
        move_to(&app, &s.host, &first, "gone")
            .await
            .expect(400)
            .code(),
        "bad_request"
    );
    assert_eq!(
        move_to(&app, &s.mei, &first, "packed")
            .await
            .expect(403)
            .code(),
        "forbidden"
    );
    assert_eq!(
        move_to(&app, &s.host, &bare, "packed")
            .await
            .expect(409)
            .code(),
        "address_required"
    );
    let reserved = app
        .buy(&s.mei, &s.id, "r", "FZX", 1)
        .await
        .expect(201)
        .json();
    assert_eq!(
        move_to(&app, &s.host, &reserved, "packed")
            .await
            .expect(409)
            .code(),
        "invalid_state"
    );

    let csv = format!(
        "order_id,courier,waybill\r\n{a},SF Express,SF100\r\n{b},SF Express,SF101\r\nnot-an-id,SF,1\r\n{u},SF,SF102\r\n{r},SF,SF103\r\n{l},SF,SF104\r\n{a},SF Express,SF100\r\n{b},SF Express,SF999\r\n{a2},SF,bad waybill\r\n",
        a = first["id"].as_str().unwrap(),
        b = second["id"].as_str().unwrap(),
        u = Uuid::new_v4(),
        r = reserved["id"].as_str().unwrap(),
        l = bare["id"].as_str().unwrap(),
        a2 = first["id"].as_str().unwrap(),
    );
    let out = shipments_csv(&app, &s.host, &s.id, csv.clone())
        .await
        .expect(200)
        .json();
    assert_eq!(out["shipped"], 2, "{out}");
    assert_eq!(out["unchanged"], 1, "{out}");
    let codes: Vec<(u64, String)> = out["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["row"].as_u64().unwrap(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            (3, "bad_request".to_owned()),
            (4, "not_found".into()),
            (5, "invalid_state".into()),
            (6, "address_required".into()),
            (8, "invalid_state".into()),
            (9, "bad_request".into()),
        ],
        "{out}"
    );
    // The same upload again changes nothing.
    let again = shipments_csv(&app, &s.host, &s.id, csv)
        .await
        .expect(200)
        .json();
    assert_eq!(
        (again["shipped"].clone(), again["unchanged"].clone()),
        (json!(0), json!(3)),
        "{again}"
    );
    let o = app
        .get(
            &format!("/orders/{}", first["id"].as_str().unwrap()),
            Some(&s.mei),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(o["fulfilment"], "shipped");
    assert_eq!(o["shipment"]["courier"], "SF Express");
    assert_eq!(o["shipment"]["waybill"], "SF100");
    assert!(o["shipment"]["shipped_at"].is_string());
    assert!(o["shipment"]["delivered_at"].is_null());
    // Shipped orders leave the packing list.
    let list = app
        .get(&format!("/sales/{}/packing.csv", s.id), Some(&s.host))
        .await
        .expect(200)
        .text;
    assert!(!list.contains(first["id"].as_str().unwrap()));
    assert!(list.contains(bare["id"].as_str().unwrap()));
    // A shipped order's address is fixed.
    let other = app.add_address(&s.mei, "350000").await;
    let put = app
        .send(
            app.http
                .put(app.url(&format!(
                    "/orders/{}/address",
                    first["id"].as_str().unwrap()
                )))
                .bearer_auth(&s.mei)
                .json(&json!({ "address_id": other["id"] })),
        )
        .await;
    assert_eq!(put.expect(409).code(), "invalid_state");

    let d = move_to(&app, &s.host, &first, "delivered")
        .await
        .expect(200)
        .json();
    assert!(d["shipment"]["delivered_at"].is_string());
    assert_eq!(
        move_to(&app, &s.host, &first, "lost")
            .await
            .expect(409)
            .code(),
        "invalid_state"
    );
    assert_eq!(
        move_to(&app, &s.host, &first, "returned")
            .await
            .expect(200)
            .json()["fulfilment"],
        "returned"
    );
    assert_eq!(
        move_to(&app, &s.host, &second, "lost")
            .await
            .expect(200)
            .json()["fulfilment"],
        "lost"
    );
}

#[tokio::test]
async fn a_box_goes_from_paid_to_delivered_in_production() {
    a_box_goes_from_paid_to_delivered(TestEnv::production().await).await;
}

#[tokio::test]
async fn a_box_goes_from_paid_to_delivered_embedded() {
    a_box_goes_from_paid_to_delivered(TestEnv::embedded()).await;
}

/// Hostile uploads: too large, too many rows, wrong type, broken CSV.
#[tokio::test]
async fn shipments_uploads_are_bounded() {
    let mut env = TestEnv::production().await;
    let app = env.node().await;
    let s = sale(&env, &app).await;
    let big = "x".repeat(1024 * 1024 + 1);
    assert_eq!(
        shipments_csv(&app, &s.host, &s.id, big)
            .await
            .expect(413)
            .code(),
        "payload_too_large"
    );
    let rows: String = (0..5001)
        .map(|_| format!("{},SF,SF1\n", Uuid::new_v4()))
        .collect();
    let r = shipments_csv(
        &app,
        &s.host,
        &s.id,
        format!("order_id,courier,waybill\n{rows}"),
    )
    .await;
    assert_eq!(r.expect(400).code(), "bad_request");
    let r = shipments_csv(&app, &s.host, &s.id, "orders,courier\n1,2\n".into()).await;
    assert!(r.expect(400).text.contains("order_id"));
    let json_rows: Vec<Value> = (0..1000)
        .map(|_| json!({ "order_id": Uuid::new_v4().to_string(), "courier": "SF", "waybill": "SF1" }))
        .collect();
    let r = app
        .send(
            app.http
                .post(app.url(&format!("/sales/{}/shipments", s.id)))
                .bearer_auth(&s.host)
                .json(&json!({ "shipments": json_rows })),
        )
        .await;
    assert_eq!(r.expect(413).code(), "payload_too_large");
    let r = app
        .send(
            app.http
                .post(app.url(&format!("/sales/{}/shipments", s.id)))
                .bearer_auth(&s.host)
                .header("content-type", "text/plain")
                .body("order_id,courier,waybill\n"),
        )
        .await;
    assert_eq!(r.expect(415).code(), "unsupported_media_type");
    let ok = app
        .send(
            app.http
                .post(app.url(&format!("/sales/{}/shipments", s.id)))
                .bearer_auth(&s.host)
                .json(
                    &json!({ "shipments": [{ "order_id": "x", "courier": "SF", "waybill": "1" }] }),
                ),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(ok["errors"][0]["code"], "bad_request");
    let r = shipments_csv(&app, &s.mei, &s.id, "order_id,courier,waybill\n".into()).await;
    assert_eq!(r.expect(403).code(), "forbidden");
}

/// Every move reaches the buyer's socket on another node as an `order` event.
#[tokio::test(flavor = "multi_thread")]
async fn the_buyer_hears_its_box_move_on_any_node() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let b = env.node().await;
    let s = sale(&env, &a).await;
    a.add_address(&s.mei, "440000").await;
    let order = paid(&a, &s, "k").await;
    let (mut socket, _) = b.join(&s.id, &s.mei, None).await;
    let id = order["id"].as_str().unwrap();
    shipments_csv(
        &a,
        &s.host,
        &s.id,
        format!("order_id,courier,waybill\n{id},ZTO,ZT1\n"),
    )
    .await
    .expect(200);
    loop {
        let e = socket.next_of("order").await;
        if e["order"]["fulfilment"] == "shipped" {
            assert_eq!(e["order"]["shipment"]["waybill"], "ZT1");
            break;
        }
    }
    move_to(&a, &s.host, &order, "delivered").await.expect(200);
    let e = socket.next_of("order").await;
    assert_eq!(e["order"]["fulfilment"], "delivered");
}
