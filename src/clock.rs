//! Time as the domain sees it. Reservation deadlines compare against this clock,
//! never Redis `TIME`, so tests can move it forward instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};

/// Wall clock plus an offset that only tests move.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    /// Microsecond precision, as PostgreSQL keeps it: a time reads back as sent.
    pub fn now(&self) -> DateTime<Utc> {
        let now = Utc::now() + TimeDelta::milliseconds(self.offset_ms.load(Ordering::Relaxed));
        now.trunc_subsecs(6)
    }

    pub fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }

    /// Jump forward: expiry tests use this instead of waiting out a TTL.
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}
