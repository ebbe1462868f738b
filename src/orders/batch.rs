//! The batch writer: completed orders are committed many per transaction
//! (group commit). Each caller waits for its own order's outcome.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Commit, CompletedOrder, OrderStore};
use crate::store::StoreError;

/// Large enough to absorb a rush in one transaction, small enough to keep the
/// UNNEST arrays and the commit short.
const MAX_BATCH: usize = 512;
const QUEUE: usize = 8192;

#[derive(Debug, thiserror::Error, Clone)]
pub enum WriteError {
    #[error("the order database is unavailable")]
    Unavailable,
    #[error("the batch writer has stopped")]
    Stopped,
}

type Reply = oneshot::Sender<Result<Commit, WriteError>>;

#[derive(Clone)]
pub struct BatchWriter {
    tx: mpsc::Sender<(CompletedOrder, Reply)>,
}

impl BatchWriter {
    pub fn start(store: Arc<dyn OrderStore>, shutdown: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, rx, shutdown));
        BatchWriter { tx }
    }

    /// Resolves once the order's transaction committed (or failed).
    pub async fn commit(&self, order: CompletedOrder) -> Result<Commit, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((order, reply))
            .await
            .map_err(|_| WriteError::Stopped)?;
        rx.await.map_err(|_| WriteError::Stopped)?
    }
}

async fn run(
    store: Arc<dyn OrderStore>,
    mut rx: mpsc::Receiver<(CompletedOrder, Reply)>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // Orders already queued are still committed after shutdown begins:
        // their buyers are waiting for an answer.
        let n = tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, MAX_BATCH) => n,
            _ = shutdown.cancelled(), if rx.is_empty() => return,
        };
        if n == 0 {
            return;
        }
        let (orders, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        let started = Instant::now();
        let outcome = commit_batch(&*store, &orders).await;
        metrics::histogram!("lychee_batch_size").record(n as f64);
        metrics::histogram!("lychee_batch_commit_seconds").record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(results) if results.len() == replies.len() => {
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(r));
                }
            }
            Ok(results) => {
                tracing::error!(n, got = results.len(), "batch outcome count mismatch");
                fail(replies, WriteError::Unavailable);
            }
            Err(e) => {
                log_store_error(&e);
                fail(replies, WriteError::Unavailable);
            }
        }
    }
}

#[tracing::instrument(level = "debug", skip_all, fields(n = orders.len()))]
async fn commit_batch(
    store: &dyn OrderStore,
    orders: &[CompletedOrder],
) -> Result<Vec<Commit>, StoreError> {
    store.commit(orders).await
}

fn fail(replies: Vec<Reply>, e: WriteError) {
    for reply in replies {
        let _ = reply.send(Err(e.clone()));
    }
}

fn log_store_error(e: &StoreError) {
    metrics::counter!("lychee_db_errors_total").increment(1);
    tracing::error!(error = %e, "committing a batch of orders failed");
}
