//! The hardening pass: faults a demanding user or an attacker hits first,
//! each pinned by a test that failed before its fix.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lychee_live::identity::Role;
use lychee_live::orders::sql::SqlOrders;
use lychee_live::orders::{Commit, CompletedOrder, Order, OrderStatus, OrderStore};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{product, TestEnv};

fn completed(sale_id: Uuid, sku: &str, user: &str, payment_ref: &str) -> CompletedOrder {
    let now = Utc::now();
    CompletedOrder {
        order: Order {
            id: Uuid::now_v7(),
            sale_id,
            sku: sku.into(),
            qty: 1,
            unit_price_cents: 12800,
            total_cents: 12800,
            currency: "CNY".into(),
            user_id: user.into(),
            status: OrderStatus::Completed,
            created_at: now,
            expires_at: None,
            completed_at: Some(now),
            payment_ref: Some(payment_ref.into()),
            payment: None,
            ship_to: None,
            fulfilment: Default::default(),
            shipment: None,
            claims: Vec::new(),
        },
        key: format!("k-{}", Uuid::new_v4()),
        epoch: 0,
    }
}

/// A live sale of two SKUs made through the API, and the epoch its orders carry.
async fn two_sku_sale(env: &mut TestEnv) -> (Uuid, i64) {
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = app.live_sale(&host, "instant", "A", 10_000, 1000).await;
    app.add_product(
        &host,
        &sale,
        json!({ "sku": "B", "name": "Nuomici", "price_cents": 100, "stock": 10_000 }),
    )
    .await
    .expect(201);
    let sale_id: Uuid = sale.parse().unwrap();
    let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM products WHERE sale_id = $1 LIMIT 1")
        .bind(sale_id)
        .fetch_one(&env.pg().await)
        .await
        .unwrap();
    (sale_id, epoch)
}

#[tokio::test]
async fn one_refused_order_does_not_fail_its_batch() {
    let mut env = TestEnv::production().await;
    let (sale_id, epoch) = two_sku_sale(&mut env).await;
    let store = SqlOrders::new(env.pg().await);
    let mut batch: Vec<CompletedOrder> = (0..5)
        .map(|i| completed(sale_id, "A", &format!("u{i}"), "cash"))
        .collect();
    // Past validation somehow: PostgreSQL refuses a NUL in text.
    batch.insert(2, completed(sale_id, "A", "mallory", "nul\0ref"));
    for c in &mut batch {
        c.epoch = epoch;
    }
    let out = store
        .commit(&batch)
        .await
        .expect("the batch is not failed whole");
    assert_eq!(out[2], Commit::Invalid);
    for (i, c) in out.iter().enumerate().filter(|(i, _)| *i != 2) {
        assert_eq!(*c, Commit::Committed, "order {i}");
    }
    let sold: i64 =
        sqlx::query_scalar("SELECT sold FROM products WHERE sale_id = $1 AND sku = 'A'")
            .bind(sale_id)
            .fetch_one(&env.pg().await)
            .await
            .unwrap();
    assert_eq!(sold, 5, "only the good orders count");
}

#[tokio::test]
async fn batches_over_the_same_skus_in_opposite_orders_never_fail() {
    let mut env = TestEnv::production().await;
    let (sale_id, epoch) = two_sku_sale(&mut env).await;
    let pg = env.pg().await;
    // Two nodes' writers, each with its own pool.
    let a = Arc::new(SqlOrders::new(env.pg().await));
    let b = Arc::new(SqlOrders::new(env.pg().await));
    for round in 0..5 {
        let batch = |first: &str, second: &str, who: &str| {
            let mut v = vec![
                completed(sale_id, first, who, "cash"),
                completed(sale_id, second, who, "cash"),
            ];
            for c in &mut v {
                c.epoch = epoch;
            }
            v
        };
        let (x, y) = (
            batch("A", "B", &format!("x{round}")),
            batch("B", "A", &format!("y{round}")),
        );
        // Hold A so both batches are inside their transactions at once: x
        // queues on A first, then y (which, locking in its own order, would
        // already hold B). Released, x takes A and needs B: a deadlock,
        // unless every batch locks in one order.
        let mut hold = pg.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM products WHERE sale_id = $1 AND sku = 'A' FOR NO KEY UPDATE")
            .bind(sale_id)
            .execute(&mut *hold)
            .await
            .unwrap();
        let a = a.clone();
        let first = tokio::spawn(async move { a.commit(&x).await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        let b = b.clone();
        let second = tokio::spawn(async move { b.commit(&y).await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        hold.commit().await.unwrap();
        for r in [first.await.unwrap(), second.await.unwrap()] {
            assert_eq!(
                r.expect("no batch fails on a deadlock"),
                vec![Commit::Committed; 2],
                "round {round}"
            );
        }
    }
}

#[tokio::test]
async fn a_batch_aborted_by_a_deadlock_is_tried_again() {
    let mut env = TestEnv::production().await;
    let (sale_id, epoch) = two_sku_sale(&mut env).await;
    let pg = env.pg().await;
    let writer = Arc::new(SqlOrders::new(env.pg().await));
    let mut batch = vec![
        completed(sale_id, "A", "x", "cash"),
        completed(sale_id, "B", "x", "cash"),
    ];
    for c in &mut batch {
        c.epoch = epoch;
    }
    // Another transaction takes B, then A: the batch (A, then B) and it wait
    // on each other until PostgreSQL aborts one of them, the batch first
    // (it has waited longest).
    let mut other = pg.begin().await.unwrap();
    let lock = |sku: &'static str| {
        sqlx::query("SELECT 1 FROM products WHERE sale_id = $1 AND sku = $2 FOR NO KEY UPDATE")
            .bind(sale_id)
            .bind(sku)
    };
    lock("B").execute(&mut *other).await.unwrap();
    let w = writer.clone();
    let commit = tokio::spawn(async move { w.commit(&batch).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let took_a = lock("A").execute(&mut *other).await;
    match took_a {
        Ok(_) => other.commit().await.unwrap(),
        Err(_) => other.rollback().await.unwrap(),
    }
    assert_eq!(
        commit
            .await
            .unwrap()
            .expect("the batch is tried again, not failed"),
        vec![Commit::Committed; 2]
    );
}

#[tokio::test]
async fn hostile_refs_and_texts_are_refused_with_400_and_lose_nothing() {
    let mut env = TestEnv::production().await;
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = app.live_sale(&host, "reserve", "FZX", 10, 5).await;
    let mei = env.token(Role::Viewer, "mei");

    // A WebSocket buy whose ref holds a NUL: an error frame, the socket stays.
    let (mut viewer, _) = app.join(&sale, &mei, None).await;
    viewer.buy("FZX", 1, "r\0f").await;
    let (code, e) = viewer.error().await;
    assert_eq!(code, "bad_request", "{e}");
    viewer.buy("FZX", 1, "fine-ref").await;
    let order = viewer.next_of("order").await;
    assert_eq!(order["order"]["status"], "reserved");
    let id = order["order"]["id"].as_str().unwrap().to_owned();

    // A manual payment reference with a NUL.
    assert_eq!(
        app.pay(&host, &id, "cash\0").await.expect(400).code(),
        "bad_request"
    );
    // Names and titles: a NUL, an override, nothing visible.
    for bad in [
        "nul\u{0}",
        "\u{202E}exe.txt",
        "\u{200B}",
        "\u{200D}\u{200D}",
    ] {
        let r = app.create_sale(&host, json!({ "title": bad })).await;
        assert_eq!(r.expect(400).code(), "bad_request", "{bad:?}");
        let r = app
            .add_product(
                &host,
                &sale,
                json!({ "sku": "X", "name": bad, "price_cents": 1, "stock": 1 }),
            )
            .await;
        assert_eq!(r.expect(400).code(), "bad_request", "{bad:?}");
        let r = app.post("/guests", None, json!({ "name": bad })).await;
        assert_eq!(r.expect(400).code(), "bad_request", "{bad:?}");
    }
    // A family emoji in a product name survives verbatim.
    let family = "荔枝 👨\u{200D}👩\u{200D}👧";
    let p = app
        .add_product(
            &host,
            &sale,
            json!({ "sku": "FAM", "name": family, "price_cents": 1, "stock": 1 }),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(p["name"], family);
    // A NUL in a SKU of the path or of a pin body: 404, not 500.
    for path in ["open", "close"] {
        let r = app
            .post(
                &format!("/sales/{sale}/products/F%00X/{path}"),
                Some(&host),
                json!({}),
            )
            .await;
        assert_eq!(r.expect(404).code(), "not_found");
    }
    let r = app
        .post(
            &format!("/sales/{sale}/products/F%00X/restock"),
            Some(&host),
            json!({ "add": 1 }),
        )
        .await;
    assert_eq!(r.expect(404).code(), "not_found");
    let r = app
        .post(
            &format!("/sales/{sale}/pin"),
            Some(&host),
            json!({ "sku": "F\u{0}X" }),
        )
        .await;
    assert_eq!(r.expect(404).code(), "not_found");
    // Nothing was lost: the good reservation still stands and pays.
    app.pay(&host, &id, "cash-1").await.expect(200);
    let s = app.sale(&sale).await;
    assert_eq!(product(&s, "FZX")["sold"], 1);
}

#[tokio::test]
async fn since_at_the_top_of_u64_replays_nothing() {
    for mut env in [TestEnv::production().await, TestEnv::embedded()] {
        let app = env.node().await;
        let host = env.token(Role::Host, "alice");
        let sale = app.live_sale(&host, "reserve", "FZX", 10, 5).await;
        let mei = env.token(Role::Viewer, "mei");
        let (mut v, _) = app.join(&sale, &mei, None).await;
        v.chat("first").await;
        v.chats_until(1).await;
        let (_, welcome) = app.join(&sale, &mei, Some(u64::MAX)).await;
        let chat: &Vec<Value> = welcome["chat"].as_array().unwrap();
        assert!(chat.is_empty(), "{welcome}");
    }
}

#[tokio::test]
async fn a_restock_after_sell_out_sells_at_once_on_every_node() {
    let mut env = TestEnv::production().await;
    let (a, b) = (env.node().await, env.node().await);
    let host = env.token(Role::Host, "alice");
    let sale = a.live_sale(&host, "reserve", "FZX", 1, 5).await;
    let (u1, u2, u3) = (
        env.token(Role::Viewer, "u1"),
        env.token(Role::Viewer, "u2"),
        env.token(Role::Viewer, "u3"),
    );
    a.buy(&u1, &sale, "k1", "FZX", 1).await.expect(201);
    // Both nodes learn the sell-out and answer from their flags.
    assert_eq!(
        a.buy(&u2, &sale, "k2", "FZX", 1).await.expect(409).code(),
        "sold_out"
    );
    assert_eq!(
        b.buy(&u3, &sale, "k3", "FZX", 1).await.expect(409).code(),
        "sold_out"
    );
    a.restock(&host, &sale, "FZX", 1).await.expect(200);
    // The very next buy on the node that restocked.
    a.buy(&u2, &sale, "k2b", "FZX", 1).await.expect(201);
    a.restock(&host, &sale, "FZX", 1).await.expect(200);
    // The other node, from the stock event: well before its flag would
    // expire on its own (1 s), even on a busy machine.
    let started = std::time::Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let r = b.buy(&u3, &sale, &format!("k3-{n}"), "FZX", 1).await;
        if r.status == 201 {
            break;
        }
        assert_eq!(r.code(), "sold_out");
        assert!(
            started.elapsed() < Duration::from_millis(700),
            "node b still refuses"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_restock_after_sell_out_sells_at_once_embedded() {
    let mut env = TestEnv::embedded();
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = app.live_sale(&host, "instant", "FZX", 1, 5).await;
    let (u1, u2) = (env.token(Role::Viewer, "u1"), env.token(Role::Viewer, "u2"));
    app.buy(&u1, &sale, "k1", "FZX", 1).await.expect(201);
    assert_eq!(
        app.buy(&u2, &sale, "k2", "FZX", 1).await.expect(409).code(),
        "sold_out"
    );
    app.restock(&host, &sale, "FZX", 5).await.expect(200);
    app.buy(&u2, &sale, "k2b", "FZX", 1).await.expect(201);
}

#[tokio::test]
async fn a_slow_rebuild_cannot_free_the_next_rebuilders_lock() {
    use lychee_live::inventory::redis::RedisInventory;
    use lychee_live::inventory::Inventory;
    let env = TestEnv::production().await;
    let conn = crate::helpers::kv().await;
    let inv = RedisInventory::new(conn, env.prefix().unwrap());
    let sale = Uuid::now_v7();
    assert!(inv.lock_rebuild(sale, "slow", 100).await.unwrap());
    assert!(!inv.lock_rebuild(sale, "next", 100).await.unwrap(), "held");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The slow one's lock expired; the next rebuilder holds it now.
    assert!(inv.lock_rebuild(sale, "next", 10_000).await.unwrap());
    inv.unlock_rebuild(sale, "slow").await.unwrap();
    assert!(
        inv.rebuilding(sale).await.unwrap(),
        "not freed by another's token"
    );
    inv.unlock_rebuild(sale, "next").await.unwrap();
    assert!(!inv.rebuilding(sale).await.unwrap());
}

/// A Redis user of its own for one node, so a test can kill exactly that
/// node's pub/sub connection (`CLIENT KILL USER .. TYPE pubsub`) and keep it
/// from reconnecting (`ACL SETUSER .. off`). Deleted when dropped.
struct RedisUser {
    name: String,
}

async fn redis_cmd(args: &[&str]) {
    crate::helpers::on_every_node(args).await;
}

impl RedisUser {
    async fn new() -> RedisUser {
        let name = format!("t{}", Uuid::new_v4().simple());
        redis_cmd(&["ACL", "SETUSER", &name, "on", "nopass", "~*", "&*", "+@all"]).await;
        RedisUser { name }
    }
    fn url(&self, base: &str) -> String {
        let mut url = url::Url::parse(base).unwrap();
        url.set_username(&self.name).unwrap();
        url.set_password(Some("x")).unwrap();
        url.to_string()
    }
    /// The suite's Redis, reached as this user.
    fn target(&self) -> lychee_live::config::RedisTarget {
        use lychee_live::config::RedisTarget;
        match crate::helpers::redis_target() {
            RedisTarget::Node(url) => RedisTarget::Node(self.url(&url)),
            RedisTarget::Cluster(seeds) => {
                RedisTarget::Cluster(seeds.iter().map(|s| self.url(s)).collect())
            }
        }
    }
}

impl Drop for RedisUser {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(redis_cmd(&["ACL", "DELUSER", &name]));
        })
        .join();
    }
}

#[tokio::test]
async fn a_lost_subscription_is_caught_up_with_stock_and_chat() {
    use lychee_live::config::Mode;
    let mut env = TestEnv::production().await;
    let user = RedisUser::new().await;
    // Node a (the viewer's) reaches Redis as its own user; node b takes the buys.
    let mut settings = env.settings();
    if let Mode::Production { redis, .. } = &mut settings.mode {
        *redis = user.target();
    }
    let a = env.node_with(settings).await;
    let b = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = b.live_sale(&host, "reserve", "FZX", 50, 50).await;
    let mei = env.token(Role::Viewer, "mei");
    let li = env.token(Role::Viewer, "li");
    let (mut viewer, _) = a.join(&sale, &mei, None).await;
    let (mut talker, _) = b.join(&sale, &li, None).await;
    b.buy(&li, &sale, "k0", "FZX", 5).await.expect(201);
    loop {
        let e = viewer.next_of("stock").await;
        if e["remaining"] == 45 {
            break;
        }
    }

    // Node a's subscription is cut and cannot come back for a while.
    redis_cmd(&["ACL", "SETUSER", &user.name, "off"]).await;
    redis_cmd(&["CLIENT", "KILL", "USER", &user.name, "TYPE", "pubsub"]).await;
    for i in 1..=10 {
        b.buy(&li, &sale, &format!("k{i}"), "FZX", 1)
            .await
            .expect(201);
    }
    talker.chat("while you were away").await;
    talker.chats_until(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis_cmd(&["ACL", "SETUSER", &user.name, "on"]).await;

    // Nothing more happens in the sale: only catching up can tell the viewer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (mut stock_ok, mut chat_ok) = (false, false);
    while !(stock_ok && chat_ok) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(e) = viewer.next_within(left).await else {
            panic!("not caught up: stock {stock_ok}, chat {chat_ok}");
        };
        match e["type"].as_str() {
            Some("stock") if e["remaining"] == 35 => stock_ok = true,
            Some("chat") => {
                assert_eq!(e["text"], "while you were away");
                assert!(!chat_ok, "the message comes once");
                chat_ok = true;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn nobody_who_may_manage_a_sale_can_be_banned_and_bans_can_be_undone() {
    for mut env in [TestEnv::production().await, TestEnv::embedded()] {
        let app = env.node().await;
        let host = env.token(Role::Host, "alice");
        let ops = env.token(Role::Operator, "ops-1");
        let ops2 = env.token(Role::Operator, "ops-2");
        let sale = app.live_sale(&host, "reserve", "FZX", 10, 5).await;
        let bans = format!("/sales/{sale}/bans");
        // The operators sign in to the room (or act over REST) first.
        let (_o, _) = app.join(&sale, &ops, None).await;
        app.get(&bans, Some(&ops2)).await.expect(200);
        let (mut h, _) = app.join(&sale, &host, None).await;
        for target in ["alice", "ops-1", "ops-2"] {
            let r = app
                .post(&bans, Some(&host), json!({ "user_id": target }))
                .await;
            assert_eq!(r.expect(403).code(), "forbidden", "{target}");
            h.send(json!({ "type": "ban", "user_id": target })).await;
            let (code, _) = h.error().await;
            assert_eq!(code, "forbidden", "{target} over the socket");
        }
        let r = app
            .post(&bans, Some(&ops), json!({ "user_id": "alice" }))
            .await;
        assert_eq!(
            r.expect(403).code(),
            "forbidden",
            "the host, by an operator"
        );
        // A viewer may not ban, nor see the list.
        let mei = env.token(Role::Viewer, "mei");
        app.post(&bans, Some(&mei), json!({ "user_id": "li" }))
            .await
            .expect(403);
        app.get(&bans, Some(&mei)).await.expect(403);
        // Hostile ids.
        for bad in ["", "nul\u{0}", &"x".repeat(65)] {
            let r = app
                .post(&bans, Some(&host), json!({ "user_id": bad }))
                .await;
            assert_eq!(r.expect(400).code(), "bad_request", "{bad:?}");
        }

        let r = app
            .post(&bans, Some(&host), json!({ "user_id": "mei" }))
            .await
            .expect(200);
        assert_eq!(r.json()["bans"], json!(["mei"]));
        h.send(json!({ "type": "ban", "user_id": "li" })).await;
        h.ping("after-ban").await;
        assert_eq!(
            app.get(&bans, Some(&ops)).await.expect(200).json()["bans"],
            json!(["li", "mei"])
        );
        let refused = app
            .connect(app.live_url(&sale, &mei, None))
            .await
            .err()
            .expect("banned");
        assert_eq!(refused.code(), "banned");

        let r = app
            .http
            .delete(app.url(&format!("{bans}/mei")))
            .bearer_auth(&host);
        assert_eq!(app.send(r).await.expect(200).json()["bans"], json!(["li"]));
        h.send(json!({ "type": "unban", "user_id": "li" })).await;
        h.ping("after-unban").await;
        assert_eq!(
            app.get(&bans, Some(&host)).await.expect(200).json()["bans"],
            json!([])
        );
        // Back in, and buying.
        app.join(&sale, &mei, None).await;
        app.buy(&mei, &sale, "back", "FZX", 1).await.expect(201);
    }
}

#[tokio::test]
async fn a_ban_releases_the_users_reservations_in_the_sale() {
    for mut env in [TestEnv::production().await, TestEnv::embedded()] {
        let app = env.node().await;
        let host = env.token(Role::Host, "alice");
        let sale = app.live_sale(&host, "reserve", "FZX", 10, 5).await;
        let other = app.live_sale(&host, "reserve", "FZX", 10, 5).await;
        let mei = env.token(Role::Viewer, "mei");
        let held = app
            .buy(&mei, &sale, "k1", "FZX", 3)
            .await
            .expect(201)
            .json();
        let elsewhere = app
            .buy(&mei, &other, "k2", "FZX", 2)
            .await
            .expect(201)
            .json();
        let (mut watcher, _) = app.join(&sale, &env.token(Role::Viewer, "li"), None).await;
        app.post(
            &format!("/sales/{sale}/bans"),
            Some(&host),
            json!({ "user_id": "mei" }),
        )
        .await
        .expect(200);
        // The stock is back, and viewers are told.
        let s = app.sale(&sale).await;
        assert_eq!(
            (
                product(&s, "FZX")["remaining"].clone(),
                product(&s, "FZX")["reserved"].clone()
            ),
            (json!(10), json!(0))
        );
        loop {
            let e = watcher.next_of("stock").await;
            if e["remaining"] == 10 {
                break;
            }
        }
        // It cannot be paid any more; the order says why.
        let id = held["id"].as_str().unwrap();
        let r = app.pay(&host, id, "cash").await;
        assert_eq!(r.status, 409, "{}", r.text);
        let o = app
            .get(&format!("/orders/{id}"), Some(&mei))
            .await
            .expect(200)
            .json();
        assert_eq!(o["status"], "cancelled");
        // Another sale's reservation is untouched.
        let o = app
            .get(
                &format!("/orders/{}", elsewhere["id"].as_str().unwrap()),
                Some(&mei),
            )
            .await
            .expect(200)
            .json();
        assert_eq!(o["status"], "reserved");
    }
}

#[tokio::test]
async fn a_loop_of_fresh_keys_keeps_a_bounded_number_of_answers() {
    use lychee_live::inventory::redis::{KEYS_PER_USER, SETTLED_KEEP_SECS};
    let mut env = TestEnv::production().await;
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = app.live_sale(&host, "reserve", "FZX", 100, 5).await;
    let mei = env.token(Role::Viewer, "mei");
    let order = app
        .buy(&mei, &sale, "first", "FZX", 1)
        .await
        .expect(201)
        .json();
    let looper = env.token(Role::Viewer, "looper");
    // Over the per-user limit: each refusal is a final answer Redis keeps.
    for i in 0..KEYS_PER_USER + 40 {
        let r = app.buy(&looper, &sale, &format!("k{i}"), "FZX", 6).await;
        assert_eq!(r.expect(409).code(), "limit_exceeded");
    }
    let mut conn = crate::helpers::kv().await;
    let keys = crate::helpers::keys_matching(&format!(
        "{}:{{{sale}}}:i:6:looper:*",
        env.prefix().unwrap()
    ))
    .await;
    assert_eq!(
        keys.len(),
        KEYS_PER_USER,
        "the oldest beyond the cap are forgotten"
    );
    // A cancelled order's record goes soon after its answer.
    let id = order["id"].as_str().unwrap();
    app.cancel(&mei, id).await.expect(200);
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{}:{{{sale}}}:o:{id}", env.prefix().unwrap()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= SETTLED_KEEP_SECS as i64, "ttl {ttl}");
}

/// A promoted replica (or a restarted Redis) has no scripts cached: every
/// script falls back to sending its body, and nothing fails.
#[tokio::test]
async fn scripts_lost_by_redis_are_sent_again() {
    let mut env = TestEnv::production().await;
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let sale = app.live_sale(&host, "instant", "FZX", 10, 5).await;
    let (mut room, _) = app.join(&sale, &mei, None).await;
    app.buy(&mei, &sale, "k1", "FZX", 1).await.expect(201);
    crate::helpers::on_every_node(&["SCRIPT", "FLUSH"]).await;
    app.buy(&mei, &sale, "k2", "FZX", 1).await.expect(201);
    room.chat("still here").await;
    let chats = room.chats_until(1).await;
    assert_eq!(chats.last().unwrap()["text"], "still here");
    let s = app
        .get(&format!("/sales/{sale}"), None)
        .await
        .expect(200)
        .json();
    assert_eq!(s["products"][0]["sold"], 2);
}

/// On a cluster, a watched sale's slot moves to another primary: Redis
/// unsubscribes its shard channel's clients, the nodes subscribe again where
/// it lives now, and chat keeps reaching viewers on other nodes. (One Redis
/// has no slots: the cluster run of the suite covers this.)
#[tokio::test]
async fn a_sales_slot_moving_keeps_chat_flowing_across_nodes() {
    let lychee_live::config::RedisTarget::Cluster(seeds) = crate::helpers::redis_target() else {
        eprintln!("single Redis: nothing to move");
        return;
    };
    let base = url::Url::parse(&seeds[0]).unwrap().port().unwrap();
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let b = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = b.live_sale(&host, "instant", "FZX", 50, 50).await;
    let mei = env.token(Role::Viewer, "mei");
    let li = env.token(Role::Viewer, "li");
    let (mut viewer, _) = a.join(&sale, &mei, None).await;
    let (mut talker, _) = b.join(&sale, &li, None).await;
    talker.chat("before").await;
    assert_eq!(
        viewer.chats_until(1).await.last().unwrap()["text"],
        "before"
    );

    let key = format!("{}:{{{sale}}}:sale", env.prefix().unwrap());
    // Off the runtime: the nodes keep running meanwhile.
    let moved = tokio::task::spawn_blocking(move || {
        std::process::Command::new("scripts/redis-cluster")
            .args(["migrate", &base.to_string(), &key])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(moved.status.success(), "{moved:?}");

    // The re-subscription takes a moment; a message sent before it lands is
    // in the history the room reads after the gap, so it still arrives.
    talker.chat("after").await;
    let chats = viewer.chats_until(2).await;
    assert_eq!(chats.last().unwrap()["text"], "after");
    // Buys go on where the sale lives now, and the viewer sees the stock.
    b.buy(&li, &sale, "k1", "FZX", 3).await.expect(201);
    loop {
        if viewer.next_of("stock").await["remaining"] == 47 {
            break;
        }
    }
}
