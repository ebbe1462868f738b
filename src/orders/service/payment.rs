//! A reserved order's end: paid (through a provider or confirmed by
//! hand), cancelled, released by a ban, or expired by the reaper.

use super::*;

impl Orders {
    /// The host's (or an operator's) manual confirmation: the money was
    /// seen outside any provider (cash, a bank or WeChat transfer). Never the
    /// buyer's own word.
    pub async fn confirm_manual(
        &self,
        who: &Identity,
        order_id: Uuid,
        payment_ref: &str,
        note: Option<&str>,
    ) -> Result<Order, OrderError> {
        if payment_ref.is_empty()
            || payment_ref.len() > 128
            || crate::text::check_ascii_ref(payment_ref).is_err()
        {
            return Err(OrderError::Invalid(
                "payment_ref must be 1..=128 printable ASCII characters".into(),
            ));
        }
        if let Some(n) = note {
            if n.chars().count() > 500 {
                return Err(OrderError::Invalid("note: at most 500 characters".into()));
            }
            crate::text::check_multiline(n)
                .map_err(|e| OrderError::Invalid(format!("note: {e}")))?;
        }
        let (live, committed) = self.find(order_id).await?;
        let sale_id = committed
            .as_ref()
            .map(|o| o.sale_id)
            .or(live.as_ref().map(|l| l.order.sale_id))
            .ok_or(OrderError::NotFound("order"))?;
        if !self.may_manage(who, sale_id).await? {
            return Err(OrderError::HostConfirms);
        }
        if let Some(order) = committed {
            return Ok(order);
        }
        let live = live.ok_or(OrderError::NotFound("order"))?;
        let payment = OrderPayment {
            method: OrderPayment::MANUAL.into(),
            payment_id: None,
            paid_cents: live.order.total_cents,
            refunded_cents: 0,
            note: note.map(str::to_owned),
        };
        match self.complete_reserved(live, payment, payment_ref).await? {
            Paid::Completed(o) | Paid::AlreadyCompleted(o) => Ok(o),
            Paid::Gone(OrderStatus::Expired) => Err(OrderError::ReservationExpired),
            Paid::Gone(_) => Err(OrderError::InvalidState("the order is not reserved")),
            Paid::Busy => Err(OrderError::InvalidState("a payment is being recorded")),
        }
    }

    /// A provider's verified success for a reserved order: completes it
    /// (committed before this returns) unless it expired or was cancelled.
    pub async fn complete_paid(
        &self,
        order_id: Uuid,
        payment: OrderPayment,
        payment_ref: &str,
    ) -> Result<Paid, OrderError> {
        let (live, committed) = self.find(order_id).await?;
        if let Some(order) = committed {
            return Ok(Paid::AlreadyCompleted(order));
        }
        match live {
            Some(live) => self.complete_reserved(live, payment, payment_ref).await,
            // Settled long ago and forgotten by the inventory.
            None => Ok(Paid::Gone(OrderStatus::Expired)),
        }
    }

    /// Tells the buyer's sockets about its order (a refund, a payment).
    pub fn announce(&self, order: &Order) {
        self.bus.publish(
            order.sale_id,
            SaleEvent::Order {
                order: Box::new(order.clone()),
            },
        );
    }

    /// The shared tail of every payment: the lease in the inventory (so the
    /// reaper leaves the reservation alone), the guarded batch writer, then
    /// the inventory's confirmation and the buyer's `order` event.
    pub(super) async fn complete_reserved(
        &self,
        live: LiveOrder,
        payment: OrderPayment,
        payment_ref: &str,
    ) -> Result<Paid, OrderError> {
        let order_id = live.order.id;
        let sale_id = live.order.sale_id;
        let now = self.clock.now();
        match self
            .inventory
            .begin_pay(sale_id, order_id, now.timestamp_millis(), COMMIT_LEASE_MS)
            .await?
        {
            PayStart::Started => {}
            PayStart::AlreadyCompleted => {
                return match self.store.order(order_id).await? {
                    Some(o) => Ok(Paid::AlreadyCompleted(o)),
                    None => Ok(Paid::Busy),
                };
            }
            PayStart::Expired => return Ok(Paid::Gone(OrderStatus::Expired)),
            PayStart::WrongState(OrderStatus::Reserved) => return Ok(Paid::Busy),
            PayStart::WrongState(status) => return Ok(Paid::Gone(status)),
            PayStart::NotFound => return Ok(Paid::Gone(OrderStatus::Expired)),
        }
        let mut order = live.order;
        order.status = OrderStatus::Completed;
        order.completed_at = Some(now);
        order.payment_ref = Some(payment_ref.to_owned());
        order.payment = Some(payment);
        let committed = self
            .writer
            .commit(CompletedOrder {
                order: order.clone(),
                key: live.key,
                epoch: live.epoch,
            })
            .await;
        let order = match committed {
            Ok(Commit::Committed) => {
                self.stats.order(sale_id);
                order
            }
            Ok(Commit::Stale) => {
                // Admitted before a rebuild, which dropped the reservation.
                self.give_back(sale_id, order_id, OrderStatus::Expired)
                    .await;
                return Ok(Paid::Gone(OrderStatus::Expired));
            }
            Ok(Commit::Existing(existing)) if existing.id == order.id => {
                return Ok(Paid::AlreadyCompleted(*existing))
            }
            Ok(Commit::Existing(_)) | Ok(Commit::SoldOut) => {
                // Only after Redis lost data: the stock is not there to sell.
                self.refused(sale_id, order_id).await;
                return Ok(Paid::Gone(OrderStatus::Cancelled));
            }
            Ok(Commit::Invalid) => {
                if let Err(e) = self.inventory.abort_pay(sale_id, order_id).await {
                    tracing::warn!(error = %e, "payment lease not returned; it expires");
                }
                return Err(OrderError::Invalid(REFUSED_BY_DB.into()));
            }
            Err(e) => {
                if let Err(e) = self.inventory.abort_pay(sale_id, order_id).await {
                    tracing::warn!(error = %e, "payment lease not returned; it expires");
                }
                return Err(e.into());
            }
        };
        let done_at = order.completed_at.unwrap_or(now).timestamp_millis();
        match self
            .inventory
            .confirm(
                sale_id,
                order_id,
                &order.sku,
                done_at,
                order.payment_ref.as_deref(),
                None,
            )
            .await
        {
            Ok(Some(level)) => self.stock_changed(sale_id, level).await,
            Ok(None) => {}
            // Committed: the reaper confirms it later after checking PostgreSQL.
            Err(e) => tracing::warn!(error = %e, %order_id, "confirm deferred to the reaper"),
        }
        self.announce(&order);
        Ok(Paid::Completed(order))
    }

    pub async fn cancel(&self, who: &Identity, order_id: Uuid) -> Result<Order, OrderError> {
        let (live, committed) = self.find(order_id).await?;
        let live = match (live, committed) {
            (_, Some(o)) if o.user_id != who.user_id => return Err(OrderError::Forbidden),
            (_, Some(_)) => return Err(OrderError::InvalidState("the order is completed")),
            (Some(l), None) => l,
            (None, None) => return Err(OrderError::NotFound("order")),
        };
        if live.order.user_id != who.user_id {
            return Err(OrderError::Forbidden);
        }
        let sale_id = live.order.sale_id;
        match self
            .inventory
            .release(
                sale_id,
                order_id,
                OrderStatus::Cancelled,
                ReleaseFrom::Reserved,
            )
            .await?
        {
            Released::Done(level) => self.stock_changed(sale_id, level).await,
            Released::WrongState(OrderStatus::Expired) => {
                return Err(OrderError::ReservationExpired)
            }
            Released::WrongState(_) => {
                return Err(OrderError::InvalidState(
                    "only a reserved order can be cancelled",
                ))
            }
            Released::NotFound => return Err(OrderError::NotFound("order")),
        }
        let mut order = live.order;
        order.status = OrderStatus::Cancelled;
        self.bus.publish(
            sale_id,
            SaleEvent::Order {
                order: Box::new(order.clone()),
            },
        );
        Ok(order)
    }

    /// A ban: the user's reservations in the sale are cancelled and their
    /// stock goes back on sale, so a banned user cannot pay for what it held.
    /// Returns how many were released.
    pub async fn release_user(&self, sale_id: Uuid, user_id: &str) -> Result<usize, OrderError> {
        let mut released = 0;
        for live in self.inventory.user_orders(user_id).await? {
            let order = live.order;
            if order.sale_id != sale_id || order.status != OrderStatus::Reserved {
                continue;
            }
            let done = self
                .inventory
                .release(
                    sale_id,
                    order.id,
                    OrderStatus::Cancelled,
                    ReleaseFrom::Reserved,
                )
                .await?;
            if let Released::Done(level) = done {
                self.stock_changed(sale_id, level).await;
                released += 1;
                let mut order = order;
                order.status = OrderStatus::Cancelled;
                self.bus.publish(
                    sale_id,
                    SaleEvent::Order {
                        order: Box::new(order),
                    },
                );
            }
        }
        Ok(released)
    }

    /// For the reaper: settles one due admission after asking PostgreSQL.
    pub async fn settle_due(&self, sale_id: Uuid, ids: &[Uuid]) -> Result<(), OrderError> {
        let committed: HashSet<Uuid> = self.store.existing(ids).await?.into_iter().collect();
        for &id in ids {
            if committed.contains(&id) {
                let Some(o) = self.store.order(id).await? else {
                    continue;
                };
                let done_at = o.completed_at.unwrap_or(o.created_at).timestamp_millis();
                let confirmed = self
                    .inventory
                    .confirm(sale_id, id, &o.sku, done_at, o.payment_ref.as_deref(), None)
                    .await?;
                if let Some(level) = confirmed {
                    self.stock_changed(sale_id, level).await;
                }
                continue;
            }
            match self
                .inventory
                .release(sale_id, id, OrderStatus::Expired, ReleaseFrom::AnyHolding)
                .await?
            {
                Released::Done(level) => {
                    self.stock_changed(sale_id, level).await;
                    if let Some(live) = self.inventory.order(sale_id, id).await? {
                        self.bus.publish(
                            sale_id,
                            SaleEvent::Order {
                                order: Box::new(live.order),
                            },
                        );
                    }
                }
                Released::WrongState(_) | Released::NotFound => {}
            }
        }
        Ok(())
    }
}
