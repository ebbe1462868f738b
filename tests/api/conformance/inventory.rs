//! `Inventory`: the Redis scripts and the in-memory mutexes give the same
//! answers. Epochs are microsecond times, as the rebuilder makes them: a
//! reinstall's epoch is later than the first.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::{Keep, HOSTILE_USERS};
use crate::helpers::TestEnv;
use lychee_live::catalog::{ProductStatus, SaleStatus};
use lychee_live::fulfilment::address::Address;
use lychee_live::inventory::memory::MemoryInventory;
use lychee_live::inventory::redis::{RedisInventory, KEYS_PER_USER};
use lychee_live::inventory::{
    Admission, AdmitRequest, Confirmation, Inventory, PayStart, ProductSeed, Rejection,
    ReleaseFrom, Released, SaleSeed, ShipToSet, StockLevel, Stored,
};
use lychee_live::orders::{Order, OrderStatus};

const NOW: i64 = 1_700_000_000_000;
const TTL: i64 = 600_000;
/// The first install's epoch (µs); a reinstall a second later has `EPOCH + 1_000_000`.
const EPOCH: i64 = NOW * 1000;

async fn memory() -> (Arc<dyn Inventory>, Keep) {
    (Arc::new(MemoryInventory::new()), Keep::memory())
}

async fn redis() -> (Arc<dyn Inventory>, Keep) {
    let env = TestEnv::production().await;
    let inv = RedisInventory::new(crate::helpers::kv().await, env.prefix().unwrap());
    (Arc::new(inv), Keep::redis(env, None))
}

conformance_cases! {
    admit_decrements_and_replays: [memory, redis],
    missing_sale_is_missing: [memory, redis],
    an_unknown_sale_has_nothing: [memory, redis],
    rejections_in_order_and_replayed: [memory, redis],
    a_remedy_checks_stock_alone: [memory, redis],
    confirm_moves_reserved_to_sold: [memory, redis],
    batch_confirmation: [memory, redis],
    release_returns_stock_frees_limit_and_forgets_pending: [memory, redis],
    a_refused_commit_moves_its_units_to_sold: [memory, redis],
    begin_pay_expired_started_and_aborted: [memory, redis],
    ship_to_is_attached_only_while_reserved: [memory, redis],
    claim_due_leases: [memory, redis],
    install_drops_reservations_and_keeps_holdings: [memory, redis],
    install_forgets_the_reservations_it_drops: [memory, redis],
    ver_strictly_increases: [memory, redis],
    rebuild_lock_admits_one_rebuilder_at_a_time: [memory, redis],
    locate_and_user_orders_newest_first: [memory, redis],
    answers_are_capped_per_user_and_settled_orders_kept: [memory, redis],
    hostile_user_ids_and_keys_stay_apart: [memory, redis],
    every_holder_is_found_in_a_big_sale: [memory, redis],
}

fn product(sku: &str, stock: i64, sold: i64, limit: i32, status: ProductStatus) -> ProductSeed {
    ProductSeed {
        sku: sku.to_owned(),
        stock,
        sold,
        per_user_limit: limit,
        status,
    }
}

fn seed(sale_id: Uuid, status: SaleStatus, products: Vec<ProductSeed>) -> SaleSeed {
    SaleSeed {
        chat_seq_floor: 0,
        epoch: EPOCH,
        sale_id,
        status,
        products,
        holdings: Vec::new(),
    }
}

async fn live_sale(inv: &dyn Inventory, products: Vec<ProductSeed>) -> Uuid {
    let sale_id = Uuid::new_v4();
    inv.install(&seed(sale_id, SaleStatus::Live, products))
        .await
        .unwrap();
    sale_id
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap()
}

fn order(sale_id: Uuid, sku: &str, user: &str, qty: i64) -> Order {
    order_at(sale_id, sku, user, qty, at(NOW), Some(at(NOW + TTL)))
}

/// A reserved order of `qty` boxes at 5 CNY, created and expiring when said.
pub fn order_at(
    sale_id: Uuid,
    sku: &str,
    user: &str,
    qty: i64,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
) -> Order {
    Order {
        id: Uuid::new_v4(),
        sale_id,
        sku: sku.to_owned(),
        qty,
        unit_price_cents: 500,
        total_cents: 500 * qty,
        currency: "CNY".to_owned(),
        user_id: user.to_owned(),
        status: OrderStatus::Reserved,
        created_at,
        expires_at,
        completed_at: None,
        payment_ref: None,
        payment: None,
        ship_to: None,
        fulfilment: Default::default(),
        shipment: None,
        claims: Vec::new(),
    }
}

/// A reservation: its final answer is the order itself, as the contract
/// says (`AdmitRequest::final_answer`).
fn request(sale_id: Uuid, sku: &str, user: &str, qty: i64, key: &str) -> AdmitRequest {
    let order = order(sale_id, sku, user, qty);
    AdmitRequest {
        remedy: false,
        sale_id,
        user_id: user.to_owned(),
        key: key.to_owned(),
        fingerprint: format!("{sku}:{qty}"),
        final_answer: Some(serde_json::to_string(&order).unwrap()),
        order,
        deadline_ms: NOW + TTL,
    }
}

/// An instant order: the key stays pending until the order is confirmed.
fn instant(sale_id: Uuid, sku: &str, user: &str, qty: i64, key: &str) -> AdmitRequest {
    let mut r = request(sale_id, sku, user, qty, key);
    r.order.expires_at = None;
    r.final_answer = None;
    r
}

/// Moves the order's creation; a reservation's answer (the order) with it.
fn created_after(mut r: AdmitRequest, ms: i64) -> AdmitRequest {
    r.order.created_at += TimeDelta::milliseconds(ms);
    if r.final_answer.is_some() {
        r.final_answer = Some(serde_json::to_string(&r.order).unwrap());
    }
    r
}

fn answer_of(r: &AdmitRequest) -> Stored {
    Stored::Order(r.final_answer.clone().expect("a reservation"))
}

fn admitted(a: Admission) -> StockLevel {
    match a {
        Admission::Admitted { level, .. } => level,
        other => panic!("expected an admission, got {other:?}"),
    }
}

async fn level(inv: &dyn Inventory, sale_id: Uuid, sku: &str) -> StockLevel {
    inv.levels(sale_id, &[sku.to_owned()]).await.unwrap()[0]
        .clone()
        .unwrap()
}

fn counts(l: &StockLevel) -> (i64, i64, i64, i64) {
    (l.stock, l.remaining, l.reserved, l.sold)
}

async fn holders(inv: &dyn Inventory, sale_id: Uuid, sku: &str) -> Vec<String> {
    // Unordered by contract: a Redis hash's keys.
    let mut h = inv.holders(sale_id, sku).await.unwrap();
    h.sort();
    h
}

fn address() -> Address {
    Address {
        id: Uuid::new_v4(),
        name: "李梅 \"Mei\"".to_owned(),
        phone: "13800138000".to_owned(),
        province: "440000".to_owned(),
        city: "广州市".to_owned(),
        district: Some("天河区".to_owned()),
        line: "体育西路 1 号 {2}:3".to_owned(),
        postcode: None,
        is_default: true,
    }
}

async fn admit_decrements_and_replays(inv: Arc<dyn Inventory>) {
    let sale = live_sale(&*inv, vec![product("A", 5, 0, 3, ProductStatus::OnSale)]).await;
    assert_eq!(inv.epoch(sale).await.unwrap(), Some(EPOCH));
    let req = request(sale, "A", "u1", 2, "k1");
    let Admission::Admitted { level: lvl, epoch } = inv.admit(&req).await.unwrap() else {
        panic!("not admitted");
    };
    assert_eq!(epoch, EPOCH);
    assert_eq!(counts(&lvl), (5, 3, 2, 0));
    assert_eq!(lvl.status, ProductStatus::OnSale);
    assert_eq!(lvl.sku, "A");

    let mut again = request(sale, "A", "u1", 2, "k1");
    again.order.id = Uuid::new_v4();
    assert_eq!(
        inv.admit(&again).await.unwrap(),
        Admission::Replay(answer_of(&req))
    );
    again.fingerprint = "other body".to_owned();
    assert_eq!(inv.admit(&again).await.unwrap(), Admission::Mismatch);
    // Neither replay nor mismatch touched the counters.
    assert_eq!(level(&*inv, sale, "A").await, lvl);
    assert_eq!(inv.held_count(sale).await.unwrap(), 1);
    assert!(inv.order(sale, again.order.id).await.unwrap().is_none());

    let live = inv.order(sale, req.order.id).await.unwrap().unwrap();
    assert_eq!(live.order, req.order, "the order as admitted");
    assert_eq!(live.key, "k1");
    assert_eq!(live.deadline_ms, Some(NOW + TTL));
    assert_eq!(live.epoch, EPOCH);
    assert_eq!(holders(&*inv, sale, "A").await, ["u1"]);

    let last = admitted(inv.admit(&request(sale, "A", "u2", 3, "k2")).await.unwrap());
    assert_eq!(counts(&last), (5, 0, 5, 0));
    assert_eq!(last.status, ProductStatus::SoldOut);
    assert_eq!(
        inv.admit(&request(sale, "A", "u3", 1, "k3")).await.unwrap(),
        Admission::Rejected(Rejection::SoldOut)
    );
}

async fn missing_sale_is_missing(inv: Arc<dyn Inventory>) {
    let sale = Uuid::new_v4();
    assert!(inv.epoch(sale).await.unwrap().is_none());
    assert_eq!(
        inv.admit(&request(sale, "A", "u1", 1, "k")).await.unwrap(),
        Admission::Missing { epoch: None }
    );
    // A ban alone does not make the sale exist.
    inv.ban(sale, "u1").await.unwrap();
    assert!(inv.epoch(sale).await.unwrap().is_none());
    assert_eq!(
        inv.admit(&request(sale, "A", "u1", 1, "k")).await.unwrap(),
        Admission::Missing { epoch: None }
    );
    // Nor is "missing" a final answer.
    assert_eq!(inv.stored_answer(sale, "u1", "k").await.unwrap(), None);
}

async fn an_unknown_sale_has_nothing(inv: Arc<dyn Inventory>) {
    let sale = Uuid::new_v4();
    let order_id = Uuid::new_v4();
    let skus = ["A".to_owned(), "{A}:b".to_owned()];
    assert_eq!(inv.levels(sale, &skus).await.unwrap(), [None, None]);
    assert!(inv.levels(sale, &[]).await.unwrap().is_empty());
    assert!(inv.holders(sale, "A").await.unwrap().is_empty());
    assert_eq!(inv.held_count(sale).await.unwrap(), 0);
    assert!(inv.claim_due(sale, NOW, 1, 10).await.unwrap().is_empty());
    assert!(inv.order(sale, order_id).await.unwrap().is_none());
    assert_eq!(inv.locate(order_id).await.unwrap(), None);
    assert!(inv.user_orders("nobody").await.unwrap().is_empty());
    assert_eq!(inv.stored_answer(sale, "u1", "k").await.unwrap(), None);
    assert_eq!(
        inv.begin_pay(sale, order_id, NOW, 1).await.unwrap(),
        PayStart::NotFound
    );
    assert_eq!(
        inv.set_ship_to(sale, order_id, &address()).await.unwrap(),
        ShipToSet::NotFound
    );
    inv.abort_pay(sale, order_id).await.unwrap();
    assert_eq!(
        inv.confirm(sale, order_id, "A", NOW, None, None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(inv.confirm_batch(sale, "A", &[]).await.unwrap(), None);
    assert_eq!(
        inv.release(
            sale,
            order_id,
            OrderStatus::Cancelled,
            ReleaseFrom::AnyHolding
        )
        .await
        .unwrap(),
        Released::NotFound
    );
    assert_eq!(
        inv.set_product_status(sale, "A", ProductStatus::OnSale)
            .await
            .unwrap(),
        None
    );
    assert_eq!(inv.restock(sale, "A", 1).await.unwrap(), None);
    inv.unban(sale, "u1").await.unwrap();
    assert!(
        inv.epoch(sale).await.unwrap().is_none(),
        "nothing made it exist"
    );
    inv.ping().await.unwrap();
}

async fn rejections_in_order_and_replayed(inv: Arc<dyn Inventory>) {
    let sale = Uuid::new_v4();
    let mut s = seed(
        sale,
        SaleStatus::Scheduled,
        vec![
            product("A", 3, 0, 2, ProductStatus::OnSale),
            product("S", 3, 0, 2, ProductStatus::Scheduled),
        ],
    );
    s.holdings = vec![("A".to_owned(), "holder".to_owned(), 1)];
    inv.install(&s).await.unwrap();
    let installed = level(&*inv, sale, "A").await;
    assert_eq!(counts(&installed), (3, 3, 0, 0));
    inv.ban(sale, "bad").await.unwrap();

    let rejected = |r: Rejection| Admission::Rejected(r);
    // Banned comes before the sale's status.
    assert_eq!(
        inv.admit(&request(sale, "A", "bad", 1, "b")).await.unwrap(),
        rejected(Rejection::Banned)
    );
    assert_eq!(
        inv.admit(&request(sale, "A", "u1", 1, "early"))
            .await
            .unwrap(),
        rejected(Rejection::SaleNotLive)
    );

    assert!(inv
        .set_sale_status(sale, SaleStatus::Live, &[])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        inv.admit(&request(sale, "A", "bad", 1, "b2"))
            .await
            .unwrap(),
        rejected(Rejection::Banned)
    );
    // A SKU without live state (the caller knows it from the catalog).
    assert_eq!(
        inv.admit(&request(sale, "Z", "u1", 1, "z")).await.unwrap(),
        Admission::Missing { epoch: Some(EPOCH) }
    );
    assert_eq!(inv.stored_answer(sale, "u1", "z").await.unwrap(), None);
    assert_eq!(
        inv.admit(&request(sale, "S", "u1", 1, "s")).await.unwrap(),
        rejected(Rejection::NotOnSale)
    );
    assert_eq!(
        inv.admit(&request(sale, "A", "u1", 4, "many"))
            .await
            .unwrap(),
        rejected(Rejection::SoldOut)
    );
    assert_eq!(
        inv.admit(&request(sale, "A", "holder", 2, "lim"))
            .await
            .unwrap(),
        rejected(Rejection::LimitExceeded {
            bought: 1,
            limit: 2
        })
    );

    // The sale is live now, yet the key keeps its first answer.
    let mut retry = request(sale, "A", "u1", 1, "early");
    retry.order.id = Uuid::new_v4();
    assert_eq!(
        inv.admit(&retry).await.unwrap(),
        Admission::Replay(Stored::Rejected(Rejection::SaleNotLive))
    );
    assert_eq!(
        inv.stored_answer(sale, "holder", "lim").await.unwrap(),
        Some((
            "A:2".to_owned(),
            Stored::Rejected(Rejection::LimitExceeded {
                bought: 1,
                limit: 2
            })
        ))
    );
    // Unbanned, the user's next key is admitted; its refused key stays refused.
    inv.unban(sale, "bad").await.unwrap();
    assert_eq!(
        inv.admit(&request(sale, "A", "bad", 1, "b")).await.unwrap(),
        Admission::Replay(Stored::Rejected(Rejection::Banned))
    );
    let lvl = admitted(
        inv.admit(&request(sale, "A", "bad", 1, "b3"))
            .await
            .unwrap(),
    );
    assert_eq!(counts(&lvl), (3, 2, 1, 0));
    assert!(lvl.ver > installed.ver);
    assert_eq!(inv.held_count(sale).await.unwrap(), 1);
}

async fn a_remedy_checks_stock_alone(inv: Arc<dyn Inventory>) {
    let sale = Uuid::new_v4();
    let mut s = seed(
        sale,
        SaleStatus::Live,
        vec![product("A", 3, 1, 1, ProductStatus::OnSale)],
    );
    s.holdings = vec![("A".to_owned(), "mei".to_owned(), 1)];
    inv.install(&s).await.unwrap();
    inv.ban(sale, "mei").await.unwrap();
    let closed = inv
        .set_sale_status(sale, SaleStatus::Ended, &["A".to_owned()])
        .await
        .unwrap();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].status, ProductStatus::Closed);

    // Banned, over the limit, the sale ended and the product closed: a
    // reship is still admitted while there is stock.
    let mut reship = request(sale, "A", "mei", 2, "reship");
    reship.remedy = true;
    let lvl = admitted(inv.admit(&reship).await.unwrap());
    assert_eq!(counts(&lvl), (3, 0, 2, 1));
    assert_eq!(lvl.status, ProductStatus::Closed);
    let mut more = request(sale, "A", "mei", 1, "reship-2");
    more.remedy = true;
    assert_eq!(
        inv.admit(&more).await.unwrap(),
        Admission::Rejected(Rejection::SoldOut)
    );
    // The same buyer's ordinary attempt is refused as ever.
    assert_eq!(
        inv.admit(&request(sale, "A", "mei", 1, "buy"))
            .await
            .unwrap(),
        Admission::Rejected(Rejection::Banned)
    );
}

async fn confirm_moves_reserved_to_sold(inv: Arc<dyn Inventory>) {
    let sale = live_sale(&*inv, vec![product("A", 5, 0, 5, ProductStatus::OnSale)]).await;
    let req = request(sale, "A", "u1", 2, "k1");
    let before = admitted(inv.admit(&req).await.unwrap());

    let done_at = NOW + 1_000;
    let lvl = inv
        .confirm(sale, req.order.id, "A", done_at, Some("pay_1"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counts(&lvl), (5, 3, 0, 2));
    assert!(lvl.ver > before.ver);
    assert_eq!(inv.held_count(sale).await.unwrap(), 0);
    assert_eq!(holders(&*inv, sale, "A").await, ["u1"], "still holds it");

    let live = inv.order(sale, req.order.id).await.unwrap().unwrap();
    assert_eq!(live.order.status, OrderStatus::Completed);
    assert_eq!(live.order.completed_at, Some(at(done_at)));
    assert_eq!(live.order.payment_ref.as_deref(), Some("pay_1"));
    assert_eq!(live.deadline_ms, None);
    // No answer given: the reservation's stays.
    assert_eq!(
        inv.stored_answer(sale, "u1", "k1").await.unwrap(),
        Some(("A:2".to_owned(), answer_of(&req)))
    );

    // Idempotent: the same level, nothing counted twice.
    let again = inv
        .confirm(sale, req.order.id, "A", done_at, None, None)
        .await
        .unwrap();
    assert_eq!(again, Some(lvl));
    assert_eq!(
        inv.release(
            sale,
            req.order.id,
            OrderStatus::Cancelled,
            ReleaseFrom::AnyHolding
        )
        .await
        .unwrap(),
        Released::WrongState(OrderStatus::Completed)
    );
    assert_eq!(
        inv.confirm(sale, Uuid::new_v4(), "A", done_at, None, None)
            .await
            .unwrap(),
        None
    );

    // A cancelled order is not confirmed, nor is its key's answer replaced.
    let gone = request(sale, "A", "u2", 1, "k2");
    admitted(inv.admit(&gone).await.unwrap());
    inv.release(
        sale,
        gone.order.id,
        OrderStatus::Cancelled,
        ReleaseFrom::Reserved,
    )
    .await
    .unwrap();
    let late = Stored::Order("late".to_owned());
    assert_eq!(
        inv.confirm(
            sale,
            gone.order.id,
            "A",
            done_at,
            None,
            Some(("A:1", &late))
        )
        .await
        .unwrap(),
        None
    );
    assert_eq!(
        inv.order(sale, gone.order.id)
            .await
            .unwrap()
            .unwrap()
            .order
            .status,
        OrderStatus::Cancelled
    );
    assert_eq!(
        inv.stored_answer(sale, "u2", "k2").await.unwrap(),
        Some(("A:1".to_owned(), answer_of(&gone)))
    );
    assert_eq!(counts(&level(&*inv, sale, "A").await), (5, 3, 0, 2));
}

fn confirmation(r: &AdmitRequest) -> Confirmation {
    Confirmation {
        order_id: r.order.id,
        user_id: r.user_id.clone(),
        key: r.key.clone(),
        completed_at_ms: NOW + 10,
        fingerprint: r.fingerprint.clone(),
        answer: Stored::Order(format!("{{\"id\":\"{}\"}}", r.order.id)),
    }
}

/// Committed instant orders of one SKU move from reserved to sold in one
/// step, each key gets its final answer, and a second pass changes nothing.
async fn batch_confirmation(inv: Arc<dyn Inventory>) {
    let sale = live_sale(&*inv, vec![product("A", 10, 0, 5, ProductStatus::OnSale)]).await;
    let reqs = [
        instant(sale, "A", "mei", 2, "k1"),
        instant(sale, "A", "li", 1, "k2"),
        instant(sale, "A", "mei", 3, "k3"),
    ];
    for r in &reqs {
        admitted(inv.admit(r).await.unwrap());
        assert_eq!(
            inv.stored_answer(sale, &r.user_id, &r.key).await.unwrap(),
            Some((r.fingerprint.clone(), Stored::Pending(r.order.id)))
        );
    }
    assert_eq!(inv.held_count(sale).await.unwrap(), 3);
    let mut batch: Vec<Confirmation> = reqs.iter().map(confirmation).collect();
    // An order no node knows is skipped, not an error.
    let mut unknown = confirmation(&instant(sale, "A", "wu", 1, "k9"));
    unknown.order_id = Uuid::new_v4();
    batch.push(unknown);

    let lvl = inv.confirm_batch(sale, "A", &batch).await.unwrap().unwrap();
    assert_eq!(counts(&lvl), (10, 4, 0, 6));
    assert_eq!(inv.held_count(sale).await.unwrap(), 0, "no deadlines left");
    for r in &reqs {
        let live = inv.order(sale, r.order.id).await.unwrap().unwrap();
        assert_eq!(live.order.status, OrderStatus::Completed);
        assert_eq!(live.order.completed_at, Some(at(NOW + 10)));
        assert_eq!(
            inv.stored_answer(sale, &r.user_id, &r.key).await.unwrap(),
            Some((r.fingerprint.clone(), confirmation(r).answer))
        );
    }
    assert_eq!(inv.stored_answer(sale, "wu", "k9").await.unwrap(), None);

    // Again (a retry after a lost reply): nothing counted twice.
    let again = inv.confirm_batch(sale, "A", &batch).await.unwrap().unwrap();
    assert_eq!(counts(&again), (10, 4, 0, 6));
    assert_eq!(inv.confirm_batch(sale, "A", &[]).await.unwrap(), None);
}

async fn release_returns_stock_frees_limit_and_forgets_pending(inv: Arc<dyn Inventory>) {
    let sale = live_sale(&*inv, vec![product("A", 5, 0, 1, ProductStatus::OnSale)]).await;
    let req = instant(sale, "A", "u1", 1, "k1");
    admitted(inv.admit(&req).await.unwrap());
    assert_eq!(
        inv.stored_answer(sale, "u1", "k1").await.unwrap(),
        Some(("A:1".to_owned(), Stored::Pending(req.order.id)))
    );
    assert_eq!(holders(&*inv, sale, "A").await, ["u1"]);
    assert_eq!(
        inv.admit(&request(sale, "A", "u1", 1, "k2")).await.unwrap(),
        Admission::Rejected(Rejection::LimitExceeded {
            bought: 1,
            limit: 1
        })
    );

    let released = inv
        .release(
            sale,
            req.order.id,
            OrderStatus::Expired,
            ReleaseFrom::AnyHolding,
        )
        .await
        .unwrap();
    let Released::Done(lvl) = released else {
        panic!("expected a release, got {released:?}");
    };
    assert_eq!(counts(&lvl), (5, 5, 0, 0));
    assert!(inv.holders(sale, "A").await.unwrap().is_empty());
    assert_eq!(inv.stored_answer(sale, "u1", "k1").await.unwrap(), None);
    assert_eq!(inv.held_count(sale).await.unwrap(), 0);
    let live = inv.order(sale, req.order.id).await.unwrap().unwrap();
    assert_eq!(live.order.status, OrderStatus::Expired);
    assert_eq!(live.deadline_ms, None);
    assert_eq!(
        inv.release(
            sale,
            req.order.id,
            OrderStatus::Cancelled,
            ReleaseFrom::Reserved
        )
        .await
        .unwrap(),
        Released::WrongState(OrderStatus::Expired)
    );

    // The same key is a fresh attempt, and the limit is free again.
    let retry = instant(sale, "A", "u1", 1, "k1");
    admitted(inv.admit(&retry).await.unwrap());

    // A final answer is kept: the buyer sees the same order on retry.
    let other = request(sale, "A", "u2", 1, "k3");
    admitted(inv.admit(&other).await.unwrap());
    inv.release(
        sale,
        other.order.id,
        OrderStatus::Cancelled,
        ReleaseFrom::Reserved,
    )
    .await
    .unwrap();
    assert_eq!(
        inv.stored_answer(sale, "u2", "k3").await.unwrap(),
        Some(("A:1".to_owned(), answer_of(&other)))
    );
    assert_eq!(
        inv.release(
            sale,
            Uuid::new_v4(),
            OrderStatus::Cancelled,
            ReleaseFrom::Reserved
        )
        .await
        .unwrap(),
        Released::NotFound
    );
    assert_eq!(counts(&level(&*inv, sale, "A").await), (5, 4, 1, 0));
}

async fn a_refused_commit_moves_its_units_to_sold(inv: Arc<dyn Inventory>) {
    let sale = live_sale(&*inv, vec![product("A", 5, 0, 5, ProductStatus::OnSale)]).await;
    let req = instant(sale, "A", "u1", 2, "k1");
    admitted(inv.admit(&req).await.unwrap());
    let released = inv
        .release(
            sale,
            req.order.id,
            OrderStatus::Cancelled,
            ReleaseFrom::Refused,
        )
        .await
        .unwrap();
    let Released::Done(lvl) = released else {
        panic!("expected a release, got {released:?}");
    };
    // Sold through orders the counters missed: not back on sale.
    assert_eq!(counts(&lvl), (5, 3, 0, 2));
    assert!(inv.holders(sale, "A").await.unwrap().is_empty());
    assert_eq!(inv.held_count(sale).await.unwrap(), 0);
    assert_eq!(inv.stored_answer(sale, "u1", "k1").await.unwrap(), None);
}

async fn begin_pay_expired_started_and_aborted(inv: Arc<dyn Inventory>) {
    let sale = live_sale(&*inv, vec![product("A", 5, 0, 5, ProductStatus::OnSale)]).await;
    let req = request(sale, "A", "u1", 1, "k1");
    admitted(inv.admit(&req).await.unwrap());
    let id = req.order.id;

    assert_eq!(
        inv.begin_pay(sale, id, NOW + TTL, 5_000).await.unwrap(),
        PayStart::Expired
    );
    assert_eq!(
        inv.begin_pay(sale, id, NOW, 5_000).await.unwrap(),
        PayStart::Started
    );
    let live = inv.order(sale, id).await.unwrap().unwrap();
    assert_eq!(live.order.status, OrderStatus::Reserved);
    assert_eq!(live.deadline_ms, Some(NOW + 5_000));
    assert_eq!(
        inv.begin_pay(sale, id, NOW, 5_000).await.unwrap(),
        PayStart::WrongState(OrderStatus::Reserved)
    );
    assert_eq!(
        inv.release(sale, id, OrderStatus::Cancelled, ReleaseFrom::Reserved)
            .await
            .unwrap(),
        Released::WrongState(OrderStatus::Reserved)
    );

    inv.abort_pay(sale, id).await.unwrap();
    let live = inv.order(sale, id).await.unwrap().unwrap();
    assert_eq!(live.deadline_ms, Some(NOW + TTL));
    assert_eq!(inv.held_count(sale).await.unwrap(), 1);
    // Aborting what is not being paid changes nothing.
    inv.abort_pay(sale, id).await.unwrap();
    assert_eq!(
        inv.order(sale, id).await.unwrap().unwrap().deadline_ms,
        Some(NOW + TTL)
    );

    assert_eq!(
        inv.begin_pay(sale, id, NOW, 5_000).await.unwrap(),
        PayStart::Started
    );
    inv.confirm(sale, id, "A", NOW + 10, None, None)
        .await
        .unwrap();
    assert_eq!(
        inv.begin_pay(sale, id, NOW, 5_000).await.unwrap(),
        PayStart::AlreadyCompleted
    );
    assert_eq!(
        inv.begin_pay(sale, Uuid::new_v4(), NOW, 5_000)
            .await
            .unwrap(),
        PayStart::NotFound
    );

    let cancelled = request(sale, "A", "u1", 1, "k2");
    admitted(inv.admit(&cancelled).await.unwrap());
    inv.release(
        sale,
        cancelled.order.id,
        OrderStatus::Cancelled,
        ReleaseFrom::Reserved,
    )
    .await
    .unwrap();
    assert_eq!(
        inv.begin_pay(sale, cancelled.order.id, NOW, 5_000)
            .await
            .unwrap(),
        PayStart::WrongState(OrderStatus::Cancelled)
    );

    // A paying order the reaper took back (its lease over).
    let reaped = request(sale, "A", "u1", 1, "k3");
    admitted(inv.admit(&reaped).await.unwrap());
    inv.begin_pay(sale, reaped.order.id, NOW, 5_000)
        .await
        .unwrap();
    assert!(matches!(
        inv.release(
            sale,
            reaped.order.id,
            OrderStatus::Expired,
            ReleaseFrom::AnyHolding
        )
        .await
        .unwrap(),
        Released::Done(_)
    ));
    // `WrongState` is documented for an expired order (memory's answer);
    // Redis answers `Expired`, as for a passed deadline. The buy path
    // answers both alike (`Paid::Gone(Expired)`).
    let pay = inv
        .begin_pay(sale, reaped.order.id, NOW, 5_000)
        .await
        .unwrap();
    assert!(
        matches!(
            pay,
            PayStart::WrongState(OrderStatus::Expired) | PayStart::Expired
        ),
        "{pay:?}"
    );
}

async fn ship_to_is_attached_only_while_reserved(inv: Arc<dyn Inventory>) {
    let sale = live_sale(&*inv, vec![product("A", 5, 0, 5, ProductStatus::OnSale)]).await;
    let req = request(sale, "A", "u1", 1, "k1");
    admitted(inv.admit(&req).await.unwrap());
    let id = req.order.id;
    let first = address();
    assert_eq!(
        inv.set_ship_to(sale, id, &first).await.unwrap(),
        ShipToSet::Done
    );
    let mut second = address();
    second.line = "另一个地址".to_owned();
    assert_eq!(
        inv.set_ship_to(sale, id, &second).await.unwrap(),
        ShipToSet::Done,
        "replaced while reserved"
    );
    let live = inv.order(sale, id).await.unwrap().unwrap();
    assert!(
        live.order.ship_to == Some(second.clone()),
        "the last address"
    );

    // Being paid: the payment commits the order as it was.
    inv.begin_pay(sale, id, NOW, 5_000).await.unwrap();
    assert_eq!(
        inv.set_ship_to(sale, id, &first).await.unwrap(),
        ShipToSet::WrongState(OrderStatus::Reserved)
    );
    inv.abort_pay(sale, id).await.unwrap();
    inv.confirm(sale, id, "A", NOW + 1, Some("pay"), None)
        .await
        .unwrap();
    assert_eq!(
        inv.set_ship_to(sale, id, &first).await.unwrap(),
        ShipToSet::WrongState(OrderStatus::Completed)
    );
    let live = inv.order(sale, id).await.unwrap().unwrap();
    assert!(
        live.order.ship_to == Some(second),
        "kept through completion"
    );

    let gone = request(sale, "A", "u2", 1, "k2");
    admitted(inv.admit(&gone).await.unwrap());
    inv.release(
        sale,
        gone.order.id,
        OrderStatus::Expired,
        ReleaseFrom::AnyHolding,
    )
    .await
    .unwrap();
    assert_eq!(
        inv.set_ship_to(sale, gone.order.id, &first).await.unwrap(),
        ShipToSet::WrongState(OrderStatus::Expired)
    );
    assert_eq!(
        inv.set_ship_to(sale, Uuid::new_v4(), &first).await.unwrap(),
        ShipToSet::NotFound
    );
}

async fn claim_due_leases(inv: Arc<dyn Inventory>) {
    let sale = live_sale(&*inv, vec![product("A", 10, 0, 10, ProductStatus::OnSale)]).await;
    let mut ids = Vec::new();
    for (i, deadline) in [NOW - 2, NOW - 1, NOW, NOW + 1].into_iter().enumerate() {
        let mut req = request(sale, "A", "u1", 1, &format!("k{i}"));
        req.deadline_ms = deadline;
        admitted(inv.admit(&req).await.unwrap());
        ids.push(req.order.id);
    }
    // Redis also lists sales holding nothing (until forgotten): a superset.
    assert!(inv.reap_sales().await.unwrap().contains(&sale));

    let first = inv.claim_due(sale, NOW, 30_000, 2).await.unwrap();
    assert_eq!(first, ids[..2].to_vec(), "earliest deadline first");
    let rest = inv.claim_due(sale, NOW, 30_000, 10).await.unwrap();
    assert_eq!(rest, vec![ids[2]]);
    assert!(inv
        .claim_due(sale, NOW, 30_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        inv.order(sale, ids[0]).await.unwrap().unwrap().deadline_ms,
        Some(NOW + 30_000)
    );
    assert_eq!(inv.held_count(sale).await.unwrap(), 4);

    // Once the lease runs out the reaper may take them again.
    let mut later = inv.claim_due(sale, NOW + 30_000, 30_000, 10).await.unwrap();
    later.sort();
    let mut all = ids.clone();
    all.sort();
    assert_eq!(later, all);

    // Settled and forgotten, the sale is no longer the reaper's.
    for id in &ids {
        inv.release(sale, *id, OrderStatus::Expired, ReleaseFrom::AnyHolding)
            .await
            .unwrap();
    }
    assert_eq!(inv.held_count(sale).await.unwrap(), 0);
    inv.forget_reap_sale(sale).await.unwrap();
    assert!(!inv.reap_sales().await.unwrap().contains(&sale));
}

async fn install_drops_reservations_and_keeps_holdings(inv: Arc<dyn Inventory>) {
    let sale = live_sale(&*inv, vec![product("A", 10, 0, 3, ProductStatus::OnSale)]).await;
    let done = request(sale, "A", "u1", 1, "k1");
    admitted(inv.admit(&done).await.unwrap());
    inv.confirm(sale, done.order.id, "A", NOW, None, None)
        .await
        .unwrap();
    let held = request(sale, "A", "u2", 2, "k2");
    let before = admitted(inv.admit(&held).await.unwrap());
    inv.ban(sale, "bad").await.unwrap();

    let epoch = EPOCH + 1_000_000;
    inv.install(&SaleSeed {
        chat_seq_floor: 0,
        epoch,
        sale_id: sale,
        status: SaleStatus::Live,
        products: vec![product("A", 10, 3, 3, ProductStatus::OnSale)],
        holdings: vec![("A".to_owned(), "u1".to_owned(), 2)],
    })
    .await
    .unwrap();
    assert_eq!(inv.epoch(sale).await.unwrap(), Some(epoch));

    let lvl = level(&*inv, sale, "A").await;
    assert_eq!(counts(&lvl), (10, 7, 0, 3));
    assert!(lvl.ver > before.ver, "{} after {}", lvl.ver, before.ver);
    assert_eq!(inv.held_count(sale).await.unwrap(), 0);
    assert!(inv
        .claim_due(sale, i64::MAX, 1, 10)
        .await
        .unwrap()
        .is_empty());
    let kept = inv.order(sale, done.order.id).await.unwrap().unwrap();
    assert_eq!(kept.order.status, OrderStatus::Completed);
    assert_eq!(holders(&*inv, sale, "A").await, ["u1"]);

    assert_eq!(
        inv.admit(&request(sale, "A", "u1", 2, "k3")).await.unwrap(),
        Admission::Rejected(Rejection::LimitExceeded {
            bought: 2,
            limit: 3
        })
    );
    let Admission::Admitted { epoch: now_in, .. } =
        inv.admit(&request(sale, "A", "u1", 1, "k4")).await.unwrap()
    else {
        panic!("not admitted");
    };
    assert_eq!(now_in, epoch);
    // Bans and answers survive a rebuild.
    assert_eq!(
        inv.admit(&request(sale, "A", "bad", 1, "k5"))
            .await
            .unwrap(),
        Admission::Rejected(Rejection::Banned)
    );
    assert_eq!(
        inv.stored_answer(sale, "u2", "k2").await.unwrap(),
        Some(("A:2".to_owned(), answer_of(&held)))
    );
}

/// "Reservations are dropped" (`Inventory::install`): a reservation held
/// before the install holds nothing after it, and releasing it later gives
/// nothing back a second time. Whether its record is still shown differs
/// by design: Redis keeps another epoch's record so a payment in flight
/// across a rebuild still settles (release moves only its status); one
/// process never rebuilds under a payment and forgets it.
async fn install_forgets_the_reservations_it_drops(inv: Arc<dyn Inventory>) {
    let sale = live_sale(&*inv, vec![product("A", 10, 0, 3, ProductStatus::OnSale)]).await;
    let held = request(sale, "A", "u2", 2, "k2");
    admitted(inv.admit(&held).await.unwrap());
    inv.index_order(&held.order).await.unwrap();
    let mut reseed = seed(
        sale,
        SaleStatus::Live,
        vec![product("A", 10, 0, 3, ProductStatus::OnSale)],
    );
    reseed.epoch = EPOCH + 1_000_000;
    inv.install(&reseed).await.unwrap();
    assert_eq!(counts(&level(&*inv, sale, "A").await), (10, 10, 0, 0));
    assert!(inv
        .claim_due(sale, i64::MAX, 1, 10)
        .await
        .unwrap()
        .is_empty());
    if let Some(after) = inv.order(sale, held.order.id).await.unwrap() {
        assert_eq!(
            after.epoch, EPOCH,
            "kept under the epoch it was admitted in"
        );
        assert_eq!(after.deadline_ms, None, "no longer due for expiry");
    }
    let released = inv
        .release(
            sale,
            held.order.id,
            OrderStatus::Cancelled,
            ReleaseFrom::Reserved,
        )
        .await
        .unwrap();
    assert!(
        matches!(released, Released::NotFound | Released::Done(_)),
        "{released:?}"
    );
    assert_eq!(counts(&level(&*inv, sale, "A").await), (10, 10, 0, 0));
    assert_eq!(holders(&*inv, sale, "A").await, Vec::<String>::new());
    // The buyer may buy again, up to the whole limit.
    admitted(inv.admit(&request(sale, "A", "u2", 3, "k3")).await.unwrap());
}

async fn ver_strictly_increases(inv: Arc<dyn Inventory>) {
    // A sale just created (`Rebuilder::create`): live state, no products yet.
    let sale = Uuid::new_v4();
    inv.install(&seed(sale, SaleStatus::Scheduled, Vec::new()))
        .await
        .unwrap();
    let mut seen = vec![
        inv.add_product(sale, &product("A", 5, 0, 5, ProductStatus::Scheduled))
            .await
            .unwrap()
            .ver,
    ];
    inv.set_sale_status(sale, SaleStatus::Live, &[])
        .await
        .unwrap();
    let on = inv
        .set_product_status(sale, "A", ProductStatus::OnSale)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(on.status, ProductStatus::OnSale);
    seen.push(on.ver);
    let restocked = inv.restock(sale, "A", 5).await.unwrap().unwrap();
    assert_eq!(counts(&restocked), (10, 10, 0, 0));
    seen.push(restocked.ver);
    let a = request(sale, "A", "u1", 1, "k1");
    seen.push(admitted(inv.admit(&a).await.unwrap()).ver);
    seen.push(
        inv.confirm(sale, a.order.id, "A", NOW, None, None)
            .await
            .unwrap()
            .unwrap()
            .ver,
    );
    let b = request(sale, "A", "u1", 1, "k2");
    seen.push(admitted(inv.admit(&b).await.unwrap()).ver);
    let Released::Done(rel) = inv
        .release(
            sale,
            b.order.id,
            OrderStatus::Cancelled,
            ReleaseFrom::Reserved,
        )
        .await
        .unwrap()
    else {
        panic!("release failed");
    };
    seen.push(rel.ver);
    let replaced = inv
        .add_product(sale, &product("A", 10, 1, 5, ProductStatus::OnSale))
        .await
        .unwrap();
    assert_eq!(counts(&replaced), (10, 9, 0, 1));
    seen.push(replaced.ver);
    let closed = inv
        .set_sale_status(sale, SaleStatus::Ended, &["A".to_owned()])
        .await
        .unwrap();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].status, ProductStatus::Closed);
    seen.push(closed[0].ver);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(level(&*inv, sale, "A").await, closed[0]);

    assert_eq!(
        inv.set_product_status(sale, "Z", ProductStatus::OnSale)
            .await
            .unwrap(),
        None
    );
    assert_eq!(inv.restock(sale, "Z", 1).await.unwrap(), None);
}

/// One process needs no lock between rebuilders (the sale's mutex orders
/// them), so what holds on every backend is the lock's promise to a
/// rebuilder refused: `rebuilding` says so until the holder lets go, and
/// only the holder's token lets go.
async fn rebuild_lock_admits_one_rebuilder_at_a_time(inv: Arc<dyn Inventory>) {
    let sale = Uuid::new_v4();
    assert!(!inv.rebuilding(sale).await.unwrap());
    assert!(inv.lock_rebuild(sale, "first", 10_000).await.unwrap());
    let busy = inv.rebuilding(sale).await.unwrap();
    let second = inv.lock_rebuild(sale, "second", 10_000).await.unwrap();
    assert_eq!(second, !busy, "refused exactly when rebuilding says so");
    // Another rebuilder's token frees nothing.
    inv.unlock_rebuild(sale, "second").await.unwrap();
    assert_eq!(inv.rebuilding(sale).await.unwrap(), busy);
    assert_eq!(
        inv.lock_rebuild(sale, "third", 10_000).await.unwrap(),
        second
    );

    inv.unlock_rebuild(sale, "first").await.unwrap();
    assert!(!inv.rebuilding(sale).await.unwrap());
    assert!(inv.lock_rebuild(sale, "fourth", 10_000).await.unwrap());
    inv.unlock_rebuild(sale, "fourth").await.unwrap();
    assert!(!inv.rebuilding(sale).await.unwrap());
    // The lock is the sale's alone.
    assert!(inv.lock_rebuild(sale, "fifth", 10_000).await.unwrap());
    assert!(!inv.rebuilding(Uuid::new_v4()).await.unwrap());
    inv.unlock_rebuild(sale, "fifth").await.unwrap();
}

async fn locate_and_user_orders_newest_first(inv: Arc<dyn Inventory>) {
    // Two sales: on a cluster, two slots (most likely two primaries).
    let one = live_sale(&*inv, vec![product("A", 5, 0, 5, ProductStatus::OnSale)]).await;
    let two = live_sale(&*inv, vec![product("B", 5, 0, 5, ProductStatus::OnSale)]).await;
    let mut reqs = Vec::new();
    for (sale, sku, key, after_ms) in [
        (one, "A", "k1", 0),
        (two, "B", "k2", 500),
        (one, "A", "k3", 1_000),
        (two, "B", "k4", 2_000),
    ] {
        let r = created_after(request(sale, sku, "u1", 1, key), after_ms);
        admitted(inv.admit(&r).await.unwrap());
        inv.index_order(&r.order).await.unwrap();
        reqs.push(r);
    }
    // Indexed twice: listed once.
    inv.index_order(&reqs[0].order).await.unwrap();
    let theirs = request(two, "B", "u2", 1, "k1");
    admitted(inv.admit(&theirs).await.unwrap());
    inv.index_order(&theirs.order).await.unwrap();

    for r in &reqs {
        assert_eq!(inv.locate(r.order.id).await.unwrap(), Some(r.sale_id));
    }
    assert_eq!(inv.locate(Uuid::new_v4()).await.unwrap(), None);
    let listed = inv.user_orders("u1").await.unwrap();
    let ids: Vec<Uuid> = listed.iter().map(|o| o.order.id).collect();
    let newest_first: Vec<Uuid> = reqs.iter().rev().map(|r| r.order.id).collect();
    assert_eq!(ids, newest_first);
    for (live, r) in listed.iter().zip(reqs.iter().rev()) {
        assert_eq!(live.order, r.order);
        assert_eq!(live.key, r.key);
        assert_eq!(live.epoch, EPOCH);
    }
    let ids: Vec<Uuid> = inv
        .user_orders("u2")
        .await
        .unwrap()
        .iter()
        .map(|o| o.order.id)
        .collect();
    assert_eq!(ids, [theirs.order.id]);
    assert!(inv.user_orders("nobody").await.unwrap().is_empty());
    assert!(inv.user_orders("").await.unwrap().is_empty());

    // A completed order is listed as completed.
    inv.confirm(one, reqs[2].order.id, "A", NOW + 5, None, None)
        .await
        .unwrap();
    let listed = inv.user_orders("u1").await.unwrap();
    assert_eq!(listed[1].order.status, OrderStatus::Completed);
    inv.ping().await.unwrap();
}

/// The settled records' expiry is time-driven (Redis TTLs, the memory
/// inventory's clock): only the keeping part is here; memory.rs tests the
/// pruning with a faked instant.
async fn answers_are_capped_per_user_and_settled_orders_kept(inv: Arc<dyn Inventory>) {
    let sale = live_sale(&*inv, vec![product("A", 5, 0, 5, ProductStatus::OnSale)]).await;
    // A loop of fresh keys, one a millisecond: each refusal is an answer to keep.
    let tries = KEYS_PER_USER + 50;
    for i in 0..tries {
        let r = created_after(request(sale, "A", "looper", 6, &format!("k{i}")), i as i64);
        assert_eq!(
            inv.admit(&r).await.unwrap(),
            Admission::Rejected(Rejection::SoldOut)
        );
    }
    let mut kept = Vec::new();
    for i in 0..tries {
        if inv
            .stored_answer(sale, "looper", &format!("k{i}"))
            .await
            .unwrap()
            .is_some()
        {
            kept.push(i);
        }
    }
    // The oldest beyond the cap are forgotten.
    assert_eq!(kept, (50..tries).collect::<Vec<_>>());
    // Another user's answers are not counted against the looper's.
    admitted(inv.admit(&request(sale, "A", "u1", 1, "k0")).await.unwrap());
    assert!(inv
        .stored_answer(sale, "looper", &format!("k{}", tries - 1))
        .await
        .unwrap()
        .is_some());

    let paid = request(sale, "A", "u1", 1, "paid");
    admitted(inv.admit(&paid).await.unwrap());
    inv.index_order(&paid.order).await.unwrap();
    inv.confirm(sale, paid.order.id, "A", NOW, None, None)
        .await
        .unwrap();
    let dropped = request(sale, "A", "u1", 1, "dropped");
    admitted(inv.admit(&dropped).await.unwrap());
    inv.index_order(&dropped.order).await.unwrap();
    inv.release(
        sale,
        dropped.order.id,
        OrderStatus::Cancelled,
        ReleaseFrom::Reserved,
    )
    .await
    .unwrap();
    // Settled, both are still shown for a while.
    let cancelled = inv.order(sale, dropped.order.id).await.unwrap().unwrap();
    assert_eq!(cancelled.order.status, OrderStatus::Cancelled);
    assert_eq!(inv.locate(dropped.order.id).await.unwrap(), Some(sale));
    let statuses: Vec<(Uuid, OrderStatus)> = inv
        .user_orders("u1")
        .await
        .unwrap()
        .iter()
        .map(|o| (o.order.id, o.order.status))
        .collect();
    assert_eq!(statuses.len(), 2);
    assert!(statuses.contains(&(paid.order.id, OrderStatus::Completed)));
    assert!(statuses.contains(&(dropped.order.id, OrderStatus::Cancelled)));
}

async fn hostile_user_ids_and_keys_stay_apart(inv: Arc<dyn Inventory>) {
    let sale = live_sale(&*inv, vec![product("A", 20, 0, 1, ProductStatus::OnSale)]).await;
    let mut reqs = Vec::new();
    for user in HOSTILE_USERS {
        let r = request(sale, "A", user, 1, "k:{1}");
        admitted(inv.admit(&r).await.unwrap());
        inv.index_order(&r.order).await.unwrap();
        reqs.push(r);
    }
    // `a` + `b:c` is not `a:b` + `c`.
    let ab_c = request(sale, "A", "a:b", 1, "c");
    let a_bc = request(sale, "A", "a", 1, "b:c");
    assert_eq!(
        inv.admit(&ab_c).await.unwrap(),
        Admission::Rejected(Rejection::LimitExceeded {
            bought: 1,
            limit: 1
        })
    );
    admitted(inv.admit(&a_bc).await.unwrap());
    assert_eq!(
        inv.stored_answer(sale, "a", "b:c").await.unwrap(),
        Some(("A:1".to_owned(), answer_of(&a_bc)))
    );
    assert_eq!(
        inv.stored_answer(sale, "a:b", "c").await.unwrap(),
        Some((
            "A:1".to_owned(),
            Stored::Rejected(Rejection::LimitExceeded {
                bought: 1,
                limit: 1
            })
        ))
    );

    let mut expected: Vec<String> = HOSTILE_USERS.iter().map(|u| u.to_string()).collect();
    expected.push("a".to_owned());
    expected.sort();
    assert_eq!(holders(&*inv, sale, "A").await, expected);
    for r in &reqs {
        assert_eq!(
            inv.stored_answer(sale, &r.user_id, &r.key).await.unwrap(),
            Some(("A:1".to_owned(), answer_of(r)))
        );
        let ids: Vec<Uuid> = inv
            .user_orders(&r.user_id)
            .await
            .unwrap()
            .iter()
            .map(|o| o.order.id)
            .collect();
        assert_eq!(ids, [r.order.id], "{}", r.user_id);
    }

    // A ban is that user's alone.
    inv.ban(sale, "{x}").await.unwrap();
    assert_eq!(
        inv.admit(&request(sale, "A", "{x}", 1, "k2"))
            .await
            .unwrap(),
        Admission::Rejected(Rejection::Banned)
    );
    admitted(inv.admit(&request(sale, "A", "x", 1, "k2")).await.unwrap());
    inv.unban(sale, "{x}").await.unwrap();
    assert_eq!(
        inv.admit(&request(sale, "A", "{x}", 1, "k3"))
            .await
            .unwrap(),
        Admission::Rejected(Rejection::LimitExceeded {
            bought: 1,
            limit: 1
        })
    );
}

/// Holders are read whole: a hash past one page (and past Redis's compact
/// encoding) still yields every holder.
async fn every_holder_is_found_in_a_big_sale(inv: Arc<dyn Inventory>) {
    let sale = Uuid::new_v4();
    let mut s = seed(
        sale,
        SaleStatus::Live,
        vec![product("A", 5000, 2500, 5, ProductStatus::OnSale)],
    );
    // Some bought before a rebuild, as PostgreSQL remembers them.
    s.holdings = (0..2500)
        .map(|i| ("A".to_owned(), format!("old-{i}"), 1))
        .collect();
    inv.install(&s).await.unwrap();
    for i in 0..500 {
        admitted(
            inv.admit(&request(sale, "A", &format!("new-{i}"), 1, "k"))
                .await
                .unwrap(),
        );
    }
    let holders = holders(&*inv, sale, "A").await;
    assert_eq!(holders.len(), 3000);
    assert!(holders.iter().any(|h| h == "new-499"));
    assert!(holders.iter().any(|h| h == "old-0"));
    assert_eq!(
        counts(&level(&*inv, sale, "A").await),
        (5000, 2000, 500, 2500)
    );
}
