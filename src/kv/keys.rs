//! Every Redis key and channel name of a deployment.
//!
//! A sale's keys and its event channel carry the hash tag `{sale_id}`, so a
//! script or a pipeline over one sale touches one slot and a cluster spreads
//! sales over its primaries. What is not a sale's (a user's order list, an
//! order's locator, the reaper's set) is one key per command, wherever it
//! lands; the stock partitions each pin one slot of their own.

use uuid::Uuid;

/// Channels the stock levels of every sale are spread over: every node
/// hears them all (the sold-out fast path needs every sale's), and a fixed
/// number keeps that a few subscriptions however many sales there are.
pub const STOCK_PARTITIONS: u32 = 8;

/// Slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The cluster slot of a sale's keys: the CRC16 of its hash tag.
pub fn sale_slot(sale: Uuid) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(sale.to_string().as_bytes()) % SLOTS
}

/// Key names. The prefix separates deployments and tests sharing one Redis.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    fn tag(&self, sale: Uuid) -> String {
        format!("{}:{{{sale}}}", self.prefix)
    }
    pub fn sale(&self, sale: Uuid) -> String {
        format!("{}:sale", self.tag(sale))
    }
    pub fn product(&self, sale: Uuid, sku: &str) -> String {
        format!("{}:p:{sku}", self.tag(sale))
    }
    pub fn holdings(&self, sale: Uuid, sku: &str) -> String {
        format!("{}:h:{sku}", self.tag(sale))
    }
    /// The user id's length keeps `a:b` + `c` apart from `a` + `b:c`.
    pub fn idem(&self, sale: Uuid, user: &str, key: &str) -> String {
        format!("{}:i:{}:{user}:{key}", self.tag(sale), user.len())
    }
    /// The user's idempotency keys in the sale, oldest first.
    pub fn user_keys(&self, sale: Uuid, user: &str) -> String {
        format!("{}:ik:{}:{user}", self.tag(sale), user.len())
    }
    pub fn deadlines(&self, sale: Uuid) -> String {
        format!("{}:dl", self.tag(sale))
    }
    pub fn order(&self, sale: Uuid, id: Uuid) -> String {
        format!("{}:o:{id}", self.tag(sale))
    }
    pub fn bans(&self, sale: Uuid) -> String {
        format!("{}:bans", self.tag(sale))
    }
    pub fn chat_seq(&self, sale: Uuid) -> String {
        format!("{}:chat:seq", self.tag(sale))
    }
    pub fn chat_stream(&self, sale: Uuid) -> String {
        format!("{}:chat:log", self.tag(sale))
    }
    pub fn chat_settings(&self, sale: Uuid) -> String {
        format!("{}:chat:settings", self.tag(sale))
    }
    /// Per-user chat state (`mute`, `slow`, `rate`).
    pub fn chat_user(&self, sale: Uuid, kind: &str, user: &str) -> String {
        format!("{}:chat:{kind}:{user}", self.tag(sale))
    }
    pub fn presence(&self, sale: Uuid) -> String {
        format!("{}:presence", self.tag(sale))
    }
    /// The dashboard's figures of one sale and second, summed over nodes.
    pub fn figures(&self, sale: Uuid, second: i64) -> String {
        format!("{}:fig:{second}", self.tag(sale))
    }
    pub fn lock(&self, sale: Uuid) -> String {
        format!("{}:lock", self.tag(sale))
    }
    /// Which sale an order is in (one key per order).
    pub fn locator(&self, id: Uuid) -> String {
        format!("{}:loc:{id}", self.prefix)
    }
    /// A user's orders over all sales (one key per user).
    pub fn user_orders(&self, user: &str) -> String {
        format!("{}:uo:{user}", self.prefix)
    }
    /// Sales the reaper looks after (one key).
    pub fn reap(&self) -> String {
        format!("{}:reap", self.prefix)
    }
    /// User ids seen signing in as operators (see `ChatStore::note_operator`).
    pub fn operators(&self) -> String {
        format!("{}:operators", self.prefix)
    }

    /// A sale's events other than stock: chat, moderation, state.
    pub fn sale_channel(&self, sale: Uuid) -> String {
        format!("{}:ev", self.tag(sale))
    }
    /// The stock channel a sale's levels go out on.
    pub fn stock_channel(&self, sale: Uuid) -> String {
        // The sale id is random: its low bits spread sales evenly.
        let n = (sale.as_u128() % u128::from(STOCK_PARTITIONS)) as u32;
        self.stock_partition(n)
    }
    pub fn stock_partition(&self, n: u32) -> String {
        format!("{}:{{stock-{n}}}:stock", self.prefix)
    }
    pub fn stock_channels(&self) -> Vec<String> {
        (0..STOCK_PARTITIONS)
            .map(|n| self.stock_partition(n))
            .collect()
    }
    /// Address-book change notices between nodes.
    pub fn address_channel(&self) -> String {
        format!("{}:{{addresses}}:changed", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    #[test]
    fn idempotency_keys_do_not_collide() {
        let k = Keys::new("t");
        let s = Uuid::nil();
        assert_ne!(k.idem(s, "a:b", "c"), k.idem(s, "a", "b:c"));
    }

    /// What a script or a per-sale pipeline touches must be one slot.
    #[test]
    fn a_sales_keys_and_channel_share_its_slot() {
        for prefix in ["ll", "t0a1b2c3d4e5f", "prod-cn_south", "Z"] {
            let k = Keys::new(prefix);
            for _ in 0..20 {
                let s = Uuid::new_v4();
                let o = Uuid::new_v4();
                let all = [
                    k.sale(s),
                    k.product(s, "lychee-5kg"),
                    k.holdings(s, "lychee-5kg"),
                    k.idem(s, "user:{1}", "key}"),
                    k.user_keys(s, "user:{1}"),
                    k.deadlines(s),
                    k.order(s, o),
                    k.bans(s),
                    k.chat_seq(s),
                    k.chat_stream(s),
                    k.chat_settings(s),
                    k.chat_user(s, "mute", "u{2}"),
                    k.presence(s),
                    k.figures(s, 1_700_000_000),
                    k.lock(s),
                    k.sale_channel(s),
                ];
                let slot = Slot::for_key(k.sale(s));
                for key in &all {
                    assert_eq!(Slot::for_key(key), slot, "{key} vs {}", k.sale(s));
                }
                // The tag is the sale alone, whatever the prefix holds.
                assert_eq!(slot, Slot::for_key(format!("{{{s}}}")), "{prefix}");
                assert_eq!(Slot::new(sale_slot(s)), Some(slot));
            }
        }
    }

    #[test]
    fn sales_spread_over_slots_and_stock_partitions() {
        let k = Keys::new("ll");
        let sales: Vec<Uuid> = (0..64).map(|_| Uuid::new_v4()).collect();
        let slots: std::collections::HashSet<_> =
            sales.iter().map(|s| Slot::for_key(k.sale(*s))).collect();
        assert!(slots.len() > 32, "{} slots for 64 sales", slots.len());
        let partitions: std::collections::HashSet<_> =
            sales.iter().map(|s| k.stock_channel(*s)).collect();
        assert_eq!(partitions.len(), STOCK_PARTITIONS as usize);
        for c in k.stock_channels() {
            assert!(partitions.contains(&c));
        }
        // Each partition is one slot, and they are not all the same one.
        let pslots: std::collections::HashSet<_> =
            k.stock_channels().iter().map(Slot::for_key).collect();
        assert!(pslots.len() > 1);
    }
}
