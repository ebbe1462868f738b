//! Abuse limits of one node: buy attempts per user and per IP, chat messages
//! per IP, how many WebSockets the node, one user and one IP may hold, and
//! how long slow clients are given. (Chat has its own per-user rate, shared by all
//! nodes; guests theirs, per IP.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use super::error::ApiError;
use super::proxy::TrustedProxies;
use super::ratelimit::RateLimiter;
use crate::identity::{Identity, Role};

#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// Buy attempts a second per user; 0: none.
    pub buy_per_user: f64,
    /// Buy attempts a second per client IP; 0: none.
    pub buy_per_ip: f64,
    /// Chat messages a second per client IP over all its sockets; 0: none.
    pub chat_per_ip: f64,
    /// Connections of all kinds (WebSockets included), and per peer
    /// address; see `server::Caps`.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_sockets: usize,
    pub max_sockets_per_user: usize,
    /// WebSockets from one client IP: a NAT hides many viewers, but one
    /// address must not fill the node.
    pub max_sockets_per_ip: usize,
    /// Of those, guests' (anyone can mint a guest; a signed-in user has to
    /// exist): lower.
    pub max_guest_sockets_per_ip: usize,
    /// See `server::Timeouts`.
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub write_timeout: Duration,
    /// The server pings every socket this often.
    pub heartbeat: Duration,
    /// Load balancers whose forwarded client address is believed: every
    /// per-IP limit keys on the client behind them.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Room frames a socket may fall behind by before it gets `lagged`.
    pub room_queue: usize,
    /// A WebSocket write stuck this long drops the socket.
    pub socket_write_timeout: Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            buy_per_user: 20.0,
            buy_per_ip: 1000.0,
            chat_per_ip: 100.0,
            // Under the usual 20,000 open files of a process, with room
            // for the pools, logs and the listener.
            max_connections: 16_000,
            max_connections_per_ip: 256,
            max_sockets: 50_000,
            max_sockets_per_user: 10,
            max_sockets_per_ip: 200,
            max_guest_sockets_per_ip: 20,
            header_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            heartbeat: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            room_queue: crate::hub::room::ROOM_QUEUE,
            socket_write_timeout: crate::ws::socket::WRITE_TIMEOUT,
        }
    }
}

pub struct Limits {
    buy_user: Option<RateLimiter<String>>,
    buy_ip: Option<RateLimiter<IpAddr>>,
    chat_ip: Option<RateLimiter<IpAddr>>,
    pub heartbeat: Duration,
    pub socket_write: Duration,
    /// Turns a peer and its forwarding headers into the client's address.
    pub trusted_proxies: TrustedProxies,
    max_sockets: usize,
    max_per_user: usize,
    max_per_ip: usize,
    max_guests_per_ip: usize,
    sockets: Mutex<OpenSockets>,
}

#[derive(Default)]
struct OpenSockets {
    total: usize,
    per_user: HashMap<String, usize>,
    /// All, and guests', per client IP.
    per_ip: HashMap<IpAddr, (usize, usize)>,
}

/// Guests are viewers whose id `mint_guest` made.
fn is_guest(who: &Identity) -> bool {
    who.role == Role::Viewer && who.user_id.starts_with("guest-")
}

fn limiter<K: std::hash::Hash + Eq + Clone>(per_sec: f64) -> Option<RateLimiter<K>> {
    (per_sec > 0.0).then(|| RateLimiter::new(per_sec, (per_sec * 2.0).ceil().max(1.0) as u32))
}

impl Limits {
    pub fn new(s: &LimitSettings) -> Self {
        Limits {
            buy_user: limiter(s.buy_per_user),
            buy_ip: limiter(s.buy_per_ip),
            chat_ip: limiter(s.chat_per_ip),
            heartbeat: s.heartbeat,
            socket_write: s.socket_write_timeout,
            trusted_proxies: TrustedProxies::new(s.trusted_proxies.iter().copied()),
            max_sockets: s.max_sockets,
            max_per_user: s.max_sockets_per_user,
            max_per_ip: s.max_sockets_per_ip,
            max_guests_per_ip: s.max_guest_sockets_per_ip,
            sockets: Mutex::default(),
        }
    }

    /// A buy attempt: 429 with the seconds to wait when over a limit.
    pub fn buy(&self, user: &str, ip: Option<IpAddr>) -> Result<(), ApiError> {
        if let (Some(l), Some(ip)) = (&self.buy_ip, ip) {
            l.check(&ip).map_err(ApiError::RateLimited)?;
        }
        if let Some(l) = &self.buy_user {
            l.check(&user.to_owned()).map_err(ApiError::RateLimited)?;
        }
        Ok(())
    }

    /// Takes a chat message's token from `ip`'s bucket. It is given back
    /// unless `ChatCharge::keep` says the message was posted: one carrier NAT
    /// hides many viewers, and a muted or banned neighbour's refused
    /// messages must not use up theirs. (The per-user rate is the chat
    /// store's: it holds over all nodes.)
    pub fn chat(self: &std::sync::Arc<Self>, ip: Option<IpAddr>) -> Result<ChatCharge, ApiError> {
        let charged = match (&self.chat_ip, ip) {
            (Some(l), Some(ip)) => {
                l.check(&ip).map_err(ApiError::RateLimited)?;
                Some((self.clone(), ip))
            }
            _ => None,
        };
        Ok(ChatCharge(charged))
    }

    /// Takes a socket slot for `who` from `ip`; it is given back when the
    /// guard drops.
    pub fn socket(
        self: &std::sync::Arc<Self>,
        who: &Identity,
        ip: Option<IpAddr>,
    ) -> Result<SocketSlot, ApiError> {
        let guest = is_guest(who);
        // Short section, no await: std mutex.
        let mut s = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        if s.total >= self.max_sockets {
            return Err(ApiError::Unavailable(
                "this node has no room for more viewers; try another".into(),
            ));
        }
        let mine = s.per_user.get(&who.user_id).copied().unwrap_or(0);
        if mine >= self.max_per_user {
            return Err(ApiError::Unavailable(format!(
                "at most {} live connections per user",
                self.max_per_user
            )));
        }
        let (from_ip, guests_from_ip) = ip
            .and_then(|ip| s.per_ip.get(&ip).copied())
            .unwrap_or((0, 0));
        if from_ip >= self.max_per_ip {
            return Err(ApiError::Unavailable(format!(
                "at most {} live connections from one address",
                self.max_per_ip
            )));
        }
        if guest && guests_from_ip >= self.max_guests_per_ip {
            return Err(ApiError::Unavailable(format!(
                "at most {} guest live connections from one address; sign in for more",
                self.max_guests_per_ip
            )));
        }
        s.total += 1;
        s.per_user.insert(who.user_id.clone(), mine + 1);
        if let Some(ip) = ip {
            s.per_ip
                .insert(ip, (from_ip + 1, guests_from_ip + usize::from(guest)));
        }
        Ok(SocketSlot {
            limits: self.clone(),
            user: who.user_id.clone(),
            ip,
            guest,
        })
    }
}

/// A chat token taken from an IP's bucket, given back when dropped unless kept.
#[must_use = "dropping the charge gives the token back"]
pub struct ChatCharge(Option<(std::sync::Arc<Limits>, IpAddr)>);

impl ChatCharge {
    /// The message was posted: the token stays spent.
    pub fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for ChatCharge {
    fn drop(&mut self) {
        if let Some((limits, ip)) = self.0.take() {
            if let Some(l) = &limits.chat_ip {
                l.refund(&ip);
            }
        }
    }
}

/// One open socket, counted until dropped.
pub struct SocketSlot {
    limits: std::sync::Arc<Limits>,
    user: String,
    ip: Option<IpAddr>,
    guest: bool,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut s = self
            .limits
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                s.per_user.remove(&self.user);
            }
        }
        if let Some(ip) = self.ip {
            if let Some((all, guests)) = s.per_ip.get_mut(&ip) {
                *all -= 1;
                *guests -= usize::from(self.guest);
                if *all == 0 {
                    s.per_ip.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(id: &str) -> Identity {
        Identity {
            user_id: id.into(),
            name: None,
            role: Role::Viewer,
        }
    }

    #[test]
    fn sockets_are_capped_and_given_back() {
        let limits = std::sync::Arc::new(Limits::new(&LimitSettings {
            max_sockets: 3,
            max_sockets_per_user: 2,
            ..LimitSettings::default()
        }));
        let (a, b, c) = (viewer("a"), viewer("b"), viewer("c"));
        let a1 = limits.socket(&a, None).unwrap();
        let _a2 = limits.socket(&a, None).unwrap();
        assert!(limits.socket(&a, None).is_err());
        let _b = limits.socket(&b, None).unwrap();
        assert!(limits.socket(&c, None).is_err());
        drop(a1);
        assert!(limits.socket(&c, None).is_ok());
    }

    #[test]
    fn sockets_per_ip_are_capped_lower_for_guests() {
        let limits = std::sync::Arc::new(Limits::new(&LimitSettings {
            max_sockets_per_ip: 3,
            max_guest_sockets_per_ip: 2,
            ..LimitSettings::default()
        }));
        let (nat, other) = (Some([10, 0, 0, 1].into()), Some([10, 0, 0, 2].into()));
        let g1 = limits.socket(&viewer("guest-1"), nat).unwrap();
        let _g2 = limits.socket(&viewer("guest-2"), nat).unwrap();
        assert!(limits.socket(&viewer("guest-3"), nat).is_err());
        // A signed-in viewer still fits under the address's cap...
        let _mei = limits.socket(&viewer("mei"), nat).unwrap();
        assert!(limits.socket(&viewer("li"), nat).is_err());
        // ...another address is not affected...
        assert!(limits.socket(&viewer("guest-3"), other).is_ok());
        // ...and "guest-" is only a guest's when it is a viewer.
        let host = Identity {
            role: Role::Host,
            ..viewer("guest-host")
        };
        assert!(!is_guest(&host));
        drop(g1);
        assert!(limits.socket(&viewer("guest-3"), nat).is_ok());
    }

    #[test]
    fn buys_are_rate_limited_per_user() {
        let limits = Limits::new(&LimitSettings {
            buy_per_user: 1.0,
            ..LimitSettings::default()
        });
        assert!(limits.buy("u", None).is_ok());
        assert!(limits.buy("u", None).is_ok());
        assert!(matches!(
            limits.buy("u", None),
            Err(ApiError::RateLimited(_))
        ));
        assert!(limits.buy("v", None).is_ok());
    }

    #[test]
    fn chat_is_rate_limited_per_ip() {
        let limits = std::sync::Arc::new(Limits::new(&LimitSettings {
            chat_per_ip: 1.0,
            ..LimitSettings::default()
        }));
        let (a, b) = (Some([10, 0, 0, 1].into()), Some([10, 0, 0, 2].into()));
        limits.chat(a).unwrap().keep();
        limits.chat(a).unwrap().keep();
        assert!(matches!(limits.chat(a), Err(ApiError::RateLimited(_))));
        assert!(limits.chat(b).is_ok());
        // Without an address (a Unix socket, a test) there is nothing to key on.
        assert!(limits.chat(None).is_ok());
    }

    #[test]
    fn chat_not_posted_gives_its_token_back() {
        let limits = std::sync::Arc::new(Limits::new(&LimitSettings {
            chat_per_ip: 1.0,
            ..LimitSettings::default()
        }));
        let ip = Some([10, 0, 0, 1].into());
        // Refused by the chat store (muted, banned, too fast): dropped.
        for _ in 0..10 {
            drop(limits.chat(ip).unwrap());
        }
        limits.chat(ip).unwrap().keep();
        limits.chat(ip).unwrap().keep();
        assert!(limits.chat(ip).is_err());
    }
}
