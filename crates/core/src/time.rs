//! Time as an injected dependency.
//!
//! Every rule takes `now` as an argument; the server reads it from a [`Clock`]. Tests use
//! [`ManualClock`] so TTLs and expiry are deterministic.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    pub fn secs(self) -> i64 {
        self.0.div_euclid(1000)
    }
    pub fn from_secs(s: i64) -> Self {
        UnixMillis(s.saturating_mul(1000))
    }
    /// This time, or just after `prev` if that is not earlier: the `updated_at` of a write
    /// that must differ from the one it compare-and-sets on, whatever the clock says.
    pub fn after(self, prev: UnixMillis) -> Self {
        self.max(UnixMillis(prev.0.saturating_add(1)))
    }
    pub fn plus_secs(self, s: u64) -> Self {
        UnixMillis(self.0.saturating_add(i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000)))
    }

    /// The one timestamp format Remit shows: RFC 3339, UTC, milliseconds
    /// (`2026-01-01T00:00:00.000Z`). Times before the epoch show as the epoch.
    pub fn to_rfc3339(self) -> String {
        let d = std::time::Duration::from_millis(u64::try_from(self.0).unwrap_or(0));
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + d).to_string()
    }

    /// Parses an RFC 3339 timestamp in UTC (`Z`), with or without fractional seconds.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t = humantime::parse_rfc3339_weak(s.trim()).ok()?;
        let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
        i64::try_from(d.as_millis()).ok().map(UnixMillis)
    }
}

/// A source of the current time.
/// A number of seconds as the shortest exact duration with units (`300` → `5m`, `5400` →
/// `1h30m`, `601` → `10m1s`), the form the CLI accepts.
pub fn format_secs(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut left = secs;
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if left >= size {
            out.push_str(&format!("{}{unit}", left / size));
            left %= size;
        }
    }
    out
}

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixMillis;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        UnixMillis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: UnixMillis) -> Self {
        Self(Arc::new(AtomicI64::new(start.0)))
    }
    pub fn advance_secs(&self, s: i64) {
        self.0.fetch_add(s * 1000, Ordering::SeqCst);
    }
    pub fn set(&self, t: UnixMillis) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::UnixMillis;

    #[test]
    fn rfc3339_round_trips_in_utc_with_milliseconds() {
        let t = UnixMillis(1_767_225_600_123);
        assert_eq!(t.to_rfc3339(), "2026-01-01T00:00:00.123Z");
        assert_eq!(UnixMillis::parse_rfc3339("2026-01-01T00:00:00.123Z"), Some(t));
        assert_eq!(UnixMillis::parse_rfc3339("2026-01-01T00:00:00Z"), Some(UnixMillis(1_767_225_600_000)));
        assert_eq!(UnixMillis::parse_rfc3339("yesterday"), None);
        assert_eq!(UnixMillis(-5).to_rfc3339(), "1970-01-01T00:00:00.000Z");
    }
}
