//! The settings of the response cache.

use std::time::Duration;

use http::StatusCode;

/// The response cache of share mode: how long answers stay fresh, how long
/// they may serve stale, and how much memory they may take.
///
/// ```
/// use std::time::Duration;
/// use tower_singleflight::{CacheConfig, SingleFlightLayer};
///
/// // Defaults: fresh 60 s, no stale serving, 64 MiB, no jitter.
/// let layer = SingleFlightLayer::share().cache(CacheConfig::new());
///
/// // A dashboard total: fresh for a second, then served stale for up to
/// // ten seconds while one refresh runs; stale for five minutes if the
/// // backend fails.
/// let layer = SingleFlightLayer::share().cache(
///     CacheConfig::new()
///         .ttl(Duration::from_secs(1))
///         .stale_while_revalidate(Duration::from_secs(10))
///         .stale_if_error(Duration::from_secs(300))
///         .max_bytes(16 * 1024 * 1024)
///         .jitter(0.1),
/// );
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct CacheConfig {
    pub(crate) ttl: Duration,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) max_bytes: u64,
    pub(crate) jitter: f64,
    pub(crate) statuses: Vec<StatusCode>,
    pub(crate) invalidate_on_write: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            max_bytes: 64 * 1024 * 1024,
            jitter: 0.0,
            statuses: [200, 203, 204, 301, 404, 410]
                .into_iter()
                .filter_map(|code| StatusCode::from_u16(code).ok())
                .collect(),
            invalidate_on_write: false,
        }
    }
}

impl CacheConfig {
    /// The defaults; see the type's docs.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long an answer is fresh. A response's `Cache-Control: s-maxage`
    /// or `max-age` can only shorten it. `Duration::MAX` means never stale.
    /// Default: 60 seconds.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// After the TTL, how long the stale answer is served at once while
    /// exactly one request refreshes it in the background. A response's
    /// `stale-while-revalidate` replaces it. `Duration::MAX` means for ever.
    /// Default: none.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = window;
        self
    }

    /// After the TTL, how long the stale answer is served instead of a
    /// failure (a `5xx`, a panic, a timeout) to refresh it. A response's
    /// `stale-if-error` replaces it. `Duration::MAX` means for ever.
    /// Default: none.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = window;
        self
    }

    /// The memory the cached answers may take, counted in bytes of body and
    /// headers. Default: 64 MiB.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Shortens each answer's TTL by a random fraction up to `jitter` (0.0 to
    /// 1.0), so answers stored together do not expire together. Default: 0.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// The statuses that are stored. Default: 200, 203, 204, 301, 404, 410.
    /// Whatever the list, an answer that cannot be shared is never stored.
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.statuses = statuses.into_iter().collect();
        self
    }

    /// Drops the cached answers for a path when a `POST`, `PUT`, `PATCH` or
    /// `DELETE` to the same host and path succeeds. Default: off.
    pub fn invalidate_on_write(mut self, invalidate: bool) -> Self {
        self.invalidate_on_write = invalidate;
        self
    }
}
