//! Uploads: the photos a buyer attaches to an after-sales claim (contract
//! section 11). This module owns their bytes, the check that they are a
//! JPEG, PNG or WebP of sane size, the per-user bounds, who may read them,
//! and their attachment to one claim.

pub mod detect;
pub mod sql;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::clock::Clock;
use crate::identity::{Identity, Role};
use crate::orders::{OrderError, Orders};
use crate::store::StoreError;
pub use detect::{ImageKind, MAX_BYTES};

/// Uploads one user may make in `WINDOW`, attached or not: the bound on
/// what one account can make the database hold per hour.
pub const MAX_PER_WINDOW: u32 = 30;
pub const WINDOW: TimeDelta = TimeDelta::hours(1);
/// Uploads one user may hold that are on no claim yet: more than any claim
/// form needs (3 photos), few enough that an account is no free file store.
pub const MAX_UNATTACHED: u32 = 50;
/// Photos on one claim (section 11).
pub const MAX_PER_CLAIM: usize = 3;

/// An upload without its bytes. Serialized as the answer to the upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadMeta {
    pub id: Uuid,
    /// The user who sent it (the claim's buyer).
    #[serde(skip)]
    pub owner: String,
    /// From the bytes, never from the client.
    pub content_type: ImageKind,
    pub bytes: u32,
    pub width: u32,
    pub height: u32,
    #[serde(skip)]
    pub created_at: DateTime<Utc>,
    /// The claim it is on, and that claim's sale (whose host may read it);
    /// both `None` until attached.
    #[serde(skip)]
    pub claim_id: Option<Uuid>,
    #[serde(skip)]
    pub sale_id: Option<Uuid>,
}

/// An upload with its bytes.
#[derive(Debug, Clone)]
pub struct Upload {
    pub meta: UploadMeta,
    pub data: Bytes,
}

/// The bounds `UploadStore::put` enforces for the owner, atomically with
/// the insert, so concurrent uploads (on any node) cannot overshoot them.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub max_unattached: u32,
    pub max_recent: u32,
    /// Uploads created after this count as recent.
    pub since: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    Stored,
    /// The owner already holds `max_unattached` uploads on no claim.
    TooManyUnattached,
    /// The owner made `max_recent` uploads since `since`; the oldest of
    /// them, which leaves the window first.
    TooManyRecent {
        oldest: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// All of them are on the claim now (some may have been already).
    Attached,
    /// One of them does not exist or is not the owner's: none was attached.
    Unknown,
    /// One of them is on another claim: none was attached.
    Taken,
}

/// Where uploads are kept: PostgreSQL `bytea` or SQLite `BLOB` today; an
/// object store (with the metadata in a table) could take their place.
#[async_trait]
pub trait UploadStore: Send + Sync {
    /// Stores a new upload, unless its owner is over a bound of `quota`.
    async fn put(&self, meta: &UploadMeta, data: &[u8], quota: Quota) -> Result<Put, StoreError>;
    async fn get(&self, id: Uuid) -> Result<Option<Upload>, StoreError>;
    async fn meta(&self, id: Uuid) -> Result<Option<UploadMeta>, StoreError>;
    /// Puts all of `ids` (distinct, the owner's, on no other claim) on
    /// `claim_id`, or none of them. Attaching again to the same claim and
    /// sale is no change, so a retried claim succeeds.
    async fn attach(
        &self,
        owner: &str,
        ids: &[Uuid],
        claim_id: Uuid,
        sale_id: Uuid,
    ) -> Result<Attach, StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("an upload is at most 2 MiB")]
    TooLarge,
    /// Not a JPEG, PNG or WebP, judged from the bytes.
    #[error("{0}")]
    Unsupported(String),
    /// A bad request: an unreadable or oversized header, a bad photo list.
    #[error("{0}")]
    Invalid(String),
    #[error("upload not found")]
    NotFound,
    #[error(
        "you hold {MAX_UNATTACHED} uploads that are on no claim; use them on a claim before sending more"
    )]
    TooManyUnattached,
    /// Seconds until the oldest upload of the window leaves it.
    #[error("at most {MAX_PER_WINDOW} uploads an hour; retry after {0} s")]
    RateLimited(u64),
    /// A photo of a claim that is not one of the buyer's uploads.
    #[error("a photo is not one of your uploads")]
    UnknownPhoto,
    #[error("a photo is already on another claim")]
    AlreadyAttached,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Deciding whether the reader manages the sale.
    #[error(transparent)]
    Orders(#[from] OrderError),
}

/// The uploads service: what the HTTP handlers and claims call.
pub struct Uploads {
    store: Arc<dyn UploadStore>,
    /// Whether a reader manages the sale an upload's claim belongs to.
    orders: Arc<Orders>,
    clock: Arc<Clock>,
}

impl Uploads {
    pub fn new(store: Arc<dyn UploadStore>, orders: Arc<Orders>, clock: Arc<Clock>) -> Self {
        Uploads {
            store,
            orders,
            clock,
        }
    }

    /// Checks `data` and keeps it as `who`'s upload.
    pub async fn create(&self, who: &Identity, data: Bytes) -> Result<UploadMeta, UploadError> {
        let checked = detect::check(&data)?;
        let now = self.clock.now();
        let meta = UploadMeta {
            // Time-ordered: the table's index grows at its end.
            id: Uuid::now_v7(),
            owner: who.user_id.clone(),
            content_type: checked.kind,
            bytes: u32::try_from(data.len()).map_err(|_| UploadError::TooLarge)?,
            width: checked.width,
            height: checked.height,
            created_at: now,
            claim_id: None,
            sale_id: None,
        };
        let quota = Quota {
            max_unattached: MAX_UNATTACHED,
            max_recent: MAX_PER_WINDOW,
            since: now - WINDOW,
        };
        match self.store.put(&meta, &data, quota).await? {
            Put::Stored => Ok(meta),
            Put::TooManyUnattached => Err(UploadError::TooManyUnattached),
            Put::TooManyRecent { oldest } => {
                // Rounded up: a client that waits exactly this long is let in.
                let wait_ms = (oldest + WINDOW - now).num_milliseconds();
                let wait = wait_ms.div_euclid(1000) + i64::from(wait_ms.rem_euclid(1000) > 0);
                Err(UploadError::RateLimited(wait.max(1).unsigned_abs()))
            }
        }
    }

    /// The upload with its bytes, for its owner; once on a claim, also for
    /// the sale's host and operators. Anyone else is told it does not
    /// exist, so ids cannot be probed.
    pub async fn read(&self, who: &Identity, id: Uuid) -> Result<Upload, UploadError> {
        let meta = self.store.meta(id).await?.ok_or(UploadError::NotFound)?;
        if !self.may_read(who, &meta).await? {
            return Err(UploadError::NotFound);
        }
        self.store.get(id).await?.ok_or(UploadError::NotFound)
    }

    async fn may_read(&self, who: &Identity, meta: &UploadMeta) -> Result<bool, UploadError> {
        if who.user_id == meta.owner {
            return Ok(true);
        }
        let Some(sale_id) = meta.sale_id else {
            return Ok(false);
        };
        if who.role == Role::Operator {
            return Ok(true);
        }
        Ok(self.orders.may_manage(who, sale_id).await?)
    }

    /// An upload's metadata, whoever owns it: for claims, which check the
    /// owner themselves.
    pub async fn meta(&self, id: Uuid) -> Result<Option<UploadMeta>, UploadError> {
        Ok(self.store.meta(id).await?)
    }

    /// Puts `owner`'s uploads `ids` (at most 3, distinct) on a claim of
    /// sale `sale_id`, all or none. An id that is not `owner`'s is
    /// `UnknownPhoto`; one already on another claim is `AlreadyAttached`.
    /// The same call again succeeds and changes nothing.
    pub async fn attach(
        &self,
        owner: &str,
        ids: &[Uuid],
        claim_id: Uuid,
        sale_id: Uuid,
    ) -> Result<(), UploadError> {
        if ids.len() > MAX_PER_CLAIM {
            return Err(UploadError::Invalid(format!(
                "at most {MAX_PER_CLAIM} photos on a claim"
            )));
        }
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != ids.len() {
            return Err(UploadError::Invalid(
                "the same photo is listed twice".into(),
            ));
        }
        if sorted.is_empty() {
            return Ok(());
        }
        // Sorted: concurrent attaches lock the rows in one order.
        match self.store.attach(owner, &sorted, claim_id, sale_id).await? {
            Attach::Attached => Ok(()),
            Attach::Unknown => Err(UploadError::UnknownPhoto),
            Attach::Taken => Err(UploadError::AlreadyAttached),
        }
    }

    /// Where an upload is read: what a Claim's `photos` lists.
    pub fn url(id: Uuid) -> String {
        format!("/api/v1/uploads/{id}")
    }
}
