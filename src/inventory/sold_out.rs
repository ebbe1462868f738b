//! Node-local knowledge that a SKU is sold out: the buy path's fast answer.
//! Set from stock levels and events, cleared by any level with stock left
//! (a release, a restock, an open) on this node before it answers, and on the
//! other nodes when the stock event reaches them.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

// Tokio's clock, which is std's unless a test pauses it.
use tokio::time::Instant;

use uuid::Uuid;

use super::StockLevel;

/// After this a sold-out flag is checked against Redis again, covering a
/// release or restock announced while this node's subscription was down.
const SOLD_OUT_TTL: Duration = Duration::from_secs(1);
/// Node-local knowledge that a SKU is sold out, with the users who hold some
/// of it: only they can have an admitted order to replay, so everybody else
/// is answered `sold_out` without a Redis round trip.
pub struct SoldOut {
    /// By sale, then SKU: a buy attempt looks its flag up without allocating.
    flags: Mutex<HashMap<Uuid, HashMap<String, SoldOutFlag>>>,
    /// SKUs whose holders are being fetched: one fetch per SKU at a time.
    learning: Mutex<HashSet<(Uuid, String)>>,
    ttl: Duration,
}

/// Held while a SKU's holders are fetched; lets the next fetch go when dropped.
pub struct Learning<'a> {
    sold_out: &'a SoldOut,
    key: (Uuid, String),
}

impl Drop for Learning<'_> {
    fn drop(&mut self) {
        self.sold_out
            .learning
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

impl Default for SoldOut {
    fn default() -> Self {
        SoldOut {
            flags: Mutex::default(),
            learning: Mutex::default(),
            ttl: SOLD_OUT_TTL,
        }
    }
}

struct SoldOutFlag {
    since: Instant,
    ver: i64,
    holders: HashSet<String>,
    /// Expired and being checked by one attempt; the holders are refetched.
    stale: bool,
}

type Flags = HashMap<Uuid, HashMap<String, SoldOutFlag>>;

fn flag<'a>(flags: &'a mut Flags, sale_id: Uuid, sku: &str) -> Option<&'a mut SoldOutFlag> {
    flags.get_mut(&sale_id)?.get_mut(sku)
}

impl SoldOut {
    fn flags(&self) -> std::sync::MutexGuard<'_, Flags> {
        // Short sections, no await: std mutex.
        self.flags.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the flag expires, the first attempt goes to Redis and refreshes
    /// it while the others are still answered from it: a thousand buyers
    /// pressing "buy" must not all ask Redis (and fetch the holders) at each
    /// expiry.
    pub fn answers(&self, sale_id: Uuid, sku: &str, user: &str) -> bool {
        let mut flags = self.flags();
        let Some(f) = flag(&mut flags, sale_id, sku) else {
            return false;
        };
        if f.holders.contains(user) {
            return false;
        }
        if f.since.elapsed() < self.ttl {
            return true;
        }
        f.since = Instant::now();
        f.stale = true;
        false
    }

    /// Flagged, and the holders are current.
    pub fn is_flagged(&self, sale_id: Uuid, sku: &str) -> bool {
        flag(&mut self.flags(), sale_id, sku)
            .is_some_and(|f| !f.stale && f.since.elapsed() < self.ttl)
    }

    /// The right to fetch the SKU's holders, unless another task is at it:
    /// at sell-out every buyer in flight is refused at once, and each
    /// fetching the holders (a hash of every buyer) stalled Redis.
    pub fn learner(&self, sale_id: Uuid, sku: &str) -> Option<Learning<'_>> {
        let key = (sale_id, sku.to_owned());
        let fresh = self
            .learning
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
        fresh.then_some(Learning {
            sold_out: self,
            key,
        })
    }

    /// After missed stock events nothing flagged can be trusted.
    pub fn forget_all(&self) {
        self.flags().clear();
    }

    pub fn set(&self, sale_id: Uuid, sku: &str, ver: i64, holders: HashSet<String>) {
        let mut flags = self.flags();
        if flag(&mut flags, sale_id, sku).is_some_and(|f| f.ver > ver) {
            return;
        }
        flags.entry(sale_id).or_default().insert(
            sku.to_owned(),
            SoldOutFlag {
                since: Instant::now(),
                ver,
                holders,
                stale: false,
            },
        );
    }

    /// A level with stock left (a release, a restock) clears the flag.
    pub fn observe(&self, sale_id: Uuid, level: &StockLevel) -> bool {
        let mut flags = self.flags();
        let Some(skus) = flags.get_mut(&sale_id) else {
            return level.remaining <= 0;
        };
        match skus.get(&level.sku) {
            Some(f) if f.ver > level.ver => false,
            Some(_) if level.remaining > 0 => {
                skus.remove(&level.sku);
                if skus.is_empty() {
                    flags.remove(&sale_id);
                }
                false
            }
            Some(_) => false,
            // Sold out, not flagged yet: the caller fetches the holders.
            None => level.remaining <= 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_events_clear_every_flag() {
        let flags = SoldOut::default();
        let sale = Uuid::now_v7();
        flags.set(sale, "A", 7, HashSet::new());
        assert!(flags.is_flagged(sale, "A"));
        flags.forget_all();
        assert!(!flags.is_flagged(sale, "A"));
        assert!(!flags.answers(sale, "A", "u"));
    }

    #[test]
    fn one_task_at_a_time_fetches_a_skus_holders() {
        let flags = SoldOut::default();
        let sale = Uuid::now_v7();
        let first = flags.learner(sale, "A");
        assert!(first.is_some());
        assert!(flags.learner(sale, "A").is_none(), "another is at it");
        assert!(flags.learner(sale, "B").is_some(), "per SKU");
        drop(first);
        assert!(flags.learner(sale, "A").is_some(), "free again once done");
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_sold_out_flag_lets_one_attempt_through_to_refresh_it() {
        let flags = SoldOut::default();
        let past_ttl = SOLD_OUT_TTL + Duration::from_millis(50);
        let sale = Uuid::now_v7();
        assert!(!flags.answers(sale, "A", "u"), "nothing flagged yet");
        flags.set(sale, "A", 7, HashSet::from(["holder".to_owned()]));
        assert!(flags.is_flagged(sale, "A"));
        assert!(flags.answers(sale, "A", "u"));
        assert!(!flags.answers(sale, "A", "holder"), "holders may replay");
        assert!(!flags.answers(sale, "B", "u"), "another SKU");

        tokio::time::advance(past_ttl).await;
        assert!(
            !flags.answers(sale, "A", "u1"),
            "the first after expiry asks"
        );
        assert!(
            flags.answers(sale, "A", "u2"),
            "the rest are still answered"
        );
        assert!(flags.answers(sale, "A", "u3"));
        assert!(
            !flags.is_flagged(sale, "A"),
            "the holders must be refetched"
        );

        flags.set(sale, "A", 8, HashSet::new());
        assert!(flags.is_flagged(sale, "A"));
        assert!(flags.answers(sale, "A", "holder"), "refreshed holders");

        tokio::time::advance(past_ttl).await;
        assert!(!flags.answers(sale, "A", "u1"));
        tokio::time::advance(past_ttl).await;
        assert!(
            !flags.answers(sale, "A", "u2"),
            "a refresh that never came back is tried again"
        );
    }

    #[test]
    fn a_level_with_stock_clears_the_flag() {
        let flags = SoldOut::default();
        let sale = Uuid::now_v7();
        flags.set(sale, "A", 3, HashSet::new());
        let level = |remaining, ver| StockLevel {
            sku: "A".into(),
            stock: 10,
            remaining,
            reserved: 0,
            sold: 10 - remaining,
            status: crate::catalog::ProductStatus::OnSale,
            ver,
        };
        assert!(!flags.observe(sale, &level(1, 2)), "an older level");
        assert!(flags.answers(sale, "A", "u"));
        assert!(!flags.observe(sale, &level(1, 4)));
        assert!(!flags.answers(sale, "A", "u"));
        assert!(
            flags.observe(sale, &level(0, 5)),
            "sold out again: learn it"
        );
    }
}
