//! Where an order goes: the buyer's address attached to a held order,
//! the address book warmed for the buy path, a claim's reshipment.

use super::*;

impl Orders {
    /// Reads the user's address book into this node's cache in the
    /// background, so their first buy here needs no database read.
    pub fn warm_buyer(&self, user_id: &str) {
        let (addresses, user_id) = (self.addresses.clone(), user_id.to_owned());
        tokio::spawn(async move {
            if let Err(e) = addresses.default_of(&user_id).await {
                tracing::debug!(error = %e, "address book not read ahead");
            }
        });
    }

    /// The address a buy ships to: the one named (the buyer's own, or 404),
    /// else the buyer's default, else none (attached later).
    pub(super) async fn ship_to(
        &self,
        user_id: &str,
        address_id: Option<Uuid>,
    ) -> Result<Option<Address>, OrderError> {
        match address_id {
            Some(id) => match self.addresses.address(user_id, id).await? {
                Some(a) => Ok(Some(Address {
                    is_default: false,
                    ..a
                })),
                None => Err(OrderError::NotFound("address")),
            },
            // Reservations keep working while PostgreSQL is away: the order
            // is taken without an address, which the buyer attaches later.
            None => match self.addresses.default_of(user_id).await {
                Ok(a) => Ok(a.map(|a| Address {
                    is_default: false,
                    ..a
                })),
                Err(e) => {
                    tracing::warn!(error = %e, "default address unavailable; the order is taken without one");
                    Ok(None)
                }
            },
        }
    }

    /// `PUT /orders/{id}/address`: its buyer attaches one of its addresses,
    /// checked against the product's delivery areas, until the order is packed.
    pub async fn attach_address(
        &self,
        who: &Identity,
        order_id: Uuid,
        address_id: Uuid,
    ) -> Result<Order, OrderError> {
        let order = self
            .current(order_id)
            .await?
            .ok_or(OrderError::NotFound("order"))?;
        if order.user_id != who.user_id {
            return Err(OrderError::Forbidden);
        }
        let address = self
            .ship_to(&who.user_id, Some(address_id))
            .await?
            .ok_or(OrderError::NotFound("address"))?;
        let facts = self
            .catalog
            .facts(order.sale_id, Some(&order.sku))
            .await?
            .ok_or(OrderError::NotFound("sale"))?;
        let area = facts
            .products
            .get(&order.sku)
            .and_then(|p| p.ships_to.clone());
        if area.is_some_and(|a| !a.allows(&address.province)) {
            return Err(OrderError::Undeliverable);
        }
        let updated = match order.status {
            OrderStatus::Reserved => {
                match self
                    .inventory
                    .set_ship_to(order.sale_id, order_id, &address)
                    .await?
                {
                    ShipToSet::Done => Order {
                        ship_to: Some(address),
                        ..order
                    },
                    ShipToSet::WrongState(OrderStatus::Reserved) => {
                        return Err(OrderError::InvalidState(
                            "a payment of this order is being recorded; try again",
                        ))
                    }
                    ShipToSet::WrongState(OrderStatus::Expired) => {
                        return Err(OrderError::ReservationExpired)
                    }
                    ShipToSet::WrongState(OrderStatus::Completed) => {
                        // Paid meanwhile: the committed order is the one to change.
                        return Box::pin(self.attach_address(who, order_id, address_id)).await;
                    }
                    ShipToSet::WrongState(_) => {
                        return Err(OrderError::InvalidState("the order was cancelled"))
                    }
                    ShipToSet::NotFound => return Err(OrderError::NotFound("order")),
                }
            }
            OrderStatus::Completed => {
                if !self.store.set_ship_to(order_id, &address).await? {
                    return Err(OrderError::InvalidState(
                        "the order is packed or shipped: its address can no longer change",
                    ));
                }
                self.store
                    .order(order_id)
                    .await?
                    .ok_or(OrderError::NotFound("order"))?
            }
            OrderStatus::Expired => return Err(OrderError::ReservationExpired),
            OrderStatus::Cancelled => {
                return Err(OrderError::InvalidState("the order was cancelled"))
            }
        };
        self.announce(&updated);
        Ok(updated)
    }

    /// A claim's remedy: a zero-price order of `qty` of the claimed order's
    /// SKU, shipped to its address, committed at once. The stock is taken
    /// through the same admission as a buy (409 `sold_out` when none is
    /// left), which checks the stock alone: the sale has usually ended.
    /// `key` makes it idempotent (one reship per claim).
    pub async fn reship(
        &self,
        original: &Order,
        qty: i64,
        key: &str,
        note: String,
    ) -> Result<Order, OrderError> {
        let fp = fingerprint(&original.sku, qty, None);
        for _ in 0..STALE_RETRIES {
            let now = self.clock.now();
            let order = Order {
                id: Uuid::now_v7(),
                sale_id: original.sale_id,
                sku: original.sku.clone(),
                qty,
                unit_price_cents: 0,
                total_cents: 0,
                currency: original.currency.clone(),
                user_id: original.user_id.clone(),
                status: OrderStatus::Reserved,
                created_at: now,
                expires_at: None,
                completed_at: None,
                payment_ref: Some(format!("reship-{}", original.id.simple())),
                payment: Some(OrderPayment {
                    method: OrderPayment::MANUAL.into(),
                    payment_id: None,
                    paid_cents: 0,
                    refunded_cents: 0,
                    note: Some(note.clone()),
                }),
                ship_to: original.ship_to.clone(),
                fulfilment: Fulfilment::Unfulfilled,
                shipment: None,
                claims: Vec::new(),
            };
            let admit = AdmitRequest {
                remedy: true,
                sale_id: original.sale_id,
                user_id: original.user_id.clone(),
                key: key.to_owned(),
                fingerprint: fp.clone(),
                order,
                final_answer: None,
                deadline_ms: now.timestamp_millis() + COMMIT_LEASE_MS,
            };
            let mut admission = self.inventory.admit(&admit).await?;
            if let Admission::Missing { epoch } = admission {
                self.rebuild.repair(original.sale_id, epoch).await?;
                admission = self.inventory.admit(&admit).await?;
            }
            let json = match admission {
                Admission::Admitted { level, epoch } => {
                    self.stock_changed(original.sale_id, level).await;
                    match self.complete_instant(admit, epoch).await? {
                        Some(json) => json,
                        None => continue,
                    }
                }
                Admission::Rejected(r) => return Err(OrderError::Rejected(r)),
                Admission::Replay(Stored::Order(json)) => json,
                Admission::Replay(Stored::Rejected(r)) => return Err(OrderError::Rejected(r)),
                Admission::Replay(Stored::Pending(id)) => {
                    return self.store.order(id).await?.ok_or(OrderError::Unavailable(
                        "the reship is being recorded; try again",
                    ))
                }
                Admission::Mismatch => return Err(OrderError::IdempotencyMismatch),
                Admission::Missing { .. } => {
                    return Err(OrderError::Unavailable("the sale is being rebuilt"))
                }
            };
            let order: Order = serde_json::from_str(&json)
                .map_err(|_| OrderError::Unavailable("the reship answer did not parse"))?;
            self.announce(&order);
            return Ok(order);
        }
        Err(OrderError::Unavailable(
            "the sale is being rebuilt; try again",
        ))
    }
}
