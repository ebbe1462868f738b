//! CSV export of a sale's completed orders for the packing house, streamed
//! page by page so a big sale never sits in memory.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use uuid::Uuid;

use super::{Order, OrderStore};
use crate::store::StoreError;

/// The contract's ten columns, then the `payment` object's (added fields).
pub const HEADER: [&str; COLUMNS] = [
    "order_id",
    "created_at",
    "completed_at",
    "user_id",
    "sku",
    "qty",
    "unit_price_cents",
    "total_cents",
    "currency",
    "payment_ref",
    "payment_method",
    "payment_id",
    "paid_cents",
    "refunded_cents",
];
const COLUMNS: usize = 14;
const PAGE: i64 = 1000;

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn write_rows(
    rows: impl IntoIterator<Item = [String; COLUMNS]>,
    header: Option<[&str; COLUMNS]>,
) -> Result<Bytes, StoreError> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let err = |e: csv::Error| StoreError::Corrupt(e.to_string());
    if let Some(h) = header {
        w.write_record(h).map_err(err)?;
    }
    for row in rows {
        w.write_record(&row).map_err(err)?;
    }
    w.into_inner()
        .map(Bytes::from)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A cell a spreadsheet would run as a formula gets a leading `'`: the
/// packing house sees the text, and the file stays RFC 4180. Spreadsheets
/// skip leading blanks and control characters before they look for `=`,
/// `+`, `-` or `@`, so we look past them too; a cell that starts with a tab,
/// CR or LF is quoted whatever follows, as some importers split or trim on
/// them. Zero-width characters are skipped as blanks: they are invisible in
/// the sheet, and must not hide a formula sign from us.
pub(crate) fn cell(s: &str) -> String {
    let skipped = |c: &char| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}')
    };
    let formula = matches!(s.chars().find(|c| !skipped(c)), Some('=' | '+' | '-' | '@'));
    if formula || s.starts_with(['\t', '\r', '\n']) {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}

fn row(o: &Order) -> [String; COLUMNS] {
    [
        o.id.to_string(),
        rfc3339(o.created_at),
        o.completed_at.map(rfc3339).unwrap_or_default(),
        cell(&o.user_id),
        cell(&o.sku),
        o.qty.to_string(),
        o.unit_price_cents.to_string(),
        o.total_cents.to_string(),
        o.currency.clone(),
        cell(o.payment_ref.as_deref().unwrap_or_default()),
        o.payment
            .as_ref()
            .map(|p| cell(&p.method))
            .unwrap_or_default(),
        o.payment
            .as_ref()
            .and_then(|p| p.payment_id)
            .map(|id| id.to_string())
            .unwrap_or_default(),
        o.payment
            .as_ref()
            .map(|p| p.paid_cents.to_string())
            .unwrap_or_default(),
        o.payment
            .as_ref()
            .map(|p| p.refunded_cents.to_string())
            .unwrap_or_default(),
    ]
}

/// The header row, then one chunk per page of orders, oldest first.
pub fn csv_stream(
    store: Arc<dyn OrderStore>,
    sale_id: Uuid,
) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
    struct State {
        store: Arc<dyn OrderStore>,
        after: Option<(chrono::DateTime<chrono::Utc>, Uuid)>,
        started: bool,
        done: bool,
    }
    let state = State {
        store,
        after: None,
        started: false,
        done: false,
    };
    futures_util::stream::unfold(state, move |mut st| async move {
        if st.done {
            return None;
        }
        if !st.started {
            st.started = true;
            return Some((write_rows([], Some(HEADER)), st));
        }
        match st.store.completed_page(sale_id, st.after, PAGE).await {
            Ok(page) if page.is_empty() => None,
            Ok(page) => {
                st.done = (page.len() as i64) < PAGE;
                st.after = page.last().map(|o| (o.created_at, o.id));
                Some((write_rows(page.iter().map(row), None), st))
            }
            Err(e) => {
                st.done = true;
                Some((Err(e), st))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised() {
        assert_eq!(
            cell("=HYPERLINK(\"http://x\")"),
            "'=HYPERLINK(\"http://x\")"
        );
        for s in ["+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert!(cell(s).starts_with('\''), "{s:?}");
        }
        assert_eq!(cell("mei"), "mei");
        assert_eq!(cell(""), "");
    }

    #[test]
    fn formulas_behind_blanks_and_controls_are_neutralised() {
        for s in [
            " =1+1",
            "\n=cmd|' /C calc'!A0",
            "\u{0}@x",
            "\t-2",
            "\r\n+1",
            "\u{3000}=1",
            "\u{200B}=HYPERLINK(\"http://x\")",
            "\u{FEFF}@SUM(A1)",
            "\u{1b}\u{7f}=1",
            "\n",
            "\tplain",
        ] {
            assert_eq!(cell(s), format!("'{s}"), "{s:?}");
        }
        // Harmless text stays as it is, signs inside included.
        for s in ["wx-7781", "a=b", " mei", "guest-1+1", "\u{0}plain"] {
            assert_eq!(cell(s), s, "{s:?}");
        }
    }

    #[test]
    fn quotes_per_rfc_4180() {
        let out = write_rows(
            [[
                "a,b".to_string(),
                "say \"hi\"".into(),
                "x".into(),
                "y".into(),
                "z".into(),
                "1".into(),
                "2".into(),
                "3".into(),
                "CNY".into(),
                String::new(),
                "manual".into(),
                String::new(),
                "3".into(),
                "0".into(),
            ]],
            None,
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "\"a,b\",\"say \"\"hi\"\"\",x,y,z,1,2,3,CNY,,manual,,3,0\r\n"
        );
    }
}
