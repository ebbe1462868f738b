//! Catalog operations: PostgreSQL first (the record), then the live state in
//! the inventory, then an event for viewers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use uuid::Uuid;

use super::lists::{Lists, SaleList};
use super::{
    CatalogStore, Checkout, NewProduct, NewSale, Product, ProductRecord, ProductStatus, Sale,
    SaleRecord, SaleStatus, ShipsTo, Transition,
};
use crate::clock::Clock;
use crate::hub::{EventBus, SaleEvent, StockPublisher};
use crate::identity::Identity;
use crate::inventory::sold_out::SoldOut;
use crate::inventory::{Inventory, InventoryError, ProductSeed, StockLevel};
use crate::orders::rebuild::{RebuildError, Rebuilder};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("not allowed")]
    Forbidden,
    #[error("{0}")]
    InvalidState(&'static str),
    #[error("the sale is not live")]
    SaleNotLive,
    #[error("this SKU already exists in the sale")]
    DuplicateSku,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Rebuild(#[from] RebuildError),
}

impl CatalogError {
    /// The contract's code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            CatalogError::Invalid(_) => "bad_request",
            CatalogError::NotFound(_) => "not_found",
            CatalogError::Forbidden => "forbidden",
            CatalogError::InvalidState(_) => "invalid_state",
            CatalogError::SaleNotLive => "sale_not_live",
            CatalogError::DuplicateSku => "duplicate_sku",
            CatalogError::Store(e) => e.code(),
            CatalogError::Inventory(e) => e.code(),
            CatalogError::Rebuild(e) => e.code(),
        }
    }
}

/// What the buy path needs to know of a sale, none of which changes once set,
/// so each node keeps it in memory.
#[derive(Debug)]
pub struct SaleFacts {
    pub host_id: String,
    pub checkout: Checkout,
    pub reservation_ttl_secs: i32,
    pub products: HashMap<String, ProductFacts>,
    loaded: Instant,
}

#[derive(Debug, Clone)]
pub struct ProductFacts {
    pub price_cents: i64,
    pub currency: String,
    pub per_user_limit: i32,
    /// Checked on the buy path before Redis is asked, from this cache.
    pub ships_to: Option<Arc<ShipsTo>>,
}

/// A sale's products and GMV, for the dashboard (`Catalog::figures`).
#[derive(Debug, Clone)]
pub struct SaleFigures {
    pub products: Vec<Product>,
    /// Sum of the totals of the sale's completed orders.
    pub gmv_cents: i64,
}

/// How often an unknown SKU may send a node back to the database.
const FACTS_RELOAD: std::time::Duration = std::time::Duration::from_secs(1);
const LIST_LIMIT: i64 = 100;
/// Products one sale may hold: bounds what a sale, the public list (100
/// sales) and every viewer's welcome frame cost. A live broadcast shows a
/// few dozen at most.
pub const MAX_PRODUCTS_PER_SALE: usize = 200;

pub struct Catalog {
    store: Arc<dyn CatalogStore>,
    inventory: Arc<dyn Inventory>,
    rebuild: Arc<Rebuilder>,
    bus: Arc<dyn EventBus>,
    stock: Arc<StockPublisher>,
    clock: Arc<Clock>,
    facts: Mutex<HashMap<Uuid, Arc<SaleFacts>>>,
    /// This node's sold-out flags: a restock or an open clears its SKU's flag
    /// before the host is answered, so the very next buy here sees the stock.
    sold_out: Arc<SoldOut>,
    /// The public lists, built at most once a second.
    lists: Lists,
}

fn product(r: &ProductRecord, level: Option<&StockLevel>) -> Product {
    // Without live state, PostgreSQL's counts: nothing reserved.
    let (stock, remaining, reserved, sold, status) = match level {
        Some(l) => (l.stock, l.remaining, l.reserved, l.sold, l.status),
        None => (
            r.stock,
            r.stock - r.sold,
            0,
            r.sold,
            StockLevel::derive_status(r.status, r.stock - r.sold),
        ),
    };
    Product {
        sku: r.sku.clone(),
        name: r.name.clone(),
        price_cents: r.price_cents,
        currency: r.currency.clone(),
        stock,
        per_user_limit: r.per_user_limit,
        ships_by: r.ships_by,
        status,
        remaining,
        reserved,
        sold,
        ships_to: r.ships_to.clone(),
        claim_window_hours: r.claim_window_hours,
    }
}

impl Catalog {
    pub fn new(
        store: Arc<dyn CatalogStore>,
        inventory: Arc<dyn Inventory>,
        rebuild: Arc<Rebuilder>,
        bus: Arc<dyn EventBus>,
        stock: Arc<StockPublisher>,
        clock: Arc<Clock>,
        sold_out: Arc<SoldOut>,
    ) -> Self {
        Catalog {
            store,
            inventory,
            rebuild,
            bus,
            stock,
            clock,
            facts: Mutex::new(HashMap::new()),
            sold_out,
            lists: Lists::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn CatalogStore> {
        &self.store
    }

    /// The sale's fixed facts, reloaded when a SKU is not known yet (a product
    /// created on another node) at most once a second.
    pub async fn facts(
        &self,
        sale_id: Uuid,
        sku: Option<&str>,
    ) -> Result<Option<Arc<SaleFacts>>, CatalogError> {
        let cached = self.cached_facts(sale_id);
        if let Some(f) = &cached {
            let known = sku.is_none_or(|s| f.products.contains_key(s));
            if known || f.loaded.elapsed() < FACTS_RELOAD {
                return Ok(cached);
            }
        }
        let Some(sale) = self.store.sale(sale_id).await? else {
            return Ok(None);
        };
        let products = self.store.products(sale_id).await?;
        let facts = Arc::new(SaleFacts {
            host_id: sale.host_id,
            checkout: sale.checkout,
            reservation_ttl_secs: sale.reservation_ttl_secs,
            products: products
                .into_iter()
                .map(|p| {
                    let f = ProductFacts {
                        price_cents: p.price_cents,
                        currency: p.currency,
                        per_user_limit: p.per_user_limit,
                        ships_to: p.ships_to.map(Arc::new),
                    };
                    (p.sku, f)
                })
                .collect(),
            loaded: Instant::now(),
        });
        self.facts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sale_id, facts.clone());
        Ok(Some(facts))
    }

    fn cached_facts(&self, sale_id: Uuid) -> Option<Arc<SaleFacts>> {
        // Short section, no await: std mutex.
        self.facts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&sale_id)
            .cloned()
    }

    fn forget_facts(&self, sale_id: Uuid) {
        self.facts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sale_id);
    }

    /// Live levels of `skus`, in order; all `None` (committed counts are
    /// shown instead) when the inventory cannot be reached.
    async fn levels(&self, sale_id: Uuid, skus: &[String]) -> Vec<Option<StockLevel>> {
        match self.inventory.levels(sale_id, skus).await {
            Ok(l) if l.len() == skus.len() => l,
            Ok(_) => vec![None; skus.len()],
            Err(e) => {
                tracing::warn!(error = %e, "live counts unavailable; showing committed counts");
                vec![None; skus.len()]
            }
        }
    }

    async fn with_products(&self, record: SaleRecord) -> Result<Sale, CatalogError> {
        let records = self.store.products(record.id).await?;
        let skus: Vec<String> = records.iter().map(|p| p.sku.clone()).collect();
        let levels = self.levels(record.id, &skus).await;
        let products = records
            .iter()
            .zip(levels.iter())
            .map(|(r, l)| product(r, l.as_ref()))
            .collect();
        Ok(Sale { record, products })
    }

    async fn skus(&self, id: Uuid) -> Result<Vec<String>, CatalogError> {
        Ok(self
            .store
            .products(id)
            .await?
            .into_iter()
            .map(|p| p.sku)
            .collect())
    }

    /// The live levels of every product of the sale (those with live state).
    pub async fn live_levels(&self, id: Uuid) -> Result<Vec<StockLevel>, CatalogError> {
        let skus = self.skus(id).await?;
        Ok(self
            .inventory
            .levels(id, &skus)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    pub async fn sale(&self, id: Uuid) -> Result<Sale, CatalogError> {
        let record = self
            .store
            .sale(id)
            .await?
            .ok_or(CatalogError::NotFound("sale"))?;
        self.with_products(record).await
    }

    /// The newest sales (of `status`), at most 100, as this node built them
    /// within the last second (see `lists`).
    pub async fn list(&self, status: Option<SaleStatus>) -> Result<Arc<SaleList>, CatalogError> {
        self.lists
            .get(status, self.clock.now_ms(), || async {
                let mut out = Vec::new();
                for record in self.store.sales(status, LIST_LIMIT).await? {
                    out.push(self.with_products(record).await?);
                }
                Ok(out)
            })
            .await
    }

    /// What the dashboard shows of a sale's catalog: its products with live
    /// counts, and its GMV, all in one products query (no `SUM` over orders).
    ///
    /// GMV is derived from `sold`, PostgreSQL's running total of each
    /// product, which the batch writer raises in the same transaction that
    /// inserts the orders (by exactly their qty), whichever node committed
    /// them. An order's total is its qty times its product's price, and a
    /// product's price never changes, so the sum over products of `sold ×
    /// price_cents` is the sum of the sale's completed orders, exact and the
    /// same on every node. A claim's reship is a zero-price order that also
    /// raises `sold`: the dashboard takes those out (`AfterSales::free_cents`).
    pub async fn figures(&self, id: Uuid) -> Result<SaleFigures, CatalogError> {
        let records = self.store.products(id).await?;
        let skus: Vec<String> = records.iter().map(|p| p.sku.clone()).collect();
        let levels = self.levels(id, &skus).await;
        let gmv_cents = records.iter().fold(0i64, |sum, r| {
            sum.saturating_add(r.sold.saturating_mul(r.price_cents))
        });
        let products = records
            .iter()
            .zip(levels.iter())
            .map(|(r, l)| product(r, l.as_ref()))
            .collect();
        Ok(SaleFigures {
            products,
            gmv_cents,
        })
    }

    /// The sale, if `who` may manage it: 404 before 403, so a stranger learns
    /// only what the public list already shows.
    pub async fn managed(&self, who: &Identity, id: Uuid) -> Result<SaleRecord, CatalogError> {
        let sale = self
            .store
            .sale(id)
            .await?
            .ok_or(CatalogError::NotFound("sale"))?;
        if who.may_manage(&sale.host_id) {
            Ok(sale)
        } else {
            Err(CatalogError::Forbidden)
        }
    }

    pub async fn create_sale(&self, who: &Identity, new: NewSale) -> Result<Sale, CatalogError> {
        if !who.may_create_sales() {
            return Err(CatalogError::Forbidden);
        }
        let record = SaleRecord {
            id: Uuid::now_v7(),
            title: new.title,
            description: new.description,
            host_id: who.user_id.clone(),
            status: SaleStatus::Scheduled,
            checkout: new.checkout,
            reservation_ttl_secs: new.reservation_ttl_secs,
            scheduled_at: new.scheduled_at,
            created_at: self.clock.now(),
            started_at: None,
            ended_at: None,
            pinned_sku: None,
            stream_url: new.stream_url,
        };
        self.store.insert_sale(&record).await?;
        self.lists.changed();
        self.rebuild.create(record.id).await?;
        Ok(Sale {
            record,
            products: Vec::new(),
        })
    }

    pub async fn start(&self, who: &Identity, id: Uuid) -> Result<Sale, CatalogError> {
        let sale = self.managed(who, id).await?;
        match sale.status {
            SaleStatus::Ended => return Err(CatalogError::InvalidState("the sale has ended")),
            SaleStatus::Live => return self.with_products(sale).await,
            SaleStatus::Scheduled => {}
        }
        let t = Transition {
            from: SaleStatus::Scheduled,
            to: SaleStatus::Live,
        };
        let record = self
            .store
            .transition(id, t, self.clock.now())
            .await?
            .ok_or(CatalogError::InvalidState("the sale changed meanwhile"))?;
        self.lists.changed();
        self.rebuild.ensure(id).await?;
        self.inventory
            .set_sale_status(id, SaleStatus::Live, &[])
            .await?;
        self.bus.publish(
            id,
            SaleEvent::Sale {
                status: SaleStatus::Live,
            },
        );
        self.with_products(record).await
    }

    pub async fn end(&self, who: &Identity, id: Uuid) -> Result<Sale, CatalogError> {
        let sale = self.managed(who, id).await?;
        if sale.status == SaleStatus::Ended {
            return Err(CatalogError::InvalidState("the sale has already ended"));
        }
        let t = Transition {
            from: sale.status,
            to: SaleStatus::Ended,
        };
        let record = self
            .store
            .transition(id, t, self.clock.now())
            .await?
            .ok_or(CatalogError::InvalidState("the sale changed meanwhile"))?;
        self.lists.changed();
        self.rebuild.ensure(id).await?;
        let skus = self.skus(id).await?;
        let closed = self
            .inventory
            .set_sale_status(id, SaleStatus::Ended, &skus)
            .await?;
        for level in closed {
            self.stock.changed(id, level);
        }
        self.bus.publish(
            id,
            SaleEvent::Sale {
                status: SaleStatus::Ended,
            },
        );
        let sale = self.with_products(record).await?;
        for p in &sale.products {
            self.bus
                .publish(id, SaleEvent::Product { product: p.clone() });
        }
        Ok(sale)
    }

    pub async fn add_product(
        &self,
        who: &Identity,
        id: Uuid,
        new: NewProduct,
    ) -> Result<Product, CatalogError> {
        let sale = self.managed(who, id).await?;
        if sale.status == SaleStatus::Ended {
            return Err(CatalogError::InvalidState("the sale has ended"));
        }
        // Counted before the insert: two adds racing past 199 may make 201,
        // which costs nothing the cap is there to prevent.
        if self.store.products(id).await?.len() >= MAX_PRODUCTS_PER_SALE {
            return Err(CatalogError::InvalidState(
                "a sale holds at most 200 products",
            ));
        }
        let epoch = self.rebuild.ensure(id).await?;
        match self.store.insert_product(id, &new, epoch).await {
            Err(StoreError::Duplicate) => return Err(CatalogError::DuplicateSku),
            other => other?,
        }
        self.forget_facts(id);
        self.lists.changed();
        let seed = ProductSeed {
            sku: new.sku.clone(),
            stock: new.stock,
            sold: 0,
            per_user_limit: new.per_user_limit,
            status: ProductStatus::Scheduled,
        };
        let level = self.inventory.add_product(id, &seed).await?;
        let record = self
            .store
            .product(id, &new.sku)
            .await?
            .ok_or(CatalogError::NotFound("product"))?;
        let p = product(&record, Some(&level));
        self.bus
            .publish(id, SaleEvent::Product { product: p.clone() });
        Ok(p)
    }

    async fn managed_product(
        &self,
        who: &Identity,
        id: Uuid,
        sku: &str,
    ) -> Result<(SaleRecord, ProductRecord), CatalogError> {
        let sale = self.managed(who, id).await?;
        // No stored SKU breaks the rule, so one that does names nothing (and
        // a NUL must not reach PostgreSQL, which answers it with an error).
        if super::validate::sku(sku).is_err() {
            return Err(CatalogError::NotFound("product"));
        }
        let record = self
            .store
            .product(id, sku)
            .await?
            .ok_or(CatalogError::NotFound("product"))?;
        Ok((sale, record))
    }

    /// Sets the host's status of a product: open (sale must be live) or close.
    pub async fn set_status(
        &self,
        who: &Identity,
        id: Uuid,
        sku: &str,
        status: ProductStatus,
    ) -> Result<Product, CatalogError> {
        let (sale, mut record) = self.managed_product(who, id, sku).await?;
        match (sale.status, status) {
            (SaleStatus::Live, _) | (SaleStatus::Scheduled, ProductStatus::Closed) => {}
            // Ending closed every product: a close that raced the end (or a
            // retried one) asked for what already holds, so it succeeds
            // without writing anything.
            (SaleStatus::Ended, ProductStatus::Closed) => {
                let levels = self.levels(id, &[record.sku.clone()]).await;
                return Ok(product(&record, levels.first().and_then(Option::as_ref)));
            }
            (_, _) => return Err(CatalogError::SaleNotLive),
        }
        self.store.set_product_status(id, sku, status).await?;
        self.lists.changed();
        record.status = status;
        self.rebuild.ensure(id).await?;
        let level = self.inventory.set_product_status(id, sku, status).await?;
        self.publish_product(id, &record, level)
    }

    pub async fn restock(
        &self,
        who: &Identity,
        id: Uuid,
        sku: &str,
        add: i64,
    ) -> Result<Product, CatalogError> {
        let (sale, mut record) = self.managed_product(who, id, sku).await?;
        if sale.status == SaleStatus::Ended {
            return Err(CatalogError::InvalidState("the sale has ended"));
        }
        record.stock = self.store.restock(id, sku, add).await?;
        self.lists.changed();
        self.rebuild.ensure(id).await?;
        let level = self.inventory.restock(id, sku, add).await?;
        self.publish_product(id, &record, level)
    }

    fn publish_product(
        &self,
        id: Uuid,
        record: &ProductRecord,
        level: Option<StockLevel>,
    ) -> Result<Product, CatalogError> {
        let p = product(record, level.as_ref());
        if let Some(level) = level {
            self.sold_out.observe(id, &level);
            self.stock.changed(id, level);
        }
        self.bus
            .publish(id, SaleEvent::Product { product: p.clone() });
        Ok(p)
    }

    pub async fn pin(&self, who: &Identity, id: Uuid, sku: &str) -> Result<Sale, CatalogError> {
        let (_, _) = self.managed_product(who, id, sku).await?;
        self.store.set_pinned(id, sku).await?;
        self.lists.changed();
        self.bus.publish(
            id,
            SaleEvent::Pinned {
                sku: sku.to_owned(),
            },
        );
        self.sale(id).await
    }
}
