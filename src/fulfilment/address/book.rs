//! The address book's operations, for the HTTP layer and the buy path.

use std::sync::Arc;

use uuid::Uuid;

use super::{Address, AddressError, AddressStore, Inserted, NewAddress};
use crate::clock::Clock;
use crate::identity::Identity;
use crate::store::StoreError;

pub struct AddressBook {
    store: Arc<dyn AddressStore>,
    clock: Arc<Clock>,
}

impl AddressBook {
    pub fn new(store: Arc<dyn AddressStore>, clock: Arc<Clock>) -> Self {
        AddressBook { store, clock }
    }

    /// Validates and adds an address to the caller's book.
    pub async fn create(&self, who: &Identity, body: NewAddress) -> Result<Address, AddressError> {
        let address = body.validate(Uuid::new_v4())?;
        // `Address`'s Debug masks it: these lines are safe at any level.
        tracing::trace!(user = %who.user_id, ?address, "adding an address");
        match self
            .store
            .insert(&who.user_id, &address, self.clock.now())
            .await?
        {
            Inserted::Added(stored) => {
                tracing::debug!(address = ?stored, "address added");
                Ok(stored)
            }
            Inserted::Full => Err(AddressError::Full),
        }
    }

    /// The caller's addresses: the default first, then newest first.
    pub async fn list(&self, who: &Identity) -> Result<Vec<Address>, AddressError> {
        let list = self.store.list(&who.user_id).await?;
        tracing::trace!(user = %who.user_id, addresses = ?list, "listed addresses");
        Ok(list)
    }

    /// Deletes one of the caller's addresses; another's is `NotFound` too.
    pub async fn delete(&self, who: &Identity, id: Uuid) -> Result<(), AddressError> {
        if self
            .store
            .delete(&who.user_id, id, self.clock.now())
            .await?
        {
            Ok(())
        } else {
            Err(AddressError::NotFound)
        }
    }

    /// The user's address `id`, if it is theirs. Fails only in storage, so
    /// the buy path's errors take it with `?`.
    pub async fn address(&self, user_id: &str, id: Uuid) -> Result<Option<Address>, StoreError> {
        self.store.address(user_id, id).await
    }

    /// The user's default address, if any.
    pub async fn default_of(&self, user_id: &str) -> Result<Option<Address>, StoreError> {
        self.store.default_of(user_id).await
    }
}
