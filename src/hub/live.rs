//! The live room as a domain service: what a viewer, a host or an operator
//! may do in a sale's room, and what it leads to. The socket (`ws::socket`)
//! turns client frames into these calls and their results into frames; no
//! wire format and no transport here.

use std::sync::Arc;

use uuid::Uuid;

use super::chat::{check_text, ChatError, ChatMessage, ChatStore, Post, Posted, WELCOME_LAST};
use super::moderation::{Moderation, ModerationError};
use super::presence::Presence;
use super::{Hub, SaleEvent};
use crate::catalog::service::CatalogError;
use crate::catalog::{Catalog, Sale};
use crate::clock::Clock;
use crate::dashboard::Stats;
use crate::identity::Identity;
use crate::orders::rebuild::{RebuildError, Rebuilder};
use crate::orders::service::{BuyAnswer, BuyRequest};
use crate::orders::Orders;

/// Longest mute: a week.
pub const MAX_MUTE_SECS: u32 = 7 * 24 * 3600;
pub const MAX_SLOW_MODE_SECS: u32 = 3600;

pub struct Live {
    /// This node's rooms.
    pub hub: Arc<Hub>,
    /// Chat history, rules and mutes.
    pub chat: Arc<dyn ChatStore>,
    /// Lower-cased words a chat message may not contain.
    pub blocked_words: Vec<String>,
    /// Cancelled on SIGTERM: sockets close with 1001.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Open sockets count as work: the node exits after they sent their 1001.
    pub sockets: tokio_util::task::TaskTracker,
    /// Per-second figures for the dashboard.
    pub stats: Arc<Stats>,
    /// Viewer counts over all nodes.
    pub presence: Arc<dyn Presence>,
    /// Rebuilds a sale's live state when chat finds it missing.
    pub rebuild: Arc<Rebuilder>,
    /// Bans and unbans, over REST and the socket alike.
    pub moderation: Arc<Moderation>,
    pub catalog: Arc<Catalog>,
    pub orders: Arc<Orders>,
    pub clock: Arc<Clock>,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("{0}")]
    NotFound(&'static str),
    #[error("only the sale's host or an operator may do this")]
    Forbidden,
    #[error("{0}")]
    BadRequest(String),
    /// A chat or announcement text the rules refuse (`invalid_message`).
    #[error("{0}")]
    InvalidText(&'static str),
    #[error("the sale is being rebuilt")]
    Rebuilding,
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Moderation(#[from] ModerationError),
    #[error(transparent)]
    Rebuild(#[from] RebuildError),
}

/// What a socket's first frame says.
pub struct Welcome {
    pub sale: Sale,
    pub chat: Vec<ChatMessage>,
    pub slow_mode_secs: u32,
}

/// A chat message the rules refused; the sender is told why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Banned,
    Muted { ms: i64 },
    SlowMode { ms: i64 },
    RateLimited { ms: i64 },
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Banned => "banned",
            Refusal::Muted { .. } => "muted",
            Refusal::SlowMode { .. } => "slow_mode",
            Refusal::RateLimited { .. } => "rate_limited",
        }
    }

    pub fn message(&self) -> String {
        let secs = |ms: &i64| (*ms as u64).div_ceil(1000);
        match self {
            Refusal::Banned => "you are banned from this sale".to_owned(),
            Refusal::Muted { ms } => format!("you are muted for {} s", secs(ms)),
            Refusal::SlowMode { ms } => format!("slow mode: wait {} s", secs(ms)),
            Refusal::RateLimited { ms } => format!("too fast: wait {} s", secs(ms)),
        }
    }
}

/// A host's or an operator's tool in the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Announce { text: String },
    Pin { sku: String },
    DeleteChat { seq: u64 },
    Mute { user_id: String, secs: u32 },
    Ban { user_id: String },
    Unban { user_id: String },
    SlowMode { secs: u32 },
}

impl Live {
    /// History after `since` (or the last few), the sale and its slow mode.
    pub async fn welcome(&self, sale_id: Uuid, since: Option<u64>) -> Result<Welcome, LiveError> {
        let chat = self.chat.history(sale_id, since, WELCOME_LAST).await?;
        let slow_mode_secs = self.chat.slow_mode(sale_id).await?;
        let sale = self.catalog.sale(sale_id).await?;
        Ok(Welcome {
            sale,
            chat,
            slow_mode_secs,
        })
    }

    /// Whether `who` may manage the sale: its host or an operator.
    pub async fn may_manage(&self, sale_id: Uuid, who: &Identity) -> Result<bool, LiveError> {
        let facts = self
            .catalog
            .facts(sale_id, None)
            .await?
            .ok_or(LiveError::NotFound("sale not found"))?;
        Ok(who.may_manage(&facts.host_id))
    }

    async fn managed(&self, sale_id: Uuid, who: &Identity) -> Result<(), LiveError> {
        if self.may_manage(sale_id, who).await? {
            Ok(())
        } else {
            Err(LiveError::Forbidden)
        }
    }

    /// Posts a chat message under the room's rules. A sale whose live state
    /// Redis lost is rebuilt first and the message posted again, so chat
    /// goes on with seqs above every seq given before.
    pub async fn post_chat(
        &self,
        sale_id: Uuid,
        who: &Identity,
        text: &str,
    ) -> Result<Result<(), Refusal>, LiveError> {
        let text = check_text(text, &self.blocked_words).map_err(LiveError::InvalidText)?;
        let post = Post {
            sale_id,
            user_id: who.user_id.clone(),
            name: who.name.clone().unwrap_or_else(|| who.user_id.clone()),
            text,
            ts: self.clock.now_ms(),
            moderator: self.may_manage(sale_id, who).await?,
        };
        let mut posted = self.chat.post(&post).await?;
        if posted == Posted::Missing {
            self.rebuild.repair(sale_id, None).await?;
            posted = self.chat.post(&post).await?;
        }
        Ok(match posted {
            Posted::Sent(_) => {
                self.stats.chat(sale_id);
                Ok(())
            }
            Posted::Missing => return Err(LiveError::Rebuilding),
            Posted::Banned => Err(Refusal::Banned),
            Posted::Muted { ms } => Err(Refusal::Muted { ms }),
            Posted::SlowMode { ms } => Err(Refusal::SlowMode { ms }),
            Posted::RateLimited { ms } => Err(Refusal::RateLimited { ms }),
        })
    }

    /// A host's tool, for whoever may manage the sale.
    pub async fn moderate(
        &self,
        sale_id: Uuid,
        who: &Identity,
        command: Command,
    ) -> Result<(), LiveError> {
        let bus = self.hub.bus();
        match command {
            Command::Announce { text } => {
                self.managed(sale_id, who).await?;
                let text = check_text(&text, &[]).map_err(LiveError::InvalidText)?;
                let ts = self.clock.now_ms();
                bus.publish(sale_id, SaleEvent::Announcement { text, ts });
            }
            Command::Pin { sku } => {
                self.catalog.pin(who, sale_id, &sku).await?;
            }
            Command::DeleteChat { seq } => {
                self.managed(sale_id, who).await?;
                if !self.chat.delete(sale_id, seq).await? {
                    return Err(LiveError::NotFound("no such message in history"));
                }
                bus.publish(sale_id, SaleEvent::ChatDeleted { seq });
            }
            Command::Mute { user_id, secs } => {
                self.managed(sale_id, who).await?;
                if secs > MAX_MUTE_SECS {
                    return Err(LiveError::BadRequest(format!(
                        "secs must be 0..={MAX_MUTE_SECS}"
                    )));
                }
                self.chat.mute(sale_id, &user_id, secs).await?;
            }
            Command::Ban { user_id } => self.moderation.ban(who, sale_id, &user_id).await?,
            Command::Unban { user_id } => self.moderation.unban(who, sale_id, &user_id).await?,
            Command::SlowMode { secs } => {
                self.managed(sale_id, who).await?;
                if secs > MAX_SLOW_MODE_SECS {
                    return Err(LiveError::BadRequest(format!(
                        "secs must be 0..={MAX_SLOW_MODE_SECS}"
                    )));
                }
                self.chat.set_slow_mode(sale_id, secs).await?;
                bus.publish(sale_id, SaleEvent::SlowMode { secs });
            }
        }
        Ok(())
    }

    /// A buy from the room: the same path as REST's, answered as the order's JSON.
    pub async fn buy(&self, who: &Identity, req: BuyRequest) -> BuyAnswer {
        self.orders.buy(who, req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chat refusals answer with the contract's codes, from its one list.
    #[test]
    fn refusals_use_the_contracts_codes() {
        for r in [
            Refusal::Banned,
            Refusal::Muted { ms: 1 },
            Refusal::SlowMode { ms: 1500 },
            Refusal::RateLimited { ms: 999 },
        ] {
            assert!(
                crate::http::error::ERROR_CODES.contains(&r.code()),
                "{}",
                r.code()
            );
        }
        assert_eq!(
            Refusal::SlowMode { ms: 1500 }.message(),
            "slow mode: wait 2 s"
        );
    }
}
