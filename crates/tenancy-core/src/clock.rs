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

/// Starts the refreshing thread, once per process, without waiting for it
/// (quanta calibrates its clock first, which takes a while). Caches call
/// it when they first store an entry: a process that never caches (a CLI
/// command) never starts it.
pub(crate) fn start() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("tenancy-clock".into())
            .spawn(|| match quanta::Upkeep::new(RESOLUTION).start() {
                // Runs until the process ends.
                Ok(handle) => std::mem::forget(handle),
                // Another library may run quanta's upkeep already: fine.
                Err(err) => tracing::debug!(error = %err, "coarse clock not started"),
            });
        if let Err(err) = spawned {
            tracing::debug!(error = %err, "coarse clock not started; cache hits read the clock");
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
        // The thread calibrates first; give it time to publish.
        std::thread::sleep(Duration::from_millis(500));
        let before = Instant::now();
        std::thread::sleep(RESOLUTION * 5);
        let seen = recent();
        assert!(seen > before, "the refreshed time moved on");
        assert!(seen <= Instant::now(), "and never runs ahead of the clock");
        // Not a speed assertion: only that it is refreshed at all (a loaded
        // CI machine may deschedule the thread for a while).
        assert!(
            Instant::now() - seen < Duration::from_secs(2),
            "nor stays behind"
        );
    }
}
