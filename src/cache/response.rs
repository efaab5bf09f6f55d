//! The response cache: shareable answers kept in moka, by flight key.

use std::{
    fmt,
    hash::Hash,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use http::{header, HeaderValue, Response};
use http_body::Body;
use moka::{sync::Cache, Expiry};
use tokio::time::Instant;

use super::{
    config::CacheConfig,
    directives,
    epochs::{Epoch, Epochs},
    freshness::{Freshness, Windows},
};
use crate::{
    body::ResponseBody,
    identity::{Identify, Reading, RequestIdentity},
    key::ShareKey,
    shared::BufferedResponse,
};

impl Counters {
    pub(crate) fn count_stale(&self) {
        self.stale.fetch_add(1, Relaxed);
    }
}

/// An answer in the cache.
#[derive(Debug)]
pub(crate) struct CachedResponse {
    response: Arc<BufferedResponse>,
    windows: Windows,
    stored_at: Instant,
    /// The host and path it answered, to drop it when they are written to.
    target: Target,
    /// After a failed refresh: no new attempt before then.
    retry_at: Option<Instant>,
}

/// The normalized host and path of a request: what a write invalidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `Err` for a write that named two hosts: it invalidates the path on
    /// every host, as it cannot be told which one it changed.
    host: Result<Option<HeaderValue>, AnyHost>,
    path: Box<str>,
    /// The bytes of the request's identity (host, path, query): the key
    /// built from them holds no more than that, give or take a constant.
    key_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AnyHost;

impl Target {
    /// Where an answer to a request for `host` (normalized) and `uri` is
    /// stored. Made only when something is to be stored: a hit needs none.
    pub(crate) fn stored(host: Option<&HeaderValue>, uri: &http::Uri) -> Self {
        let path = RequestIdentity::path_of(uri);
        let query = uri.query().map_or(0, str::len);
        let host = host
            .map(|host| HeaderValue::from_bytes(host.as_bytes()).unwrap_or_else(|_| host.clone()));
        Self {
            key_bytes: host.as_ref().map_or(0, HeaderValue::len) + path.len() + query,
            host: Ok(host),
            path: path.into(),
        }
    }

    /// What a write to this request's target invalidates.
    pub(crate) fn written<B>(identify: &Identify, request: &http::Request<B>) -> Self {
        let (method, uri, headers) = (request.method(), request.uri(), request.headers());
        // Read as a lock reads it: by the host source alone, and whatever its
        // length (a long write still changed one host's data, not all).
        let read =
            RequestIdentity::read_head(method, uri, headers, identify.host, Reading::Locking);
        match read {
            Ok(identity) => Self::stored(identity.host(), uri),
            Err(_) => Self {
                host: Err(AnyHost),
                path: RequestIdentity::path_of(uri).into(),
                key_bytes: 0,
            },
        }
    }

    /// Whether a write to `self` invalidates an answer stored for `stored`.
    fn covers(&self, stored: &Target) -> bool {
        self.path == stored.path
            && self
                .host
                .as_ref()
                .map_or(true, |host| Ok(host) == stored.host.as_ref())
    }

    /// The bytes it keeps, and those of the key stored beside it.
    fn len(&self) -> usize {
        let host = self.host.as_ref().ok().and_then(Option::as_ref);
        self.path.len() + host.map_or(0, HeaderValue::len) + self.key_bytes
    }
}

impl CachedResponse {
    pub(crate) fn freshness(&self, now: Instant) -> Freshness {
        self.windows.at(self.stored_at, now)
    }

    /// Whether a request with these headers may have it (its `Vary`).
    pub(crate) fn fits(&self, request: &http::HeaderMap) -> bool {
        self.response.fits(request)
    }

    /// Whether a refresh may be tried now (not backing off after a failure).
    pub(crate) fn may_refresh(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|retry_at| now >= retry_at)
    }

    /// A copy to serve, with its `Age`.
    pub(crate) fn to_response<B: Body>(&self, now: Instant) -> Response<ResponseBody<B>> {
        let mut response = self.response.to_response();
        let age = HeaderValue::from(now.saturating_duration_since(self.stored_at).as_secs());
        // The stored copy has an `Age` in place: overwritten where it is, as
        // an insert would first grow a full map.
        match response.headers_mut().get_mut(header::AGE) {
            Some(placeholder) => *placeholder = age,
            None => {
                response.headers_mut().insert(header::AGE, age);
            }
        }
        response
    }

    /// The bytes it keeps: the answer, and its target and key.
    fn weight(&self) -> usize {
        self.response.heap_bytes() + self.target.len()
    }
}

/// What a key holds in the cache.
#[derive(Debug, Clone)]
pub(crate) enum Stored {
    Answer(Arc<CachedResponse>),
}

/// What a lookup found.
pub(crate) enum Lookup {
    Answer(Arc<CachedResponse>),
    Miss,
}

/// The response cache of a share-mode layer: cheap to clone, every clone is
/// the same cache.
///
/// It is a `moka::sync::Cache`: its reads never wait, not even while moka
/// tidies up under load (`moka::future::Cache::get` can, which would send a
/// hit to the origin's queue), and its writes happen in the flight's task.
///
/// Got from [`SingleFlightLayer::response_cache`](crate::SingleFlightLayer::response_cache),
/// to drop answers that changed.
pub struct ResponseCache<K> {
    inner: Arc<Inner<K>>,
}

struct Inner<K> {
    store: Cache<ShareKey<K>, Stored>,
    config: CacheConfig,
    stats: Arc<Counters>,
    /// Bumped by every invalidation: an answer fetched across one that
    /// concerns it is not stored, so a read in flight during a write cannot
    /// bring back the old data.
    epochs: Epochs,
}

/// What a [`ResponseCache`] did, counted since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct CacheStats {
    /// Requests answered fresh from the cache.
    pub hits: u64,
    /// Requests answered with a stale copy (while revalidating, or because
    /// the refresh failed).
    pub stale: u64,
    /// Requests that found nothing usable.
    pub misses: u64,
    /// Answers stored.
    pub stored: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    stale: AtomicU64,
    misses: AtomicU64,
    stored: AtomicU64,
}

/// moka evicts on its own (wall) clock; freshness is decided on Tokio's.
/// An entry is kept for as long as what it holds is useful, plus a margin;
/// a refresh re-arms it.
struct Lifetime;

impl Stored {
    fn useful_for(&self) -> Duration {
        let Stored::Answer(answer) = self;
        let until = crate::time::after(answer.stored_at, answer.windows.lifetime());
        let left = until.saturating_duration_since(Instant::now());
        // What moka can take: "never" is a few decades, not `Duration::MAX`.
        crate::time::capped(crate::time::sum(left, Duration::from_secs(1)))
    }
}

impl<K> Expiry<ShareKey<K>, Stored> for Lifetime {
    fn expire_after_create(
        &self,
        _key: &ShareKey<K>,
        stored: &Stored,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(stored.useful_for())
    }

    fn expire_after_update(
        &self,
        _key: &ShareKey<K>,
        stored: &Stored,
        _now: std::time::Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(stored.useful_for())
    }
}

/// What an entry costs besides the bytes it holds: moka's node and
/// indexes, the `Arc`s and structs around the answer, the key's own fields.
/// Measured by the memory test (`tests/memory.rs`), with a margin.
const ENTRY_OVERHEAD: usize = 1024;

/// The bytes an entry costs: everything it keeps (the answer's body,
/// headers, trailers and `Vary` copies; its target; its key, with the
/// caller's identity), so that `max_bytes` bounds the heap the cache holds.
fn weigh<K>(key: &ShareKey<K>, stored: &Stored) -> u32 {
    let Stored::Answer(answer) = stored;
    let bytes = key.len() + answer.weight() + ENTRY_OVERHEAD;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl<K> ResponseCache<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    pub(crate) fn new(config: CacheConfig) -> Self {
        let store = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(weigh)
            .expire_after(Lifetime)
            .support_invalidation_closures()
            .build();
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                stats: Arc::default(),
                epochs: Epochs::default(),
            }),
        }
    }

    pub(crate) fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// Looks the key up; counts what it found.
    pub(crate) fn lookup(&self, key: &ShareKey<K>) -> Lookup {
        let stats = &self.inner.stats;
        match self.inner.store.get(key) {
            Some(Stored::Answer(answer)) => Lookup::Answer(answer),
            None => {
                stats.misses.fetch_add(1, Relaxed);
                Lookup::Miss
            }
        }
    }

    /// A fresh answer for a request with these headers, if stored: for a
    /// leader, in case another flight stored one since its lookup. Not
    /// counted.
    pub(crate) fn fresh(
        &self,
        key: &ShareKey<K>,
        request: &http::HeaderMap,
    ) -> Option<Arc<BufferedResponse>> {
        match self.inner.store.get(key)? {
            Stored::Answer(answer)
                if answer.freshness(Instant::now()) == Freshness::Fresh && answer.fits(request) =>
            {
                Some(Arc::clone(&answer.response))
            }
            Stored::Answer(_) => None,
        }
    }

    pub(crate) fn count_hit(&self) {
        self.inner.stats.hits.fetch_add(1, Relaxed);
    }

    /// The counters, to count a stale answer served later.
    pub(crate) fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.inner.stats)
    }

    /// A mark to give [`store`](Self::store) with an answer for `target`:
    /// answers fetched across an invalidation of it are not stored.
    pub(crate) fn epoch(&self, target: &Target) -> Epoch {
        self.inner.epochs.now(&target.path)
    }

    /// Stores a shareable answer if its status and `Cache-Control` allow, and
    /// nothing was invalidated since `epoch`.
    pub(crate) fn store(
        &self,
        key: ShareKey<K>,
        response: &Arc<BufferedResponse>,
        target: Target,
        epoch: Epoch,
    ) {
        if self.inner.epochs.crossed(epoch) {
            return;
        }
        let Some(windows) = directives::windows(response.parts(), &self.inner.config) else {
            return;
        };
        let mut stored = response.detached();
        // Every copy served gets its own `Age`, written over this one.
        stored
            .headers_mut()
            .insert(header::AGE, HeaderValue::from_static("0"));
        let answer = CachedResponse {
            response: Arc::new(stored),
            windows,
            stored_at: Instant::now(),
            target,
            retry_at: None,
        };
        self.inner.stats.stored.fetch_add(1, Relaxed);
        self.put(key, Stored::Answer(Arc::new(answer)));
    }

    fn put(&self, key: ShareKey<K>, stored: Stored) {
        self.inner.store.insert(key, stored);
    }

    /// After a failed refresh: keep serving the stale answer, and try again
    /// only after another TTL, not on every request.
    pub(crate) fn back_off(&self, key: ShareKey<K>) {
        let Some(Stored::Answer(stale)) = self.inner.store.get(&key) else {
            return;
        };
        let now = Instant::now();
        if stale.freshness(now) == Freshness::Expired {
            return;
        }
        let answer = CachedResponse {
            response: Arc::clone(&stale.response),
            target: stale.target.clone(),
            retry_at: Some(crate::time::after(
                now,
                stale.windows.fresh.max(Duration::from_secs(1)),
            )),
            ..*stale
        };
        self.put(key, Stored::Answer(Arc::new(answer)));
    }

    /// Drops every answer for this host and path (all queries, callers and
    /// methods).
    pub(crate) fn invalidate_target(&self, target: &Target) {
        self.inner.epochs.bump_path(&target.path);
        let target = target.clone();
        self.drop_entries(move |_, Stored::Answer(answer)| target.covers(&answer.target));
    }

    /// Drops every answer stored under this key (for every caller, host and
    /// method).
    pub fn invalidate(&self, key: &K) {
        let key = key.clone();
        self.inner.epochs.bump_all();
        self.drop_entries(move |stored, _| stored.key == key);
    }

    /// Drops every answer whose key matches.
    pub fn invalidate_if(&self, matches: impl Fn(&K) -> bool + Send + Sync + 'static) {
        self.inner.epochs.bump_all();
        self.drop_entries(move |stored, _| matches(&stored.key));
    }

    /// Drops every answer.
    pub fn invalidate_all(&self) {
        self.inner.epochs.bump_all();
        self.inner.store.invalidate_all();
    }

    fn drop_entries(
        &self,
        matches: impl Fn(&ShareKey<K>, &Stored) -> bool + Send + Sync + 'static,
    ) {
        // Fails only without `support_invalidation_closures`, which `new` sets.
        if let Err(error) = self.inner.store.invalidate_entries_if(matches) {
            tracing::error!(%error, "cache invalidation failed");
        }
    }

    /// What the cache did so far.
    pub fn stats(&self) -> CacheStats {
        let stats = &self.inner.stats;
        CacheStats {
            hits: stats.hits.load(Relaxed),
            stale: stats.stale.load(Relaxed),
            misses: stats.misses.load(Relaxed),
            stored: stats.stored.load(Relaxed),
        }
    }

    /// The bytes the cached answers take, as last counted by moka.
    pub fn weighted_size(&self) -> u64 {
        self.inner.store.weighted_size()
    }

    /// How many keys have something stored.
    pub fn entry_count(&self) -> u64 {
        self.inner.store.entry_count()
    }

    /// Lets moka finish its pending work (evictions, invalidations), so that
    /// [`weighted_size`](Self::weighted_size) and lookups are up to date.
    pub fn run_pending_tasks(&self) {
        self.inner.store.run_pending_tasks();
    }
}

impl<K> Clone for ResponseCache<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K> fmt::Debug for ResponseCache<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCache")
            .field("config", &self.inner.config)
            .field("stats", &self.inner.stats)
            .finish_non_exhaustive()
    }
}
