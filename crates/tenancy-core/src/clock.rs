//! The clock that cache hits read on the request path.
//!
//! A hit only asks "has this entry expired?", and a TTL is a bound on
//! staleness, not a deadline: an answer up to [`RESOLUTION`] late is as
//! good. [`recent`] reads a time that a background thread refreshes every
//! [`RESOLUTION`] (one load, no clock call), started by the first cache
//! that needs it ([`start`]). If the thread cannot start, [`recent`] reads
//! the clock itself: slower, never wrong.

use std::sync::OnceLock;
use std::time::Duration;

use quanta::Instant;

/// How stale [`recent`] may be.
pub(crate) const RESOLUTION: Duration = Duration::from_millis(10);

/// Starts the refreshing thread, once per process. Caches call it when
/// they are made, never on a hit.
pub(crate) fn start() {
    static UPKEEP: OnceLock<Option<quanta::Handle>> = OnceLock::new();
    UPKEEP.get_or_init(|| match quanta::Upkeep::new(RESOLUTION).start() {
        Ok(handle) => Some(handle),
        Err(err) => {
            // Another library may run quanta's upkeep already: fine.
            tracing::debug!(error = %err, "coarse clock not started; cache hits read the clock");
            None
        }
    });
}

/// The current time, at most [`RESOLUTION`] behind (or exact, when the
/// refreshing thread is not running).
#[inline]
pub(crate) fn recent() -> Instant {
    Instant::recent()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_follows_the_clock_within_its_resolution() {
        start();
        let before = Instant::now();
        std::thread::sleep(RESOLUTION * 5);
        let seen = recent();
        assert!(seen > before, "the refreshed time moved on");
        assert!(Instant::now() - seen <= RESOLUTION * 5, "and lags little");
    }
}
