//! Viewer counts: each node reports its own count per sale with an expiry;
//! the count shown is the sum of the live reports. No per-join broadcast.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use uuid::Uuid;

use crate::kv::{Keys, Kv, Lua};

/// A node that stops reporting (killed) drops out of the sum after this.
pub const REPORT_TTL_MS: i64 = 5_000;

/// Viewer counts could not be read or reported (the backend's words, for the log).
#[derive(Debug, thiserror::Error)]
#[error("presence unavailable: {0}")]
pub struct PresenceError(String);

impl From<redis::RedisError> for PresenceError {
    fn from(e: redis::RedisError) -> Self {
        PresenceError(e.to_string())
    }
}

#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Reports this node's viewers of the sale; returns the sum over nodes.
    async fn report(&self, sale_id: Uuid, local: u64, now_ms: i64) -> Result<u64, PresenceError>;
    /// The sum over nodes, without reporting (the dashboard).
    async fn total(&self, sale_id: Uuid, now_ms: i64) -> Result<u64, PresenceError>;
}

/// One node: its own count is the total.
#[derive(Default)]
pub struct LocalPresence {
    counts: Mutex<HashMap<Uuid, u64>>,
}

#[async_trait]
impl Presence for LocalPresence {
    async fn report(&self, sale_id: Uuid, local: u64, _: i64) -> Result<u64, PresenceError> {
        // Short section, no await: std mutex.
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.insert(sale_id, local);
        Ok(local)
    }

    async fn total(&self, sale_id: Uuid, _: i64) -> Result<u64, PresenceError> {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        Ok(c.get(&sale_id).copied().unwrap_or(0))
    }
}

/// A hash per sale: field = node, value = `count:expires_ms`.
pub struct RedisPresence {
    conn: Kv,
    keys: Keys,
    node: Uuid,
    script: Lua,
}

impl RedisPresence {
    pub fn new(conn: Kv, prefix: &str, node: Uuid) -> Self {
        RedisPresence {
            conn,
            keys: Keys::new(prefix),
            node,
            script: Lua::new(include_str!("lua/presence.lua")),
        }
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn report(&self, sale_id: Uuid, local: u64, now_ms: i64) -> Result<u64, PresenceError> {
        Ok(self
            .script
            .key(self.keys.presence(sale_id))
            .arg(self.node.to_string())
            .arg(local)
            .arg(now_ms)
            .arg(REPORT_TTL_MS)
            .invoke_async(&mut self.conn.clone())
            .await?)
    }

    async fn total(&self, sale_id: Uuid, now_ms: i64) -> Result<u64, PresenceError> {
        let all: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.presence(sale_id))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(all
            .values()
            .filter_map(|v| {
                let (count, expires) = v.split_once(':')?;
                let expires: i64 = expires.parse().ok()?;
                (expires > now_ms).then(|| count.parse::<u64>().ok())?
            })
            .sum())
    }
}
