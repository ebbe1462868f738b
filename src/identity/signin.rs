//! One-time sign-in codes: how the embedded mode's start-up banner signs a
//! host or an operator in without printing a token where logs keep it.
//!
//! A code is random (128 bits), used once, valid ten minutes and held in
//! this node's memory only; `POST /api/v1/signin {"code"}` exchanges it for
//! the token it stands for. The banner's links carry it after `#`, which
//! browsers never send, so it reaches no access log either.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Minted;

/// How long a printed link works.
pub const CODE_TTL: Duration = Duration::from_secs(10 * 60);
/// Codes kept at most; the embedded mode issues two per start.
const MAX_CODES: usize = 1000;

#[derive(Default)]
pub struct SigninCodes {
    /// Short sections, no await: std mutex.
    codes: Mutex<HashMap<String, (Minted, Instant)>>,
}

impl SigninCodes {
    /// A new code standing for `token` until `now + CODE_TTL`.
    pub fn issue(&self, token: Minted, now: Instant) -> String {
        use rand::RngCore;
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let code: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.retain(|_, (_, until)| now < *until);
        if codes.len() >= MAX_CODES {
            // Keep the newest: the oldest is the one least likely still wanted.
            if let Some(oldest) = codes
                .iter()
                .min_by_key(|(_, (_, until))| *until)
                .map(|(c, _)| c.clone())
            {
                codes.remove(&oldest);
            }
        }
        codes.insert(code.clone(), (token, now + CODE_TTL));
        code
    }

    /// The token of a known, unused, unexpired code; the code is spent
    /// either way.
    pub fn redeem(&self, code: &str, now: Instant) -> Option<Minted> {
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        let (token, until) = codes.remove(code)?;
        (now < until).then_some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: u8) -> Minted {
        Minted {
            token: format!("token-{n}"),
            user_id: "demo-host".into(),
            expires_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_code_works_once() {
        let codes = SigninCodes::default();
        let now = Instant::now();
        let code = codes.issue(token(1), now);
        assert_eq!(code.len(), 32);
        assert!(code.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(codes.redeem(&code, now).unwrap().token, "token-1");
        assert!(codes.redeem(&code, now).is_none(), "used");
        assert!(codes.redeem("", now).is_none());
        assert!(codes.redeem(&"0".repeat(32), now).is_none());
        assert_ne!(codes.issue(token(2), now), codes.issue(token(2), now));
    }

    #[test]
    fn a_code_expires_after_ten_minutes() {
        let codes = SigninCodes::default();
        let now = Instant::now();
        let late = codes.issue(token(1), now);
        let in_time = codes.issue(token(2), now);
        assert!(codes
            .redeem(&in_time, now + CODE_TTL - Duration::from_secs(1))
            .is_some());
        assert!(codes.redeem(&late, now + CODE_TTL).is_none());
        // Spent even when refused as expired.
        assert!(codes.redeem(&late, now).is_none());
    }

    #[test]
    fn codes_kept_are_bounded() {
        let codes = SigninCodes::default();
        let now = Instant::now();
        let first = codes.issue(token(0), now);
        let mut last = String::new();
        for i in 0..MAX_CODES {
            last = codes.issue(token(1), now + Duration::from_millis(i as u64 + 1));
        }
        let later = now + Duration::from_secs(1);
        assert!(
            codes.redeem(&first, later).is_none(),
            "the oldest made room"
        );
        assert!(codes.redeem(&last, later).is_some());
    }
}
