//! Each buy attaches its buyer's default address; asking PostgreSQL for it
//! on every buy halved a rush's orders/s (the pool the batch writer commits
//! through answered a read per buy). Defaults are kept here for a moment:
//! this node's own changes clear them at once, another node's show within
//! `ttl` (a buy in that gap ships to the previous default, or none, and the
//! buyer can attach another until the order is packed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Address, AddressStore, Inserted};
use crate::catalog::StoreError;

/// Past this many users the map is emptied rather than scanned for the old.
const MAX_USERS: usize = 200_000;

pub struct CachedDefaults {
    inner: Arc<dyn AddressStore>,
    ttl: Duration,
    /// Short sections, no `.await` inside.
    defaults: Mutex<HashMap<String, (Instant, Option<Address>)>>,
}

impl CachedDefaults {
    pub fn new(inner: Arc<dyn AddressStore>, ttl: Duration) -> Self {
        CachedDefaults {
            inner,
            ttl,
            defaults: Mutex::new(HashMap::new()),
        }
    }

    fn forget(&self, user_id: &str) {
        self.defaults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(user_id);
    }
}

#[async_trait]
impl AddressStore for CachedDefaults {
    async fn address(&self, user_id: &str, id: Uuid) -> Result<Option<Address>, StoreError> {
        self.inner.address(user_id, id).await
    }

    async fn default_of(&self, user_id: &str) -> Result<Option<Address>, StoreError> {
        let now = Instant::now();
        if let Some((at, a)) = self
            .defaults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user_id)
        {
            if now.duration_since(*at) < self.ttl {
                return Ok(a.clone());
            }
        }
        let found = self.inner.default_of(user_id).await?;
        let mut map = self.defaults.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_USERS {
            map.clear();
        }
        map.insert(user_id.to_owned(), (now, found.clone()));
        Ok(found)
    }

    async fn insert(
        &self,
        user_id: &str,
        address: &Address,
        at: DateTime<Utc>,
    ) -> Result<Inserted, StoreError> {
        let done = self.inner.insert(user_id, address, at).await;
        self.forget(user_id);
        done
    }

    async fn list(&self, user_id: &str) -> Result<Vec<Address>, StoreError> {
        self.inner.list(user_id).await
    }

    async fn delete(&self, user_id: &str, id: Uuid, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = self.inner.delete(user_id, id, at).await;
        self.forget(user_id);
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A store of one default address that counts how often it is asked.
    #[derive(Default)]
    struct Counting {
        asked: AtomicUsize,
        default: Mutex<Option<Address>>,
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

    #[async_trait]
    impl AddressStore for Counting {
        async fn address(&self, _: &str, _: Uuid) -> Result<Option<Address>, StoreError> {
            Ok(None)
        }
        async fn default_of(&self, _: &str) -> Result<Option<Address>, StoreError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            Ok(self.default.lock().unwrap().clone())
        }
        async fn insert(
            &self,
            _: &str,
            a: &Address,
            _: DateTime<Utc>,
        ) -> Result<Inserted, StoreError> {
            *self.default.lock().unwrap() = Some(a.clone());
            Ok(Inserted::Added(a.clone()))
        }
        async fn list(&self, _: &str) -> Result<Vec<Address>, StoreError> {
            Ok(Vec::new())
        }
        async fn delete(&self, _: &str, _: Uuid, _: DateTime<Utc>) -> Result<bool, StoreError> {
            *self.default.lock().unwrap() = None;
            Ok(true)
        }
    }

    #[tokio::test]
    async fn defaults_are_read_once_per_ttl_and_this_nodes_changes_show_at_once() {
        let inner = Arc::new(Counting::default());
        let cache = CachedDefaults::new(inner.clone(), Duration::from_secs(60));
        assert_eq!(cache.default_of("mei").await.unwrap(), None);
        assert_eq!(cache.default_of("mei").await.unwrap(), None);
        assert_eq!(
            inner.asked.load(Ordering::SeqCst),
            1,
            "none is remembered too"
        );
        let a = address("Guangzhou");
        cache.insert("mei", &a, Utc::now()).await.unwrap();
        assert_eq!(cache.default_of("mei").await.unwrap(), Some(a.clone()));
        assert_eq!(cache.default_of("mei").await.unwrap(), Some(a.clone()));
        assert_eq!(inner.asked.load(Ordering::SeqCst), 2);
        cache.delete("mei", a.id, Utc::now()).await.unwrap();
        assert_eq!(cache.default_of("mei").await.unwrap(), None);
        // Another node's change shows once the entry is older than the ttl.
        let short = CachedDefaults::new(inner.clone(), Duration::ZERO);
        *inner.default.lock().unwrap() = Some(address("Fuzhou"));
        assert_eq!(
            short.default_of("mei").await.unwrap().unwrap().city,
            "Fuzhou"
        );
    }
}
