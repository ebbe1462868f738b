//! `Presence`: a node's report and the sum over the live reports. One
//! process is one node (`LocalPresence`): its count is the total and never
//! expires while it runs, so the cases of several nodes are Redis's alone.

use std::sync::Arc;

use uuid::Uuid;

use super::Keep;
use crate::helpers::TestEnv;
use lychee_live::hub::presence::{LocalPresence, Presence, RedisPresence, REPORT_TTL_MS};
use lychee_live::kv::Kv;

const NOW: i64 = 1_700_000_000_000;

/// The presence of each node of one deployment.
pub enum Nodes {
    /// One process: every "node" is the same one.
    Local(Arc<LocalPresence>),
    Redis {
        kv: Kv,
        prefix: String,
    },
}

impl Nodes {
    /// A node of the deployment (a new one on Redis).
    fn node(&self) -> Arc<dyn Presence> {
        match self {
            Nodes::Local(p) => p.clone(),
            Nodes::Redis { kv, prefix } => {
                Arc::new(RedisPresence::new(kv.clone(), prefix, Uuid::new_v4()))
            }
        }
    }
}

async fn memory() -> (Nodes, Keep) {
    (Nodes::Local(Arc::default()), Keep::memory())
}

async fn redis() -> (Nodes, Keep) {
    let env = TestEnv::production().await;
    let nodes = Nodes::Redis {
        kv: crate::helpers::kv().await,
        prefix: env.prefix().unwrap().to_owned(),
    };
    (nodes, Keep::redis(env, None))
}

conformance_cases! {
    a_report_is_the_total_and_replaces_the_last: [memory, redis],
    sales_are_counted_apart: [memory, redis],
    reports_of_nodes_add_up: [redis],
    a_silent_node_drops_out_after_the_ttl: [redis],
}

async fn a_report_is_the_total_and_replaces_the_last(nodes: Nodes) {
    let node = nodes.node();
    let sale = Uuid::new_v4();
    assert_eq!(node.total(sale, NOW).await.unwrap(), 0);
    assert_eq!(node.report(sale, 3, NOW).await.unwrap(), 3);
    assert_eq!(node.total(sale, NOW).await.unwrap(), 3);
    // The node's count, not an increment.
    assert_eq!(node.report(sale, 5, NOW + 1_000).await.unwrap(), 5);
    assert_eq!(node.total(sale, NOW + 1_000).await.unwrap(), 5);
    assert_eq!(node.report(sale, 1, NOW + 2_000).await.unwrap(), 1);
    assert_eq!(node.report(sale, 0, NOW + 3_000).await.unwrap(), 0);
    assert_eq!(node.total(sale, NOW + 3_000).await.unwrap(), 0);
    let big = u64::from(u32::MAX) + 7;
    assert_eq!(node.report(sale, big, NOW + 4_000).await.unwrap(), big);
    assert_eq!(node.total(sale, NOW + 4_000).await.unwrap(), big);
}

async fn sales_are_counted_apart(nodes: Nodes) {
    let node = nodes.node();
    let (one, two) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(node.report(one, 4, NOW).await.unwrap(), 4);
    assert_eq!(node.report(two, 9, NOW).await.unwrap(), 9);
    assert_eq!(node.total(one, NOW).await.unwrap(), 4);
    assert_eq!(node.total(two, NOW).await.unwrap(), 9);
    assert_eq!(node.total(Uuid::new_v4(), NOW).await.unwrap(), 0);
    assert_eq!(node.total(Uuid::nil(), NOW).await.unwrap(), 0);
}

async fn reports_of_nodes_add_up(nodes: Nodes) {
    let (a, b) = (nodes.node(), nodes.node());
    let sale = Uuid::new_v4();
    assert_eq!(a.report(sale, 3, NOW).await.unwrap(), 3);
    assert_eq!(b.report(sale, 4, NOW).await.unwrap(), 7);
    assert_eq!(a.total(sale, NOW).await.unwrap(), 7);
    // Each replaces its own count only.
    assert_eq!(a.report(sale, 1, NOW + 100).await.unwrap(), 5);
    assert_eq!(b.report(sale, 0, NOW + 200).await.unwrap(), 1);
    assert_eq!(b.total(sale, NOW + 200).await.unwrap(), 1);
    // A third node reading sees the same sum.
    assert_eq!(nodes.node().total(sale, NOW + 200).await.unwrap(), 1);
}

/// A killed node stops reporting: its count leaves the sum `REPORT_TTL_MS`
/// after its last report, by the readers' clock (`now_ms`).
async fn a_silent_node_drops_out_after_the_ttl(nodes: Nodes) {
    let (a, b) = (nodes.node(), nodes.node());
    let sale = Uuid::new_v4();
    assert_eq!(a.report(sale, 3, NOW).await.unwrap(), 3);
    assert_eq!(b.report(sale, 4, NOW + 1_000).await.unwrap(), 7);
    assert_eq!(b.total(sale, NOW + REPORT_TTL_MS - 1).await.unwrap(), 7);
    assert_eq!(b.total(sale, NOW + REPORT_TTL_MS).await.unwrap(), 4);
    assert_eq!(b.total(sale, NOW + 1_000 + REPORT_TTL_MS).await.unwrap(), 0);
    // Reporting again brings the node back; the silent one stays out.
    assert_eq!(b.report(sale, 4, NOW + REPORT_TTL_MS).await.unwrap(), 4);
    assert_eq!(a.report(sale, 2, NOW + REPORT_TTL_MS + 1).await.unwrap(), 6);
    assert_eq!(a.total(sale, NOW + 2 * REPORT_TTL_MS - 1).await.unwrap(), 6);
}
