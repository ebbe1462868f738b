//! The packing list: a sale's completed orders not shipped yet, streamed as
//! CSV for the packing house, with the recipient's full phone and address
//! (it goes to the sale's host alone). Orders without an address come last,
//! apart, so the house can chase their buyers.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use futures_util::Stream;
use uuid::Uuid;

use super::address::provinces::province;
use crate::orders::export::cell;
use crate::orders::{Order, OrderStore};
use crate::store::StoreError;

pub const HEADER: [&str; COLUMNS] = [
    "order_id",
    "completed_at",
    "recipient",
    "phone",
    "province",
    "province_name",
    "city",
    "district",
    "line",
    "postcode",
    "sku",
    "qty",
    "ships_by",
    "fulfilment",
    "note",
];
const COLUMNS: usize = 15;
const PAGE: i64 = 1000;

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn row(o: &Order, ships_by: &HashMap<String, NaiveDate>) -> [String; COLUMNS] {
    let a = o.ship_to.as_ref();
    let text = |f: fn(&super::address::Address) -> Option<&str>| {
        a.and_then(f).map(cell).unwrap_or_default()
    };
    [
        o.id.to_string(),
        o.completed_at.map(rfc3339).unwrap_or_default(),
        text(|a| Some(&a.name)),
        text(|a| Some(&a.phone)),
        text(|a| Some(&a.province)),
        a.and_then(|a| province(&a.province))
            .map(|p| p.zh.to_owned())
            .unwrap_or_default(),
        text(|a| Some(&a.city)),
        text(|a| a.district.as_deref()),
        text(|a| Some(&a.line)),
        text(|a| a.postcode.as_deref()),
        cell(&o.sku),
        o.qty.to_string(),
        ships_by
            .get(&o.sku)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default(),
        o.fulfilment.as_str().to_owned(),
        if a.is_none() {
            "no address: ask the buyer".to_owned()
        } else {
            String::new()
        },
    ]
}

fn write_rows(
    rows: impl IntoIterator<Item = [String; COLUMNS]>,
    header: bool,
) -> Result<Bytes, StoreError> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let err = |e: csv::Error| StoreError::Corrupt(e.to_string());
    if header {
        w.write_record(HEADER).map_err(err)?;
    }
    for r in rows {
        w.write_record(&r).map_err(err)?;
    }
    w.into_inner()
        .map(Bytes::from)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The header, then the orders with an address, then those without.
pub fn csv_stream(
    store: Arc<dyn OrderStore>,
    sale_id: Uuid,
    ships_by: HashMap<String, NaiveDate>,
) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
    struct State {
        store: Arc<dyn OrderStore>,
        ships_by: HashMap<String, NaiveDate>,
        after: Option<(DateTime<Utc>, Uuid)>,
        started: bool,
        with_address: bool,
        done: bool,
    }
    let state = State {
        store,
        ships_by,
        after: None,
        started: false,
        with_address: true,
        done: false,
    };
    futures_util::stream::unfold(state, move |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if !st.started {
                st.started = true;
                return Some((write_rows([], true), st));
            }
            match st
                .store
                .to_pack_page(sale_id, st.with_address, st.after, PAGE)
                .await
            {
                Ok(page) => {
                    let last_page = (page.len() as i64) < PAGE;
                    st.after = page.last().map(|o| (o.created_at, o.id));
                    if last_page {
                        if st.with_address {
                            st.with_address = false;
                            st.after = None;
                        } else {
                            st.done = true;
                        }
                    }
                    if page.is_empty() {
                        continue;
                    }
                    let chunk = write_rows(page.iter().map(|o| row(o, &st.ships_by)), false);
                    return Some((chunk, st));
                }
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            }
        }
    })
}
