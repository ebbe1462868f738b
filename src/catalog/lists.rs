//! The public sale lists, reused for a second per node.
//!
//! `GET /api/v1/sales` needs no token and builds up to 100 sales, each with
//! a products query and its live counts: a crowd refreshing the home page
//! would put that load on the pool the batch writer needs. So each node
//! builds one list per status filter at most once a second and serves every
//! caller from it, serialized once. A list may be a second stale (live
//! counts, or a sale another node just created); `GET /sales/{id}` stays
//! live. A change made through this node (create, start, end, products)
//! drops its lists at once, so a host sees its own change.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::{Sale, SaleStatus};

/// How long a built list is served, in ms of the domain clock.
pub const LIST_FRESH_MS: i64 = 1000;

/// A public list as served: its sales and their JSON, made once.
#[derive(Debug)]
pub struct SaleList {
    pub sales: Vec<Sale>,
    json: Bytes,
}

impl SaleList {
    pub fn new(sales: Vec<Sale>) -> Self {
        // Plain structs of strings and numbers always serialize; were one
        // not to, the list would read as empty rather than fail the page.
        let json = serde_json::to_vec(&serde_json::json!({ "sales": &sales }))
            .unwrap_or_else(|_| br#"{"sales":[]}"#.to_vec());
        SaleList {
            sales,
            json: Bytes::from(json),
        }
    }

    /// `{"sales": [Sale]}`, the body of `GET /sales`.
    pub fn json(&self) -> Bytes {
        self.json.clone()
    }
}

struct Built {
    at_ms: i64,
    generation: u64,
    list: Arc<SaleList>,
}

/// One slot per status filter (and none). A slot's async mutex is held
/// while its list is built, so callers arriving meanwhile wait for that one
/// build instead of each starting their own.
#[derive(Default)]
pub struct Lists {
    slots: [tokio::sync::Mutex<Option<Built>>; 4],
    generation: AtomicU64,
}

fn slot(status: Option<SaleStatus>) -> usize {
    match status {
        None => 0,
        Some(SaleStatus::Scheduled) => 1,
        Some(SaleStatus::Live) => 2,
        Some(SaleStatus::Ended) => 3,
    }
}

impl Lists {
    /// A sale or product changed on this node: build every list afresh.
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// The list of `status` if built less than a second ago and nothing
    /// changed here since, else the one `build` makes (kept for the next
    /// second, unless it failed).
    pub async fn get<E, F, Fut>(
        &self,
        status: Option<SaleStatus>,
        now_ms: i64,
        build: F,
    ) -> Result<Arc<SaleList>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<Sale>, E>>,
    {
        let mut built = self.slots[slot(status)].lock().await;
        // Read before building: a change during the build leaves the list
        // marked as older than it, so the next caller builds again.
        let generation = self.generation.load(Ordering::Relaxed);
        if let Some(b) = built.as_ref() {
            let fresh = (0..LIST_FRESH_MS).contains(&(now_ms - b.at_ms));
            if fresh && b.generation == generation {
                return Ok(b.list.clone());
            }
        }
        let list = Arc::new(SaleList::new(build().await?));
        *built = Some(Built {
            at_ms: now_ms,
            generation,
            list: list.clone(),
        });
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    async fn get(lists: &Lists, status: Option<SaleStatus>, now: i64, builds: &AtomicUsize) {
        lists
            .get(status, now, || async {
                builds.fetch_add(1, Ordering::Relaxed);
                Ok::<_, ()>(Vec::new())
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn one_build_per_status_and_second() {
        let lists = Lists::default();
        let builds = AtomicUsize::new(0);
        for ms in [10_000, 10_001, 10_500, 10_999] {
            get(&lists, Some(SaleStatus::Live), ms, &builds).await;
        }
        assert_eq!(builds.load(Ordering::Relaxed), 1);
        get(&lists, None, 10_999, &builds).await;
        assert_eq!(
            builds.load(Ordering::Relaxed),
            2,
            "another filter, another list"
        );
        get(&lists, Some(SaleStatus::Live), 11_000, &builds).await;
        assert_eq!(builds.load(Ordering::Relaxed), 3, "a second later");
        // A clock moved back does not keep a list forever.
        get(&lists, Some(SaleStatus::Live), 5_000, &builds).await;
        assert_eq!(builds.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn a_change_on_this_node_drops_the_lists() {
        let lists = Lists::default();
        let builds = AtomicUsize::new(0);
        get(&lists, Some(SaleStatus::Live), 0, &builds).await;
        lists.changed();
        get(&lists, Some(SaleStatus::Live), 1, &builds).await;
        get(&lists, Some(SaleStatus::Live), 2, &builds).await;
        assert_eq!(builds.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn callers_meanwhile_wait_for_the_one_build_and_failures_are_not_kept() {
        let lists = Arc::new(Lists::default());
        let builds = Arc::new(AtomicUsize::new(0));
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let (lists, builds) = (lists.clone(), builds.clone());
            tokio::spawn(async move {
                lists
                    .get(Some(SaleStatus::Live), 0, || async move {
                        builds.fetch_add(1, Ordering::Relaxed);
                        let _ = wait.await;
                        Ok::<_, ()>(Vec::new())
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        let waiting: Vec<_> = (0..10)
            .map(|_| {
                let (lists, builds) = (lists.clone(), builds.clone());
                tokio::spawn(async move {
                    get(&lists, Some(SaleStatus::Live), 1, &builds).await;
                })
            })
            .collect();
        tokio::task::yield_now().await;
        let _ = release.send(());
        first.await.unwrap().unwrap();
        for w in waiting {
            w.await.unwrap();
        }
        assert_eq!(builds.load(Ordering::Relaxed), 1);

        let failed = lists
            .get(Some(SaleStatus::Ended), 0, || async {
                Err::<Vec<Sale>, _>("down")
            })
            .await;
        assert_eq!(failed.unwrap_err(), "down");
        let after = AtomicUsize::new(0);
        get(&lists, Some(SaleStatus::Ended), 1, &after).await;
        assert_eq!(after.load(Ordering::Relaxed), 1, "a failure is not served");
    }
}
