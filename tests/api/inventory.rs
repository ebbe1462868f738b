//! The inventory's batch confirmation, the same on Redis and in memory:
//! committed orders of one SKU move from reserved to sold in one step, each
//! key gets its final answer, and a second pass changes nothing.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use crate::helpers::TestEnv;
use lychee_live::catalog::{ProductStatus, SaleStatus};
use lychee_live::inventory::memory::MemoryInventory;
use lychee_live::inventory::redis::RedisInventory;
use lychee_live::inventory::{
    Admission, AdmitRequest, Confirmation, Inventory, ProductSeed, SaleSeed, Stored,
};
use lychee_live::orders::{Order, OrderStatus};

fn request(sale_id: Uuid, user: &str, qty: i64, key: &str) -> AdmitRequest {
    let now = Utc::now();
    AdmitRequest {
        remedy: false,
        sale_id,
        user_id: user.into(),
        key: key.into(),
        fingerprint: format!("A:{qty}"),
        order: Order {
            id: Uuid::now_v7(),
            sale_id,
            sku: "A".into(),
            qty,
            unit_price_cents: 1000,
            total_cents: 1000 * qty,
            currency: "CNY".into(),
            user_id: user.into(),
            status: OrderStatus::Reserved,
            created_at: now,
            expires_at: None,
            completed_at: None,
            payment_ref: None,
            payment: None,
            ship_to: None,
            fulfilment: Default::default(),
            shipment: None,
            claims: Vec::new(),
        },
        // Instant checkout: the key is pending until confirmed.
        final_answer: None,
        deadline_ms: now.timestamp_millis() + 60_000,
    }
}

fn confirmation(r: &AdmitRequest) -> Confirmation {
    Confirmation {
        order_id: r.order.id,
        user_id: r.user_id.clone(),
        key: r.key.clone(),
        completed_at_ms: r.order.created_at.timestamp_millis(),
        fingerprint: r.fingerprint.clone(),
        answer: Stored::Order(format!("{{\"id\":\"{}\"}}", r.order.id)),
    }
}

/// A live sale of one product `A` with `stock` units and these earlier buyers.
async fn live_sale(inv: &dyn Inventory, stock: i64, holdings: Vec<(String, String, i64)>) -> Uuid {
    let sale_id = Uuid::now_v7();
    inv.install(&SaleSeed {
        sale_id,
        epoch: 1,
        status: SaleStatus::Live,
        products: vec![ProductSeed {
            sku: "A".into(),
            stock,
            sold: 0,
            per_user_limit: 5,
            status: ProductStatus::OnSale,
        }],
        holdings,
        chat_seq_floor: 0,
    })
    .await
    .unwrap();
    sale_id
}

async fn batch_confirmation(inv: Arc<dyn Inventory>) {
    let sale_id = live_sale(&*inv, 10, Vec::new()).await;
    let reqs = [
        request(sale_id, "mei", 2, "k1"),
        request(sale_id, "li", 1, "k2"),
        request(sale_id, "mei", 3, "k3"),
    ];
    for r in &reqs {
        assert!(matches!(
            inv.admit(r).await.unwrap(),
            Admission::Admitted { .. }
        ));
    }
    assert_eq!(inv.held_count(sale_id).await.unwrap(), 3);
    let mut batch: Vec<Confirmation> = reqs.iter().map(confirmation).collect();
    // An order no node knows is skipped, not an error.
    let mut unknown = confirmation(&request(sale_id, "wu", 1, "k9"));
    unknown.order_id = Uuid::now_v7();
    batch.push(unknown);

    let level = inv
        .confirm_batch(sale_id, "A", &batch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (level.stock, level.remaining, level.reserved, level.sold),
        (10, 4, 0, 6)
    );
    assert_eq!(
        inv.held_count(sale_id).await.unwrap(),
        0,
        "no deadlines left"
    );
    for r in &reqs {
        let live = inv.order(sale_id, r.order.id).await.unwrap().unwrap();
        assert_eq!(live.order.status, OrderStatus::Completed);
        let (fp, stored) = inv
            .stored_answer(sale_id, &r.user_id, &r.key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fp, r.fingerprint);
        assert_eq!(stored, confirmation(r).answer);
    }
    assert_eq!(inv.stored_answer(sale_id, "wu", "k9").await.unwrap(), None);

    // Again (a retry after a lost reply): nothing counted twice.
    let again = inv
        .confirm_batch(sale_id, "A", &batch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.remaining, again.reserved, again.sold), (4, 0, 6));
    assert_eq!(inv.confirm_batch(sale_id, "A", &[]).await.unwrap(), None);
}

#[tokio::test]
async fn a_batch_is_confirmed_in_one_step_on_redis() {
    let env = TestEnv::production().await;
    let conn = crate::helpers::kv().await;
    batch_confirmation(Arc::new(RedisInventory::new(conn, env.prefix().unwrap()))).await;
}

#[tokio::test]
async fn a_batch_is_confirmed_in_one_step_in_memory() {
    batch_confirmation(Arc::new(MemoryInventory::new())).await;
}

/// Holders are read in pages: a hash past one page (and past Redis's
/// compact encoding) still yields every holder.
#[tokio::test]
async fn every_holder_is_found_in_a_big_sale() {
    let env = TestEnv::production().await;
    let conn = crate::helpers::kv().await;
    let inv = RedisInventory::new(conn, env.prefix().unwrap());
    // Some bought before a rebuild, as PostgreSQL remembers them.
    let old = (0..2500).map(|i| ("A".to_owned(), format!("old-{i}"), 1));
    let sale_id = live_sale(&inv, 5000, old.collect()).await;
    for i in 0..500 {
        let r = request(sale_id, &format!("new-{i}"), 1, "k");
        assert!(matches!(
            inv.admit(&r).await.unwrap(),
            Admission::Admitted { .. }
        ));
    }
    let mut holders = inv.holders(sale_id, "A").await.unwrap();
    holders.sort();
    holders.dedup();
    assert_eq!(holders.len(), 3000);
    assert!(holders.iter().any(|h| h == "new-499"));
    assert!(holders.iter().any(|h| h == "old-0"));
}

/// A node that committed an instant order and lost its confirmation (died,
/// or the batch's call failed) leaves it reserved in Redis. The reaper finds
/// it in PostgreSQL at the end of its lease and confirms it: the box stays
/// sold, never back on sale.
#[tokio::test]
async fn a_committed_order_whose_confirmation_was_lost_is_confirmed_by_the_reaper() {
    use lychee_live::identity::Role;
    use lychee_live::orders::postgres::PgOrders;
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
    let store = PgOrders::new(env.pg().await);
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
