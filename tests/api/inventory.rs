//! The inventory within a running node (the reaper, PostgreSQL's word).
//! What the inventory answers alone, on every backend, is in
//! `conformance::inventory`.

use chrono::Utc;
use uuid::Uuid;

use crate::conformance::inventory::order_at;
use crate::helpers::TestEnv;
use lychee_live::inventory::redis::RedisInventory;
use lychee_live::inventory::{Admission, AdmitRequest, Inventory};
use lychee_live::orders::OrderStatus;

/// An instant order's admission: the key is pending until confirmed.
fn request(sale_id: Uuid, user: &str, qty: i64, key: &str) -> AdmitRequest {
    let now = Utc::now();
    AdmitRequest {
        remedy: false,
        sale_id,
        user_id: user.into(),
        key: key.into(),
        fingerprint: format!("A:{qty}"),
        order: order_at(sale_id, "A", user, qty, now, None),
        final_answer: None,
        deadline_ms: now.timestamp_millis() + 60_000,
    }
}

/// A node that committed an instant order and lost its confirmation (died,
/// or the batch's call failed) leaves it reserved in Redis. The reaper finds
/// it in PostgreSQL at the end of its lease and confirms it: the box stays
/// sold, never back on sale.
#[tokio::test]
async fn a_committed_order_whose_confirmation_was_lost_is_confirmed_by_the_reaper() {
    use lychee_live::identity::Role;
    use lychee_live::orders::sql::SqlOrders;
    use lychee_live::orders::{Commit, CompletedOrder, OrderPayment, OrderStore};

    let mut env = TestEnv::production().await;
    let app = env.node().await;
    let host = env.token(Role::Host, "alice");
    let sale = app.live_sale(&host, "instant", "FZX", 5, 5).await;
    let sale_id: Uuid = sale.parse().unwrap();
    let conn = crate::helpers::kv().await;
    let inv = RedisInventory::new(conn, env.prefix().unwrap());

    let mut r = request(sale_id, "mei", 1, "lost");
    r.fingerprint = "FZX:1".into();
    r.order.sku = "FZX".into();
    (r.order.unit_price_cents, r.order.total_cents) = (12800, 12800);
    r.order.created_at = env.clock.now();
    // Its commit lease already over.
    r.deadline_ms = env.clock.now().timestamp_millis() - 1000;
    let Admission::Admitted { epoch, .. } = inv.admit(&r).await.unwrap() else {
        panic!("not admitted");
    };
    let mut order = r.order.clone();
    order.status = OrderStatus::Completed;
    order.completed_at = Some(order.created_at);
    order.payment = Some(OrderPayment::cod(order.total_cents));
    let store = SqlOrders::new(env.pg().await);
    let done = store
        .commit(&[CompletedOrder {
            order,
            key: r.key.clone(),
            epoch,
        }])
        .await
        .unwrap();
    assert_eq!(done, vec![Commit::Committed]);

    let s = app
        .wait_for_sale(&sale, 5, |s| {
            crate::helpers::product(s, "FZX")["reserved"] == 0
        })
        .await;
    let p = crate::helpers::product(&s, "FZX");
    assert_eq!(
        (p["sold"].clone(), p["remaining"].clone()),
        (1.into(), 4.into())
    );
    let live = inv.order(sale_id, r.order.id).await.unwrap().unwrap();
    assert_eq!(live.order.status, OrderStatus::Completed);
}
