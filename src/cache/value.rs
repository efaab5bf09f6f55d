//! `ValueCache`: computed values, one computation per key at a time.

use std::{
    fmt,
    future::Future,
    hash::Hash,
    marker::PhantomData,
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use futures_util::FutureExt;
use moka::future::Cache;
use tokio::time::Instant;

use super::freshness::{Freshness, Windows};
use crate::{
    flight::{CallOptions, FlightError, Flights, Inlined, Outcome, Striped},
    time,
};

/// A cache of computed values (a site-wide total, a paid API's answer) that
/// computes each missing key once, however many callers ask at the same time.
///
/// ```
/// use std::time::Duration;
/// use tower_singleflight::{cache::Peek, ValueCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let totals: ValueCache<&str, u64, std::io::Error> = ValueCache::builder()
///     .ttl(Duration::from_secs(60))
///     .stale_while_revalidate(Duration::from_secs(600))
///     .build();
///
/// let total = totals.get_or_compute("site", || async { Ok(42) }).await.unwrap();
/// assert_eq!(total, 42);
/// assert_eq!(totals.peek(&"site").await, Peek::Fresh(42));
/// # }
/// ```
///
/// # Concurrent calls on the same key
///
/// The first caller's computation runs; every caller that asks meanwhile
/// gets its result. An error reaches those callers and is not stored: the
/// next call computes again.
///
/// # Cancellation
///
/// The computation runs in its own task: a caller that stops waiting does not
/// cancel it, and the value is stored for the next caller.
///
/// That is why the computation must be `'static`, where moka's `get_with`
/// takes one that borrows: a future that borrows from its caller cannot
/// outlive it, so it could not finish for the other waiters once its caller
/// left, nor refresh a stale value in the background. Move in clones (an
/// `Arc` of a pool or a client) instead of references, or use
/// [`get_or_compute_inline`](Self::get_or_compute_inline), which runs a
/// borrowing computation in its caller's own future.
///
/// # Panics
///
/// A computation that panics gives its waiters [`ValueError::Panicked`] and
/// leaves nothing behind: [`peek`](Self::peek) never says `Computing` for it.
///
/// # Timeouts
///
/// A computation that outlives [`compute_timeout`](ValueCacheBuilder::compute_timeout)
/// is aborted, its waiters get [`ValueError::TimedOut`] and the key is free.
pub struct ValueCache<K, V, E> {
    inner: Arc<Inner<K, V, E>>,
}

struct Inner<K, V, E> {
    store: Cache<K, Arc<StoredValue<V>>>,
    /// Bumped by every invalidation: a value computed across one is not
    /// stored.
    invalidations: Arc<AtomicU64>,
    flights: Flights<K, Result<V, Arc<E>>>,
    /// The computations `get_or_compute_inline` runs in its callers' own
    /// futures. A table of their own: a detached caller must never wait on
    /// a leader whose future may be parked (nothing would end its flight at
    /// the timeout) or dropped (it would get `Abandoned`).
    inline: Flights<K, Result<V, Arc<E>>>,
    windows: Windows,
    options: CallOptions,
    stats: Arc<Counters>,
    /// The Redis tier, and the subscription that drops local copies.
    #[cfg(feature = "redis")]
    remote: Option<Remote<K, V>>,
}

/// A Redis tier, and what keeps this cache listening to invalidations.
#[cfg(feature = "redis")]
struct Remote<K, V> {
    tier: Arc<dyn crate::redis::value::Remote<K, V>>,
    _listening: Arc<dyn Send + Sync>,
}

#[derive(Debug)]
struct StoredValue<V> {
    value: V,
    stored_at: Instant,
}

/// What [`ValueCache::peek`] sees for a key, without waiting for anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek<V> {
    /// A value within its TTL.
    Fresh(V),
    /// A value past its TTL, still within a stale window.
    Stale(V),
    /// No usable value; a computation is running.
    Computing {
        /// When it started.
        since: Instant,
    },
    /// No usable value, and nothing computes one.
    Missing,
}

/// What [`ValueCache::find`] found.
enum Found<V> {
    Fresh(V),
    /// Past its TTL, within `stale_while_revalidate`.
    Revalidate(Arc<StoredValue<V>>),
    /// Past that, within `stale_if_error`.
    IfError(Arc<StoredValue<V>>),
    Nothing,
}

/// What a computation's flight gave its callers.
type Computed<V, E> = Outcome<Result<V, Arc<E>>>;

/// Why [`ValueCache::get_or_compute`] has no value.
///
/// With `E: std::error::Error`, it is an error too: `?` turns it into a
/// `Box<dyn Error>` or an `anyhow::Error`, with the computation's error as
/// its [`source`](std::error::Error::source). Into your own error type, say
/// how once:
///
/// ```
/// use std::sync::Arc;
/// use tower_singleflight::{cache::ValueError, ValueCache};
///
/// #[derive(Debug)]
/// enum AppError {
///     Database(Arc<std::io::Error>),
///     Busy,
/// }
///
/// impl From<ValueError<std::io::Error>> for AppError {
///     fn from(error: ValueError<std::io::Error>) -> Self {
///         match error.into_failure() {
///             Ok(database) => Self::Database(database),
///             Err(_) => Self::Busy, // panicked, timed out, overloaded
///         }
///     }
/// }
///
/// async fn total(cache: &ValueCache<&'static str, u64, std::io::Error>) -> Result<u64, AppError> {
///     Ok(cache.get_or_compute("site", || async { Ok(42) }).await?)
/// }
/// # let _ = total;
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ValueError<E> {
    /// The computation failed; every waiter shares its error.
    Failed(Arc<E>),
    /// The computation panicked.
    Panicked,
    /// The computation outlived its timeout.
    TimedOut,
    /// The computation was dropped before it finished (the runtime shut
    /// down).
    Abandoned,
    /// Too many callers or computations at once.
    Overloaded,
}

impl<E> ValueError<E> {
    /// The computation's own error, when it [failed](Self::Failed).
    pub fn failure(&self) -> Option<&E> {
        match self {
            Self::Failed(error) => Some(error),
            _ => None,
        }
    }

    /// The computation's own error, shared with every caller that waited
    /// for it, when it [failed](Self::Failed); `Err(self)` otherwise.
    pub fn into_failure(self) -> Result<Arc<E>, Self> {
        match self {
            Self::Failed(error) => Ok(error),
            other => Err(other),
        }
    }
}

impl<E> Clone for ValueError<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Failed(error) => Self::Failed(Arc::clone(error)),
            Self::Panicked => Self::Panicked,
            Self::TimedOut => Self::TimedOut,
            Self::Abandoned => Self::Abandoned,
            Self::Overloaded => Self::Overloaded,
        }
    }
}

impl<E: fmt::Display> fmt::Display for ValueError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(error) => write!(f, "computation failed: {error}"),
            Self::Panicked => f.write_str("computation panicked"),
            Self::TimedOut => f.write_str("computation timed out"),
            Self::Abandoned => f.write_str("computation was dropped"),
            Self::Overloaded => f.write_str("too many computations or callers"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ValueError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Failed(error) => Some(&**error),
            _ => None,
        }
    }
}

/// What a [`ValueCache`] did, counted exactly since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ValueCacheStats {
    /// Calls answered with a fresh value.
    pub hits: u64,
    /// Calls that had to wait for a computation.
    pub misses: u64,
    /// Calls answered with a stale value.
    pub stale: u64,
    /// Computations started.
    pub computations: u64,
    /// Computations that failed, panicked or timed out.
    pub errors: u64,
}

/// The cache's counters, striped so that cores counting hits of one hot
/// key do not write one line.
type Counters = Striped<5>;
const HITS: usize = 0;
const MISSES: usize = 1;
const STALE: usize = 2;
const COMPUTATIONS: usize = 3;
const ERRORS: usize = 4;

/// Builds a [`ValueCache`].
#[must_use]
pub struct ValueCacheBuilder<K, V, E> {
    windows: Windows,
    max_entries: u64,
    options: CallOptions,
    types: Types<K, V, E>,
    #[cfg(feature = "redis")]
    tier: Option<Arc<dyn crate::redis::value::Remote<K, V>>>,
}

/// The cache's types, owned by nothing yet.
type Types<K, V, E> = PhantomData<fn() -> (K, V, E)>;

impl<K, V, E> fmt::Debug for ValueCacheBuilder<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueCacheBuilder")
            .field("windows", &self.windows)
            .field("max_entries", &self.max_entries)
            .field("options", &self.options)
            .finish()
    }
}

impl<K, V, E> ValueCacheBuilder<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// How long a value is fresh. `Duration::MAX` means never stale.
    /// Default: 60 seconds.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.windows.fresh = ttl;
        self
    }

    /// After the TTL, how long the stale value is returned at once while one
    /// computation refreshes it in the background. `Duration::MAX` means for
    /// ever. Default: none.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.windows.stale_while_revalidate = window;
        self
    }

    /// After the TTL, how long the stale value is returned when its
    /// recomputation fails. `Duration::MAX` means for ever. Default: none.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.windows.stale_if_error = window;
        self
    }

    /// How long a computation may run before it is aborted. `Duration::MAX`
    /// means no limit. Default: 5 minutes.
    pub fn compute_timeout(mut self, timeout: Duration) -> Self {
        self.options = self.options.lease(timeout);
        self
    }

    /// How many keys are kept at most. Default: 10,000.
    pub fn max_entries(mut self, max: u64) -> Self {
        self.max_entries = max;
        self
    }

    /// The cache.
    pub fn build(self) -> ValueCache<K, V, E> {
        // Kept a second past its last use; "never" is what moka can take.
        let lifetime = time::capped(time::sum(self.windows.lifetime(), Duration::from_secs(1)));
        let store: Cache<K, Arc<StoredValue<V>>> = Cache::builder()
            .max_capacity(self.max_entries)
            .time_to_live(lifetime)
            .build();
        let invalidations: Arc<AtomicU64> = Arc::default();
        #[cfg(feature = "redis")]
        let remote = self.tier.map(|tier| {
            let (local, epoch) = (store.clone(), Arc::clone(&invalidations));
            // Another replica invalidated a key: drop the local copy, and
            // keep a computation running across it from storing.
            let listening = tier.on_invalidation(Box::new(move |key: Option<K>| {
                epoch.fetch_add(1, Relaxed);
                match key {
                    Some(key) => {
                        let local = local.clone();
                        tokio::spawn(async move { local.invalidate(&key).await });
                    }
                    None => local.invalidate_all(),
                }
            }));
            Remote {
                tier,
                _listening: listening,
            }
        });
        ValueCache {
            inner: Arc::new(Inner {
                store,
                invalidations,
                flights: Flights::new(),
                inline: Flights::new(),
                windows: self.windows,
                options: self.options,
                stats: Arc::default(),
                #[cfg(feature = "redis")]
                remote,
            }),
        }
    }
}

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
impl<K, V, E> ValueCacheBuilder<K, V, E>
where
    K: serde::Serialize + serde::de::DeserializeOwned + Hash + Eq + Clone + Send + Sync + 'static,
    V: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Keeps a Redis tier behind the local one, shared by every replica; see
    /// [`ValueTier`](crate::redis::ValueTier).
    pub fn redis(mut self, tier: crate::redis::ValueTier) -> Self {
        self.tier = Some(Arc::new(crate::redis::value::RemoteValues::new(tier)));
        self
    }
}

impl<K, V, E> ValueCache<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Settings, then [`build`](ValueCacheBuilder::build).
    pub fn builder() -> ValueCacheBuilder<K, V, E> {
        ValueCacheBuilder {
            windows: Windows {
                fresh: Duration::from_secs(60),
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
            },
            max_entries: 10_000,
            options: CallOptions::default(),
            types: PhantomData,
            #[cfg(feature = "redis")]
            tier: None,
        }
    }

    /// The value for `key`: stored, or computed once by `compute` for every
    /// caller that asks meanwhile. See the type's docs.
    pub async fn get_or_compute<F, Fut>(&self, key: K, compute: F) -> Result<V, ValueError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let inner = &self.inner;
        let stale = match self.find(&key).await {
            Found::Fresh(value) => return Ok(value),
            Found::Revalidate(stored) => {
                inner.stats.add(STALE);
                self.refresh(key, compute);
                return Ok(stored.value.clone());
            }
            Found::IfError(stored) => Some(stored),
            Found::Nothing => None,
        };
        inner.stats.add(MISSES);
        let outcome = inner
            .flights
            .join_or_lead(key.clone(), &inner.options, || {
                self.computation(key, compute())
            })
            .await;
        self.settle(outcome, stale)
    }

    /// Like [`get_or_compute`](Self::get_or_compute), for a computation that
    /// borrows from its caller (moka's `get_with` takes those too): it runs
    /// in this caller's own future, not detached.
    ///
    /// What that changes, and only that:
    ///
    /// - A caller that leads the computation and stops waiting drops it; one
    ///   of the callers still waiting then computes with its own `compute`.
    ///   Nothing is stored until a computation finishes.
    /// - A stale value within `stale_while_revalidate` is refreshed by the
    ///   first caller that finds it, which waits for the fresh value; the
    ///   others get the stale one at once, as with `get_or_compute`.
    ///
    /// One computation per key at a time, the timeout, errors never stored,
    /// `stale_if_error`, a panic answering every waiter: as `get_or_compute`.
    /// Inline callers never wait on a detached computation, nor detached
    /// callers on an inline one (a caller's future may be parked or dropped
    /// at any time): a key asked both ways at once may be computed once each
    /// way.
    ///
    /// ```
    /// use tower_singleflight::ValueCache;
    ///
    /// struct Database { total: u64 }
    ///
    /// impl Database {
    ///     async fn count(&self) -> Result<u64, std::io::Error> { Ok(self.total) }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache: ValueCache<&str, u64, std::io::Error> = ValueCache::builder().build();
    /// let database = Database { total: 42 };
    /// // `database` is borrowed, not moved nor wrapped in an `Arc`.
    /// let total = cache.get_or_compute_inline("site", || database.count()).await;
    /// assert_eq!(total.ok(), Some(42));
    /// # }
    /// ```
    pub async fn get_or_compute_inline<F, Fut>(
        &self,
        key: K,
        compute: F,
    ) -> Result<V, ValueError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send,
    {
        let inner = &self.inner;
        let stale = match self.find(&key).await {
            Found::Fresh(value) => return Ok(value),
            // Whoever refreshes waits for it; the others don't.
            Found::Revalidate(stored) if inner.computing(&key).is_some() => {
                inner.stats.add(STALE);
                return Ok(stored.value.clone());
            }
            Found::Revalidate(stored) | Found::IfError(stored) => Some(stored),
            Found::Nothing => None,
        };
        inner.stats.add(MISSES);
        let outcome = self.lead_or_wait_inline(key, compute).await;
        self.settle(outcome, stale)
    }

    /// What the store has for `key` now; a fresh value counts as a hit.
    async fn find(&self, key: &K) -> Found<V> {
        let inner = &self.inner;
        let Some(stored) = inner.store.get(key).await else {
            return Found::Nothing;
        };
        match inner.windows.at(stored.stored_at, Instant::now()) {
            Freshness::Fresh => {
                inner.stats.add(HITS);
                Found::Fresh(stored.value.clone())
            }
            Freshness::Revalidate => Found::Revalidate(stored),
            Freshness::IfError => Found::IfError(stored),
            Freshness::Expired => Found::Nothing,
        }
    }

    /// Leads the key's computation in this future, or waits for the one
    /// running; enters again if its leader was dropped.
    async fn lead_or_wait_inline<F, Fut>(&self, key: K, compute: F) -> Computed<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send,
    {
        let flights = &self.inner.inline;
        loop {
            let hash = flights.key_hash(&key);
            match flights.enter_inline(key.clone(), hash, &self.inner.options) {
                Err(overloaded) => return Err(FlightError::Overloaded(overloaded)),
                Ok(Inlined::Leader(leader)) => {
                    let work = AssertUnwindSafe(self.computation(key, compute())).catch_unwind();
                    let outcome = match tokio::time::timeout_at(leader.deadline(), work).await {
                        Ok(Ok(result)) => Ok(result),
                        Ok(Err(_panic)) => Err(FlightError::Panicked),
                        Err(_elapsed) => Err(FlightError::TimedOut),
                    };
                    leader.finish(outcome.clone());
                    return outcome.map(Arc::new);
                }
                Ok(Inlined::Follower(waiter, watch, _)) => {
                    match tokio::time::timeout_at(watch.deadline(), waiter).await {
                        // Its leader left: enter again, maybe to lead.
                        Ok(Err(FlightError::Abandoned)) => continue,
                        Ok(outcome) => return outcome,
                        Err(_elapsed) => {
                            watch.expire();
                            return Err(FlightError::TimedOut);
                        }
                    }
                }
            }
        }
    }

    /// A flight's outcome as the caller's result, or the stale value kept
    /// for a failure.
    fn settle(
        &self,
        outcome: Computed<V, E>,
        stale: Option<Arc<StoredValue<V>>>,
    ) -> Result<V, ValueError<E>> {
        let error = match outcome {
            Ok(result) => match &*result {
                Ok(value) => return Ok(value.clone()),
                Err(error) => ValueError::Failed(Arc::clone(error)),
            },
            Err(FlightError::Panicked) => ValueError::Panicked,
            Err(FlightError::TimedOut) => ValueError::TimedOut,
            Err(FlightError::Overloaded(_)) => ValueError::Overloaded,
            Err(_) => ValueError::Abandoned,
        };
        match stale {
            Some(stored) => {
                self.inner.stats.add(STALE);
                Ok(stored.value.clone())
            }
            None => Err(error),
        }
    }

    /// What the cache has for `key` now, without computing or waiting for
    /// anything. Never `Computing` when no computation runs.
    pub async fn peek(&self, key: &K) -> Peek<V> {
        let inner = &self.inner;
        if let Some(stored) = inner.store.get(key).await {
            match inner.windows.at(stored.stored_at, Instant::now()) {
                Freshness::Fresh => return Peek::Fresh(stored.value.clone()),
                Freshness::Revalidate | Freshness::IfError => {
                    return Peek::Stale(stored.value.clone())
                }
                Freshness::Expired => {}
            }
        }
        match inner.computing(key) {
            Some(since) => Peek::Computing { since },
            None => Peek::Missing,
        }
    }

    /// Drops the value stored for `key`. A computation already running will
    /// not store its (possibly older) result.
    ///
    /// With a [Redis tier](ValueCacheBuilder::redis), the value is deleted
    /// there too and every replica drops its local copy.
    pub async fn invalidate(&self, key: &K) {
        self.inner.invalidations.fetch_add(1, Relaxed);
        self.inner.store.invalidate(key).await;
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.inner.remote {
            remote.tier.invalidate(key).await;
        }
    }

    /// What the cache did so far.
    pub fn stats(&self) -> ValueCacheStats {
        let sums = self.inner.stats.sums();
        ValueCacheStats {
            hits: sums[HITS],
            misses: sums[MISSES],
            stale: sums[STALE],
            computations: sums[COMPUTATIONS],
            errors: sums[ERRORS],
        }
    }

    /// Starts a background recomputation unless one runs; nobody waits.
    fn refresh<F, Fut>(&self, key: K, compute: F)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        // The refresh must survive its caller leaving at once.
        let options = self.inner.options.clone().abort_when_unused(false);
        if self.inner.inline.call(&key).is_some() {
            return; // an inline caller refreshes it
        }
        if let Some(leader) = self.inner.flights.try_lead(key.clone(), &options) {
            drop(leader.run(self.computation(key, compute())));
        }
    }

    /// The leader's work: compute, store a value, count an error. Runs in the
    /// flight's own task, or in an inline leader's future (then it may
    /// borrow: it lives as long as `Fut`).
    fn computation<Fut>(&self, key: K, work: Fut) -> impl Future<Output = Result<V, Arc<E>>> + Send
    where
        Fut: Future<Output = Result<V, E>> + Send,
    {
        let store = self.inner.store.clone();
        let windows = self.inner.windows;
        let invalidations = Arc::clone(&self.inner.invalidations);
        let local_epoch = invalidations.load(Relaxed);
        let stats = Arc::clone(&self.inner.stats);
        #[cfg(feature = "redis")]
        let remote = self
            .inner
            .remote
            .as_ref()
            .map(|remote| Arc::clone(&remote.tier));
        async move {
            // Another computation may have stored a value since the caller
            // looked; then this one has nothing to do.
            if let Some(stored) = store.get(&key).await {
                if windows.at(stored.stored_at, Instant::now()) == Freshness::Fresh {
                    return Ok(stored.value.clone());
                }
            }
            // Stored unless an invalidation came since the caller looked.
            let keep = |key: K, value: V, stored_at: Instant| {
                let (store, invalidated) =
                    (store.clone(), invalidations.load(Relaxed) != local_epoch);
                let stored = Arc::new(StoredValue { value, stored_at });
                async move {
                    if !invalidated {
                        store.insert(key, stored).await;
                    }
                }
            };
            #[cfg(feature = "redis")]
            let (work, remote) = match remote {
                Some(remote) => match across_replicas(&*remote, &key, windows, work).await {
                    Across::Found(value, stored_at) => {
                        keep(key, value.clone(), stored_at).await;
                        return Ok(value);
                    }
                    // Not stored: the flight may have begun before an
                    // invalidation this call came after.
                    Across::Shared(value) => return Ok(value),
                    Across::Compute(work, epoch, lease) => (work, Some((remote, epoch, lease))),
                },
                None => (work, None),
            };
            stats.add(COMPUTATIONS);
            let failure = CountFailure(Some(Arc::clone(&stats)));
            let result = work.await;
            match &result {
                Ok(value) => {
                    failure.disarm();
                    #[cfg(feature = "redis")]
                    if let Some((remote, epoch, lease)) = remote {
                        // Redis refuses it too if the key was invalidated
                        // since `epoch` was read.
                        let crossed = invalidations.load(Relaxed) != local_epoch;
                        if let (Some(epoch), false) = (epoch, crossed) {
                            remote.put(&key, value, windows.lifetime(), epoch).await;
                        }
                        if let Some(lease) = lease {
                            lease.publish(remote.encode(value)).await;
                        }
                    }
                    keep(key, value.clone(), Instant::now()).await;
                }
                Err(_) => drop(failure),
            }
            result.map_err(Arc::new)
        }
    }
}

/// What the Redis tier says of a missing value.
#[cfg(feature = "redis")]
enum Across<V, W> {
    /// Another replica stored it, at that instant: keep it here too.
    Found(V, Instant),
    /// The cluster leader's value: for this call and its waiters only.
    Shared(V),
    /// Compute it here; with the key's invalidation count in Redis (when it
    /// could be read) and the cluster's lease when this replica leads.
    Compute(
        W,
        Option<crate::redis::value::Epoch>,
        Option<crate::redis::flight::ClusterLease>,
    ),
}

/// Looks for the value in Redis, then takes the cluster's flight for it:
/// its leader's value, or the lease to compute it, or (Redis away) leave to
/// compute it alone.
#[cfg(feature = "redis")]
async fn across_replicas<K, V, W>(
    remote: &dyn crate::redis::value::Remote<K, V>,
    key: &K,
    windows: Windows,
    work: W,
) -> Across<V, W> {
    use crate::redis::flight::Turn;
    let epoch = match look(remote, key, windows).await {
        Looked::Fresh(value, stored_at) => return Across::Found(value, stored_at),
        Looked::Missing(epoch) => epoch,
    };
    let Some(ticket) = remote.ticket(key) else {
        return Across::Compute(work, epoch, None);
    };
    match ticket.turn().await {
        Turn::Answer(bytes) => match remote.decode(&bytes) {
            Some(value) => Across::Shared(value),
            None => Across::Compute(work, epoch, None),
        },
        // Another replica may have stored a fresh value between this one's
        // look and its taking the lease: then that is the answer.
        Turn::Lead(lease) => match look(remote, key, windows).await {
            Looked::Fresh(value, stored_at) => {
                lease.publish(remote.encode(&value)).await;
                Across::Found(value, stored_at)
            }
            Looked::Missing(epoch) => Across::Compute(work, epoch, Some(lease)),
        },
        Turn::Alone => Across::Compute(work, epoch, None),
    }
}

/// What a look at Redis found.
#[cfg(feature = "redis")]
enum Looked<V> {
    Fresh(V, Instant),
    /// Nothing fresh; the key's invalidation count, if Redis answered.
    Missing(Option<crate::redis::value::Epoch>),
}

/// The value in Redis, if it is fresh.
#[cfg(feature = "redis")]
async fn look<K, V>(
    remote: &dyn crate::redis::value::Remote<K, V>,
    key: &K,
    windows: Windows,
) -> Looked<V> {
    let Some((epoch, found)) = remote.get(key).await else {
        return Looked::Missing(None);
    };
    if let Some((value, age)) = found {
        let now = Instant::now();
        let stored_at = now.checked_sub(age).unwrap_or(now);
        if windows.at(stored_at, now) == Freshness::Fresh {
            return Looked::Fresh(value, stored_at);
        }
    }
    Looked::Missing(Some(epoch))
}

/// Counts an error when dropped armed: a failed result, a panic, or the
/// computation being aborted at its timeout.
struct CountFailure(Option<Arc<Counters>>);

impl CountFailure {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CountFailure {
    fn drop(&mut self) {
        if let Some(stats) = self.0.take() {
            stats.add(ERRORS);
        }
    }
}

impl<K, V, E> Inner<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// When the computation running for `key` began, detached or inline.
    fn computing(&self, key: &K) -> Option<Instant> {
        let started =
            |flights: &Flights<K, Result<V, Arc<E>>>| flights.call(key).map(|c| c.started);
        started(&self.flights).or_else(|| started(&self.inline))
    }
}

impl<K, V, E> Clone for ValueCache<K, V, E> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V, E> fmt::Debug for ValueCache<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueCache")
            .field("windows", &self.inner.windows)
            .field("stats", &self.inner.stats)
            .finish_non_exhaustive()
    }
}
