//! An embedded node for unit tests: in-memory live state, SQLite in a temp
//! dir, the demo sale seeded. No network, no PostgreSQL, no Redis.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::{Mode, Secret};
use crate::{Node, Settings};

pub struct Embedded {
    pub node: Node,
    pub shutdown: CancellationToken,
    pub sale_id: Uuid,
    pub dir: PathBuf,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Embedded {
    /// A node with the test's changes to its settings (no per-IP chat rate).
    pub async fn start(change: impl FnOnce(&mut Settings)) -> Embedded {
        let dir = std::env::temp_dir().join(format!("lychee-unit-{}", Uuid::new_v4().simple()));
        let mut settings = Settings::new(
            Mode::Embedded {
                data_dir: dir.clone(),
            },
            Secret("unit-test-secret-unit-test-secret-0123".into()),
            "unit".into(),
        );
        settings.limits.chat_per_ip = 0.0;
        change(&mut settings);
        let shutdown = CancellationToken::new();
        let node = Node::start(settings, Arc::new(Clock::default()), shutdown.clone())
            .await
            .expect("embedded node");
        let demo = crate::demo::seed(&node.state, &dir)
            .await
            .expect("demo sale");
        Embedded {
            node,
            shutdown,
            sale_id: demo.sale_id,
            dir,
        }
    }
}
