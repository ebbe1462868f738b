//! `FiguresStore`: what each node adds for a sale and second is read back
//! as the sum. Two "nodes" are two stores of one deployment (one process:
//! the same store).

use std::sync::Arc;

use uuid::Uuid;

use super::Keep;
use crate::helpers::TestEnv;
use lychee_live::dashboard::{Figures, FiguresStore, MemoryFigures, RedisFigures};
use lychee_live::kv::Kv;

const SECOND: i64 = 1_700_000_000;

pub enum Nodes {
    Local(Arc<MemoryFigures>),
    Redis { kv: Kv, prefix: String },
}

impl Nodes {
    fn node(&self) -> Arc<dyn FiguresStore> {
        match self {
            Nodes::Local(f) => f.clone(),
            Nodes::Redis { kv, prefix } => Arc::new(RedisFigures::new(kv.clone(), prefix)),
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
    figures_of_one_second_add_up: [memory, redis],
    seconds_and_sales_are_apart: [memory, redis],
    nothing_added_reads_as_zero: [memory, redis],
}

fn figures(chat: u64, attempts: u64, orders: u64, latency: &[(usize, u64)]) -> Figures {
    let mut f = Figures {
        chat,
        buy_attempts: attempts,
        orders,
        ..Figures::default()
    };
    for (bucket, n) in latency {
        f.latency[*bucket] = *n;
    }
    f
}

async fn figures_of_one_second_add_up(nodes: Nodes) {
    let (a, b) = (nodes.node(), nodes.node());
    let sale = Uuid::new_v4();
    let last = Figures::default().latency.len() - 1;
    let one = figures(2, 5, 1, &[(0, 1), (3, 4), (last, 2)]);
    let two = figures(1, 7, 0, &[(3, 1), (10, 6)]);
    a.add(sale, SECOND, &one).await.unwrap();
    b.add(sale, SECOND, &two).await.unwrap();
    a.add(sale, SECOND, &one).await.unwrap();
    let sum = figures(5, 17, 2, &[(0, 2), (3, 9), (10, 6), (last, 4)]);
    assert_eq!(a.read(sale, SECOND).await.unwrap(), sum);
    assert_eq!(
        b.read(sale, SECOND).await.unwrap(),
        sum,
        "every node reads the sum"
    );
    assert_eq!(
        a.read(sale, SECOND).await.unwrap().latency_quantile(0.5),
        5.0
    );
}

async fn seconds_and_sales_are_apart(nodes: Nodes) {
    let node = nodes.node();
    let (sale, other) = (Uuid::new_v4(), Uuid::new_v4());
    let one = figures(1, 2, 3, &[(4, 5)]);
    let two = figures(10, 20, 30, &[(5, 6)]);
    node.add(sale, SECOND, &one).await.unwrap();
    node.add(sale, SECOND + 1, &two).await.unwrap();
    node.add(other, SECOND, &two).await.unwrap();
    assert_eq!(node.read(sale, SECOND).await.unwrap(), one);
    assert_eq!(node.read(sale, SECOND + 1).await.unwrap(), two);
    assert_eq!(node.read(other, SECOND).await.unwrap(), two);
    assert_eq!(
        node.read(sale, SECOND - 1).await.unwrap(),
        Figures::default()
    );
    assert_eq!(
        node.read(other, SECOND + 1).await.unwrap(),
        Figures::default()
    );
}

async fn nothing_added_reads_as_zero(nodes: Nodes) {
    let node = nodes.node();
    let sale = Uuid::new_v4();
    assert_eq!(node.read(sale, SECOND).await.unwrap(), Figures::default());
    node.add(sale, SECOND, &Figures::default()).await.unwrap();
    assert_eq!(node.read(sale, SECOND).await.unwrap(), Figures::default());
    assert_eq!(node.read(Uuid::nil(), 0).await.unwrap(), Figures::default());
    assert_eq!(node.read(sale, -1).await.unwrap(), Figures::default());
}
