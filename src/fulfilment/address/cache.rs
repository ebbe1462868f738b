//! Each buy attaches an address of its buyer (the one named, or the
//! default), checked against the product's delivery areas before any stock
//! is taken. Asking PostgreSQL for it on every buy halved a rush's orders/s,
//! so a node keeps its buyers' books in memory: read once per buyer and
//! node (when the buyer opens the sale's live socket, or at the first buy),
//! then answered from here.
//!
//! A book changes on one node and is read on every other: the node that
//! changes it clears its copy and tells the others on a Redis channel, and
//! they clear theirs. While that subscription is down a node cannot hear,
//! so it reads PostgreSQL on every buy until it is back, and clears
//! everything then (what was said meanwhile is lost). A change whose notice
//! the sender could not publish still shows within `ttl`.
//!
//! The window left: a buy on one node in the instant between another node's
//! commit and its notice arriving (well under a millisecond on one network)
//! ships to the previous default, or none; the buyer sees `ship_to` in the
//! answer and can attach another until the order is packed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Address, AddressStore, Inserted};
use crate::kv::pubsub::{Heard, Subscriber};
use crate::kv::{Keys, Kv, Redis};
use crate::store::StoreError;

/// Past this many users the map is emptied rather than scanned for the old.
const MAX_USERS: usize = 200_000;
/// Books read in one query at most; and the askers that may wait for one.
const LOAD_BATCH: usize = 256;
const LOADS: usize = 4096;
/// Notices waiting to be published; past it a notice is dropped (the others
/// then see the change within `ttl`).
const OUTBOX: usize = 4096;

/// How the nodes of a deployment hear of each other's changes.
pub enum Peers {
    /// One process: nobody else to tell.
    Alone,
    /// Notices on a Redis channel of the deployment.
    Redis { redis: Redis, prefix: String },
}

/// A user's book as read, and when.
type Kept = (Instant, Arc<[Address]>);

pub struct AddressCache {
    inner: Arc<dyn AddressStore>,
    ttl: Duration,
    /// Short sections, no `.await` inside.
    books: Mutex<HashMap<String, Kept>>,
    /// Moves on whenever anything is forgotten: a read that began before
    /// stores nothing, so a change that lands during a read is never
    /// covered up by what the read found.
    epoch: AtomicU64,
    /// Whether this node hears the others' notices now; when not, nothing
    /// kept can be trusted.
    hearing: AtomicBool,
    node: Uuid,
    outbox: Option<mpsc::Sender<String>>,
    /// Books not kept are read through here, many users per query.
    loads: mpsc::Sender<Load>,
    /// The other nodes' notices, for as long as the cache lives.
    listener: std::sync::OnceLock<Arc<Subscriber>>,
}

/// A user whose book is wanted, and where it goes (`None`: the batch's
/// read failed, and the asker reads alone to learn why).
type Load = (String, oneshot::Sender<Option<Arc<[Address]>>>);

impl AddressCache {
    /// The cache, with its notice tasks started for `Peers::Redis` (they
    /// stop on `shutdown`).
    pub fn start(
        inner: Arc<dyn AddressStore>,
        ttl: Duration,
        peers: Peers,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (outbox, rx) = match peers {
            Peers::Alone => (None, None),
            Peers::Redis { .. } => {
                let (tx, rx) = mpsc::channel(OUTBOX);
                (Some(tx), Some(rx))
            }
        };
        let (loads, pending) = mpsc::channel(LOADS);
        tokio::spawn(load_loop(inner.clone(), pending));
        let cache = Arc::new(AddressCache {
            inner,
            ttl,
            books: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            hearing: AtomicBool::new(matches!(peers, Peers::Alone)),
            node: Uuid::new_v4(),
            outbox,
            loads,
            listener: std::sync::OnceLock::new(),
        });
        if let (Peers::Redis { redis, prefix }, Some(rx)) = (peers, rx) {
            let channel = Keys::new(&prefix).address_channel();
            tokio::spawn(publish_loop(
                redis.conn.clone(),
                channel.clone(),
                rx,
                shutdown.clone(),
            ));
            let weak = Arc::downgrade(&cache);
            let handler = Box::new(move |heard: Heard<'_>| {
                let Some(c) = weak.upgrade() else { return };
                match heard {
                    Heard::Message(notice) => match std::str::from_utf8(notice) {
                        Ok(notice) => c.heard(notice),
                        Err(_) => tracing::warn!("undecodable address notice"),
                    },
                    Heard::Up { .. } => {
                        // Whatever was said before this subscription is not known.
                        c.forget_all();
                        c.hearing.store(true, Ordering::Release);
                    }
                    Heard::Down => c.hearing.store(false, Ordering::Release),
                }
            });
            let listener = Subscriber::start(redis.source, vec![channel], handler, shutdown);
            let _ = cache.listener.set(listener);
        }
        cache
    }

    /// The user's book, from memory when it may be trusted.
    async fn book(&self, user_id: &str) -> Result<Arc<[Address]>, StoreError> {
        let hearing = self.hearing.load(Ordering::Acquire);
        if hearing {
            let books = self.books.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, book)) = books.get(user_id) {
                if at.elapsed() < self.ttl {
                    return Ok(book.clone());
                }
            }
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let book = self.load(user_id).await?;
        if hearing {
            self.keep(user_id, epoch, book.clone());
        }
        Ok(book)
    }

    /// The user's book from the store, read together with whatever other
    /// books are wanted at the moment (a rush's first buys of many users).
    async fn load(&self, user_id: &str) -> Result<Arc<[Address]>, StoreError> {
        let (tx, rx) = oneshot::channel();
        if self.loads.send((user_id.to_owned(), tx)).await.is_ok() {
            if let Ok(Some(book)) = rx.await {
                return Ok(book);
            }
        }
        Ok(self.inner.list(user_id).await?.into())
    }

    fn keep(&self, user_id: &str, epoch: u64, book: Arc<[Address]>) {
        let mut books = self.books.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock `forget` also takes: nothing forgotten
        // since the read began.
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if books.len() >= MAX_USERS {
            books.clear();
        }
        books.insert(user_id.to_owned(), (Instant::now(), book));
    }

    fn forget(&self, user_id: &str) {
        let mut books = self.books.lock().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        books.remove(user_id);
    }

    fn forget_all(&self) {
        let mut books = self.books.lock().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        books.clear();
    }

    /// A change of this node: forgotten here, and the others told.
    fn changed(&self, user_id: &str) {
        self.forget(user_id);
        if let Some(outbox) = &self.outbox {
            if outbox.try_send(format!("{} {user_id}", self.node)).is_err() {
                tracing::warn!("address notice outbox full: other nodes see the change later");
            }
        }
    }

    /// A notice from the channel; this node's own are already applied.
    fn heard(&self, notice: &str) {
        match notice.split_once(' ') {
            Some((node, user_id)) if node != self.node.to_string() => self.forget(user_id),
            Some(_) => {}
            None => tracing::warn!("malformed address notice ignored"),
        }
    }
}

#[async_trait]
impl AddressStore for AddressCache {
    async fn address(&self, user_id: &str, id: Uuid) -> Result<Option<Address>, StoreError> {
        let book = self.book(user_id).await?;
        if let Some(a) = book.iter().find(|a| a.id == id) {
            return Ok(Some(a.clone()));
        }
        // Named but not kept: added a moment ago on another node, perhaps,
        // its notice still on the way. The store has the last word.
        let found = self.inner.address(user_id, id).await?;
        if found.is_some() {
            self.forget(user_id);
        }
        Ok(found)
    }

    async fn default_of(&self, user_id: &str) -> Result<Option<Address>, StoreError> {
        Ok(self
            .book(user_id)
            .await?
            .iter()
            .find(|a| a.is_default)
            .cloned())
    }

    async fn insert(
        &self,
        user_id: &str,
        address: &Address,
        at: DateTime<Utc>,
    ) -> Result<Inserted, StoreError> {
        let done = self.inner.insert(user_id, address, at).await;
        // Also after an error: the store may have committed before failing.
        self.changed(user_id);
        done
    }

    async fn list(&self, user_id: &str) -> Result<Vec<Address>, StoreError> {
        // The owner's own view always comes from the store.
        let epoch = self.epoch.load(Ordering::Acquire);
        let list = self.inner.list(user_id).await?;
        if self.hearing.load(Ordering::Acquire) {
            self.keep(user_id, epoch, list.clone().into());
        }
        Ok(list)
    }

    async fn delete(&self, user_id: &str, id: Uuid, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = self.inner.delete(user_id, id, at).await;
        self.changed(user_id);
        done
    }
}

async fn load_loop(inner: Arc<dyn AddressStore>, mut pending: mpsc::Receiver<Load>) {
    let mut queued = Vec::with_capacity(LOAD_BATCH);
    // Ends when the cache, the only sender, is gone.
    while pending.recv_many(&mut queued, LOAD_BATCH).await > 0 {
        let mut users: Vec<String> = queued.iter().map(|(u, _)| u.clone()).collect();
        users.sort_unstable();
        users.dedup();
        match inner.books(&users).await {
            Ok(mut books) => {
                let empty: Arc<[Address]> = Arc::from(Vec::new());
                let mut shared: HashMap<String, Arc<[Address]>> = HashMap::new();
                for (user, reply) in queued.drain(..) {
                    let book = shared
                        .entry(user)
                        .or_insert_with_key(|u| books.remove(u).map_or(empty.clone(), Arc::from))
                        .clone();
                    let _ = reply.send(Some(book));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, users = users.len(), "reading address books failed");
                for (_, reply) in queued.drain(..) {
                    let _ = reply.send(None);
                }
            }
        }
    }
}

async fn publish_loop(
    kv: Kv,
    channel: String,
    mut rx: mpsc::Receiver<String>,
    shutdown: CancellationToken,
) {
    let mut queued = Vec::with_capacity(64);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut queued, 64) => n,
            _ = shutdown.cancelled() => return,
        };
        if n == 0 {
            return;
        }
        let notices = queued.drain(..).map(|n| (channel.clone(), n)).collect();
        if let Err(e) = kv.publish_all(notices).await {
            tracing::warn!(error = %e, "publishing address notices failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// One user's book in memory, counting how often it is read.
    #[derive(Default)]
    struct Counting {
        reads: AtomicUsize,
        batches: AtomicUsize,
        /// Batched reads fail (a query too big, a timeout); single ones work.
        batches_fail: AtomicBool,
        book: Mutex<Vec<Address>>,
    }

    fn address(city: &str) -> Address {
        Address {
            id: Uuid::new_v4(),
            name: "Chen Mei".into(),
            phone: "13812345678".into(),
            province: "440000".into(),
            city: city.into(),
            district: None,
            line: "1 Lychee Road".into(),
            postcode: None,
            is_default: true,
        }
    }

    impl Counting {
        fn reads(&self) -> usize {
            self.reads.load(Ordering::SeqCst)
        }
        /// Another node's change, straight to the store.
        fn replace(&self, book: Vec<Address>) {
            *self.book.lock().unwrap() = book;
        }
    }

    #[async_trait]
    impl AddressStore for Counting {
        async fn address(&self, _: &str, id: Uuid) -> Result<Option<Address>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(self
                .book
                .lock()
                .unwrap()
                .iter()
                .find(|a| a.id == id)
                .cloned())
        }
        async fn default_of(&self, _: &str) -> Result<Option<Address>, StoreError> {
            unreachable!("the cache reads whole books")
        }
        async fn insert(
            &self,
            _: &str,
            a: &Address,
            _: DateTime<Utc>,
        ) -> Result<Inserted, StoreError> {
            let mut book = self.book.lock().unwrap();
            book.iter_mut().for_each(|b| b.is_default = false);
            book.insert(0, a.clone());
            Ok(Inserted::Added(a.clone()))
        }
        async fn list(&self, _: &str) -> Result<Vec<Address>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(self.book.lock().unwrap().clone())
        }
        async fn books(
            &self,
            users: &[String],
        ) -> Result<HashMap<String, Vec<Address>>, StoreError> {
            self.batches.fetch_add(1, Ordering::SeqCst);
            if self.batches_fail.load(Ordering::SeqCst) {
                return Err(StoreError::Corrupt("batch refused".into()));
            }
            let book = self.book.lock().unwrap().clone();
            self.reads.fetch_add(users.len(), Ordering::SeqCst);
            Ok(users
                .iter()
                .filter(|_| !book.is_empty())
                .map(|u| (u.clone(), book.clone()))
                .collect())
        }
        async fn delete(&self, _: &str, id: Uuid, _: DateTime<Utc>) -> Result<bool, StoreError> {
            self.book.lock().unwrap().retain(|a| a.id != id);
            Ok(true)
        }
    }

    fn alone(inner: Arc<Counting>, ttl: Duration) -> Arc<AddressCache> {
        AddressCache::start(inner, ttl, Peers::Alone, CancellationToken::new())
    }

    #[tokio::test]
    async fn a_book_is_read_once_and_this_nodes_changes_show_at_once() {
        let inner = Arc::new(Counting::default());
        let cache = alone(inner.clone(), Duration::from_secs(60));
        assert_eq!(cache.default_of("mei").await.unwrap(), None);
        assert_eq!(cache.default_of("mei").await.unwrap(), None);
        assert_eq!(inner.reads(), 1, "an empty book is remembered too");
        let a = address("Guangzhou");
        cache.insert("mei", &a, Utc::now()).await.unwrap();
        assert_eq!(cache.default_of("mei").await.unwrap(), Some(a.clone()));
        assert_eq!(cache.address("mei", a.id).await.unwrap(), Some(a.clone()));
        assert_eq!(cache.default_of("mei").await.unwrap(), Some(a.clone()));
        assert_eq!(inner.reads(), 2, "one read after the change");
        cache.delete("mei", a.id, Utc::now()).await.unwrap();
        assert_eq!(cache.default_of("mei").await.unwrap(), None);
        assert_eq!(cache.address("mei", a.id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn another_nodes_notice_clears_a_book_and_its_own_echo_does_not() {
        let inner = Arc::new(Counting::default());
        let cache = alone(inner.clone(), Duration::from_secs(60));
        let old = address("Guangzhou");
        inner.replace(vec![old.clone()]);
        assert_eq!(cache.default_of("mei").await.unwrap(), Some(old.clone()));
        let new = address("Fuzhou");
        inner.replace(vec![new.clone()]);
        cache.heard(&format!("{} mei", cache.node));
        assert_eq!(cache.default_of("mei").await.unwrap(), Some(old));
        cache.heard(&format!("{} mei", Uuid::new_v4()));
        assert_eq!(cache.default_of("mei").await.unwrap(), Some(new));
        cache.heard("no-space-here");
    }

    #[tokio::test]
    async fn an_address_named_but_not_kept_is_asked_of_the_store() {
        let inner = Arc::new(Counting::default());
        let cache = alone(inner.clone(), Duration::from_secs(60));
        assert_eq!(cache.default_of("mei").await.unwrap(), None);
        // Added on another node; its notice has not arrived.
        let a = address("Xiamen");
        inner.replace(vec![a.clone()]);
        assert_eq!(cache.address("mei", a.id).await.unwrap(), Some(a.clone()));
        assert_eq!(cache.default_of("mei").await.unwrap(), Some(a));
        assert_eq!(
            cache.address("mei", Uuid::new_v4()).await.unwrap(),
            None,
            "another's or no address stays not found"
        );
    }

    #[tokio::test]
    async fn a_node_that_cannot_hear_reads_the_store_every_time() {
        let inner = Arc::new(Counting::default());
        let cache = alone(inner.clone(), Duration::from_secs(60));
        cache.hearing.store(false, Ordering::SeqCst);
        cache.default_of("mei").await.unwrap();
        cache.default_of("mei").await.unwrap();
        assert_eq!(inner.reads(), 2);
        assert!(cache.books.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_read_overtaken_by_a_change_is_not_kept() {
        let inner = Arc::new(Counting::default());
        let cache = alone(inner.clone(), Duration::from_secs(60));
        let epoch = cache.epoch.load(Ordering::SeqCst);
        // The read began, then a notice arrived, then the read ended.
        cache.heard(&format!("{} mei", Uuid::new_v4()));
        cache.keep("mei", epoch, Arc::from(vec![address("stale")]));
        assert!(cache.books.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn books_wanted_at_once_are_read_in_one_query() {
        let inner = Arc::new(Counting::default());
        let cache = alone(inner.clone(), Duration::from_secs(60));
        let a = address("Shantou");
        inner.replace(vec![a.clone()]);
        let users: Vec<String> = (0..50).map(|i| format!("user-{i}")).collect();
        let found = futures_util::future::join_all(users.iter().map(|u| cache.default_of(u))).await;
        assert!(found
            .iter()
            .all(|f| f.as_ref().unwrap().as_ref() == Some(&a)));
        assert_eq!(inner.batches.load(Ordering::SeqCst), 1);
        assert_eq!(inner.reads(), 50, "each user's book was in the batch");
        // Kept now: no more reads.
        cache.default_of("user-7").await.unwrap();
        assert_eq!(inner.batches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_batch_read_falls_back_to_each_users_own() {
        let inner = Arc::new(Counting::default());
        inner.batches_fail.store(true, Ordering::SeqCst);
        let cache = alone(inner.clone(), Duration::from_secs(60));
        let a = address("Zhanjiang");
        inner.replace(vec![a.clone()]);
        assert_eq!(cache.default_of("mei").await.unwrap(), Some(a));
        assert_eq!(inner.batches.load(Ordering::SeqCst), 1);
        assert_eq!(inner.reads(), 1, "read alone after the batch failed");
    }

    #[tokio::test]
    async fn a_kept_book_is_read_again_after_the_ttl() {
        let inner = Arc::new(Counting::default());
        let cache = alone(inner.clone(), Duration::ZERO);
        inner.replace(vec![address("Fuzhou")]);
        cache.default_of("mei").await.unwrap();
        cache.default_of("mei").await.unwrap();
        assert_eq!(inner.reads(), 2);
    }
}
