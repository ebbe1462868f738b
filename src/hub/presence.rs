//! Viewer counts: each node reports its own count per sale with an expiry;
//! the count shown is the sum of the live reports. No per-join broadcast.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Script;
use uuid::Uuid;

use crate::inventory::redis::Keys;

/// A node that stops reporting (killed) drops out of the sum after this.
pub const REPORT_TTL_MS: i64 = 5_000;

#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Reports this node's viewers of the sale; returns the sum over nodes.
    async fn report(
        &self,
        sale_id: Uuid,
        local: u64,
        now_ms: i64,
    ) -> Result<u64, redis::RedisError>;
}

/// One node: its own count is the total.
#[derive(Default)]
pub struct LocalPresence {
    last: AtomicU64,
}

#[async_trait]
impl Presence for LocalPresence {
    async fn report(&self, _: Uuid, local: u64, _: i64) -> Result<u64, redis::RedisError> {
        self.last.store(local, Ordering::Relaxed);
        Ok(local)
    }
}

/// A hash per sale: field = node, value = `count:expires_ms`.
pub struct RedisPresence {
    conn: ConnectionManager,
    keys: Keys,
    node: Uuid,
    script: Script,
}

impl RedisPresence {
    pub fn new(conn: ConnectionManager, prefix: &str, node: Uuid) -> Self {
        RedisPresence {
            conn,
            keys: Keys::new(prefix),
            node,
            script: Script::new(include_str!("lua/presence.lua")),
        }
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn report(
        &self,
        sale_id: Uuid,
        local: u64,
        now_ms: i64,
    ) -> Result<u64, redis::RedisError> {
        self.script
            .key(self.keys.presence(sale_id))
            .arg(self.node.to_string())
            .arg(local)
            .arg(now_ms)
            .arg(REPORT_TTL_MS)
            .invoke_async(&mut self.conn.clone())
            .await
    }
}
