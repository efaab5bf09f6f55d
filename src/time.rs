//! Checked time: every `Instant + Duration` and `Duration + Duration` of the
//! crate goes through here, so that no setting or response header can make
//! one overflow (and panic).
//!
//! A duration too long to add, `Duration::MAX` in any setting, means "never":
//! it lasts until [`FOREVER`] from now.

use std::time::Duration;

use tokio::time::Instant;

/// What "never" comes to: about thirty years, as Tokio's own far future.
/// Short enough for every clock (and moka's, which takes at most 1000 years),
/// long enough that nothing runs or is kept that long.
pub(crate) const FOREVER: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `instant + duration`, or [`FOREVER`] after `instant` when that cannot be
/// represented.
pub(crate) fn after(instant: Instant, duration: Duration) -> Instant {
    instant
        .checked_add(duration)
        .or_else(|| instant.checked_add(FOREVER))
        // Thirty years past a clock's reading fits every platform's
        // `Instant`: never taken, and "expired" is safer than a panic.
        .unwrap_or(instant)
}

/// `a + b`, saturating at `Duration::MAX` (which means "never").
#[cfg(feature = "cache")]
pub(crate) fn sum(a: Duration, b: Duration) -> Duration {
    a.saturating_add(b)
}

/// `duration`, at most [`FOREVER`]: for moka, whose builder panics on a TTL
/// over 1000 years and whose clock counts u64 nanoseconds (584 years).
#[cfg(feature = "cache")]
pub(crate) fn capped(duration: Duration) -> Duration {
    duration.min(FOREVER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn after_adds_and_saturates_at_forever() {
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        assert_eq!(after(now, minute), now + minute);
        assert_eq!(after(now, Duration::MAX), now + FOREVER);
        assert_eq!(after(now, FOREVER + minute), now + FOREVER + minute);
        assert!(after(after(now, Duration::MAX), Duration::MAX) > now);
    }

    #[cfg(feature = "cache")]
    #[test]
    fn sum_saturates_and_capped_bounds() {
        let second = Duration::from_secs(1);
        assert_eq!(sum(second, second), 2 * second);
        assert_eq!(sum(Duration::MAX, second), Duration::MAX);
        assert_eq!(capped(second), second);
        assert_eq!(capped(Duration::MAX), FOREVER);
    }
}
