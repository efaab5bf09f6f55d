//! The response cache: shareable answers kept in moka, by flight key.

use std::{
    fmt,
    hash::Hash,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use http::{header, HeaderValue, Response};
use http_body::Body;
use moka::{sync::Cache, Expiry};
use tokio::time::Instant;

use super::{
    age::{self, Clock},
    config::CacheConfig,
    epochs::{Epoch, Epochs},
    freshness::{Freshness, Windows},
    front::{Front, Looked},
    status::{self, StatusName},
    storage,
};
use crate::{
    body::ResponseBody,
    flight::Striped,
    identity::{Identify, Reading, RequestIdentity},
    key::{ByDigest, ShareKey},
    metrics::{CacheMeter, CacheResult},
    shared::BufferedResponse,
};

/// An answer in the cache: one variant of a key.
#[derive(Debug)]
pub(crate) struct CachedResponse {
    pub(crate) response: Arc<BufferedResponse>,
    windows: Windows,
    /// When it arrived: its age grows from `initial_age` from then on.
    stored_at: Instant,
    /// Its age when it arrived (RFC 9111 §4.2.3).
    initial_age: Duration,
    /// Never served stale at a client's `max-stale`.
    forbids_stale: bool,
    /// Has an `ETag` or `Last-Modified`: kept stale, to be revalidated.
    validator: bool,
    /// The host and path it answered, to drop it when they are written to.
    target: Target,
    /// After a failed refresh: no new attempt before this many milliseconds
    /// after `stored_at` (0: none).
    retry_at: AtomicU64,
    /// Refreshes failed in a row, for the back-off to grow.
    failures: AtomicU32,
    /// Hits, counted up to [`USE_COUNT_CAP`]: when a key has too many
    /// variants, the least used goes first.
    uses: AtomicU32,
}

/// Where counting a variant's hits stops: past it a variant is simply in
/// use, and a hot one is only read, never written, on each hit.
const USE_COUNT_CAP: u32 = 64;

/// The longest wait between refreshes that keep failing.
const MAX_BACK_OFF: Duration = Duration::from_secs(300);

/// The normalized host and path of a request an answer was stored for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    host: Option<HeaderValue>,
    path: Box<str>,
    /// The bytes of the request's identity (host, path, query): the key
    /// built from them holds no more than that, give or take a constant.
    key_bytes: usize,
}

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
            host,
            path: path.into(),
        }
    }

    /// The normalized path.
    #[cfg(feature = "redis")]
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The bytes it keeps, and those of the key stored beside it.
    fn len(&self) -> usize {
        self.path.len() + self.host.as_ref().map_or(0, HeaderValue::len) + self.key_bytes
    }
}

/// What a successful write invalidates (RFC 9111 §4.4): a path, on the
/// hosts the request named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Written {
    /// One host, as a lock reads it; or, for a request that named several,
    /// each of them (at most [`MAX_WRITTEN_HOSTS`]), as it cannot be told
    /// which one it changed.
    hosts: Vec<Option<HeaderValue>>,
    path: Box<str>,
}

/// The most hosts one write invalidates a path on.
const MAX_WRITTEN_HOSTS: usize = 4;

impl Written {
    /// What a write with this request head invalidates.
    pub(crate) fn of<B>(identify: &Identify, request: &http::Request<B>) -> Self {
        let (method, uri, headers) = (request.method(), request.uri(), request.headers());
        // Read as a lock reads it: by the host source alone, and whatever its
        // length (a long write still changed one host's data, not all).
        let read =
            RequestIdentity::read_head(method, uri, headers, identify.host, Reading::Locking);
        let hosts = match read {
            Ok(identity) => vec![identity.host().cloned()],
            Err(_) => crate::identity::hosts_named(uri, headers, identify.host)
                .into_iter()
                .take(MAX_WRITTEN_HOSTS)
                .map(Some)
                .collect(),
        };
        Self {
            hosts,
            path: RequestIdentity::path_of(uri).into(),
        }
    }

    /// What the write's answer names in `Location` or `Content-Location`,
    /// resolved against the write's target (RFC 3986 §5.2), if it is on one
    /// of the write's hosts.
    pub(crate) fn named(&self, value: &HeaderValue) -> Option<Self> {
        let reference = value.to_str().ok()?.trim();
        let (authority, path) = super::resolve::reference(&self.path, reference)?;
        let hosts = match authority {
            None => self.hosts.clone(),
            Some((authority, scheme)) => {
                let host = crate::identity::normal_host(&authority, scheme.as_deref())?;
                let host = Some(host);
                if !self.hosts.contains(&host) {
                    return None;
                }
                vec![host]
            }
        };
        let uri: http::Uri = path.parse().ok()?;
        Some(Self {
            hosts,
            path: RequestIdentity::path_of(&uri).into(),
        })
    }

    /// Whether it invalidates an answer stored for `stored`.
    fn covers(&self, stored: &Target) -> bool {
        self.path == stored.path && self.hosts.contains(&stored.host)
    }
}

impl CachedResponse {
    /// Its current age (RFC 9111 §4.2.3).
    pub(crate) fn age(&self, now: Instant) -> Duration {
        crate::time::sum(
            self.initial_age,
            now.saturating_duration_since(self.stored_at),
        )
    }

    /// Its freshness lifetime.
    pub(crate) fn lifetime(&self) -> Duration {
        self.windows.fresh
    }

    pub(crate) fn freshness(&self, now: Instant) -> Freshness {
        self.windows.at_age(self.age(now))
    }

    /// Whether it may stand in for a failed refresh now (`stale-if-error`).
    pub(crate) fn serves_on_error(&self, now: Instant) -> bool {
        self.age(now) < crate::time::sum(self.windows.fresh, self.windows.stale_if_error)
    }

    pub(crate) fn forbids_stale(&self) -> bool {
        self.forbids_stale
    }

    pub(crate) fn has_validator(&self) -> bool {
        self.validator
    }

    /// Whether a request with these headers may have it (its `Vary`).
    pub(crate) fn fits(&self, request: &http::HeaderMap) -> bool {
        self.response.fits(request)
    }

    /// Whether a refresh may be tried now (not backing off after a failure).
    pub(crate) fn may_refresh(&self, now: Instant) -> bool {
        let retry_at = self.retry_at.load(Relaxed);
        retry_at == 0
            || now.saturating_duration_since(self.stored_at) >= Duration::from_millis(retry_at)
    }

    /// After a failed refresh: no new attempt for a while, while the stale
    /// copy keeps serving: a second after the first failure, doubling with
    /// each one in a row, at most the answer's lifetime and five minutes.
    pub(crate) fn back_off(&self, now: Instant) {
        let failures = self.failures.fetch_add(1, Relaxed).min(16);
        let wait = Duration::from_secs(1 << failures)
            .min(self.windows.fresh.max(Duration::from_secs(1)))
            .min(MAX_BACK_OFF);
        let at = crate::time::sum(now.saturating_duration_since(self.stored_at), wait);
        let millis = u64::try_from(at.as_millis()).unwrap_or(u64::MAX).max(1);
        self.retry_at.store(millis, Relaxed);
    }

    /// A copy for one thread's front: its answer in a buffer of its own, so
    /// that serving it counts references on nothing another core counts on.
    /// Back-off and use counts start from this variant's own (the front
    /// serves only fresh copies, which never back off).
    pub(super) fn copy_for_thread(&self) -> Arc<Self> {
        Arc::new(Self {
            response: Arc::new(self.response.detached(|_, _| {})),
            windows: self.windows,
            stored_at: self.stored_at,
            initial_age: self.initial_age,
            forbids_stale: self.forbids_stale,
            validator: self.validator,
            target: self.target.clone(),
            retry_at: AtomicU64::new(self.retry_at.load(Relaxed)),
            failures: AtomicU32::new(self.failures.load(Relaxed)),
            uses: AtomicU32::new(self.uses.load(Relaxed)),
        })
    }

    /// Counts a hit, up to [`USE_COUNT_CAP`].
    pub(crate) fn used(&self) {
        if self.uses.load(Relaxed) < USE_COUNT_CAP {
            self.uses.fetch_add(1, Relaxed);
        }
    }

    /// A copy to serve, with its `Age` and, if `status_name` is set, its
    /// `Cache-Status`.
    pub(crate) fn to_response<B: Body>(
        &self,
        now: Instant,
        status_name: Option<&StatusName>,
    ) -> Response<ResponseBody<B>> {
        let mut response = self.response.to_response();
        let age = self.age(now);
        let age_value = age::age_value(age);
        // The stored copy has an `Age` in place: overwritten where it is, as
        // an insert would first grow a full map.
        match response.headers_mut().get_mut(header::AGE) {
            Some(placeholder) => *placeholder = age_value,
            None => {
                response.headers_mut().insert(header::AGE, age_value);
            }
        }
        if let Some(name) = status_name {
            name.hit(response.headers_mut(), status::ttl(self.windows.fresh, age));
        }
        response
    }

    /// A copy for the waiters of a flight it answers: with its current
    /// `Age`, and without the `Cache-Status` member its stored copy keeps
    /// (each waiter gets its own). Made only when another flight stored it
    /// while this one was starting: rare.
    pub(crate) fn for_waiters(&self, now: Instant, reserved: bool) -> Arc<BufferedResponse> {
        let mut headers = self.response.parts().headers.clone();
        headers.insert(header::AGE, age::age_value(self.age(now)));
        if reserved {
            StatusName::unreserve(&mut headers);
        }
        Arc::new(self.response.with_headers(headers, None))
    }

    /// The bytes it keeps: the answer, and its target and key.
    pub(super) fn weight(&self) -> usize {
        self.response.heap_bytes() + self.target.len() + VARIANT_OVERHEAD
    }

    /// How long it is worth keeping from now: while fresh or servable
    /// stale, and while it can be revalidated.
    fn useful_for(&self, keep_to_revalidate: Duration) -> Duration {
        let useful = if self.validator {
            crate::time::sum(self.windows.lifetime(), keep_to_revalidate)
        } else {
            self.windows.lifetime()
        };
        useful.saturating_sub(self.age(Instant::now()))
    }
}

/// The variants a key holds, newest first: answers that differ in the
/// request headers their `Vary` names.
pub(crate) type Stored = Arc<[Arc<CachedResponse>]>;

/// What a lookup found.
pub(crate) enum Lookup {
    /// The newest variant for the request.
    Answer(Arc<CachedResponse>),
    /// Variants, none of them for the request.
    VaryMiss,
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
    store: Cache<ShareKey<K>, Stored, ByDigest>,
    config: CacheConfig,
    stats: Counters,
    /// Its instruments (feature `metrics`), shared with moka's eviction
    /// listener.
    meter: Arc<CacheMeter>,
    /// Bumped by every invalidation: an answer fetched across one that
    /// concerns it is not stored, so a read in flight during a write cannot
    /// bring back the old data.
    epochs: Epochs,
    /// The answers each thread serves most, kept on its own stripe.
    front: Front<K>,
    clock: Clock,
    /// The Redis tier, when the layer spans replicas, and the subscription
    /// that applies other replicas' invalidations here.
    #[cfg(feature = "redis")]
    tier: std::sync::OnceLock<(crate::redis::response::ResponseTier, Arc<dyn Send + Sync>)>,
}

/// What a [`ResponseCache`] did, counted since it was made. Every request
/// that reached the cache is counted once, as exactly one of `hits`,
/// `stale`, `misses` and `passes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct CacheStats {
    /// Answered fresh from the cache (a `304` to a client's conditional
    /// request included).
    pub hits: u64,
    /// Answered at once with a stale copy (while one refresh runs, while
    /// refreshes back off, or at the client's `max-stale`).
    pub stale: u64,
    /// Went to the origin, or waited for a request that did, because
    /// nothing fresh was stored for them: nothing at all, another variant,
    /// a stale answer (revalidated or fetched again), or the request's own
    /// directives (`no-cache`, `max-age`...). An `only-if-cached` request
    /// that found nothing counts here too.
    pub misses: u64,
    /// Went to the origin past the cache, which stores nothing of it: a
    /// request with `Cache-Control: no-store`.
    pub passes: u64,
    /// Answers stored (revalidated ones included).
    pub stored: u64,
    /// Stale answers revalidated by a `304` from the origin.
    pub revalidated: u64,
}

/// The cache's counters, striped so that cores counting hits of one hot
/// key do not write one line: each [`Counted`], then these.
type Counters = Striped<6>;
const STORED: usize = 4;
const REVALIDATED: usize = 5;

/// moka evicts on its own (wall) clock; freshness is decided on Tokio's.
/// An entry is kept for as long as its longest-lived variant is useful, plus
/// a margin; a new variant or a refresh re-arms it.
struct Lifetime {
    keep_to_revalidate: Duration,
}

impl Lifetime {
    fn of(&self, stored: &Stored) -> Duration {
        let left = stored
            .iter()
            .map(|variant| variant.useful_for(self.keep_to_revalidate))
            .max()
            .unwrap_or(Duration::ZERO);
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
        Some(self.of(stored))
    }

    fn expire_after_update(
        &self,
        _key: &ShareKey<K>,
        stored: &Stored,
        _now: std::time::Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.of(stored))
    }
}

/// What an entry costs besides the bytes it holds: moka's node and
/// indexes, the `Arc`s and structs around the answer, the key's own fields.
/// Measured by the memory test (`tests/memory.rs`), with a margin.
const ENTRY_OVERHEAD: usize = 1024;

/// What each variant costs besides its bytes: its struct and `Arc`s.
const VARIANT_OVERHEAD: usize = 256;

/// The bytes an entry costs: everything it keeps (each variant's body,
/// headers, trailers and `Vary` copies; its target; its key, with the
/// caller's identity), so that `max_bytes` bounds the heap the cache holds.
fn weigh<K>(key: &ShareKey<K>, stored: &Stored) -> u32 {
    weigh_parts(key.len(), stored)
}

/// [`weigh`], with the key's length.
fn weigh_parts(key_len: usize, stored: &Stored) -> u32 {
    let variants: usize = stored.iter().map(|variant| variant.weight()).sum();
    let bytes = key_len + variants + ENTRY_OVERHEAD;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// What a leader stores: the answer, and what it needs to decide how.
pub(crate) struct Storing<'a> {
    pub(crate) response: &'a BufferedResponse,
    pub(crate) target: Target,
    /// The cache's invalidation counts when the request looked it up.
    pub(crate) epoch: Epoch,
    /// When the request left for the origin.
    pub(crate) requested: Instant,
    /// The request carried `Authorization` (RFC 9111 §3.5).
    pub(crate) authorized: bool,
    /// The stale variant it replaces, if any.
    pub(crate) replacing: Option<Arc<CachedResponse>>,
}

impl<K> ResponseCache<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    pub(crate) fn new(config: CacheConfig) -> Self {
        // The table of `Age` values is made now, not by the first hit.
        age::age_value(Duration::ZERO);
        let meter = Arc::new(CacheMeter::default());
        let store = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(weigh)
            .expire_after(Lifetime {
                keep_to_revalidate: config.keep_to_revalidate,
            })
            .support_invalidation_closures();
        // Every entry that leaves takes its bytes off the gauge; those
        // evicted count too. (Without the feature, moka calls nobody.)
        #[cfg(feature = "metrics")]
        let store = {
            let meter = Arc::clone(&meter);
            store.eviction_listener(move |key, stored, cause| {
                meter.removed(weigh(&key, &stored), cause.was_evicted());
            })
        };
        let front = Front::new(config.max_bytes);
        Self {
            inner: Arc::new(Inner {
                store: store.build_with_hasher(ByDigest),
                config,
                stats: Counters::default(),
                meter,
                epochs: Epochs::default(),
                front,
                clock: Clock::new(),
                #[cfg(feature = "redis")]
                tier: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The newest variant stored for a request with these headers, as at
    /// `now`. Not counted: [`consult`](super::consult) counts what it
    /// decides.
    ///
    /// `plain`: the request has no directives of its own, so that a fresh
    /// variant is simply served. Only such requests are answered from (or
    /// fill) the front, whose copies are not the variants moka holds: a
    /// request that may replace or drop the variant it found (`no-cache`,
    /// `max-age=0`...) gets moka's own.
    pub(crate) fn lookup(
        &self,
        key: &ShareKey<K>,
        request: &http::HeaderMap,
        now: Instant,
        plain: bool,
    ) -> Lookup {
        if !plain {
            return self.lookup_stored(key, request);
        }
        let front = &self.inner.front;
        let hash = key.digest();
        let keep = match front.get(hash, key, request, now) {
            Looked::Kept(answer, tell) => {
                if tell {
                    // For moka's eviction policy only: the key is in use.
                    drop(self.inner.store.get(key));
                }
                return Lookup::Answer(answer);
            }
            Looked::Ask(keep) => keep,
        };
        let Some(variants) = self.inner.store.get(key) else {
            return Lookup::Miss;
        };
        match variants.iter().find(|variant| variant.fits(request)) {
            Some(answer) => {
                if let Some(seen) = keep.filter(|_| answer.freshness(now) == Freshness::Fresh) {
                    front.keep(hash, key, &variants, seen);
                }
                Lookup::Answer(Arc::clone(answer))
            }
            None => Lookup::VaryMiss,
        }
    }

    /// [`lookup`](Self::lookup) in moka alone.
    fn lookup_stored(&self, key: &ShareKey<K>, request: &http::HeaderMap) -> Lookup {
        let Some(variants) = self.inner.store.get(key) else {
            return Lookup::Miss;
        };
        match variants.iter().find(|variant| variant.fits(request)) {
            Some(answer) => Lookup::Answer(Arc::clone(answer)),
            None => Lookup::VaryMiss,
        }
    }

    /// A fresh answer for a request with these headers, if stored: for a
    /// leader, in case another flight stored one since its lookup. Not
    /// counted.
    pub(crate) fn fresh(
        &self,
        key: &ShareKey<K>,
        request: &http::HeaderMap,
    ) -> Option<Arc<CachedResponse>> {
        let now = Instant::now();
        match self.lookup_stored(key, request) {
            Lookup::Answer(answer) if answer.freshness(now) == Freshness::Fresh => Some(answer),
            Lookup::Answer(_) | Lookup::VaryMiss | Lookup::Miss => None,
        }
    }

    pub(crate) fn count(&self, outcome: Counted) {
        self.inner.stats.add(outcome as usize);
        self.inner.meter.result(match outcome {
            Counted::Hit => CacheResult::Hit,
            Counted::Stale => CacheResult::Stale,
            Counted::Miss => CacheResult::Miss,
            Counted::Pass => CacheResult::Pass,
        });
    }

    /// Names the cache in its metrics.
    pub(crate) fn set_name(&self, name: Arc<str>) {
        self.inner.meter.set_name(name);
    }

    /// A mark to give [`store`](Self::store) with an answer for `target`:
    /// answers fetched across an invalidation of it are not stored.
    pub(crate) fn epoch(&self, target: &Target) -> Epoch {
        self.inner.epochs.now(&target.path)
    }

    /// Stores a shareable answer if RFC 9111 and the configuration allow,
    /// and nothing was invalidated since it was asked for. Returns the
    /// freshness it was stored with (for `Cache-Status`), if stored.
    pub(crate) fn store(&self, key: ShareKey<K>, storing: Storing<'_>) -> Option<i64> {
        // Only `GET` and `HEAD` answers are stored: those to `OPTIONS` and
        // `TRACE` are not cacheable (RFC 9110 §9.3.7, §9.3.8), and a
        // layer's `methods` may coalesce them all the same.
        let cacheable = key.method == http::Method::GET || key.method == http::Method::HEAD;
        if !cacheable || self.inner.epochs.crossed(storing.epoch) {
            return None;
        }
        let now = Instant::now();
        let clock = &self.inner.clock;
        let received = clock.wall(now);
        let config = &self.inner.config;
        let parts = storing.response.parts();
        let admitted = storage::admit(parts, storing.authorized, received, config)?;
        let initial_age = age::initial_age(&parts.headers, storing.requested, now, clock);
        let counts_length =
            parts.status != http::StatusCode::NO_CONTENT && key.method != http::Method::HEAD;
        let stored = storing.response.detached(|headers, body_length| {
            // Every copy served gets its own `Age`, written over this one.
            headers.insert(header::AGE, HeaderValue::from_static("0"));
            // RFC 9110 §6.6.1: a cache adds the `Date` an origin did not send.
            if !headers.contains_key(header::DATE) {
                headers.insert(header::DATE, age::date_value(received));
            }
            // The body is whole: its length is known, and a copy served
            // without it would get it added (its header map grown) each time.
            if counts_length && !headers.contains_key(header::CONTENT_LENGTH) {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_length));
            }
            if let Some(name) = &config.cache_status {
                name.reserve(headers);
            }
        });
        let answer = Arc::new(CachedResponse {
            response: Arc::new(stored),
            windows: admitted.windows,
            stored_at: now,
            initial_age,
            forbids_stale: admitted.forbids_stale,
            validator: admitted.validator,
            target: storing.target,
            retry_at: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            uses: AtomicU32::new(0),
        });
        let ttl = status::ttl(answer.windows.fresh, initial_age);
        self.inner.stats.add(STORED);
        #[cfg(feature = "metrics")]
        self.inner.meter.stored();
        self.add_variant(key, answer, storing.replacing);
        Some(ttl)
    }

    /// Puts `answer` first among its key's variants, in place of the one it
    /// replaces (the same `Vary` values, or the stale one it refreshes),
    /// keeping at most `max_variants`.
    fn add_variant(
        &self,
        key: ShareKey<K>,
        answer: Arc<CachedResponse>,
        replacing: Option<Arc<CachedResponse>>,
    ) {
        let max = self.inner.config.max_variants;
        #[cfg(feature = "metrics")]
        let key_len = key.len();
        let hash = key.digest();
        self.inner.store.entry(key).and_upsert_with(|entry| {
            let older = entry.map(|entry| entry.into_value());
            let replaced = |variant: &Arc<CachedResponse>| {
                variant.response.same_variant(&answer.response)
                    || replacing
                        .as_ref()
                        .is_some_and(|old| Arc::ptr_eq(old, variant))
            };
            let mut kept = Vec::new();
            for variant in older.iter().flat_map(|variants| variants.iter()) {
                if replaced(variant) {
                    // A refresh keeps what its variant earned.
                    answer.uses.fetch_max(variant.uses.load(Relaxed), Relaxed);
                } else {
                    kept.push(Arc::clone(variant));
                }
            }
            // Too many: the least used go; among equals the oldest, except
            // among those in use (their count stopped at the cap): there the
            // newest, so that a client making up header values, however
            // often it hits them, evicts only its own.
            while kept.len() >= max {
                kept.remove(least_used(&kept));
            }
            let stored: Stored = std::iter::once(answer).chain(kept).collect();
            #[cfg(feature = "metrics")]
            self.inner.meter.put(weigh_parts(key_len, &stored));
            stored
        });
        // Once moka has them: a lookup that read the old generation found
        // the old variants, and its slot is void now.
        self.inner.front.changed(hash);
    }

    /// Counts a `304` that revalidated a stale answer.
    pub(crate) fn count_revalidated(&self) {
        self.inner.stats.add(REVALIDATED);
    }

    /// Drops one variant (a `304` that does not match it).
    pub(crate) fn drop_variant(&self, key: &ShareKey<K>, variant: &Arc<CachedResponse>) {
        let variant = Arc::clone(variant);
        self.inner
            .store
            .entry(key.clone())
            .and_compute_with(|entry| {
                use moka::ops::compute::Op;
                let Some(entry) = entry else {
                    return Op::Nop;
                };
                let kept: Stored = entry
                    .value()
                    .iter()
                    .filter(|stored| !Arc::ptr_eq(stored, &variant))
                    .cloned()
                    .collect();
                if kept.is_empty() {
                    Op::Remove
                } else {
                    #[cfg(feature = "metrics")]
                    self.inner.meter.put(weigh(key, &kept));
                    Op::Put(kept)
                }
            });
        self.inner.front.changed(key.digest());
    }

    /// Drops every answer a write changed: for its path on its hosts (all
    /// queries, callers and methods).
    pub(crate) fn invalidate_written(&self, written: &Written) {
        self.inner.epochs.bump_path(&written.path);
        let written = written.clone();
        #[cfg(feature = "redis")]
        self.tell_replicas(crate::redis::response::Invalidated::Path(&written.path));
        self.drop_entries(move |_, stored| {
            stored.iter().any(|variant| written.covers(&variant.target))
        });
    }

    /// Drops every answer stored under this key (for every caller, host and
    /// method). With a Redis tier, other replicas drop every answer (they
    /// cannot name the key), and so does the tier.
    pub fn invalidate(&self, key: &K) {
        let key = key.clone();
        self.inner.epochs.bump_all();
        #[cfg(feature = "redis")]
        self.tell_replicas(crate::redis::response::Invalidated::All);
        self.drop_entries(move |stored, _| stored.key == key);
    }

    /// Drops every answer whose key matches (on other replicas, and in a
    /// Redis tier, every answer).
    pub fn invalidate_if(&self, matches: impl Fn(&K) -> bool + Send + Sync + 'static) {
        self.inner.epochs.bump_all();
        #[cfg(feature = "redis")]
        self.tell_replicas(crate::redis::response::Invalidated::All);
        self.drop_entries(move |stored, _| matches(&stored.key));
    }

    /// Drops every answer.
    pub fn invalidate_all(&self) {
        #[cfg(feature = "redis")]
        self.tell_replicas(crate::redis::response::Invalidated::All);
        self.invalidate_all_here();
    }

    fn invalidate_all_here(&self) {
        self.inner.epochs.bump_all();
        self.inner.store.invalidate_all();
        self.inner.front.invalidated();
    }

    /// Drops every answer for `path`, on any host: a write another replica
    /// saw.
    #[cfg(feature = "redis")]
    fn invalidate_path_here(&self, path: &str) {
        self.inner.epochs.bump_path(path);
        let path: Box<str> = path.into();
        self.drop_entries(move |_, stored| {
            stored.iter().any(|variant| variant.target.path == path)
        });
    }

    /// Keeps a Redis tier behind this cache, and applies other replicas'
    /// invalidations here. Once: a cache spans one cluster.
    #[cfg(feature = "redis")]
    pub(crate) fn attach(&self, redis: &crate::redis::Redis) {
        use crate::redis::response::{Invalidated, ResponseTier};
        let weak = Arc::downgrade(&self.inner);
        self.inner.tier.get_or_init(|| {
            let tier = ResponseTier::new(redis);
            let listening = tier.listen(move |what| {
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let cache = ResponseCache { inner };
                match what {
                    Invalidated::All => cache.invalidate_all_here(),
                    Invalidated::Path(path) => cache.invalidate_path_here(path),
                }
            });
            (tier, listening)
        });
    }

    /// The Redis tier, if the layer spans replicas.
    #[cfg(feature = "redis")]
    pub(crate) fn tier(&self) -> Option<&crate::redis::response::ResponseTier> {
        self.inner.tier.get().map(|(tier, _)| tier)
    }

    #[cfg(feature = "redis")]
    fn tell_replicas(&self, what: crate::redis::response::Invalidated<'_>) {
        if let Some(tier) = self.tier() {
            tier.invalidate(what);
        }
    }

    fn drop_entries(
        &self,
        matches: impl Fn(&ShareKey<K>, &Stored) -> bool + Send + Sync + 'static,
    ) {
        // Fails only without `support_invalidation_closures`, which `new` sets.
        if let Err(error) = self.inner.store.invalidate_entries_if(matches) {
            tracing::error!(%error, "cache invalidation failed");
        }
        self.inner.front.invalidated();
    }

    /// What the cache did so far.
    pub fn stats(&self) -> CacheStats {
        let sums = self.inner.stats.sums();
        let count = |outcome: Counted| sums[outcome as usize];
        CacheStats {
            hits: count(Counted::Hit),
            stale: count(Counted::Stale),
            misses: count(Counted::Miss),
            passes: count(Counted::Pass),
            stored: sums[STORED],
            revalidated: sums[REVALIDATED],
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

/// Which of `variants` (newest first) to evict: see `add_variant`.
fn least_used(variants: &[Arc<CachedResponse>]) -> usize {
    let uses = |at: usize| variants[at].uses.load(Relaxed);
    let fewest = (0..variants.len()).map(uses).min().unwrap_or(0);
    let mut equals = (0..variants.len()).filter(|at| uses(*at) == fewest);
    let chosen = if fewest >= USE_COUNT_CAP {
        equals.next()
    } else {
        equals.next_back()
    };
    chosen.unwrap_or(0)
}

/// What one request through the cache counts as; its value is its
/// counter's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    Hit = 0,
    Stale,
    Miss,
    Pass,
}

impl<K> ResponseCache<K> {
    pub(crate) fn config(&self) -> &CacheConfig {
        &self.inner.config
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
