//! The framework-agnostic core: a table of keys in flight.
//!
//! Nothing here knows about HTTP. [`Flights`] hands out leases
//! ([`Flights::try_acquire`]) and runs one future per key for every caller that
//! asks while it runs ([`Flights::join`], [`Flights::join_or_lead`]).

mod call;
mod guard;
mod lease;
mod memory;
mod stats;
#[cfg(test)]
mod tests;

use std::{
    fmt,
    future::Future,
    hash::Hash,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{ready, Context, Poll},
    time::Duration,
};

pub use call::{CallOptions, FlightError, Joined, Leader, Outcome, Overloaded, Waiter};
pub use guard::LeaseGuard;
pub use lease::{Holder, LeaseId, LeaseStore, StoreFuture};
pub use memory::MemoryStore;
pub use stats::FlightStats;

pub(crate) use stats::{Event, Stats};

use call::Calls;

/// A table of keys in flight: leases for work that must not run twice, and
/// shared calls whose one outcome every concurrent caller receives.
///
/// `K` is the key; `T` is the value shared calls produce (leave it `()` when
/// you only take leases). Cloning a `Flights` is cheap and shares the table.
///
/// # Concurrent calls on the same key
///
/// [`try_acquire`](Self::try_acquire) gives the key to one caller at a time;
/// the others learn who holds it ([`Holder`]) and can answer "already
/// running". [`join_or_lead`](Self::join_or_lead) runs the work once; every
/// caller that arrives while it runs receives the same `Arc<T>`.
///
/// # Cancellation
///
/// A lease is freed when its [`LeaseGuard`] is dropped, whatever the reason.
/// A shared call runs in a spawned task: a caller that stops waiting does not
/// cancel it (see [`CallOptions::abort_when_unused`]).
///
/// # Panics
///
/// A panic in shared work gives every waiter [`FlightError::Panicked`] and
/// frees the key; a panic while holding a lease drops the guard, which frees
/// the key.
///
/// # Timeouts
///
/// A lease ends at its TTL: the key is free again and the old guard is stale.
/// A shared call ends at its [lease](CallOptions::lease): the work is
/// aborted and its waiters get [`FlightError::TimedOut`].
///
/// ```
/// use std::time::Duration;
/// use tower_singleflight::{CallOptions, Flights};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let flights: Flights<&str, u64> = Flights::new();
///
/// // A lease: the second caller is told the key is held.
/// let guard = flights.try_acquire("rebuild", Duration::from_secs(60)).await.unwrap();
/// assert!(flights.try_acquire("rebuild", Duration::from_secs(60)).await.is_err());
/// drop(guard);
///
/// // A shared call: every concurrent caller gets the one result.
/// let total = flights
///     .join_or_lead("total", &CallOptions::default(), || async { 42 })
///     .await
///     .unwrap();
/// assert_eq!(*total, 42);
/// # }
/// ```
pub struct Flights<K, T = ()> {
    store: Arc<dyn LeaseStore<K>>,
    calls: Arc<Calls<K, T>>,
    stats: Arc<Stats>,
}

impl<K, T> Clone for Flights<K, T> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            calls: Arc::clone(&self.calls),
            stats: Arc::clone(&self.stats),
        }
    }
}

impl<K, T> Default for Flights<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, T> Flights<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    /// An empty table keeping its leases in this process.
    pub fn new() -> Self {
        Self::with_store(MemoryStore::new())
    }

    /// An empty table keeping its leases in `store`.
    pub fn with_store(store: impl LeaseStore<K>) -> Self {
        let stats = Arc::new(Stats::default());
        Self {
            store: Arc::new(store),
            calls: Arc::new(Calls::new(Arc::clone(&stats))),
            stats,
        }
    }

    /// Takes the key for `ttl`, or reports who holds it.
    ///
    /// The key stays held until the returned guard is dropped or `ttl`
    /// elapses, whichever comes first.
    pub fn try_acquire(&self, key: K, ttl: Duration) -> Acquire<K> {
        Acquire {
            answer: self.store.acquire(&key, ttl),
            key: Some(key),
            store: Arc::clone(&self.store),
            stats: Arc::clone(&self.stats),
        }
    }

    /// The current holder of a key, if any; never an expired one.
    pub fn holder(&self, key: &K) -> StoreFuture<Option<Holder>> {
        self.store.holder(key)
    }

    /// Joins the flight running for `key`, or becomes its leader.
    ///
    /// The leader must call [`Leader::run`] (or drop the [`Leader`], which
    /// frees the key): followers wait for as long as it holds it unrun.
    /// Followers await their [`Waiter`]. Fails at once, starting nothing, when
    /// a bound of `options` is reached.
    pub fn join(&self, key: K, options: &CallOptions) -> Result<Joined<T>, Overloaded> {
        self.calls.join(key, options)
    }

    /// Runs `work` once for all concurrent callers of `key` and resolves to its
    /// shared outcome. `work` is only called by the leader.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use tower_singleflight::{CallOptions, Flights};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// static RUNS: AtomicUsize = AtomicUsize::new(0);
    /// let flights: Flights<u32, String> = Flights::new();
    /// let options = CallOptions::default();
    /// let (a, b) = tokio::join!(
    ///     flights.join_or_lead(7, &options, || async {
    ///         RUNS.fetch_add(1, Ordering::SeqCst);
    ///         tokio::task::yield_now().await;
    ///         "report".to_string()
    ///     }),
    ///     flights.join_or_lead(7, &options, || async { unreachable!("already running") }),
    /// );
    /// assert_eq!((a.unwrap(), b.unwrap()), ("report".to_string().into(), "report".to_string().into()));
    /// assert_eq!(RUNS.load(Ordering::SeqCst), 1);
    /// # }
    /// ```
    pub async fn join_or_lead<F, Fut>(&self, key: K, options: &CallOptions, work: F) -> Outcome<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        match self.join(key, options) {
            Ok(Joined::Leader(leader)) => leader.run(work()).await,
            Ok(Joined::Follower(waiter)) => waiter.await,
            Err(overloaded) => Err(FlightError::Overloaded(overloaded)),
        }
    }

    /// How many shared calls are running now.
    pub fn in_flight(&self) -> usize {
        self.calls.len()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> FlightStats {
        self.stats.snapshot(self.in_flight())
    }

    /// The counters, for the HTTP layer to record what happens there.
    pub(crate) fn recorder(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }
}

impl<K, T> fmt::Debug for Flights<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flights")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The future of [`Flights::try_acquire`].
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<K: 'static> {
    answer: StoreFuture<Result<LeaseId, Holder>>,
    key: Option<K>,
    store: Arc<dyn LeaseStore<K>>,
    stats: Arc<Stats>,
}

impl<K: 'static> Acquire<K> {
    /// The answer if the store gave it at once (always, for [`MemoryStore`]).
    pub(crate) fn now_or_later(mut self) -> Result<Result<LeaseGuard<K>, Holder>, Self> {
        match self.answer.take_ready() {
            Some(answer) => Ok(self.settle(answer)),
            None => Err(self),
        }
    }

    fn settle(&mut self, answer: Result<LeaseId, Holder>) -> Result<LeaseGuard<K>, Holder> {
        match answer {
            Ok(lease) => {
                self.stats.record(Event::Led);
                let key = self.key.take().expect("Acquire settles once");
                Ok(LeaseGuard::new(
                    Arc::clone(&self.store),
                    Arc::clone(&self.stats),
                    key,
                    lease,
                ))
            }
            Err(holder) => {
                self.stats.record(Event::Rejected);
                tracing::debug!(generation = holder.generation(), "key already held");
                Err(holder)
            }
        }
    }
}

impl<K: 'static> Future for Acquire<K> {
    type Output = Result<LeaseGuard<K>, Holder>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let answer = ready!(Pin::new(&mut self.answer).poll(cx));
        Poll::Ready(self.settle(answer))
    }
}

impl<K: 'static> Unpin for Acquire<K> {}

impl<K: 'static> fmt::Debug for Acquire<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("answer", &self.answer)
            .finish_non_exhaustive()
    }
}

/// Locks a table, ignoring poison: no code that can panic runs under these
/// locks, and a request path must never panic because another one did.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
