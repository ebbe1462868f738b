//! A per-key token bucket for one node (guest sign-ups, buys and chat per IP,
//! buys per user), whose check costs the same with ten keys or a million.
//!
//! Keys are spread over shards, each a pair of maps: `current` and
//! `previous`. Once per `forget_after` a shard drops `previous` and makes
//! `current` the new `previous`, so a key idle that long is forgotten within
//! two periods and memory holds only recent keys; a check itself never walks
//! a map. (`governor` would do the counting, but cannot give a token back,
//! which chat needs: see `refund`.)

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter<K> {
    per_sec: f64,
    burst: f64,
    /// A bucket idle this long is full again, so forgetting it changes nothing.
    forget_after: Duration,
    hasher: RandomState,
    shards: Box<[Mutex<Shard<K>>]>,
}

struct Shard<K> {
    current: HashMap<K, Bucket>,
    previous: HashMap<K, Bucket>,
    rotated: Instant,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets are kept at least this long after their last use.
const MIN_FORGET_AFTER: Duration = Duration::from_secs(60);
/// Enough to keep the workers of a node from queueing on one lock.
const SHARDS: usize = 16;

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(per_sec: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        let refill = Duration::try_from_secs_f64(burst / per_sec).unwrap_or(Duration::MAX);
        let now = Instant::now();
        RateLimiter {
            per_sec,
            burst,
            forget_after: refill.max(MIN_FORGET_AFTER),
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        current: HashMap::new(),
                        previous: HashMap::new(),
                        rotated: now,
                    })
                })
                .collect(),
        }
    }

    /// `Ok` to go ahead (one token taken), or `Err(seconds)` to wait before
    /// retrying.
    pub fn check(&self, key: &K) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    /// Gives back the token of a `check` whose action did not happen, so
    /// what was refused for other reasons does not drain a shared bucket.
    pub fn refund(&self, key: &K) {
        self.with_bucket(key, Instant::now(), |b, burst| {
            b.tokens = (b.tokens + 1.0).min(burst);
        });
    }

    fn check_at(&self, key: &K, now: Instant) -> Result<(), u64> {
        let per_sec = self.per_sec;
        self.with_bucket(key, now, |b, _| {
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                Ok(())
            } else {
                Err(((1.0 - b.tokens) / per_sec).ceil().max(1.0) as u64)
            }
        })
    }

    /// Runs `f` on `key`'s bucket, refilled up to `now`.
    fn with_bucket<T>(&self, key: &K, now: Instant, f: impl FnOnce(&mut Bucket, f64) -> T) -> T {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        // Short section, no await: std mutex.
        let mut s = shard.lock().unwrap_or_else(|e| e.into_inner());
        let mut forgotten = None;
        if now.saturating_duration_since(s.rotated) >= self.forget_after {
            let current = std::mem::take(&mut s.current);
            forgotten = Some(std::mem::replace(&mut s.previous, current));
            s.rotated = now;
        }
        let bucket = match s.current.get_mut(key) {
            Some(b) => b,
            None => {
                let b = s.previous.remove(key).unwrap_or(Bucket {
                    tokens: self.burst,
                    at: now,
                });
                s.current.entry(key.clone()).or_insert(b)
            }
        };
        let idle = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + idle * self.per_sec).min(self.burst);
        bucket.at = bucket.at.max(now);
        let out = f(bucket, self.burst);
        drop(s);
        // Freed outside the lock: once a period, the keys gone quiet.
        drop(forgotten);
        out
    }

    #[cfg(test)]
    fn keys(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(c, p), s| {
            let s = s.lock().unwrap();
            (c + s.current.len(), p + s.previous.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refused_with_a_wait() {
        let l = RateLimiter::new(0.1, 3);
        for _ in 0..3 {
            assert!(l.check(&"ip").is_ok());
        }
        assert_eq!(l.check(&"ip"), Err(10));
        assert!(l.check(&"other").is_ok());
    }

    #[test]
    fn tokens_come_back_with_time_and_refunds() {
        let l = RateLimiter::new(1.0, 2);
        let t0 = Instant::now();
        assert!(l.check_at(&1, t0).is_ok());
        assert!(l.check_at(&1, t0).is_ok());
        assert_eq!(l.check_at(&1, t0), Err(1));
        assert!(l.check_at(&1, t0 + Duration::from_secs(1)).is_ok());
        l.refund(&1);
        assert!(l.check(&1).is_ok());
        // A refund never lifts a bucket above its burst.
        for _ in 0..10 {
            l.refund(&2);
        }
        assert!(l.check(&2).is_ok() && l.check(&2).is_ok());
        assert!(l.check(&2).is_err());
    }

    #[test]
    fn idle_keys_are_forgotten_once_a_period_not_on_every_check() {
        let l = RateLimiter::new(100.0, 200);
        let period = l.forget_after;
        let t0 = Instant::now();
        let fresh = |from: u32, at: Instant| {
            for k in from..from + 1_000 {
                l.check_at(&k, at).unwrap();
            }
        };
        for k in 0..50_000u32 {
            l.check_at(&k, t0).unwrap();
        }
        assert_eq!(l.keys(), (50_000, 0));
        // Within the period nothing is walked or dropped, however many keys
        // and checks: the cost of a check does not grow with the map.
        fresh(1_000_000, t0 + period / 2);
        assert_eq!(l.keys(), (51_000, 0));
        // A period on, the quiet keys move aside...
        fresh(2_000_000, t0 + period);
        assert_eq!(l.keys(), (1_000, 51_000));
        // ...and a period later they are gone: memory holds recent keys only.
        fresh(3_000_000, t0 + period * 2);
        assert_eq!(l.keys(), (1_000, 1_000));
    }

    #[test]
    fn a_bucket_moved_aside_is_not_refilled_by_the_move() {
        let l = RateLimiter::new(1.0 / 3.0, 20);
        let t0 = Instant::now();
        let before = t0 + l.forget_after - Duration::from_millis(500);
        for _ in 0..20 {
            l.check_at(&"ip", before).unwrap();
        }
        // The shard turns over on this check; the key keeps its empty bucket.
        assert!(l
            .check_at(&"ip", t0 + l.forget_after + Duration::from_millis(500))
            .is_err());
    }

    #[test]
    fn forgetting_never_hands_out_extra_tokens() {
        // A slow refill (a token every 3 s, 20 at once: a minute to fill)
        // keeps its buckets at least that long.
        let l = RateLimiter::<u8>::new(1.0 / 3.0, 20);
        assert!(l.forget_after >= Duration::from_secs(60));
        let slow = RateLimiter::<u8>::new(0.01, 20);
        assert!(slow.forget_after >= Duration::from_secs(2000));
    }
}
