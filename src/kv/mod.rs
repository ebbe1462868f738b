//! Redis, one node or a cluster, behind one connection type every store uses.
//!
//! On a cluster a command goes to the primary of its key's slot; a sale's
//! keys share one slot (see `keys`), so everything about one sale is one
//! node's work, and a command that would span slots is split by the caller.

pub mod keys;
pub mod pubsub;
pub mod script;

use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

pub use crate::config::RedisTarget;
pub use keys::Keys;
pub use script::Lua;

/// One attempt's bound, to connect or to answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// A request's bound over all its attempts and redirections: an outage is
/// answered 503 within 3 s (the cluster client's defaults retry for minutes).
const OVERALL_TIMEOUT: Duration = Duration::from_millis(2500);

/// A command connection; cheap to clone, reconnects by itself.
#[derive(Clone)]
pub enum Kv {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Kv {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Kv::Node(c) => c.req_packed_command(cmd),
            Kv::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Kv::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Kv::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Kv::Node(c) => c.get_db(),
            Kv::Cluster(c) => c.get_db(),
        }
    }
}

impl Kv {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Kv::Cluster(_))
    }

    /// The publish command of this deployment: sharded on a cluster, so a
    /// message goes to its slot's shard only instead of every node.
    pub fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Publishes many messages: one pipeline per slot, the slots at once.
    pub async fn publish_all(&self, messages: Vec<(String, String)>) -> RedisResult<()> {
        let command = self.publish_command();
        let mut by_slot: Vec<(Slot, Pipeline)> = Vec::new();
        for (channel, payload) in messages {
            let slot = Slot::for_key(&channel);
            let i = match by_slot.iter().position(|(s, _)| *s == slot) {
                Some(i) => i,
                None => {
                    by_slot.push((slot, redis::pipe()));
                    by_slot.len() - 1
                }
            };
            by_slot[i].1.cmd(command).arg(channel).arg(payload).ignore();
        }
        let sent = join_all(by_slot.iter().map(|(_, pipe)| {
            let mut conn = self.clone();
            async move { pipe.query_async::<()>(&mut conn).await }
        }))
        .await;
        sent.into_iter().collect()
    }
}

/// Where to open more connections (the subscribers need their own).
#[derive(Clone)]
pub enum Source {
    Node(redis::Client),
    Cluster(Vec<String>),
}

impl Source {
    fn cluster_builder(seeds: &[String]) -> redis::cluster::ClusterClientBuilder {
        redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
            .connection_timeout(ATTEMPT_TIMEOUT)
            .response_timeout(ATTEMPT_TIMEOUT)
            .overall_response_timeout(Some(OVERALL_TIMEOUT))
            // A failover or a slot move is a few redirections and a topology
            // refresh: a few quick retries ride it out within the bound.
            .retries(4)
            .min_retry_wait(50)
            .max_retry_wait(400)
    }
}

/// A deployment's Redis: the shared command connection and where it came from.
#[derive(Clone)]
pub struct Redis {
    pub conn: Kv,
    pub source: Source,
}

impl Redis {
    pub async fn connect(target: &RedisTarget) -> RedisResult<Redis> {
        match target {
            RedisTarget::Node(url) => {
                let client = redis::Client::open(url.as_str())?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(ATTEMPT_TIMEOUT))
                    .set_response_timeout(Some(ATTEMPT_TIMEOUT))
                    .set_number_of_retries(1);
                let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
                Ok(Redis {
                    conn: Kv::Node(conn),
                    source: Source::Node(client),
                })
            }
            RedisTarget::Cluster(seeds) => {
                let client = Source::cluster_builder(seeds).build()?;
                let conn = client.get_async_connection().await?;
                Ok(Redis {
                    conn: Kv::Cluster(conn),
                    source: Source::Cluster(seeds.clone()),
                })
            }
        }
    }
}
