//! Chat: one line per message, a sequence number per sale, a capped history,
//! and the host's tools (mute, ban, slow mode, delete).
//!
//! Redis keeps it for all nodes (one Lua script checks the rules, numbers the
//! message, appends it to the sale's stream and publishes it, so every node
//! sees messages in `seq` order); the embedded mode keeps it in memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{EventBus, SaleEvent};
use crate::kv::{Keys, Kv, Lua};
use crate::ws::protocol::chat_frame_parts;

/// At least this many messages stay in a sale's history.
pub const HISTORY: usize = 1000;
/// Messages in `welcome` without `since`.
pub const WELCOME_LAST: usize = 50;
pub const MAX_CHARS: usize = 280;

/// A chat message as viewers see it (the `chat` event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub seq: u64,
    pub user_id: String,
    pub name: String,
    pub text: String,
    pub ts: i64,
}

/// Per-user pace: `per_sec` messages a second on average, `burst` at once.
#[derive(Debug, Clone, Copy)]
pub struct ChatRate {
    pub per_sec: f64,
    pub burst: u32,
}

impl Default for ChatRate {
    fn default() -> Self {
        ChatRate {
            per_sec: 1.0,
            burst: 3,
        }
    }
}

/// A message to post, already validated.
#[derive(Debug, Clone)]
pub struct Post {
    pub sale_id: Uuid,
    pub user_id: String,
    pub name: String,
    pub text: String,
    pub ts: i64,
    /// Hosts and operators: no slow mode, mute or rate limit.
    pub moderator: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    Sent(u64),
    /// The sale has no live state (Redis lost it): rebuild, then post again.
    Missing,
    Banned,
    Muted {
        ms: i64,
    },
    SlowMode {
        ms: i64,
    },
    RateLimited {
        ms: i64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The store could not be reached or answered with an error (the
    /// backend's words, for the log).
    #[error("chat store unavailable: {0}")]
    Unavailable(String),
    #[error("unexpected reply from the chat store: {0}")]
    Protocol(String),
}

impl From<redis::RedisError> for ChatError {
    fn from(e: redis::RedisError) -> Self {
        ChatError::Unavailable(e.to_string())
    }
}

#[async_trait]
pub trait ChatStore: Send + Sync + 'static {
    /// Checks ban, mute, slow mode and rate, numbers the message, keeps it in
    /// history and delivers it to the sale's viewers on every node.
    async fn post(&self, post: &Post) -> Result<Posted, ChatError>;
    /// All kept messages after `since`, or the last `last` ones.
    async fn history(
        &self,
        sale_id: Uuid,
        since: Option<u64>,
        last: usize,
    ) -> Result<Vec<ChatMessage>, ChatError>;
    /// Removes a message from history; `false` if it was not there.
    async fn delete(&self, sale_id: Uuid, seq: u64) -> Result<bool, ChatError>;
    async fn mute(&self, sale_id: Uuid, user_id: &str, secs: u32) -> Result<(), ChatError>;
    /// Remembers a user id that signed in as an operator: tokens carry the
    /// role, user ids do not, and an operator must never be banned.
    async fn note_operator(&self, user_id: &str) -> Result<(), ChatError>;
    async fn is_operator(&self, user_id: &str) -> Result<bool, ChatError>;
    async fn slow_mode(&self, sale_id: Uuid) -> Result<u32, ChatError>;
    async fn set_slow_mode(&self, sale_id: Uuid, secs: u32) -> Result<(), ChatError>;
}

/// Why a chat text is refused (`invalid_message`).
pub fn check_text(text: &str, blocked: &[String]) -> Result<String, &'static str> {
    let t = text.trim();
    let n = t.chars().count();
    if n == 0 || n > MAX_CHARS {
        return Err("a message is 1..=280 characters");
    }
    if crate::text::check_visible_line(t).is_err() {
        return Err("a message is one visible line without control or invisible characters");
    }
    let lower = t.to_lowercase();
    if blocked.iter().any(|w| lower.contains(w.as_str())) {
        return Err("this message contains a blocked word");
    }
    Ok(t.to_owned())
}

/// In Redis, shared by every node.
pub struct RedisChat {
    conn: Kv,
    keys: Keys,
    rate: ChatRate,
    post: Lua,
}

impl RedisChat {
    pub fn new(conn: Kv, prefix: &str, rate: ChatRate) -> Self {
        RedisChat {
            conn,
            keys: Keys::new(prefix),
            rate,
            post: Lua::new(include_str!("lua/chat.lua")),
        }
    }
}

fn parse_frame(entry: &redis::streams::StreamId) -> Option<ChatMessage> {
    let f: String = entry.get("f")?;
    let v: SaleEvent = serde_json::from_str(&f).ok()?;
    match v {
        SaleEvent::Chat(m) => Some(m),
        _ => None,
    }
}

#[async_trait]
impl ChatStore for RedisChat {
    async fn post(&self, p: &Post) -> Result<Posted, ChatError> {
        let k = &self.keys;
        let (prefix, suffix) = chat_frame_parts(&p.user_id, &p.name, &p.text, p.ts);
        let env_prefix = format!(
            r#"{{"sale_id":"{}","origin":"{}","event":"#,
            p.sale_id,
            Uuid::nil()
        );
        let reply: Vec<String> = self
            .post
            .key(k.chat_seq(p.sale_id))
            .key(k.chat_stream(p.sale_id))
            .key(k.bans(p.sale_id))
            .key(k.chat_user(p.sale_id, "mute", &p.user_id))
            .key(k.chat_user(p.sale_id, "slow", &p.user_id))
            .key(k.chat_settings(p.sale_id))
            .key(k.chat_user(p.sale_id, "rate", &p.user_id))
            .key(k.sale(p.sale_id))
            .key(k.sale_channel(p.sale_id))
            .arg(&p.user_id)
            .arg(p.ts)
            .arg(if p.moderator { "1" } else { "0" })
            .arg(self.rate.per_sec)
            .arg(self.rate.burst)
            .arg(prefix)
            .arg(suffix)
            .arg(env_prefix)
            .arg("}")
            .arg(self.conn.publish_command())
            .arg(HISTORY)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let num = |s: &String| {
            s.parse::<i64>()
                .map_err(|_| ChatError::Protocol(format!("not a number: {s}")))
        };
        Ok(match reply.as_slice() {
            [ok, seq] if ok == "ok" => Posted::Sent(num(seq)? as u64),
            [b] if b == "banned" => Posted::Banned,
            [m] if m == "missing" => Posted::Missing,
            [m, ms] if m == "muted" => Posted::Muted { ms: num(ms)? },
            [s, ms] if s == "slow_mode" => Posted::SlowMode { ms: num(ms)? },
            [r, ms] if r == "rate_limited" => Posted::RateLimited { ms: num(ms)? },
            other => return Err(ChatError::Protocol(format!("{other:?}"))),
        })
    }

    async fn history(
        &self,
        sale_id: Uuid,
        since: Option<u64>,
        last: usize,
    ) -> Result<Vec<ChatMessage>, ChatError> {
        let key = self.keys.chat_stream(sale_id);
        let mut conn = self.conn.clone();
        let entries: redis::streams::StreamRangeReply = match since {
            // Nothing comes after the largest seq; `s + 1` would wrap to 0 and
            // replay everything.
            Some(u64::MAX) => return Ok(Vec::new()),
            // The newest after `since`: the stream's trim is approximate and
            // may hold more than HISTORY.
            Some(s) => {
                conn.xrevrange_count(&key, "+", format!("{}-0", s + 1), HISTORY)
                    .await?
            }
            None => conn.xrevrange_count(&key, "+", "-", last).await?,
        };
        let mut out: Vec<ChatMessage> = entries.ids.iter().filter_map(parse_frame).collect();
        out.sort_by_key(|m| m.seq);
        Ok(out)
    }

    async fn delete(&self, sale_id: Uuid, seq: u64) -> Result<bool, ChatError> {
        let n: u64 = self
            .conn
            .clone()
            .xdel(self.keys.chat_stream(sale_id), &[format!("{seq}-0")])
            .await?;
        Ok(n > 0)
    }

    async fn mute(&self, sale_id: Uuid, user_id: &str, secs: u32) -> Result<(), ChatError> {
        let key = self.keys.chat_user(sale_id, "mute", user_id);
        let mut conn = self.conn.clone();
        if secs == 0 {
            conn.del::<_, ()>(key).await?;
        } else {
            conn.set_ex::<_, _, ()>(key, 1, u64::from(secs)).await?;
        }
        Ok(())
    }

    async fn note_operator(&self, user_id: &str) -> Result<(), ChatError> {
        self.conn
            .clone()
            .sadd::<_, _, ()>(self.keys.operators(), user_id)
            .await?;
        Ok(())
    }

    async fn is_operator(&self, user_id: &str) -> Result<bool, ChatError> {
        Ok(self
            .conn
            .clone()
            .sismember(self.keys.operators(), user_id)
            .await?)
    }

    async fn slow_mode(&self, sale_id: Uuid) -> Result<u32, ChatError> {
        let v: Option<u32> = self
            .conn
            .clone()
            .hget(self.keys.chat_settings(sale_id), "slow_mode")
            .await?;
        Ok(v.unwrap_or(0))
    }

    async fn set_slow_mode(&self, sale_id: Uuid, secs: u32) -> Result<(), ChatError> {
        self.conn
            .clone()
            .hset::<_, _, _, ()>(self.keys.chat_settings(sale_id), "slow_mode", secs)
            .await?;
        Ok(())
    }
}

/// In process: the embedded mode. Same rules, a mutex per store.
pub struct MemoryChat {
    bus: Arc<dyn EventBus>,
    /// Bans are the inventory's (one write refuses buys and chat alike).
    bans: Arc<crate::inventory::memory::MemoryInventory>,
    rate: ChatRate,
    sales: Mutex<HashMap<Uuid, SaleChat>>,
    /// Short sections, no await: std mutex.
    operators: Mutex<HashSet<String>>,
}

#[derive(Default)]
struct SaleChat {
    seq: u64,
    history: BTreeMap<u64, ChatMessage>,
    muted_until: HashMap<String, Instant>,
    slow_mode: u32,
    last_post: HashMap<String, Instant>,
    /// Token bucket per user: (tokens, at).
    buckets: HashMap<String, (f64, Instant)>,
    /// When the per-user maps were last swept of what no longer matters.
    swept: Option<Instant>,
}

/// How often a sale's per-user chat state is swept: often enough to keep a
/// long sale's memory flat, rarely enough that no post pays for it twice.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl SaleChat {
    /// Forgets mutes that ended, slow-mode marks that passed and full
    /// buckets: each is the same as no entry at all.
    fn sweep(&mut self, now: Instant, rate: ChatRate) {
        if self
            .swept
            .is_some_and(|t| now.duration_since(t) < SWEEP_EVERY)
        {
            return;
        }
        self.swept = Some(now);
        self.muted_until.retain(|_, until| *until > now);
        let slow = std::time::Duration::from_secs(self.slow_mode.into());
        self.last_post.retain(|_, t| *t + slow > now);
        let refill = f64::from(rate.burst) / rate.per_sec;
        self.buckets
            .retain(|_, (_, at)| now.duration_since(*at).as_secs_f64() < refill);
    }
}

impl MemoryChat {
    pub fn new(
        bus: Arc<dyn EventBus>,
        rate: ChatRate,
        bans: Arc<crate::inventory::memory::MemoryInventory>,
    ) -> Self {
        MemoryChat {
            bus,
            bans,
            rate,
            sales: Mutex::new(HashMap::new()),
            operators: Mutex::default(),
        }
    }

    /// Short sections, no await: std mutex.
    fn with<T>(&self, sale_id: Uuid, f: impl FnOnce(&mut SaleChat) -> T) -> T {
        let mut sales = self.sales.lock().unwrap_or_else(|e| e.into_inner());
        f(sales.entry(sale_id).or_default())
    }
}

fn ms_until(t: Instant, now: Instant) -> i64 {
    t.saturating_duration_since(now).as_millis() as i64
}

#[async_trait]
impl ChatStore for MemoryChat {
    async fn post(&self, p: &Post) -> Result<Posted, ChatError> {
        let now = Instant::now();
        let rate = self.rate;
        // A ban never locks out whoever may manage the sale.
        if !p.moderator && self.bans.banned(p.sale_id, &p.user_id) {
            return Ok(Posted::Banned);
        }
        let posted = self.with(p.sale_id, |c| {
            c.sweep(now, rate);
            if !p.moderator {
                if let Some(until) = c.muted_until.get(&p.user_id).filter(|u| **u > now) {
                    return Posted::Muted {
                        ms: ms_until(*until, now),
                    };
                }
                if c.slow_mode > 0 {
                    let next = c
                        .last_post
                        .get(&p.user_id)
                        .map(|t| *t + std::time::Duration::from_secs(c.slow_mode.into()));
                    if let Some(next) = next.filter(|n| *n > now) {
                        return Posted::SlowMode {
                            ms: ms_until(next, now),
                        };
                    }
                }
                let burst = f64::from(rate.burst);
                let (tokens, at) = c.buckets.entry(p.user_id.clone()).or_insert((burst, now));
                *tokens =
                    (*tokens + now.duration_since(*at).as_secs_f64() * rate.per_sec).min(burst);
                *at = now;
                if *tokens < 1.0 {
                    return Posted::RateLimited {
                        ms: ((1.0 - *tokens) / rate.per_sec * 1000.0).ceil() as i64,
                    };
                }
                *tokens -= 1.0;
                // Only posts in slow mode count towards it (as in Redis).
                if c.slow_mode > 0 {
                    c.last_post.insert(p.user_id.clone(), now);
                }
            }
            c.seq += 1;
            let msg = ChatMessage {
                seq: c.seq,
                user_id: p.user_id.clone(),
                name: p.name.clone(),
                text: p.text.clone(),
                ts: p.ts,
            };
            c.history.insert(c.seq, msg.clone());
            while c.history.len() > HISTORY {
                c.history.pop_first();
            }
            // Published under the lock: viewers see messages in seq order.
            self.bus.publish(p.sale_id, SaleEvent::Chat(msg));
            Posted::Sent(c.seq)
        });
        Ok(posted)
    }

    async fn history(
        &self,
        sale_id: Uuid,
        since: Option<u64>,
        last: usize,
    ) -> Result<Vec<ChatMessage>, ChatError> {
        Ok(self.with(sale_id, |c| match since {
            Some(s) => match s.checked_add(1) {
                Some(from) => c.history.range(from..).map(|(_, m)| m.clone()).collect(),
                None => Vec::new(),
            },
            None => {
                let skip = c.history.len().saturating_sub(last);
                c.history.values().skip(skip).cloned().collect()
            }
        }))
    }

    async fn delete(&self, sale_id: Uuid, seq: u64) -> Result<bool, ChatError> {
        Ok(self.with(sale_id, |c| c.history.remove(&seq).is_some()))
    }

    async fn mute(&self, sale_id: Uuid, user_id: &str, secs: u32) -> Result<(), ChatError> {
        let until = Instant::now() + std::time::Duration::from_secs(secs.into());
        self.with(sale_id, |c| c.muted_until.insert(user_id.to_owned(), until));
        Ok(())
    }

    async fn note_operator(&self, user_id: &str) -> Result<(), ChatError> {
        self.operators
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user_id.to_owned());
        Ok(())
    }

    async fn is_operator(&self, user_id: &str) -> Result<bool, ChatError> {
        Ok(self
            .operators
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(user_id))
    }

    async fn slow_mode(&self, sale_id: Uuid) -> Result<u32, ChatError> {
        Ok(self.with(sale_id, |c| c.slow_mode))
    }

    async fn set_slow_mode(&self, sale_id: Uuid, secs: u32) -> Result<(), ChatError> {
        self.with(sale_id, |c| c.slow_mode = secs);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rules() {
        let blocked = vec!["spam".to_owned()];
        assert_eq!(check_text("  hello  ", &blocked).unwrap(), "hello");
        assert!(check_text("   ", &blocked).is_err());
        assert!(check_text(&"x".repeat(281), &blocked).is_err());
        assert!(check_text(&"荔".repeat(280), &blocked).is_ok());
        assert!(check_text("two\nlines", &blocked).is_err());
        assert!(check_text("bell\u{7}", &blocked).is_err());
        assert!(check_text("nul\0", &blocked).is_err());
        assert!(check_text("\u{202E}gnp.exe", &blocked).is_err());
        assert!(
            check_text("\u{200D}\u{200D}", &blocked).is_err(),
            "nothing visible"
        );
        let family = "👨\u{200D}👩\u{200D}👧 好吃";
        assert_eq!(check_text(family, &blocked).unwrap(), family);
        assert!(check_text("buy SPAM here", &blocked).is_err());
    }

    #[test]
    fn per_user_chat_state_is_swept_of_what_no_longer_matters() {
        let rate = ChatRate::default();
        let mut c = SaleChat::default();
        let t0 = Instant::now();
        for i in 0..1000 {
            let u = format!("u{i}");
            c.muted_until.insert(u.clone(), t0);
            c.last_post.insert(u.clone(), t0);
            c.buckets.insert(u, (0.0, t0));
        }
        c.muted_until
            .insert("still".into(), t0 + std::time::Duration::from_secs(3600));
        c.sweep(t0 + std::time::Duration::from_secs(120), rate);
        assert_eq!(c.muted_until.len(), 1, "only the running mute stays");
        assert!(c.last_post.is_empty() && c.buckets.is_empty());
        // Not again within the minute.
        c.buckets.insert("x".into(), (0.0, t0));
        c.sweep(t0 + std::time::Duration::from_secs(130), rate);
        assert_eq!(c.buckets.len(), 1);
    }
}
