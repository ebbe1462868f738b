//! Moving completed orders to the buyer: packed, shipped (one by one or a
//! packing house's whole spreadsheet), delivered, returned or lost.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Fulfilment;
use crate::clock::Clock;
use crate::identity::Identity;
use crate::orders::{Order, OrderError, OrderStatus, OrderStore, Orders};

/// At most this many rows per shipments upload.
pub const MAX_SHIPMENT_ROWS: usize = 5000;

/// One row of a shipments upload, as sent.
#[derive(Debug, Clone, Deserialize)]
pub struct ShipmentRow {
    pub order_id: String,
    pub courier: String,
    pub waybill: String,
}

/// What an upload did: good rows count, bad rows say why; none stops another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShipmentsOutcome {
    pub shipped: usize,
    pub unchanged: usize,
    pub errors: Vec<RowError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// 1-based, the header not counted.
    pub row: usize,
    pub order_id: String,
    pub code: &'static str,
    pub message: String,
}

pub struct Shipping {
    orders: Arc<Orders>,
    store: Arc<dyn OrderStore>,
    clock: Arc<Clock>,
}

impl Shipping {
    pub fn new(orders: Arc<Orders>, store: Arc<dyn OrderStore>, clock: Arc<Clock>) -> Self {
        Shipping {
            orders,
            store,
            clock,
        }
    }

    /// A completed order of a sale `who` manages.
    async fn managed(&self, who: &Identity, order_id: Uuid) -> Result<Order, OrderError> {
        let Some(order) = self.store.order(order_id).await? else {
            return match self.orders.current(order_id).await? {
                Some(o) if self.orders.may_manage(who, o.sale_id).await? => Err(
                    OrderError::InvalidState("only a completed order is fulfilled"),
                ),
                Some(_) => Err(OrderError::Forbidden),
                None => Err(OrderError::NotFound("order")),
            };
        };
        if !self.orders.may_manage(who, order.sale_id).await? {
            return Err(OrderError::Forbidden);
        }
        Ok(order)
    }

    /// `POST /orders/{id}/fulfilment`: one move (not `shipped`: that
    /// takes a waybill, through the shipments upload).
    pub async fn move_one(
        &self,
        who: &Identity,
        order_id: Uuid,
        to: Fulfilment,
    ) -> Result<Order, OrderError> {
        if matches!(to, Fulfilment::Shipped | Fulfilment::Unfulfilled) {
            return Err(OrderError::Invalid(
                "status must be packed, delivered, returned or lost (ship with POST /sales/{id}/shipments)"
                    .into(),
            ));
        }
        let order = self.managed(who, order_id).await?;
        if order.fulfilment == to {
            return Ok(order);
        }
        if to == Fulfilment::Packed && order.ship_to.is_none() {
            return Err(OrderError::AddressRequired);
        }
        let moved = self
            .store
            .move_fulfilment(order_id, to.reachable_from(), to, None, self.clock.now())
            .await?
            .ok_or(OrderError::InvalidState(
                "the order cannot move there from where it is",
            ))?;
        self.orders.announce(&moved);
        Ok(moved)
    }

    /// `POST /sales/{id}/shipments`: each good row marks its order shipped.
    pub async fn ship_many(
        &self,
        who: &Identity,
        sale_id: Uuid,
        rows: Vec<ShipmentRow>,
    ) -> Result<ShipmentsOutcome, OrderError> {
        if !self.orders.may_manage(who, sale_id).await? {
            return Err(OrderError::Forbidden);
        }
        if rows.len() > MAX_SHIPMENT_ROWS {
            return Err(OrderError::Invalid(format!(
                "at most {MAX_SHIPMENT_ROWS} rows per upload (got {})",
                rows.len()
            )));
        }
        let mut out = ShipmentsOutcome::default();
        // The waybill each order got earlier in this upload: a repeated row
        // is unchanged, a contradicting one an error.
        let mut seen: HashMap<Uuid, (String, String)> = HashMap::new();
        for (i, row) in rows.into_iter().enumerate() {
            let n = i + 1;
            let err = |code: &'static str, message: String| RowError {
                row: n,
                order_id: row.order_id.chars().take(64).collect(),
                code,
                message,
            };
            let (order_id, courier, waybill) = match parse_row(&row) {
                Ok(v) => v,
                Err(m) => {
                    out.errors.push(err("bad_request", m));
                    continue;
                }
            };
            if let Some((c, w)) = seen.get(&order_id) {
                if *c == courier && *w == waybill {
                    out.unchanged += 1;
                } else {
                    out.errors.push(err(
                        "invalid_state",
                        "listed twice with different waybills".into(),
                    ));
                }
                continue;
            }
            match self.ship_one(sale_id, order_id, &courier, &waybill).await {
                Ok(true) => out.shipped += 1,
                Ok(false) => out.unchanged += 1,
                Err(e) => {
                    out.errors.push(err(e.code(), e.to_string()));
                    continue;
                }
            }
            seen.insert(order_id, (courier, waybill));
        }
        metrics::counter!("lychee_orders_shipped_total").increment(out.shipped as u64);
        Ok(out)
    }

    /// `true`: shipped now; `false`: it was already, with this waybill.
    async fn ship_one(
        &self,
        sale_id: Uuid,
        order_id: Uuid,
        courier: &str,
        waybill: &str,
    ) -> Result<bool, OrderError> {
        let order = match self.store.order(order_id).await? {
            Some(o) if o.sale_id == sale_id => o,
            _ => {
                return match self.orders.current(order_id).await? {
                    Some(o) if o.sale_id == sale_id && o.status == OrderStatus::Reserved => {
                        Err(OrderError::InvalidState("the order is not paid yet"))
                    }
                    _ => Err(OrderError::NotFound("order of this sale")),
                };
            }
        };
        if let Some(s) = &order.shipment {
            return if s.courier == courier && s.waybill == waybill {
                Ok(false)
            } else {
                Err(OrderError::InvalidState(
                    "already shipped with another waybill",
                ))
            };
        }
        if order.ship_to.is_none() {
            return Err(OrderError::AddressRequired);
        }
        let moved = self
            .store
            .move_fulfilment(
                order_id,
                Fulfilment::Shipped.reachable_from(),
                Fulfilment::Shipped,
                Some((courier, waybill)),
                self.clock.now(),
            )
            .await?
            .ok_or(OrderError::InvalidState(
                "the order cannot be shipped from where it is",
            ))?;
        self.orders.announce(&moved);
        Ok(true)
    }
}

/// A row's order id, courier (1..=40 visible characters) and waybill
/// (1..=64 of `[A-Za-z0-9-]`, what couriers print).
fn parse_row(row: &ShipmentRow) -> Result<(Uuid, String, String), String> {
    let id = Uuid::try_parse(row.order_id.trim())
        .map_err(|_| "order_id is not an order id".to_owned())?;
    let courier = row.courier.trim();
    let n = courier.chars().count();
    if n == 0 || n > 40 || crate::text::check_visible_line(courier).is_err() {
        return Err("courier must be 1..=40 characters of one line".into());
    }
    let waybill = row.waybill.trim();
    if waybill.is_empty()
        || waybill.len() > 64
        || !waybill
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err("waybill must be 1..=64 letters, digits or '-'".into());
    }
    Ok((id, courier.to_owned(), waybill.to_owned()))
}

/// The rows of a `text/csv` upload, header `order_id,courier,waybill` (in
/// any order; other columns are ignored). A row that does not parse is
/// kept with its fields empty, so it is reported with its number.
pub fn csv_rows(body: &[u8]) -> Result<Vec<ShipmentRow>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body);
    let headers = reader
        .headers()
        .map_err(|e| format!("the CSV header cannot be read: {e}"))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}').eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                format!("the CSV header must name order_id, courier and waybill (no {name})")
            })
    };
    let (o, c, w) = (col("order_id")?, col("courier")?, col("waybill")?);
    let mut rows = Vec::new();
    for record in reader.records() {
        if rows.len() > MAX_SHIPMENT_ROWS {
            break;
        }
        let row = match record {
            Ok(r) => ShipmentRow {
                order_id: r.get(o).unwrap_or_default().to_owned(),
                courier: r.get(c).unwrap_or_default().to_owned(),
                waybill: r.get(w).unwrap_or_default().to_owned(),
            },
            Err(_) => ShipmentRow {
                order_id: String::new(),
                courier: String::new(),
                waybill: String::new(),
            },
        };
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_headers_in_any_order_with_a_bom_and_extra_columns() {
        let body = "\u{feff}Waybill,note,order_id,courier\r\nSF123,fragile,8d0f6b1e-0000-4000-8000-000000000001,SF Express\r\n";
        let rows = csv_rows(body.as_bytes()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].waybill, "SF123");
        assert_eq!(rows[0].courier, "SF Express");
        assert!(parse_row(&rows[0]).is_ok());
        assert!(csv_rows(b"order,courier,waybill\n")
            .unwrap_err()
            .contains("order_id"));
    }

    #[test]
    fn bad_rows_say_why() {
        let row = |o: &str, c: &str, w: &str| ShipmentRow {
            order_id: o.into(),
            courier: c.into(),
            waybill: w.into(),
        };
        let id = "8d0f6b1e-0000-4000-8000-000000000001";
        for (r, why) in [
            (row("x", "SF", "1"), "order_id"),
            (row(id, "", "1"), "courier"),
            (row(id, &"c".repeat(41), "1"), "courier"),
            (row(id, "SF\u{0}", "1"), "courier"),
            (row(id, "SF", ""), "waybill"),
            (row(id, "SF", "=HYPERLINK(1)"), "waybill"),
            (row(id, "SF", &"1".repeat(65)), "waybill"),
        ] {
            assert!(parse_row(&r).unwrap_err().contains(why), "{r:?}");
        }
    }
}
