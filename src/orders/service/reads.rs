//! Reading orders: one by id (live state first, then PostgreSQL), a
//! buyer's own, and who may see them.

use super::*;

impl Orders {
    /// Where an order is and what it is now: the inventory for reservations,
    /// PostgreSQL for completed orders (the final word).
    pub(super) async fn find(
        &self,
        order_id: Uuid,
    ) -> Result<(Option<LiveOrder>, Option<Order>), OrderError> {
        let live = match self.inventory.locate(order_id).await? {
            Some(sale_id) => self.inventory.order(sale_id, order_id).await?,
            None => None,
        };
        let committed = match &live {
            Some(l) if l.order.status != OrderStatus::Completed => None,
            _ => self.store.order(order_id).await?,
        };
        Ok((live, committed))
    }

    pub async fn get(&self, who: &Identity, order_id: Uuid) -> Result<Order, OrderError> {
        let (live, committed) = self.find(order_id).await?;
        let order = committed
            .or(live.map(|l| l.order))
            .ok_or(OrderError::NotFound("order"))?;
        if order.user_id == who.user_id || who.role == Role::Operator {
            return Ok(order);
        }
        let host = self.catalog.facts(order.sale_id, None).await?;
        if host.is_some_and(|f| who.may_manage(&f.host_id)) {
            Ok(order)
        } else {
            Err(OrderError::Forbidden)
        }
    }

    /// Whether `who` manages the sale (its host, an operator).
    pub async fn may_manage(&self, who: &Identity, sale_id: Uuid) -> Result<bool, OrderError> {
        if who.role == Role::Operator {
            return Ok(true);
        }
        let facts = self.catalog.facts(sale_id, None).await?;
        Ok(facts.is_some_and(|f| who.may_manage(&f.host_id)))
    }

    /// The order as it is now (reserved in the inventory, or committed).
    pub async fn current(&self, order_id: Uuid) -> Result<Option<Order>, OrderError> {
        let (live, committed) = self.find(order_id).await?;
        Ok(committed.or(live.map(|l| l.order)))
    }

    /// The committed order, from PostgreSQL alone.
    pub async fn committed(&self, order_id: Uuid) -> Result<Option<Order>, OrderError> {
        Ok(self.store.order(order_id).await?)
    }

    /// Newest first: completed orders from PostgreSQL, the rest from the inventory.
    pub async fn mine(&self, who: &Identity) -> Result<Vec<Order>, OrderError> {
        let mut by_id: HashMap<Uuid, Order> = HashMap::new();
        for l in self.inventory.user_orders(&who.user_id).await? {
            by_id.insert(l.order.id, l.order);
        }
        for o in self
            .store
            .user_orders(&who.user_id, MY_ORDERS_LIMIT)
            .await?
        {
            by_id.insert(o.id, o);
        }
        let mut out: Vec<Order> = by_id.into_values().collect();
        out.sort_by_key(|o| std::cmp::Reverse((o.created_at, o.id)));
        out.truncate(MY_ORDERS_LIMIT as usize);
        Ok(out)
    }

    pub async fn catalog_status(
        &self,
        sale_id: Uuid,
    ) -> Result<Option<crate::catalog::SaleStatus>, OrderError> {
        Ok(self.catalog.store().sale(sale_id).await?.map(|s| s.status))
    }
}
