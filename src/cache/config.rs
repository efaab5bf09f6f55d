//! The settings of the response cache.

use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};

use super::status::StatusName;

/// The response cache of share mode: which answers it stores, how long they
/// stay fresh, how long they may serve stale, and how much memory they take.
///
/// Two postures, each with defaults that are safe on its own:
///
/// | | [`CacheConfig::new`]: the app's own route | [`CacheConfig::shared`]: an RFC 9111 shared cache |
/// |---|---|---|
/// | for | handlers you wrote: "cache this route for N seconds unless the answer says otherwise" | a reverse proxy in front of an origin you do not control |
/// | answers with no `max-age`, `s-maxage` or `Expires` | fresh for [`ttl`](Self::ttl) (60 s) | fresh by heuristic only (§4.2.2): a tenth of the time since `Last-Modified`, at most [`heuristic`](Self::heuristic)'s cap (1 day); else stored only to be revalidated |
/// | statuses | those in [`statuses`](Self::statuses) (200, 203, 204, 301, 404, 410), and redirects (`3xx`) that give their own freshness | any final status that gives its own freshness; [`statuses`](Self::statuses) for heuristic freshness |
///
/// In both: what the answer says wins over the defaults (a `max-age` can
/// lengthen or shorten it), capped by [`max_ttl`](Self::max_ttl); `no-store`,
/// `private`, `Set-Cookie`, and answers to requests with `Authorization`
/// (unless `public`, `s-maxage` or `must-revalidate`) are never stored;
/// `5xx` answers are never stored (a stale copy stands in for them instead).
///
/// ```
/// use std::time::Duration;
/// use tower_singleflight::{CacheConfig, SingleFlightLayer};
///
/// // The app's route: fresh 60 s unless the answer says otherwise.
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
///
/// // A caching reverse proxy: only what the origin marks cacheable.
/// let proxy = SingleFlightLayer::share().cache(CacheConfig::shared());
/// # let _ = (layer, proxy);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct CacheConfig {
    pub(crate) posture: Posture,
    pub(crate) ttl: Option<Duration>,
    pub(crate) heuristic: Option<Duration>,
    pub(crate) max_ttl: Duration,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) keep_to_revalidate: Duration,
    pub(crate) max_bytes: u64,
    pub(crate) max_variants: usize,
    pub(crate) jitter: f64,
    pub(crate) statuses: Vec<StatusCode>,
    pub(crate) invalidate_on_write: bool,
    pub(crate) request_directives: bool,
    pub(crate) targeted: Option<HeaderName>,
    pub(crate) cache_status: Option<StatusName>,
}

/// Which of the two postures a [`CacheConfig`] starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Posture {
    Route,
    Shared,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            posture: Posture::Route,
            ttl: Some(Duration::from_secs(60)),
            heuristic: None,
            max_ttl: Duration::MAX,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            keep_to_revalidate: Duration::from_secs(600),
            max_bytes: 64 * 1024 * 1024,
            max_variants: 8,
            jitter: 0.0,
            statuses: [200, 203, 204, 301, 404, 410]
                .into_iter()
                .filter_map(|code| StatusCode::from_u16(code).ok())
                .collect(),
            invalidate_on_write: true,
            request_directives: true,
            targeted: None,
            cache_status: Some(StatusName::new(HeaderValue::from_static(
                "tower-singleflight",
            ))),
        }
    }
}

impl CacheConfig {
    /// The app's own route: answers that give no freshness are fresh for
    /// [`ttl`](Self::ttl) (60 s); see the type's docs.
    pub fn new() -> Self {
        Self::default()
    }

    /// An RFC 9111 shared cache in front of an origin: stores only what the
    /// origin marks cacheable, with heuristic freshness per §4.2.2 for the
    /// rest; see the type's docs.
    pub fn shared() -> Self {
        Self {
            posture: Posture::Shared,
            ttl: None,
            heuristic: Some(Duration::from_secs(86_400)),
            statuses: [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]
                .into_iter()
                .filter_map(|code| StatusCode::from_u16(code).ok())
                .collect(),
            ..Self::default()
        }
    }

    /// How long an answer that gives no freshness of its own (no `max-age`,
    /// `s-maxage` nor `Expires`) is fresh. An answer's own freshness wins,
    /// longer or shorter. `Duration::MAX` means never stale. Default: 60 s
    /// for [`new`](Self::new), none for [`shared`](Self::shared).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Heuristic freshness (RFC 9111 §4.2.2) for answers that give none but
    /// have a `Last-Modified`: a tenth of the time since then, at most
    /// `cap`. Used before [`ttl`](Self::ttl) when both are set. Default: a
    /// day's cap for [`shared`](Self::shared), off for [`new`](Self::new).
    pub fn heuristic(mut self, cap: Duration) -> Self {
        self.heuristic = Some(cap);
        self
    }

    /// The longest any answer is fresh, whatever it says. Default: no cap.
    pub fn max_ttl(mut self, cap: Duration) -> Self {
        self.max_ttl = cap;
        self
    }

    /// After the TTL, how long the stale answer is served at once while
    /// exactly one request refreshes it in the background. A response's
    /// `stale-while-revalidate` replaces it; `must-revalidate`,
    /// `proxy-revalidate`, `s-maxage` and `no-cache` forbid it.
    /// `Duration::MAX` means for ever. Default: none.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = window;
        self
    }

    /// After the TTL, how long the stale answer is served instead of a
    /// failure (a `5xx`, a panic, a timeout) to refresh it. A response's
    /// `stale-if-error` replaces it; `must-revalidate` and the like forbid
    /// it. `Duration::MAX` means for ever. Default: none.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = window;
        self
    }

    /// How long a stale answer with a validator (`ETag`, `Last-Modified`)
    /// is kept to be revalidated with a conditional request (a `304` then
    /// serves it again, without its body crossing the network). Default:
    /// 10 minutes.
    pub fn keep_to_revalidate(mut self, window: Duration) -> Self {
        self.keep_to_revalidate = window;
        self
    }

    /// The memory the cached answers may take, counted in bytes of body and
    /// headers. Default: 64 MiB.
    ///
    /// Besides, each thread keeps the few answers it serves again and again,
    /// so that cores reading one hot answer do not all go through the
    /// cache's shared bookkeeping: at most 4 keys on each of the cache's
    /// stripes (four per core, at most 64), of at most 64 KiB each, and all
    /// of them together at most a sixteenth of `max_bytes`. An answer
    /// evicted for room may stay that long in memory, served while fresh; a
    /// change to its key voids it, and an invalidation frees it, at once.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// How many variants (answers that differ in what their `Vary` names)
    /// are kept per key; the oldest goes first. At least 1. Default: 8.
    pub fn max_variants(mut self, variants: usize) -> Self {
        self.max_variants = variants.max(1);
        self
    }

    /// Shortens each answer's TTL by a random fraction up to `jitter` (0.0 to
    /// 1.0), so answers stored together do not expire together. Default: 0.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        self
    }

    /// The statuses stored without freshness of their own (see the type's
    /// docs for each posture). Whatever the list, an answer that cannot be
    /// shared, and a `5xx`, are never stored.
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.statuses = statuses.into_iter().collect();
        self
    }

    /// Drops the cached answers for a path (and for the same-host
    /// `Location` and `Content-Location` of the answer) when a `POST`,
    /// `PUT`, `PATCH`, `DELETE` or other unsafe request to the same host and
    /// path succeeds (RFC 9111 §4.4). Default: on.
    pub fn invalidate_on_write(mut self, invalidate: bool) -> Self {
        self.invalidate_on_write = invalidate;
        self
    }

    /// Whether a request's `Cache-Control` (`no-cache`, `no-store`,
    /// `max-age`, `min-fresh`, `max-stale`, `only-if-cached`) and `Pragma:
    /// no-cache` are honoured. They are advisory (RFC 9111 §5.2.1): turn
    /// them off where clients must not send requests past the cache.
    /// Default: on.
    pub fn request_directives(mut self, honour: bool) -> Self {
        self.request_directives = honour;
        self
    }

    /// Reads `CDN-Cache-Control` (RFC 9213) before `Cache-Control`: when a
    /// response has it, its directives replace `Cache-Control`'s for this
    /// cache.
    pub fn cdn_cache_control(self) -> Self {
        self.targeted_cache_control(HeaderName::from_static("cdn-cache-control"))
    }

    /// Reads this targeted field (RFC 9213) before `Cache-Control`, like
    /// [`cdn_cache_control`](Self::cdn_cache_control).
    pub fn targeted_cache_control(mut self, name: HeaderName) -> Self {
        self.targeted = Some(name);
        self
    }

    /// The name this cache gives itself in the `Cache-Status` (RFC 9211) it
    /// adds to every answer that went through it. Characters a token cannot
    /// hold make it a quoted string. Default: `tower-singleflight`.
    pub fn cache_status(mut self, name: &str) -> Self {
        self.cache_status = Some(StatusName::new(super::status::identifier(name)));
        self
    }

    /// Adds no `Cache-Status`.
    pub fn no_cache_status(mut self) -> Self {
        self.cache_status = None;
        self
    }
}
