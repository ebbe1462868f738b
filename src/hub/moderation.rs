//! Bans: who may ban whom in a sale, and what a ban does at once.
//!
//! A ban is refused for anyone who may manage the sale (its host, an
//! operator, the one banning): platform moderation must never be locked
//! out of a room. It closes the user's sockets in the sale (4003) and
//! releases its open reservations there, so it can neither buy nor pay.

use std::sync::Arc;

use uuid::Uuid;

use super::chat::{ChatError, ChatStore};
use super::{EventBus, SaleEvent};
use crate::catalog::service::CatalogError;
use crate::catalog::Catalog;
use crate::identity::{check_subject, Identity, Role};
use crate::inventory::{Inventory, InventoryError};
use crate::orders::{OrderError, Orders};

#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("user_id must be 1..=64 visible characters")]
    BadUser,
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Orders(#[from] OrderError),
}

pub struct Moderation {
    pub catalog: Arc<Catalog>,
    pub chat: Arc<dyn ChatStore>,
    pub inventory: Arc<dyn Inventory>,
    pub orders: Arc<Orders>,
    pub bus: Arc<dyn EventBus>,
}

impl Moderation {
    /// The sale's host id, if `who` may manage the sale.
    async fn managed(&self, who: &Identity, sale_id: Uuid) -> Result<String, ModerationError> {
        let sale = self.catalog.managed(who, sale_id).await?;
        self.seen(who).await;
        Ok(sale.host_id)
    }

    /// Remembered so that no host can ban this operator later.
    pub async fn seen(&self, who: &Identity) {
        if who.role == Role::Operator {
            if let Err(e) = self.chat.note_operator(&who.user_id).await {
                tracing::warn!(error = %e, "operator not remembered");
            }
        }
    }

    pub async fn ban(
        &self,
        who: &Identity,
        sale_id: Uuid,
        user_id: &str,
    ) -> Result<(), ModerationError> {
        let host = self.managed(who, sale_id).await?;
        check_subject(user_id).map_err(|_| ModerationError::BadUser)?;
        if user_id == who.user_id || user_id == host || self.chat.is_operator(user_id).await? {
            return Err(ModerationError::Forbidden(
                "someone who may manage the sale cannot be banned",
            ));
        }
        self.inventory.ban(sale_id, user_id).await?;
        self.bus.publish(
            sale_id,
            SaleEvent::Kick {
                user_id: user_id.to_owned(),
            },
        );
        let released = self.orders.release_user(sale_id, user_id).await?;
        if released > 0 {
            tracing::info!(%sale_id, released, "a ban released reservations");
        }
        Ok(())
    }

    pub async fn unban(
        &self,
        who: &Identity,
        sale_id: Uuid,
        user_id: &str,
    ) -> Result<(), ModerationError> {
        self.managed(who, sale_id).await?;
        check_subject(user_id).map_err(|_| ModerationError::BadUser)?;
        self.inventory.unban(sale_id, user_id).await?;
        Ok(())
    }

    pub async fn bans(
        &self,
        who: &Identity,
        sale_id: Uuid,
    ) -> Result<Vec<String>, ModerationError> {
        self.managed(who, sale_id).await?;
        Ok(self.inventory.bans(sale_id).await?)
    }
}
