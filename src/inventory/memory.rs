//! Embedded mode's inventory: the semantics of the Redis scripts in `lua/`,
//! kept in process memory behind a mutex per sale.
//!
//! Every method runs synchronously: no `.await` happens while any lock below is
//! held, so a `std::sync::Mutex` is the right tool and a sale's step is atomic.
//! Lock order: the outer map lock is held only to find a sale's `Arc`; the
//! order index and a sale's mutex are never held together.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    Admission, AdmitRequest, Inventory, InventoryError, LiveOrder, PayStart, ProductSeed,
    Rejection, ReleaseFrom, Released, SaleSeed, ShipToSet, StockLevel, Stored,
};
use crate::catalog::{ProductStatus, SaleStatus};
use crate::orders::{Order, OrderStatus};

/// How long an idempotency key's answer is kept (the scripts' key TTL).
const KEY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// A settled order's record: completed orders as long as their answer (the
/// order hash's TTL in Redis), cancelled or expired ones briefly.
const COMPLETED_KEEP: Duration = KEY_TTL;
const SETTLED_KEEP: Duration = Duration::from_secs(super::redis::SETTLED_KEEP_SECS);

/// A panic inside a critical section must not take the whole inventory down
/// with it: every step leaves the state usable, so a poisoned lock is reused.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrderState {
    Reserved,
    /// Being paid: the reaper's deadline is a lease, the real one is kept aside.
    Paying,
    Completed,
    Cancelled,
    Expired,
}

impl OrderState {
    fn status(self) -> OrderStatus {
        match self {
            OrderState::Reserved | OrderState::Paying => OrderStatus::Reserved,
            OrderState::Completed => OrderStatus::Completed,
            OrderState::Cancelled => OrderStatus::Cancelled,
            OrderState::Expired => OrderStatus::Expired,
        }
    }

    fn from_status(s: OrderStatus) -> Self {
        match s {
            OrderStatus::Reserved => OrderState::Reserved,
            OrderStatus::Completed => OrderState::Completed,
            OrderStatus::Cancelled => OrderState::Cancelled,
            OrderStatus::Expired => OrderState::Expired,
        }
    }
}

#[derive(Debug, Clone)]
struct ProductState {
    stock: i64,
    remaining: i64,
    reserved: i64,
    sold: i64,
    /// As set by the host; `sold_out` is derived when reading a level.
    status: ProductStatus,
    per_user_limit: i64,
    ver: i64,
}

impl ProductState {
    fn seeded(seed: &ProductSeed, previous: Option<&ProductState>) -> Self {
        ProductState {
            stock: seed.stock,
            remaining: seed.stock - seed.sold,
            reserved: 0,
            sold: seed.sold,
            status: seed.status,
            per_user_limit: i64::from(seed.per_user_limit),
            // A reinstall must still look newer than anything already broadcast.
            ver: previous.map_or(1, |p| p.ver + 1),
        }
    }

    fn level(&self, sku: &str) -> StockLevel {
        StockLevel {
            sku: sku.to_owned(),
            stock: self.stock,
            remaining: self.remaining,
            reserved: self.reserved,
            sold: self.sold,
            status: StockLevel::derive_status(self.status, self.remaining),
            ver: self.ver,
        }
    }
}

#[derive(Debug, Clone)]
struct IdemRecord {
    fingerprint: String,
    stored: Stored,
    expires: Instant,
}

#[derive(Debug, Clone)]
struct HeldOrder {
    order: Order,
    key: String,
    state: OrderState,
    /// Mirrors this order's entry in `SaleState::deadlines`.
    deadline_ms: Option<i64>,
    deadline_before_pay: Option<i64>,
    epoch: i64,
}

impl HeldOrder {
    fn live(&self) -> LiveOrder {
        let mut order = self.order.clone();
        order.status = self.state.status();
        LiveOrder {
            order,
            key: self.key.clone(),
            deadline_ms: self.deadline_ms,
            epoch: self.epoch,
        }
    }
}

#[derive(Debug, Default)]
struct SaleState {
    /// `None`: the sale was never installed (the Redis marker is absent), yet
    /// bans, answers or products written before an install are kept, as in Redis.
    status: Option<SaleStatus>,
    epoch: i64,
    products: BTreeMap<String, ProductState>,
    /// sku -> user -> quantity held (reserved or completed).
    holdings: HashMap<String, HashMap<String, i64>>,
    bans: HashSet<String>,
    /// user -> idempotency key -> answer.
    idem: HashMap<String, HashMap<String, IdemRecord>>,
    /// Write order of the answers; every TTL is the same, so this is also
    /// expiry order and pruning stays cheap.
    idem_expiry: VecDeque<(Instant, String, String)>,
    orders: HashMap<Uuid, HeldOrder>,
    deadlines: BTreeSet<(i64, Uuid)>,
    /// Settled orders, (when it goes, id): one queue per keep, so each is in
    /// expiry order and pruning stops at the first entry not due.
    settled: [VecDeque<(Instant, Uuid)>; 2],
}

impl SaleState {
    fn set_deadline(&mut self, id: Uuid, deadline: Option<i64>) {
        let Some(o) = self.orders.get_mut(&id) else {
            return;
        };
        if let Some(old) = o.deadline_ms.take() {
            self.deadlines.remove(&(old, id));
        }
        if let Some(new) = deadline {
            self.deadlines.insert((new, id));
        }
        o.deadline_ms = deadline;
    }

    fn answer(&self, user: &str, key: &str, now: Instant) -> Option<&IdemRecord> {
        self.idem
            .get(user)
            .and_then(|keys| keys.get(key))
            .filter(|r| r.expires > now)
    }

    fn put_answer(
        &mut self,
        user: &str,
        key: &str,
        fingerprint: &str,
        stored: Stored,
        now: Instant,
    ) {
        self.prune_answers(now);
        let expires = now + KEY_TTL;
        self.idem.entry(user.to_owned()).or_default().insert(
            key.to_owned(),
            IdemRecord {
                fingerprint: fingerprint.to_owned(),
                stored,
                expires,
            },
        );
        self.idem_expiry
            .push_back((expires, user.to_owned(), key.to_owned()));
        // Past the cap the user's oldest answer goes, as in the admit script.
        let oldest = self
            .idem
            .get(user)
            .filter(|keys| keys.len() > super::redis::KEYS_PER_USER)
            .and_then(|keys| keys.iter().min_by_key(|(_, r)| r.expires))
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.remove_answer(user, &k);
        }
    }

    /// Remembers when a settled order's record may go.
    fn settle(&mut self, id: Uuid, keep: Duration, now: Instant) {
        let queue = usize::from(keep == COMPLETED_KEEP);
        self.settled[queue].push_back((now + keep, id));
    }

    /// Drops the records whose time has come; returns their ids (and users)
    /// for the index.
    fn prune_orders(&mut self, now: Instant) -> Vec<(Uuid, String)> {
        let mut gone = Vec::new();
        for queue in 0..self.settled.len() {
            while let Some((at, id)) = self.settled[queue].front().copied() {
                if at > now {
                    break;
                }
                self.settled[queue].pop_front();
                let settled = self.orders.get(&id).is_some_and(|o| {
                    matches!(
                        o.state,
                        OrderState::Completed | OrderState::Cancelled | OrderState::Expired
                    )
                });
                if settled {
                    if let Some(o) = self.orders.remove(&id) {
                        gone.push((id, o.order.user_id));
                    }
                }
            }
        }
        gone
    }

    fn remove_answer(&mut self, user: &str, key: &str) {
        if let Some(keys) = self.idem.get_mut(user) {
            keys.remove(key);
            if keys.is_empty() {
                self.idem.remove(user);
            }
        }
    }

    fn prune_answers(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.idem_expiry.front() {
            if *at > now {
                break;
            }
            let Some((_, user, key)) = self.idem_expiry.pop_front() else {
                break;
            };
            // The key may have been rewritten since: only drop it if it expired.
            let expired = self
                .idem
                .get(&user)
                .and_then(|keys| keys.get(&key))
                .is_some_and(|r| r.expires <= now);
            if expired {
                self.remove_answer(&user, &key);
            }
        }
    }

    fn holding(&self, sku: &str, user: &str) -> i64 {
        self.holdings
            .get(sku)
            .and_then(|users| users.get(user))
            .copied()
            .unwrap_or(0)
    }

    fn add_holding(&mut self, sku: &str, user: &str, qty: i64) {
        let users = self.holdings.entry(sku.to_owned()).or_default();
        let held = users.entry(user.to_owned()).or_insert(0);
        *held += qty;
        if *held <= 0 {
            users.remove(user);
            if users.is_empty() {
                self.holdings.remove(sku);
            }
        }
    }

    fn level(&self, sku: &str) -> Option<StockLevel> {
        self.products.get(sku).map(|p| p.level(sku))
    }
}

#[derive(Debug, Default)]
struct OrderIndex {
    /// order id -> sale id.
    locator: HashMap<Uuid, Uuid>,
    /// user -> (sale id, order id), in indexing order.
    by_user: HashMap<String, Vec<(Uuid, Uuid)>>,
}

/// The inventory of a single process: no Redis, same answers.
#[derive(Debug, Default)]
pub struct MemoryInventory {
    sales: RwLock<HashMap<Uuid, Arc<Mutex<SaleState>>>>,
    index: Mutex<OrderIndex>,
}

impl MemoryInventory {
    /// For the in-memory chat, which refuses banned users as Redis's chat
    /// script does by reading the inventory's set.
    pub fn banned(&self, sale_id: Uuid, user_id: &str) -> bool {
        self.sale(sale_id)
            .is_some_and(|s| lock(&s).bans.contains(user_id))
    }

    pub fn new() -> Self {
        Self::default()
    }

    /// Drops pruned orders from the locator and the users' lists.
    fn forget(&self, sale_id: Uuid, gone: &[(Uuid, String)]) {
        let mut index = lock(&self.index);
        for (id, user) in gone {
            index.locator.remove(id);
            if let Some(list) = index.by_user.get_mut(user) {
                list.retain(|e| *e != (sale_id, *id));
                if list.is_empty() {
                    index.by_user.remove(user);
                }
            }
        }
    }

    fn sale(&self, id: Uuid) -> Option<Arc<Mutex<SaleState>>> {
        self.sales
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    fn sale_or_create(&self, id: Uuid) -> Arc<Mutex<SaleState>> {
        if let Some(sale) = self.sale(id) {
            return sale;
        }
        self.sales
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .clone()
    }

    fn all_sales(&self) -> Vec<(Uuid, Arc<Mutex<SaleState>>)> {
        self.sales
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, s)| (*id, s.clone()))
            .collect()
    }
}

fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(ms)
}

#[async_trait]
impl Inventory for MemoryInventory {
    async fn epoch(&self, sale_id: Uuid) -> Result<Option<i64>, InventoryError> {
        Ok(self.sale(sale_id).and_then(|s| {
            let s = lock(&s);
            s.status.map(|_| s.epoch)
        }))
    }

    async fn install(&self, seed: &SaleSeed) -> Result<(), InventoryError> {
        let sale = self.sale_or_create(seed.sale_id);
        let mut s = lock(&sale);
        s.epoch = seed.epoch;
        let previous = std::mem::take(&mut s.products);
        for p in &seed.products {
            let product = ProductState::seeded(p, previous.get(&p.sku));
            s.products.insert(p.sku.clone(), product);
        }
        s.holdings.clear();
        for (sku, user, qty) in &seed.holdings {
            if *qty > 0 {
                s.holdings
                    .entry(sku.clone())
                    .or_default()
                    .insert(user.clone(), *qty);
            }
        }
        // Reservations are dropped: their stock is back in `remaining` above.
        s.orders.retain(|_, o| o.state == OrderState::Completed);
        for o in s.orders.values_mut() {
            o.deadline_ms = None;
            o.deadline_before_pay = None;
        }
        s.deadlines.clear();
        s.status = Some(seed.status);
        Ok(())
    }

    async fn lock_rebuild(
        &self,
        _sale_id: Uuid,
        _token: &str,
        _ttl_ms: u64,
    ) -> Result<bool, InventoryError> {
        // One process: the sale's mutex already serializes the rebuild itself.
        Ok(true)
    }

    async fn unlock_rebuild(&self, _sale_id: Uuid, _token: &str) -> Result<(), InventoryError> {
        Ok(())
    }

    async fn rebuilding(&self, _sale_id: Uuid) -> Result<bool, InventoryError> {
        Ok(false)
    }

    async fn set_sale_status(
        &self,
        sale_id: Uuid,
        status: SaleStatus,
        _skus: &[String],
    ) -> Result<Vec<StockLevel>, InventoryError> {
        let sale = self.sale_or_create(sale_id);
        let mut s = lock(&sale);
        s.status = Some(status);
        let mut changed = Vec::new();
        if status == SaleStatus::Ended {
            for (sku, p) in s.products.iter_mut() {
                if p.status != ProductStatus::Closed {
                    p.status = ProductStatus::Closed;
                    p.ver += 1;
                    changed.push(p.level(sku));
                }
            }
        }
        Ok(changed)
    }

    async fn add_product(
        &self,
        sale_id: Uuid,
        seed: &ProductSeed,
    ) -> Result<StockLevel, InventoryError> {
        let sale = self.sale_or_create(sale_id);
        let mut s = lock(&sale);
        let product = ProductState::seeded(seed, s.products.get(&seed.sku));
        let level = product.level(&seed.sku);
        s.products.insert(seed.sku.clone(), product);
        Ok(level)
    }

    async fn set_product_status(
        &self,
        sale_id: Uuid,
        sku: &str,
        status: ProductStatus,
    ) -> Result<Option<StockLevel>, InventoryError> {
        let Some(sale) = self.sale(sale_id) else {
            return Ok(None);
        };
        let mut s = lock(&sale);
        Ok(s.products.get_mut(sku).map(|p| {
            p.status = status;
            p.ver += 1;
            p.level(sku)
        }))
    }

    async fn restock(
        &self,
        sale_id: Uuid,
        sku: &str,
        add: i64,
    ) -> Result<Option<StockLevel>, InventoryError> {
        let Some(sale) = self.sale(sale_id) else {
            return Ok(None);
        };
        let mut s = lock(&sale);
        Ok(s.products.get_mut(sku).map(|p| {
            p.stock += add;
            p.remaining += add;
            p.ver += 1;
            p.level(sku)
        }))
    }

    async fn levels(
        &self,
        sale_id: Uuid,
        skus: &[String],
    ) -> Result<Vec<Option<StockLevel>>, InventoryError> {
        let Some(sale) = self.sale(sale_id) else {
            return Ok(vec![None; skus.len()]);
        };
        let s = lock(&sale);
        Ok(skus.iter().map(|sku| s.level(sku)).collect())
    }

    async fn holders(&self, sale_id: Uuid, sku: &str) -> Result<Vec<String>, InventoryError> {
        let Some(sale) = self.sale(sale_id) else {
            return Ok(Vec::new());
        };
        let s = lock(&sale);
        let mut users: Vec<String> = s
            .holdings
            .get(sku)
            .map(|users| {
                users
                    .iter()
                    .filter(|(_, qty)| **qty > 0)
                    .map(|(u, _)| u.clone())
                    .collect()
            })
            .unwrap_or_default();
        users.sort();
        Ok(users)
    }

    async fn ban(&self, sale_id: Uuid, user_id: &str) -> Result<(), InventoryError> {
        let sale = self.sale_or_create(sale_id);
        lock(&sale).bans.insert(user_id.to_owned());
        Ok(())
    }

    async fn unban(&self, sale_id: Uuid, user_id: &str) -> Result<(), InventoryError> {
        if let Some(sale) = self.sale(sale_id) {
            lock(&sale).bans.remove(user_id);
        }
        Ok(())
    }

    async fn is_banned(&self, sale_id: Uuid, user_id: &str) -> Result<bool, InventoryError> {
        Ok(self.banned(sale_id, user_id))
    }

    async fn bans(&self, sale_id: Uuid) -> Result<Vec<String>, InventoryError> {
        let mut bans: Vec<String> = self
            .sale(sale_id)
            .map(|s| lock(&s).bans.iter().cloned().collect())
            .unwrap_or_default();
        bans.sort();
        Ok(bans)
    }

    async fn admit(&self, req: &AdmitRequest) -> Result<Admission, InventoryError> {
        let now = Instant::now();
        // No entry at all means no earlier answer either.
        let Some(sale) = self.sale(req.sale_id) else {
            return Ok(Admission::Missing { epoch: None });
        };
        let mut s = lock(&sale);
        let gone = s.prune_orders(now);
        if !gone.is_empty() {
            // The index is locked only after the sale is let go (lock order).
            drop(s);
            self.forget(req.sale_id, &gone);
            s = lock(&sale);
        }
        let user = req.user_id.as_str();

        if let Some(r) = s.answer(user, &req.key, now) {
            return Ok(if r.fingerprint == req.fingerprint {
                Admission::Replay(r.stored.clone())
            } else {
                Admission::Mismatch
            });
        }
        let Some(sale_status) = s.status else {
            return Ok(Admission::Missing { epoch: None });
        };

        let sku = req.order.sku.as_str();
        let qty = req.order.qty;
        let rejection = if !req.remedy && s.bans.contains(user) {
            Some(Rejection::Banned)
        } else if !req.remedy && sale_status != SaleStatus::Live {
            Some(Rejection::SaleNotLive)
        } else {
            match s.products.get(sku) {
                // The catalog knows the SKU (the caller checked): live state lost.
                None => {
                    return Ok(Admission::Missing {
                        epoch: Some(s.epoch),
                    })
                }
                Some(p) if p.remaining < qty => Some(Rejection::SoldOut),
                Some(_) if req.remedy => None,
                Some(p) if p.status != ProductStatus::OnSale => Some(Rejection::NotOnSale),
                Some(p) => {
                    let bought = s.holding(sku, user);
                    (bought + qty > p.per_user_limit).then_some(Rejection::LimitExceeded {
                        bought,
                        limit: p.per_user_limit,
                    })
                }
            }
        };
        if let Some(r) = rejection {
            s.put_answer(
                user,
                &req.key,
                &req.fingerprint,
                Stored::Rejected(r.clone()),
                now,
            );
            return Ok(Admission::Rejected(r));
        }

        let epoch = s.epoch;
        let Some(product) = s.products.get_mut(sku) else {
            return Ok(Admission::Missing { epoch: Some(epoch) });
        };
        product.remaining -= qty;
        product.reserved += qty;
        product.ver += 1;
        let level = product.level(sku);
        s.add_holding(sku, user, qty);

        let id = req.order.id;
        // A reused id must not leave its old deadline behind in the index.
        s.set_deadline(id, None);
        let epoch = s.epoch;
        s.orders.insert(
            id,
            HeldOrder {
                order: req.order.clone(),
                key: req.key.clone(),
                state: OrderState::Reserved,
                deadline_ms: None,
                deadline_before_pay: None,
                epoch,
            },
        );
        s.set_deadline(id, Some(req.deadline_ms));

        let stored = match &req.final_answer {
            Some(answer) => Stored::Order(answer.clone()),
            None => Stored::Pending(id),
        };
        s.put_answer(user, &req.key, &req.fingerprint, stored, now);
        Ok(Admission::Admitted { level, epoch })
    }

    async fn store_answer(
        &self,
        sale_id: Uuid,
        user_id: &str,
        key: &str,
        fingerprint: &str,
        answer: &Stored,
    ) -> Result<(), InventoryError> {
        let sale = self.sale_or_create(sale_id);
        lock(&sale).put_answer(user_id, key, fingerprint, answer.clone(), Instant::now());
        Ok(())
    }

    async fn stored_answer(
        &self,
        sale_id: Uuid,
        user_id: &str,
        key: &str,
    ) -> Result<Option<(String, Stored)>, InventoryError> {
        let Some(sale) = self.sale(sale_id) else {
            return Ok(None);
        };
        let s = lock(&sale);
        Ok(s.answer(user_id, key, Instant::now())
            .map(|r| (r.fingerprint.clone(), r.stored.clone())))
    }

    async fn order(
        &self,
        sale_id: Uuid,
        order_id: Uuid,
    ) -> Result<Option<LiveOrder>, InventoryError> {
        let Some(sale) = self.sale(sale_id) else {
            return Ok(None);
        };
        let s = lock(&sale);
        Ok(s.orders.get(&order_id).map(HeldOrder::live))
    }

    async fn locate(&self, order_id: Uuid) -> Result<Option<Uuid>, InventoryError> {
        Ok(lock(&self.index).locator.get(&order_id).copied())
    }

    async fn index_order(&self, order: &Order) -> Result<(), InventoryError> {
        let mut index = lock(&self.index);
        index.locator.insert(order.id, order.sale_id);
        let list = index.by_user.entry(order.user_id.clone()).or_default();
        let entry = (order.sale_id, order.id);
        if !list.contains(&entry) {
            list.push(entry);
        }
        Ok(())
    }

    async fn user_orders(&self, user_id: &str) -> Result<Vec<LiveOrder>, InventoryError> {
        // Copied out so the index lock is released before any sale is locked.
        let entries = lock(&self.index)
            .by_user
            .get(user_id)
            .cloned()
            .unwrap_or_default();
        let mut orders = Vec::with_capacity(entries.len());
        for (sale_id, order_id) in entries {
            if let Some(sale) = self.sale(sale_id) {
                if let Some(o) = lock(&sale).orders.get(&order_id) {
                    orders.push(o.live());
                }
            }
        }
        orders.sort_by(|a, b| {
            b.order
                .created_at
                .cmp(&a.order.created_at)
                .then_with(|| b.order.id.cmp(&a.order.id))
        });
        Ok(orders)
    }

    async fn begin_pay(
        &self,
        sale_id: Uuid,
        order_id: Uuid,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<PayStart, InventoryError> {
        let Some(sale) = self.sale(sale_id) else {
            return Ok(PayStart::NotFound);
        };
        let mut s = lock(&sale);
        let Some(o) = s.orders.get_mut(&order_id) else {
            return Ok(PayStart::NotFound);
        };
        match o.state {
            OrderState::Completed => return Ok(PayStart::AlreadyCompleted),
            OrderState::Reserved => {}
            other => return Ok(PayStart::WrongState(other.status())),
        }
        let deadline = match o.deadline_ms {
            Some(d) if d > now_ms => d,
            _ => return Ok(PayStart::Expired),
        };
        o.state = OrderState::Paying;
        o.deadline_before_pay = Some(deadline);
        s.set_deadline(order_id, Some(now_ms.saturating_add(lease_ms)));
        Ok(PayStart::Started)
    }

    async fn set_ship_to(
        &self,
        sale_id: Uuid,
        order_id: Uuid,
        ship_to: &crate::fulfilment::address::Address,
    ) -> Result<ShipToSet, InventoryError> {
        let Some(sale) = self.sale(sale_id) else {
            return Ok(ShipToSet::NotFound);
        };
        let mut s = lock(&sale);
        let Some(held) = s.orders.get_mut(&order_id) else {
            return Ok(ShipToSet::NotFound);
        };
        match held.state {
            OrderState::Reserved => {
                held.order.ship_to = Some(ship_to.clone());
                Ok(ShipToSet::Done)
            }
            // Being paid reads as reserved, but the payment commits the
            // order as it was: like Redis, refuse it as `paying`.
            other => Ok(ShipToSet::WrongState(other.status())),
        }
    }

    async fn abort_pay(&self, sale_id: Uuid, order_id: Uuid) -> Result<(), InventoryError> {
        let Some(sale) = self.sale(sale_id) else {
            return Ok(());
        };
        let mut s = lock(&sale);
        let Some(o) = s.orders.get_mut(&order_id) else {
            return Ok(());
        };
        if o.state == OrderState::Paying {
            o.state = OrderState::Reserved;
            let deadline = o.deadline_before_pay.take();
            s.set_deadline(order_id, deadline);
        }
        Ok(())
    }

    async fn confirm(
        &self,
        sale_id: Uuid,
        order_id: Uuid,
        _sku: &str,
        completed_at_ms: i64,
        payment_ref: Option<&str>,
        answer: Option<(&str, &Stored)>,
    ) -> Result<Option<StockLevel>, InventoryError> {
        let Some(sale) = self.sale(sale_id) else {
            return Ok(None);
        };
        let mut s = lock(&sale);
        let Some(o) = s.orders.get_mut(&order_id) else {
            return Ok(None);
        };
        let (sku, qty) = (o.order.sku.clone(), o.order.qty);
        let (user, key) = (o.order.user_id.clone(), o.key.clone());
        let state = o.state;
        if let Some((fp, stored)) = answer {
            if state != OrderState::Cancelled && state != OrderState::Expired {
                s.put_answer(&user, &key, fp, stored.clone(), Instant::now());
            }
        }
        let Some(o) = s.orders.get_mut(&order_id) else {
            return Ok(None);
        };
        match o.state {
            OrderState::Reserved | OrderState::Paying => {}
            OrderState::Completed => return Ok(s.level(&sku)),
            OrderState::Cancelled | OrderState::Expired => return Ok(None),
        }
        o.state = OrderState::Completed;
        o.deadline_before_pay = None;
        if let Some(at) = from_ms(completed_at_ms) {
            o.order.completed_at = Some(at);
        }
        if let Some(r) = payment_ref {
            o.order.payment_ref = Some(r.to_owned());
        }
        s.set_deadline(order_id, None);
        s.settle(order_id, COMPLETED_KEEP, Instant::now());
        Ok(s.products.get_mut(&sku).map(|p| {
            p.reserved -= qty;
            p.sold += qty;
            p.ver += 1;
            p.level(&sku)
        }))
    }

    async fn release(
        &self,
        sale_id: Uuid,
        order_id: Uuid,
        to: OrderStatus,
        from: ReleaseFrom,
    ) -> Result<Released, InventoryError> {
        let Some(sale) = self.sale(sale_id) else {
            return Ok(Released::NotFound);
        };
        let mut s = lock(&sale);
        let Some(o) = s.orders.get_mut(&order_id) else {
            return Ok(Released::NotFound);
        };
        let allowed = match o.state {
            OrderState::Reserved => true,
            OrderState::Paying => from != ReleaseFrom::Reserved,
            _ => false,
        };
        if !allowed {
            return Ok(Released::WrongState(o.state.status()));
        }
        o.state = OrderState::from_status(to);
        o.deadline_before_pay = None;
        let sku = o.order.sku.clone();
        let user = o.order.user_id.clone();
        let qty = o.order.qty;
        let key = o.key.clone();
        s.set_deadline(order_id, None);
        s.settle(order_id, SETTLED_KEEP, Instant::now());

        let level = s.products.get_mut(&sku).map(|p| {
            if from == ReleaseFrom::Refused {
                p.sold += qty;
            } else {
                p.remaining += qty;
            }
            p.reserved -= qty;
            p.ver += 1;
            p.level(&sku)
        });
        s.add_holding(&sku, &user, -qty);
        let pending_here = s
            .idem
            .get(&user)
            .and_then(|keys| keys.get(&key))
            .is_some_and(|r| r.stored == Stored::Pending(order_id));
        if pending_here {
            s.remove_answer(&user, &key);
        }
        // Without its product (unreachable while install drops reservations)
        // the order still leaves the reaper's queue, but there is no level.
        Ok(level.map_or(Released::NotFound, Released::Done))
    }

    async fn reap_sales(&self) -> Result<Vec<Uuid>, InventoryError> {
        Ok(self
            .all_sales()
            .into_iter()
            .filter(|(_, sale)| !lock(sale).deadlines.is_empty())
            .map(|(id, _)| id)
            .collect())
    }

    async fn forget_reap_sale(&self, _sale_id: Uuid) -> Result<(), InventoryError> {
        // `reap_sales` is derived from the deadlines, so there is nothing to forget.
        Ok(())
    }

    async fn claim_due(
        &self,
        sale_id: Uuid,
        now_ms: i64,
        lease_ms: i64,
        max: usize,
    ) -> Result<Vec<Uuid>, InventoryError> {
        let Some(sale) = self.sale(sale_id) else {
            return Ok(Vec::new());
        };
        let mut s = lock(&sale);
        let due: Vec<Uuid> = s
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .take(max)
            .map(|(_, id)| *id)
            .collect();
        let lease = now_ms.saturating_add(lease_ms);
        for id in &due {
            s.set_deadline(*id, Some(lease));
        }
        Ok(due)
    }

    async fn held_count(&self, sale_id: Uuid) -> Result<u64, InventoryError> {
        Ok(self
            .sale(sale_id)
            .map_or(0, |sale| lock(&sale).deadlines.len() as u64))
    }

    async fn ping(&self) -> Result<(), InventoryError> {
        Ok(())
    }
}

// The trait's behaviour is tested on every backend by the conformance suite
// (tests/api/conformance/inventory.rs); only what needs this file's
// internals is here.
#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn request(sale_id: Uuid, user: &str, key: &str) -> AdmitRequest {
        let created_at = from_ms(NOW).unwrap();
        let order = Order {
            id: Uuid::new_v4(),
            sale_id,
            sku: "A".to_owned(),
            qty: 1,
            unit_price_cents: 500,
            total_cents: 500,
            currency: "CNY".to_owned(),
            user_id: user.to_owned(),
            status: OrderStatus::Reserved,
            created_at,
            expires_at: Some(created_at + chrono::TimeDelta::minutes(10)),
            completed_at: None,
            payment_ref: None,
            payment: None,
            ship_to: None,
            fulfilment: Default::default(),
            shipment: None,
            claims: Vec::new(),
        };
        AdmitRequest {
            remedy: false,
            sale_id,
            user_id: user.to_owned(),
            key: key.to_owned(),
            fingerprint: "A:1".to_owned(),
            final_answer: Some(serde_json::to_string(&order).unwrap()),
            order,
            deadline_ms: NOW + 600_000,
        }
    }

    /// Settled records go after their keep. Redis's TTLs cannot be sped up,
    /// so this faked instant is the memory inventory's alone.
    #[tokio::test]
    async fn settled_orders_are_pruned_after_their_keep() {
        let inv = MemoryInventory::new();
        let sale = Uuid::new_v4();
        inv.install(&SaleSeed {
            chat_seq_floor: 0,
            epoch: 1,
            sale_id: sale,
            status: SaleStatus::Live,
            products: vec![ProductSeed {
                sku: "A".to_owned(),
                stock: 5,
                sold: 0,
                per_user_limit: 5,
                status: ProductStatus::OnSale,
            }],
            holdings: Vec::new(),
        })
        .await
        .unwrap();
        let admit = |req: AdmitRequest| {
            let inv = &inv;
            async move {
                let a = inv.admit(&req).await.unwrap();
                assert!(matches!(a, Admission::Admitted { .. }), "{a:?}");
                inv.index_order(&req.order).await.unwrap();
                req.order.id
            }
        };
        let kept = admit(request(sale, "u1", "paid")).await;
        inv.confirm(sale, kept, "A", NOW, None, None).await.unwrap();
        let dropped = admit(request(sale, "u1", "dropped")).await;
        inv.release(sale, dropped, OrderStatus::Cancelled, ReleaseFrom::Reserved)
            .await
            .unwrap();

        let s = inv.sale(sale).unwrap();
        assert!(lock(&s).prune_orders(Instant::now()).is_empty());
        let later = Instant::now() + SETTLED_KEEP + Duration::from_secs(1);
        let gone = lock(&s).prune_orders(later);
        assert_eq!(gone, vec![(dropped, "u1".to_owned())]);
        inv.forget(sale, &gone);
        assert!(inv.order(sale, dropped).await.unwrap().is_none());
        assert!(inv.locate(dropped).await.unwrap().is_none());
        // The completed one stays as long as its answer.
        assert!(inv.order(sale, kept).await.unwrap().is_some());
        assert_eq!(inv.user_orders("u1").await.unwrap().len(), 1);
        let much_later = Instant::now() + COMPLETED_KEEP + Duration::from_secs(1);
        assert_eq!(
            lock(&s).prune_orders(much_later),
            vec![(kept, "u1".to_owned())]
        );
    }
}
