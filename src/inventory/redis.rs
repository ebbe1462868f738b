//! The inventory in Redis: Lua scripts, all keys of a sale under the hash tag
//! `{sale_id}` so they stay on one slot (Redis Cluster included).

use async_trait::async_trait;
use redis::AsyncCommands;
use uuid::Uuid;

use super::{
    Admission, AdmitRequest, Confirmation, Inventory, InventoryError, LiveOrder, PayStart,
    ProductSeed, Rejection, ReleaseFrom, Released, SaleSeed, ShipToSet, StockLevel, Stored,
};
use crate::catalog::{ProductStatus, SaleStatus};
use crate::kv::{Keys, Kv, Lua};
use crate::orders::{Order, OrderStatus};

/// Idempotent answers, order records and the user's order list live this long.
const KEEP_SECS: u64 = 24 * 3600;
/// Answers kept per user and sale: a buyer presses "buy" a few dozen times
/// in a sale; a script looping fresh keys is what this bounds.
pub const KEYS_PER_USER: usize = 256;
/// A cancelled or expired order's record outlives its answer this long.
pub const SETTLED_KEEP_SECS: u64 = 600;
/// The per-user list keeps the newest orders only.
const USER_ORDERS_KEPT: isize = 200;

struct Scripts {
    admit: Lua,
    confirm: Lua,
    confirm_batch: Lua,
    release: Lua,
    pay: Lua,
    unpay: Lua,
    claim: Lua,
    product: Lua,
    unlock: Lua,
    ship: Lua,
}

pub struct RedisInventory {
    conn: Kv,
    keys: Keys,
    scripts: Scripts,
}

impl RedisInventory {
    pub fn new(conn: Kv, prefix: &str) -> Self {
        RedisInventory {
            conn,
            keys: Keys::new(prefix),
            scripts: Scripts {
                admit: Lua::new(include_str!("lua/admit.lua")),
                confirm: Lua::new(include_str!("lua/confirm.lua")),
                confirm_batch: Lua::new(include_str!("lua/confirm_batch.lua")),
                release: Lua::new(include_str!("lua/release.lua")),
                pay: Lua::new(include_str!("lua/pay.lua")),
                unpay: Lua::new(include_str!("lua/unpay.lua")),
                claim: Lua::new(include_str!("lua/claim.lua")),
                product: Lua::new(include_str!("lua/product.lua")),
                unlock: Lua::new(include_str!("lua/unlock.lua")),
                ship: Lua::new(include_str!("lua/ship.lua")),
            },
        }
    }

    fn conn(&self) -> Kv {
        self.conn.clone()
    }
}

fn protocol(what: impl std::fmt::Display) -> InventoryError {
    InventoryError::Protocol(what.to_string())
}

fn int(s: &str) -> Result<i64, InventoryError> {
    s.parse()
        .map_err(|_| protocol(format!("not a number: {s:?}")))
}

/// `[stock, remaining, reserved, sold, status, ver]` as the scripts return it.
fn level(sku: &str, f: &[String]) -> Result<StockLevel, InventoryError> {
    let [stock, remaining, reserved, sold, status, ver] = f else {
        return Err(protocol(format!("level of {sku}: {f:?}")));
    };
    let remaining = int(remaining)?;
    let set: ProductStatus = status.parse().map_err(protocol)?;
    Ok(StockLevel {
        sku: sku.to_owned(),
        stock: int(stock)?,
        remaining,
        reserved: int(reserved)?,
        sold: int(sold)?,
        status: StockLevel::derive_status(set, remaining),
        ver: int(ver)?,
    })
}

fn rejection(code: &str, a: &str, b: &str) -> Result<Rejection, InventoryError> {
    Ok(match code {
        "banned" => Rejection::Banned,
        "sale_not_live" => Rejection::SaleNotLive,
        "not_on_sale" => Rejection::NotOnSale,
        "sold_out" => Rejection::SoldOut,
        "limit_exceeded" => Rejection::LimitExceeded {
            bought: int(a)?,
            limit: int(b)?,
        },
        other => return Err(protocol(format!("rejection {other:?}"))),
    })
}

fn rejection_fields(r: &Rejection) -> (&'static str, i64, i64) {
    match r {
        Rejection::Banned => ("banned", 0, 0),
        Rejection::SaleNotLive => ("sale_not_live", 0, 0),
        Rejection::NotOnSale => ("not_on_sale", 0, 0),
        Rejection::SoldOut => ("sold_out", 0, 0),
        Rejection::LimitExceeded { bought, limit } => ("limit_exceeded", *bought, *limit),
    }
}

/// Stored answers: `fingerprint \n ok \n json`, `fingerprint \n rej \n code \n a \n b`,
/// or `fingerprint \n pending \n order id`.
fn encode_stored(fingerprint: &str, s: &Stored) -> String {
    match s {
        Stored::Order(json) => format!("{fingerprint}\nok\n{json}"),
        Stored::Rejected(r) => {
            let (code, a, b) = rejection_fields(r);
            format!("{fingerprint}\nrej\n{code}\n{a}\n{b}")
        }
        Stored::Pending(id) => format!("{fingerprint}\npending\n{id}"),
    }
}

fn decode_stored(v: &str) -> Result<(String, Stored), InventoryError> {
    let mut parts = v.splitn(3, '\n');
    let (Some(fp), Some(kind), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(protocol("stored answer"));
    };
    let stored = match kind {
        "ok" => Stored::Order(rest.to_owned()),
        "pending" => Stored::Pending(rest.parse().map_err(protocol)?),
        "rej" => {
            let f: Vec<&str> = rest.split('\n').collect();
            let [code, a, b] = f[..] else {
                return Err(protocol("stored rejection"));
            };
            Stored::Rejected(rejection(code, a, b)?)
        }
        other => return Err(protocol(format!("stored kind {other:?}"))),
    };
    Ok((fp.to_owned(), stored))
}

fn order_status(st: &str) -> Result<OrderStatus, InventoryError> {
    Ok(match st {
        "reserved" | "paying" => OrderStatus::Reserved,
        "completed" => OrderStatus::Completed,
        "cancelled" => OrderStatus::Cancelled,
        "expired" => OrderStatus::Expired,
        other => return Err(protocol(format!("order state {other:?}"))),
    })
}

/// An order hash: `j` the order as admitted, `st`, `cat`, `pref`, `ik`,
/// `ep`, and `ship` the address attached after admission.
fn live_order(
    fields: &[Option<String>],
    deadline: Option<f64>,
) -> Result<Option<LiveOrder>, InventoryError> {
    let [Some(j), Some(st), cat, pref, Some(ik), ep, ship] = fields else {
        return Ok(None);
    };
    let mut order: Order = serde_json::from_str(j).map_err(protocol)?;
    order.status = order_status(st)?;
    if let Some(ms) = cat.as_deref().map(int).transpose()? {
        order.completed_at = chrono::DateTime::from_timestamp_millis(ms);
    }
    if pref.is_some() {
        order.payment_ref.clone_from(pref);
    }
    if let Some(ship) = ship {
        order.ship_to = Some(serde_json::from_str(ship).map_err(protocol)?);
    }
    Ok(Some(LiveOrder {
        order,
        key: ik.clone(),
        deadline_ms: deadline.map(|d| d as i64),
        epoch: ep.as_deref().map(int).transpose()?.unwrap_or_default(),
    }))
}

const ORDER_FIELDS: [&str; 7] = ["j", "st", "cat", "pref", "ik", "ep", "ship"];

fn seed_fields(p: &ProductSeed) -> Vec<(&'static str, String)> {
    vec![
        ("stock", p.stock.to_string()),
        ("remaining", (p.stock - p.sold).max(0).to_string()),
        ("reserved", "0".into()),
        ("sold", p.sold.to_string()),
        ("status", p.status.as_str().into()),
        ("limit", p.per_user_limit.to_string()),
    ]
}

#[async_trait]
impl Inventory for RedisInventory {
    async fn epoch(&self, sale_id: Uuid) -> Result<Option<i64>, InventoryError> {
        let (status, epoch): (Option<String>, Option<i64>) = redis::pipe()
            .hget(self.keys.sale(sale_id), "status")
            .hget(self.keys.sale(sale_id), "epoch")
            .query_async(&mut self.conn())
            .await?;
        Ok(status.and(epoch.or(Some(0))))
    }

    async fn install(&self, seed: &SaleSeed) -> Result<(), InventoryError> {
        let k = &self.keys;
        let s = seed.sale_id;
        // Orders admitted before this epoch no longer move the counters.
        // Levels continue from it too (epochs are microsecond times), so a
        // viewer never drops the rebuilt values as older than what it saw.
        let epoch = seed.epoch;
        // The reaper's set is another slot: named first, so a crash between
        // the two leaves a sale the reaper looks at for nothing, never one
        // with holds it does not know of.
        self.conn()
            .sadd::<_, _, ()>(k.reap(), s.to_string())
            .await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.del(k.deadlines(s)).ignore();
        for p in &seed.products {
            pipe.del(k.product(s, &p.sku)).ignore();
            pipe.del(k.holdings(s, &p.sku)).ignore();
            let mut fields = seed_fields(p);
            fields.push(("ver", epoch.to_string()));
            pipe.hset_multiple(k.product(s, &p.sku), &fields).ignore();
        }
        for (sku, user, qty) in &seed.holdings {
            pipe.hincr(k.holdings(s, sku), user, *qty).ignore();
        }
        pipe.hset_multiple(
            k.sale(s),
            &[
                ("status", seed.status.as_str().to_owned()),
                ("epoch", epoch.to_string()),
            ],
        )
        .ignore();
        // Kept when present (a forced rebuild); set only after a loss.
        pipe.cmd("SET")
            .arg(k.chat_seq(s))
            .arg(seed.chat_seq_floor)
            .arg("NX")
            .ignore();
        pipe.query_async::<()>(&mut self.conn()).await?;
        Ok(())
    }

    async fn lock_rebuild(
        &self,
        sale_id: Uuid,
        token: &str,
        ttl_ms: u64,
    ) -> Result<bool, InventoryError> {
        let opts = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(ttl_ms));
        let set: Option<String> = self
            .conn()
            .set_options(self.keys.lock(sale_id), token, opts)
            .await?;
        Ok(set.is_some())
    }

    async fn unlock_rebuild(&self, sale_id: Uuid, token: &str) -> Result<(), InventoryError> {
        self.scripts
            .unlock
            .key(self.keys.lock(sale_id))
            .arg(token)
            .invoke_async::<()>(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn rebuilding(&self, sale_id: Uuid) -> Result<bool, InventoryError> {
        Ok(self.conn().exists(self.keys.lock(sale_id)).await?)
    }

    async fn set_sale_status(
        &self,
        sale_id: Uuid,
        status: SaleStatus,
        skus: &[String],
    ) -> Result<Vec<StockLevel>, InventoryError> {
        self.conn()
            .hset::<_, _, _, ()>(self.keys.sale(sale_id), "status", status.as_str())
            .await?;
        let mut changed = Vec::new();
        if status == SaleStatus::Ended {
            for sku in skus {
                if let Some(l) = self
                    .set_product_status(sale_id, sku, ProductStatus::Closed)
                    .await?
                {
                    changed.push(l);
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
        let key = self.keys.product(sale_id, &seed.sku);
        let (fields,): (Vec<String>,) = redis::pipe()
            .atomic()
            .hset_multiple(&key, &seed_fields(seed))
            .ignore()
            .hincr(&key, "ver", 1)
            .ignore()
            .hmget(
                &key,
                &["stock", "remaining", "reserved", "sold", "status", "ver"],
            )
            .query_async(&mut self.conn())
            .await?;
        level(&seed.sku, &fields)
    }

    async fn set_product_status(
        &self,
        sale_id: Uuid,
        sku: &str,
        status: ProductStatus,
    ) -> Result<Option<StockLevel>, InventoryError> {
        let reply: Vec<String> = self
            .scripts
            .product
            .key(self.keys.product(sale_id, sku))
            .arg("status")
            .arg(status.as_str())
            .invoke_async(&mut self.conn())
            .await?;
        match reply.split_first() {
            Some((ok, rest)) if ok == "ok" => level(sku, rest).map(Some),
            _ => Ok(None),
        }
    }

    async fn restock(
        &self,
        sale_id: Uuid,
        sku: &str,
        add: i64,
    ) -> Result<Option<StockLevel>, InventoryError> {
        let reply: Vec<String> = self
            .scripts
            .product
            .key(self.keys.product(sale_id, sku))
            .arg("restock")
            .arg(add)
            .invoke_async(&mut self.conn())
            .await?;
        match reply.split_first() {
            Some((ok, rest)) if ok == "ok" => level(sku, rest).map(Some),
            _ => Ok(None),
        }
    }

    async fn levels(
        &self,
        sale_id: Uuid,
        skus: &[String],
    ) -> Result<Vec<Option<StockLevel>>, InventoryError> {
        if skus.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for sku in skus {
            pipe.hmget(
                self.keys.product(sale_id, sku),
                &["stock", "remaining", "reserved", "sold", "status", "ver"],
            );
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut self.conn()).await?;
        skus.iter()
            .zip(rows)
            .map(|(sku, row)| {
                let fields: Option<Vec<String>> = row.into_iter().collect();
                fields.map(|f| level(sku, &f)).transpose()
            })
            .collect()
    }

    async fn holders(&self, sale_id: Uuid, sku: &str) -> Result<Vec<String>, InventoryError> {
        Ok(self.conn().hkeys(self.keys.holdings(sale_id, sku)).await?)
    }

    async fn ban(&self, sale_id: Uuid, user_id: &str) -> Result<(), InventoryError> {
        self.conn()
            .sadd::<_, _, ()>(self.keys.bans(sale_id), user_id)
            .await?;
        Ok(())
    }

    async fn unban(&self, sale_id: Uuid, user_id: &str) -> Result<(), InventoryError> {
        self.conn()
            .srem::<_, _, ()>(self.keys.bans(sale_id), user_id)
            .await?;
        Ok(())
    }

    async fn is_banned(&self, sale_id: Uuid, user_id: &str) -> Result<bool, InventoryError> {
        Ok(self
            .conn()
            .sismember(self.keys.bans(sale_id), user_id)
            .await?)
    }

    async fn bans(&self, sale_id: Uuid) -> Result<Vec<String>, InventoryError> {
        let mut bans: Vec<String> = self.conn().smembers(self.keys.bans(sale_id)).await?;
        bans.sort();
        Ok(bans)
    }

    async fn admit(&self, req: &AdmitRequest) -> Result<Admission, InventoryError> {
        let k = &self.keys;
        let s = req.sale_id;
        let o = &req.order;
        let idem = k.idem(s, &req.user_id, &req.key);
        // A reservation's answer is the order as admitted: serialize it once.
        let json = match &req.final_answer {
            Some(answer) => std::borrow::Cow::Borrowed(answer.as_str()),
            None => std::borrow::Cow::Owned(serde_json::to_string(o).map_err(protocol)?),
        };
        let reply: Vec<String> = self
            .scripts
            .admit
            .key(k.sale(s))
            .key(k.product(s, &o.sku))
            .key(k.holdings(s, &o.sku))
            .key(&idem)
            .key(k.deadlines(s))
            .key(k.order(s, o.id))
            .key(k.bans(s))
            .key(k.user_keys(s, &req.user_id))
            .arg(&req.user_id)
            .arg(o.qty)
            .arg(&req.fingerprint)
            .arg(o.id.to_string())
            .arg(req.deadline_ms)
            .arg(json.as_ref())
            .arg(req.final_answer.as_deref().unwrap_or(""))
            .arg(KEEP_SECS)
            .arg(&req.key)
            .arg(&o.sku)
            .arg(KEYS_PER_USER)
            .arg(o.created_at.timestamp_millis())
            .arg(if req.remedy { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await?;
        let Some((kind, rest)) = reply.split_first() else {
            return Err(protocol("empty admit reply"));
        };
        match (kind.as_str(), rest) {
            ("ok", [epoch, fields @ ..]) => Ok(Admission::Admitted {
                level: level(&o.sku, fields)?,
                epoch: int(epoch)?,
            }),
            ("missing", []) => Ok(Admission::Missing { epoch: None }),
            ("missing", [epoch]) => Ok(Admission::Missing {
                epoch: Some(int(epoch)?),
            }),
            ("rej", [code, a, b]) => Ok(Admission::Rejected(rejection(code, a, b)?)),
            ("replay", [v]) => {
                let (fp, stored) = decode_stored(v)?;
                if fp == req.fingerprint {
                    Ok(Admission::Replay(stored))
                } else {
                    Ok(Admission::Mismatch)
                }
            }
            _ => Err(protocol(format!("admit reply {reply:?}"))),
        }
    }

    async fn store_answer(
        &self,
        sale_id: Uuid,
        user_id: &str,
        key: &str,
        fingerprint: &str,
        answer: &Stored,
    ) -> Result<(), InventoryError> {
        self.conn()
            .set_ex::<_, _, ()>(
                self.keys.idem(sale_id, user_id, key),
                encode_stored(fingerprint, answer),
                KEEP_SECS,
            )
            .await?;
        Ok(())
    }

    async fn stored_answer(
        &self,
        sale_id: Uuid,
        user_id: &str,
        key: &str,
    ) -> Result<Option<(String, Stored)>, InventoryError> {
        let v: Option<String> = self
            .conn()
            .get(self.keys.idem(sale_id, user_id, key))
            .await?;
        v.as_deref().map(decode_stored).transpose()
    }

    async fn order(
        &self,
        sale_id: Uuid,
        order_id: Uuid,
    ) -> Result<Option<LiveOrder>, InventoryError> {
        let (fields, deadline): (Vec<Option<String>>, Option<f64>) = redis::pipe()
            .hmget(self.keys.order(sale_id, order_id), &ORDER_FIELDS)
            .zscore(self.keys.deadlines(sale_id), order_id.to_string())
            .query_async(&mut self.conn())
            .await?;
        live_order(&fields, deadline)
    }

    async fn locate(&self, order_id: Uuid) -> Result<Option<Uuid>, InventoryError> {
        let v: Option<String> = self.conn().get(self.keys.locator(order_id)).await?;
        v.map(|s| s.parse().map_err(protocol)).transpose()
    }

    async fn index_order(&self, order: &Order) -> Result<(), InventoryError> {
        let k = &self.keys;
        let list = k.user_orders(&order.user_id);
        // Three slots (the locator, the user's list, the reaper's set): a
        // call each, at once.
        let mut locator = redis::pipe();
        locator
            .set_ex(k.locator(order.id), order.sale_id.to_string(), KEEP_SECS)
            .ignore();
        let mut user = redis::pipe();
        user.zadd(
            &list,
            format!("{}/{}", order.sale_id, order.id),
            order.created_at.timestamp_millis(),
        )
        .ignore()
        .zremrangebyrank(&list, 0, -(USER_ORDERS_KEPT + 1))
        .ignore()
        .expire(&list, KEEP_SECS as i64)
        .ignore();
        let mut reap = redis::pipe();
        reap.sadd(k.reap(), order.sale_id.to_string()).ignore();
        let (mut a, mut b, mut c) = (self.conn(), self.conn(), self.conn());
        tokio::try_join!(
            locator.query_async::<()>(&mut a),
            user.query_async::<()>(&mut b),
            reap.query_async::<()>(&mut c),
        )?;
        Ok(())
    }

    async fn user_orders(&self, user_id: &str) -> Result<Vec<LiveOrder>, InventoryError> {
        let members: Vec<String> = self
            .conn()
            .zrevrange(self.keys.user_orders(user_id), 0, USER_ORDERS_KEPT - 1)
            .await?;
        let ids: Vec<(Uuid, Uuid)> = members
            .iter()
            .filter_map(|m| {
                let (s, o) = m.split_once('/')?;
                Some((s.parse().ok()?, o.parse().ok()?))
            })
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // A pipeline per sale (each one slot), the sales at once; the answer
        // keeps the list's order, newest first.
        let mut sales: Vec<(Uuid, Vec<usize>)> = Vec::new();
        for (i, (s, _)) in ids.iter().enumerate() {
            match sales.iter_mut().find(|(sale, _)| sale == s) {
                Some((_, at)) => at.push(i),
                None => sales.push((*s, vec![i])),
            }
        }
        let reads = sales.iter().map(|(sale, at)| {
            let mut pipe = redis::pipe();
            for i in at {
                pipe.hmget(self.keys.order(*sale, ids[*i].1), &ORDER_FIELDS);
            }
            let mut conn = self.conn();
            async move {
                pipe.query_async::<Vec<Vec<Option<String>>>>(&mut conn)
                    .await
            }
        });
        let read = futures_util::future::try_join_all(reads).await?;
        let mut rows: Vec<Option<Vec<Option<String>>>> = vec![None; ids.len()];
        for ((_, at), got) in sales.iter().zip(read) {
            for (i, row) in at.iter().zip(got) {
                rows[*i] = Some(row);
            }
        }
        let mut out = Vec::new();
        for row in rows.into_iter().flatten() {
            if let Some(o) = live_order(&row, None)? {
                out.push(o);
            }
        }
        Ok(out)
    }

    async fn begin_pay(
        &self,
        sale_id: Uuid,
        order_id: Uuid,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<PayStart, InventoryError> {
        let reply: Vec<String> = self
            .scripts
            .pay
            .key(self.keys.deadlines(sale_id))
            .key(self.keys.order(sale_id, order_id))
            .arg(order_id.to_string())
            .arg(now_ms)
            .arg(lease_ms)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match reply.first().map(String::as_str) {
            Some("started") => PayStart::Started,
            Some("missing") => PayStart::NotFound,
            Some("expired") => PayStart::Expired,
            Some("completed") => PayStart::AlreadyCompleted,
            Some(st) => PayStart::WrongState(order_status(st)?),
            None => return Err(protocol("empty pay reply")),
        })
    }

    async fn set_ship_to(
        &self,
        sale_id: Uuid,
        order_id: Uuid,
        ship_to: &crate::fulfilment::address::Address,
    ) -> Result<ShipToSet, InventoryError> {
        let json = serde_json::to_string(ship_to).map_err(protocol)?;
        let reply: String = self
            .scripts
            .ship
            .key(self.keys.order(sale_id, order_id))
            .arg(json)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match reply.as_str() {
            "ok" => ShipToSet::Done,
            "missing" => ShipToSet::NotFound,
            st => ShipToSet::WrongState(order_status(st)?),
        })
    }

    async fn abort_pay(&self, sale_id: Uuid, order_id: Uuid) -> Result<(), InventoryError> {
        self.scripts
            .unpay
            .key(self.keys.deadlines(sale_id))
            .key(self.keys.order(sale_id, order_id))
            .arg(order_id.to_string())
            .invoke_async::<()>(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn confirm(
        &self,
        sale_id: Uuid,
        order_id: Uuid,
        sku: &str,
        completed_at_ms: i64,
        payment_ref: Option<&str>,
        answer: Option<(&str, &Stored)>,
    ) -> Result<Option<StockLevel>, InventoryError> {
        let k = &self.keys;
        let reply: Vec<String> = self
            .scripts
            .confirm
            .key(k.product(sale_id, sku))
            .key(k.deadlines(sale_id))
            .key(k.order(sale_id, order_id))
            .key(k.sale(sale_id))
            .arg(order_id.to_string())
            .arg(completed_at_ms)
            .arg(payment_ref.unwrap_or(""))
            .arg(answer.map_or(String::new(), |(fp, a)| encode_stored(fp, a)))
            .arg(KEEP_SECS)
            .invoke_async(&mut self.conn())
            .await?;
        match reply.split_first() {
            Some((ok, rest)) if ok == "ok" && rest.len() == 6 => level(sku, rest).map(Some),
            _ => Ok(None),
        }
    }

    async fn confirm_batch(
        &self,
        sale_id: Uuid,
        sku: &str,
        orders: &[Confirmation],
    ) -> Result<Option<StockLevel>, InventoryError> {
        if orders.is_empty() {
            return Ok(None);
        }
        let k = &self.keys;
        let mut call = self.scripts.confirm_batch.prepare_invoke();
        call.key(k.product(sale_id, sku))
            .key(k.deadlines(sale_id))
            .key(k.sale(sale_id))
            .arg(KEEP_SECS);
        for c in orders {
            call.key(k.order(sale_id, c.order_id))
                .key(k.idem(sale_id, &c.user_id, &c.key))
                .arg(c.order_id.to_string())
                .arg(c.completed_at_ms)
                .arg(encode_stored(&c.fingerprint, &c.answer));
        }
        let reply: Vec<String> = call.invoke_async(&mut self.conn()).await?;
        match reply.split_first() {
            Some((ok, rest)) if ok == "ok" && rest.len() == 6 => level(sku, rest).map(Some),
            _ => Ok(None),
        }
    }

    async fn release(
        &self,
        sale_id: Uuid,
        order_id: Uuid,
        to: OrderStatus,
        from: ReleaseFrom,
    ) -> Result<Released, InventoryError> {
        let k = &self.keys;
        let order = k.order(sale_id, order_id);
        let sku: Option<String> = self.conn().hget(&order, "sku").await?;
        let Some(sku) = sku else {
            return Ok(Released::NotFound);
        };
        let reply: Vec<String> = self
            .scripts
            .release
            .key(k.product(sale_id, &sku))
            .key(k.holdings(sale_id, &sku))
            .key(k.deadlines(sale_id))
            .key(&order)
            .key(k.sale(sale_id))
            .arg(order_id.to_string())
            .arg(to.as_str())
            .arg(match from {
                ReleaseFrom::Reserved => "reserved",
                ReleaseFrom::AnyHolding => "holding",
                ReleaseFrom::Refused => "refused",
            })
            .arg(SETTLED_KEEP_SECS)
            .invoke_async(&mut self.conn())
            .await?;
        match reply.split_first() {
            Some((ok, rest)) if ok == "ok" && rest.len() == 6 => {
                Ok(Released::Done(level(&sku, rest)?))
            }
            Some((ok, _)) if ok == "ok" => Ok(Released::NotFound),
            Some((state, [st])) if state == "state" => Ok(Released::WrongState(order_status(st)?)),
            Some((missing, _)) if missing == "missing" => Ok(Released::NotFound),
            _ => Err(protocol(format!("release reply {reply:?}"))),
        }
    }

    async fn reap_sales(&self) -> Result<Vec<Uuid>, InventoryError> {
        let members: Vec<String> = self.conn().smembers(self.keys.reap()).await?;
        Ok(members.iter().filter_map(|m| m.parse().ok()).collect())
    }

    async fn forget_reap_sale(&self, sale_id: Uuid) -> Result<(), InventoryError> {
        self.conn()
            .srem::<_, _, ()>(self.keys.reap(), sale_id.to_string())
            .await?;
        Ok(())
    }

    async fn claim_due(
        &self,
        sale_id: Uuid,
        now_ms: i64,
        lease_ms: i64,
        max: usize,
    ) -> Result<Vec<Uuid>, InventoryError> {
        let ids: Vec<String> = self
            .scripts
            .claim
            .key(self.keys.deadlines(sale_id))
            .arg(now_ms)
            .arg(lease_ms)
            .arg(max)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(ids.iter().filter_map(|i| i.parse().ok()).collect())
    }

    async fn held_count(&self, sale_id: Uuid) -> Result<u64, InventoryError> {
        Ok(self.conn().zcard(self.keys.deadlines(sale_id)).await?)
    }

    async fn ping(&self) -> Result<(), InventoryError> {
        redis::cmd("PING")
            .query_async::<()>(&mut self.conn())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_answers_round_trip() {
        let id = Uuid::new_v4();
        for s in [
            Stored::Order("{\"a\":\"x\\ny\"}".into()),
            Stored::Pending(id),
            Stored::Rejected(Rejection::LimitExceeded {
                bought: 2,
                limit: 2,
            }),
            Stored::Rejected(Rejection::SoldOut),
        ] {
            let (fp, back) = decode_stored(&encode_stored("A1:2", &s)).unwrap();
            assert_eq!(fp, "A1:2");
            assert_eq!(back, s);
        }
    }
}
