//! The buyer's address book (contract section 10). Being written: the
//! types below are the interface the rest of the crate uses.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod provinces;

use crate::catalog::StoreError;

/// The contract's Address; also an order's immutable `ship_to` copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub id: Uuid,
    pub name: String,
    /// An 11-digit mainland mobile number or E.164. Personal data: never
    /// logged; shown masked (`138****5678`) to anyone but its user, the
    /// sale's host and operators.
    pub phone: String,
    /// GB/T 2260 province-level code, e.g. "440000" (Guangdong).
    pub province: String,
    pub city: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    pub line: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postcode: Option<String>,
    #[serde(default)]
    pub is_default: bool,
}

/// Where address books are kept.
#[async_trait]
pub trait AddressStore: Send + Sync + 'static {
    /// The user's address `id`, if it is theirs.
    async fn address(&self, user_id: &str, id: Uuid) -> Result<Option<Address>, StoreError>;
    /// The user's default address, if any.
    async fn default_of(&self, user_id: &str) -> Result<Option<Address>, StoreError>;
}
