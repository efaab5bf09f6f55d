//! The response cache: shareable answers kept in moka, by flight key.

use std::{
    fmt,
    hash::Hash,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, PoisonError, RwLock,
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
    freshness::{Freshness, Windows},
};
use crate::{body::ResponseBody, key::ShareKey, shared::BufferedResponse};

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

/// The host and path of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) host: Option<HeaderValue>,
    pub(crate) path: String,
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
        let age = now.saturating_duration_since(self.stored_at).as_secs();
        response
            .headers_mut()
            .insert(header::AGE, HeaderValue::from(age));
        response
    }

    fn weight(&self) -> u32 {
        let headers: usize = self
            .response
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        // The map, the entry and its key: a fixed allowance.
        let bytes = self.response.body_len() + headers + 256;
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }
}

/// A key's place in the cache. A refresh swaps what it holds in place: moka
/// replacing an entry lets a concurrent read miss it, which would send that
/// read to the origin at the very moment the fresh answer lands.
#[derive(Debug)]
pub(crate) struct Slot {
    held: RwLock<Stored>,
}

impl Slot {
    fn new(stored: Stored) -> Self {
        Self {
            held: RwLock::new(stored),
        }
    }

    fn get(&self) -> Stored {
        self.held
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, stored: Stored) {
        *self.held.write().unwrap_or_else(PoisonError::into_inner) = stored;
    }

    fn weight(&self) -> u32 {
        match self.get() {
            Stored::Answer(answer) => answer.weight(),
            Stored::Pass(_) => 64,
        }
    }

    /// How long what it holds is worth keeping, from now.
    fn useful_for(&self) -> Duration {
        let now = Instant::now();
        let until = match self.get() {
            Stored::Answer(answer) => answer.stored_at + answer.windows.lifetime(),
            Stored::Pass(until) => until,
        };
        until.saturating_duration_since(now) + Duration::from_secs(1)
    }
}

/// What a key holds in the cache.
#[derive(Debug, Clone)]
pub(crate) enum Stored {
    Answer(Arc<CachedResponse>),
    /// Hit-for-pass: its last answer could not be shared; pass through until
    /// then.
    Pass(Instant),
}

/// What a lookup found.
pub(crate) enum Lookup {
    Answer(Arc<CachedResponse>),
    Pass,
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
    store: Cache<ShareKey<K>, Arc<Slot>>,
    config: CacheConfig,
    stats: Arc<Counters>,
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
    /// Requests passed straight through (hit-for-pass).
    pub passes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    stale: AtomicU64,
    misses: AtomicU64,
    stored: AtomicU64,
    passes: AtomicU64,
}

/// moka evicts on its own (wall) clock; freshness is decided on Tokio's.
/// A slot is kept for as long as what it holds is useful, plus a margin.
struct Lifetime;

impl<K> Expiry<ShareKey<K>, Arc<Slot>> for Lifetime {
    fn expire_after_create(
        &self,
        _key: &ShareKey<K>,
        slot: &Arc<Slot>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(slot.useful_for())
    }

    fn expire_after_read(
        &self,
        _key: &ShareKey<K>,
        slot: &Arc<Slot>,
        _now: std::time::Instant,
        _current: Option<Duration>,
        _last_modified_at: std::time::Instant,
    ) -> Option<Duration> {
        // Refreshed in place: what it holds now decides.
        Some(slot.useful_for())
    }
}

impl<K> ResponseCache<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    pub(crate) fn new(config: CacheConfig) -> Self {
        let store = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|_key, slot: &Arc<Slot>| slot.weight())
            .expire_after(Lifetime)
            .support_invalidation_closures()
            .build();
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                stats: Arc::default(),
            }),
        }
    }

    pub(crate) fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// Looks the key up; counts what it found.
    pub(crate) fn lookup(&self, key: &ShareKey<K>, now: Instant) -> Lookup {
        let stats = &self.inner.stats;
        match self.inner.store.get(key).map(|slot| slot.get()) {
            Some(Stored::Answer(answer)) => Lookup::Answer(answer),
            Some(Stored::Pass(until)) if now < until => {
                stats.passes.fetch_add(1, Relaxed);
                Lookup::Pass
            }
            _ => {
                stats.misses.fetch_add(1, Relaxed);
                Lookup::Miss
            }
        }
    }

    pub(crate) fn count_hit(&self) {
        self.inner.stats.hits.fetch_add(1, Relaxed);
    }

    /// The counters, to count a stale answer served later.
    pub(crate) fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.inner.stats)
    }

    /// Stores a shareable answer if its status and `Cache-Control` allow.
    pub(crate) fn store(&self, key: ShareKey<K>, response: &Arc<BufferedResponse>, target: Target) {
        let Some(windows) = directives::windows(response.parts(), &self.inner.config) else {
            return;
        };
        let answer = CachedResponse {
            response: Arc::clone(response),
            windows,
            stored_at: Instant::now(),
            target,
            retry_at: None,
        };
        self.inner.stats.stored.fetch_add(1, Relaxed);
        self.put(key, Stored::Answer(Arc::new(answer)));
    }

    /// Remembers that the key's answers cannot be shared, for a while.
    pub(crate) fn pass(&self, key: ShareKey<K>) {
        let until = Instant::now() + self.inner.config.hit_for_pass;
        self.put(key, Stored::Pass(until));
    }

    /// Swaps what the key's slot holds, or makes the slot. A slot is made
    /// anew only when the weight changes, so moka's byte count stays true.
    fn put(&self, key: ShareKey<K>, stored: Stored) {
        let fresh = Slot::new(stored);
        match self.inner.store.get(&key) {
            Some(slot) if slot.weight() == fresh.weight() => slot.set(fresh.get()),
            _ => self.inner.store.insert(key, Arc::new(fresh)),
        }
    }

    /// After a failed refresh: keep serving the stale answer, and try again
    /// only after another TTL, not on every request.
    pub(crate) fn back_off(&self, key: ShareKey<K>) {
        let Some(Stored::Answer(stale)) = self.inner.store.get(&key).map(|slot| slot.get()) else {
            return;
        };
        let now = Instant::now();
        if stale.freshness(now) == Freshness::Expired {
            return;
        }
        let answer = CachedResponse {
            response: Arc::clone(&stale.response),
            target: stale.target.clone(),
            retry_at: Some(now + stale.windows.fresh.max(Duration::from_secs(1))),
            ..*stale
        };
        self.put(key, Stored::Answer(Arc::new(answer)));
    }

    /// Drops every answer for this host and path (all queries, callers and
    /// methods).
    pub(crate) fn invalidate_target(&self, target: &Target) {
        let target = target.clone();
        self.invalidate_stored(move |_, slot| match slot.get() {
            Stored::Answer(answer) => answer.target == target,
            Stored::Pass(_) => false,
        });
    }

    /// Drops every answer stored under this key (for every caller, host and
    /// method).
    pub fn invalidate(&self, key: &K) {
        let key = key.clone();
        self.invalidate_stored(move |stored, _| stored.key == key);
    }

    /// Drops every answer whose key matches.
    pub fn invalidate_if(&self, matches: impl Fn(&K) -> bool + Send + Sync + 'static) {
        self.invalidate_stored(move |stored, _| matches(&stored.key));
    }

    /// Drops every answer.
    pub fn invalidate_all(&self) {
        self.inner.store.invalidate_all();
    }

    fn invalidate_stored(
        &self,
        matches: impl Fn(&ShareKey<K>, &Arc<Slot>) -> bool + Send + Sync + 'static,
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
            passes: stats.passes.load(Relaxed),
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
