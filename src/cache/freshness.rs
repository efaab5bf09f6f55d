//! How long a stored answer is fresh, and how long it may serve when stale.

use std::time::Duration;

use tokio::time::Instant;

use crate::time;

/// The windows of one stored answer, measured from when it was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Windows {
    /// Served as is.
    pub(crate) fresh: Duration,
    /// After `fresh`: served stale at once while one refresh runs.
    pub(crate) stale_while_revalidate: Duration,
    /// After `fresh`: served stale when a refresh fails.
    pub(crate) stale_if_error: Duration,
}

/// What a stored answer is good for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    Fresh,
    /// Serve it now and refresh in the background.
    Revalidate,
    /// Ask the origin; serve it if the origin fails.
    IfError,
    /// Useless: treat as a miss.
    Expired,
}

impl Windows {
    /// How long the answer is worth keeping at all.
    pub(crate) fn lifetime(&self) -> Duration {
        time::sum(
            self.fresh,
            self.stale_while_revalidate.max(self.stale_if_error),
        )
    }

    pub(crate) fn at(&self, stored_at: Instant, now: Instant) -> Freshness {
        self.at_age(now.saturating_duration_since(stored_at))
    }

    /// What an answer of this `age` (RFC 9111 §4.2.3) is good for.
    pub(crate) fn at_age(&self, age: Duration) -> Freshness {
        if age < self.fresh {
            Freshness::Fresh
        } else if age < time::sum(self.fresh, self.stale_while_revalidate) {
            Freshness::Revalidate
        } else if age < time::sum(self.fresh, self.stale_if_error) {
            Freshness::IfError
        } else {
            Freshness::Expired
        }
    }

    /// `fresh` shortened by up to `jitter` (a fraction), so that answers
    /// stored together do not expire together.
    pub(crate) fn jittered(mut self, jitter: f64) -> Self {
        if jitter > 0.0 {
            let cut = self.fresh.as_secs_f64() * jitter.min(1.0) * fastrand::f64();
            // Cannot fail below `fresh`, which is representable; no cut if so.
            let cut = Duration::try_from_secs_f64(cut).unwrap_or(Duration::ZERO);
            self.fresh = self.fresh.saturating_sub(cut);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn an_answer_goes_from_fresh_to_stale_to_expired() {
        let windows = Windows {
            fresh: 10 * S,
            stale_while_revalidate: 5 * S,
            stale_if_error: 30 * S,
        };
        let stored = Instant::now();
        let at = |secs: u64| windows.at(stored, stored + Duration::from_secs(secs));
        assert_eq!(at(0), Freshness::Fresh);
        assert_eq!(at(9), Freshness::Fresh);
        assert_eq!(at(10), Freshness::Revalidate);
        assert_eq!(at(14), Freshness::Revalidate);
        assert_eq!(at(15), Freshness::IfError);
        assert_eq!(at(39), Freshness::IfError);
        assert_eq!(at(40), Freshness::Expired);
        assert_eq!(windows.lifetime(), 40 * S);
    }

    #[test]
    fn jitter_only_ever_shortens() {
        let windows = Windows {
            fresh: 10 * S,
            stale_while_revalidate: S,
            stale_if_error: S,
        };
        for _ in 0..100 {
            let jittered = windows.jittered(0.2);
            assert!(jittered.fresh <= 10 * S && jittered.fresh >= 8 * S);
        }
        assert_eq!(windows.jittered(0.0), windows);
    }

    #[tokio::test(start_paused = true)]
    async fn endless_windows_never_expire() {
        let windows = Windows {
            fresh: S,
            stale_while_revalidate: Duration::MAX,
            stale_if_error: Duration::MAX,
        };
        assert_eq!(windows.lifetime(), Duration::MAX);
        let stored = Instant::now();
        let later = crate::time::after(stored, Duration::MAX);
        assert_eq!(windows.at(stored, later), Freshness::Revalidate);
        let never_stale = Windows {
            fresh: Duration::MAX,
            ..windows
        };
        assert_eq!(never_stale.at(stored, later), Freshness::Fresh);
    }
}
