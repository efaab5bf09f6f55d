//! The framework-agnostic core: a table of keys in flight.
//!
//! Nothing here knows about HTTP. [`Flights`] hands out leases
//! ([`Flights::try_acquire`]) and runs one future per key for every caller that
//! asks while it runs ([`Flights::join`], [`Flights::join_or_lead`]).

mod call;
mod callers;
mod guard;
mod history;
mod inline;
mod lease;
mod memory;
#[cfg(all(test, shuttle))]
mod model;
mod options;
mod progress;
mod shards;
mod shutdown;
mod stats;
mod sync;
#[cfg(test)]
mod tests;

use std::{
    fmt,
    future::Future,
    hash::Hash,
    pin::Pin,
    sync::{Arc, PoisonError},
    task::{ready, Context, Poll},
    time::Duration,
};

use tokio::time::Instant;

use crate::time;

pub use call::{CallInfo, Joined};
pub use callers::{Leader, Peers, Waiter};
pub use guard::{LeaseGuard, LeaseHandle};
pub use lease::{FlightStatus, Holder, LeaseId, LeaseStore, Refused, StoreFuture, Unavailable};
pub use memory::MemoryStore;
pub use options::{CallOptions, FlightError, Outcome, Overloaded};
pub use progress::Progress;
pub use shutdown::Drained;
pub use stats::FlightStats;

#[cfg(feature = "cache")]
pub(crate) use shards::{count as stripe_count, stripe, Padded, Striped};
pub(crate) use stats::{Event, Stats};

pub(crate) use call::LeaseWatch;
use call::{Calls, Entered};
pub(crate) use guard::spawn_holding;
use guard::GuardTable;
use history::RunHistory;
pub(crate) use inline::{InlineLeader, Inlined};
use sync::{Mutex, MutexGuard};

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
/// # Shutdown
///
/// [`shutdown`](Self::shutdown) refuses new work, signals the jobs holding
/// leases ([`LeaseHandle::cancelled`]) and waits, up to a deadline, for them
/// to let go of their keys.
///
/// ```
/// use std::time::Duration;
/// use tower_singleflight::{flight::CallOptions, Flights};
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
    table: GuardTable<K>,
    history: Arc<RunHistory<K>>,
    calls: Arc<Calls<K, T>>,
    defaults: Defaults,
}

/// What leases taken without an explicit TTL use (the `Flight` extractor).
#[derive(Debug, Clone, Copy)]
struct Defaults {
    lease_ttl: Duration,
    retry_after: Duration,
}

impl<K, T> Clone for Flights<K, T> {
    fn clone(&self) -> Self {
        Self {
            table: self.table.clone(),
            history: Arc::clone(&self.history),
            calls: Arc::clone(&self.calls),
            defaults: self.defaults,
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
        let history = Arc::new(RunHistory::default());
        Self {
            table: GuardTable {
                store: Arc::new(store),
                stats: Arc::clone(&stats),
                history: Arc::clone(&history) as _,
            },
            history,
            calls: Arc::new(Calls::new(stats)),
            defaults: Defaults {
                lease_ttl: Duration::from_secs(5 * 60),
                retry_after: Duration::from_secs(1),
            },
        }
    }

    /// A table of keys that carry a keyed hash of their own, read by
    /// `hashed` rather than hashed again. Only for a table just made.
    pub(crate) fn hashed_by(mut self, hashed: fn(&K) -> u64) -> Self {
        if let Some(calls) = Arc::get_mut(&mut self.calls) {
            calls.hashed = Some(hashed);
        }
        self
    }

    /// The TTL of leases taken without one of their own, as by the `Flight`
    /// extractor. Default: 5 minutes; `Duration::MAX` means never.
    #[must_use]
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.defaults.lease_ttl = ttl;
        self
    }

    /// The `Retry-After` given to duplicates when this table has no history
    /// of the key's runs. Default: 1 second.
    #[must_use]
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.defaults.retry_after = after;
        self
    }

    /// The TTL of leases taken without one of their own.
    pub fn lease_ttl(&self) -> Duration {
        self.defaults.lease_ttl
    }

    /// When a duplicate of `key` should come back, with this table's default
    /// as the fallback; see [`retry_after`](Self::retry_after).
    pub fn retry_hint(&self, key: &K, holder: &Holder) -> Duration {
        self.retry_after(key, holder, self.defaults.retry_after)
    }

    /// Takes the key for `ttl`, or reports who holds it.
    ///
    /// The key stays held until the returned guard is dropped or `ttl`
    /// elapses, whichever comes first.
    ///
    /// Once the table is [shutting down](Self::shutdown), refused with
    /// [`Refused::Unavailable`] ([`Unavailable::is_shutting_down`]), the
    /// store not asked; an acquisition the store grants as the shutdown
    /// starts is given back and refused too.
    pub fn try_acquire(&self, key: K, ttl: Duration) -> Acquire<K> {
        let answer = if self.table.stats.shutdown.is_started() {
            StoreFuture::ready(Err(Refused::Unavailable(Unavailable::shutting_down())))
        } else {
            self.table.store.acquire(&key, ttl)
        };
        Acquire {
            answer,
            pending: Some((key, self.table.clone())),
        }
    }

    /// Takes the key for `ttl` and runs `job` in a spawned task that owns the
    /// lease: the key is held until the job ends, fails, panics or is aborted,
    /// whatever `job` keeps, or until the lease ends: `job` receives a
    /// [`LeaseHandle`], to report progress and to renew a long run.
    ///
    /// Resolves to the task's handle, or to why the key was not taken (its
    /// holder, usually; [`Refused::Unavailable`] once the table is
    /// [shutting down](Self::shutdown)). The job can watch
    /// [`LeaseHandle::cancelled`] to stop when it is.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_singleflight::{Flights, Progress};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let flights: Flights<String> = Flights::new();
    /// let ttl = Duration::from_secs(600);
    /// let job = flights
    ///     .spawn("reindex".to_owned(), ttl, |lease| async move {
    ///         lease.report(Progress::message("scanning")).await;
    ///         // ... the work ...
    ///     })
    ///     .await
    ///     .expect("nothing else reindexes");
    /// assert!(flights.spawn("reindex".to_owned(), ttl, |_| async {}).await.is_err());
    /// job.await.unwrap();
    /// # }
    /// ```
    pub async fn spawn<F, Fut>(
        &self,
        key: K,
        ttl: Duration,
        job: F,
    ) -> Result<tokio::task::JoinHandle<Fut::Output>, Refused>
    where
        F: FnOnce(LeaseHandle<K>) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let guard = self.try_acquire(key, ttl).await?;
        Ok(spawn_holding(guard, job))
    }

    /// The current holder of a key, if any; never an expired one.
    pub fn holder(&self, key: &K) -> StoreFuture<Option<Holder>> {
        self.table.store.holder(key)
    }

    /// Whether work runs for `key` now: `Running` with its progress, or
    /// `Idle`. Never `Running` once the holder is gone or its lease ended.
    pub async fn status(&self, key: &K) -> FlightStatus {
        self.holder(key).await.into()
    }

    /// Every key held now, with its holder.
    pub fn holders(&self) -> StoreFuture<Vec<(K, Holder)>> {
        self.table.store.list()
    }

    /// Ends the current holding of `key` at once and returns it: for an
    /// operator freeing a key whose holder is stuck. The old holder is locked
    /// out (its renewals fail, its drop frees nothing); the next holder gets
    /// the next generation.
    pub fn force_release(&self, key: &K) -> StoreFuture<Option<Holder>> {
        self.table.store.force_release(key, None)
    }

    /// Like [`force_release`](Self::force_release), but only if `lease` is
    /// still the holding: for an operator who decided on what they saw.
    pub fn force_release_if(&self, key: &K, lease: LeaseId) -> StoreFuture<Option<Holder>> {
        self.table.store.force_release(key, Some(lease))
    }

    /// The shared calls running now.
    pub fn calls(&self) -> Vec<(K, CallInfo)> {
        self.calls.snapshot()
    }

    /// The shared call running now for `key`, if any.
    pub fn call(&self, key: &K) -> Option<CallInfo> {
        self.calls.info(key)
    }

    /// When a duplicate should come back: how much longer this key's recent
    /// runs suggest the current one will take, or `fallback` when there is no
    /// history or the run is already longer than usual; never later than the
    /// holder's lease ends.
    pub fn retry_after(&self, key: &K, holder: &Holder, fallback: Duration) -> Duration {
        let expected = self
            .history
            .typical(key)
            .map(|typical| typical.saturating_sub(holder.running_for()))
            .filter(|remaining| !remaining.is_zero())
            .unwrap_or(fallback);
        expected.min(holder.expires_in())
    }

    /// Joins the flight running for `key`, or becomes its leader.
    ///
    /// The leader must call [`Leader::run`] (or drop the [`Leader`], which
    /// frees the key): followers wait for as long as it holds it unrun.
    /// Followers await their [`Waiter`]. Fails at once, starting nothing, when
    /// a bound of `options` is reached, or with [`Overloaded::ShuttingDown`]
    /// when a new flight would start on a table that is
    /// [shutting down](Self::shutdown) (joining a flight that runs still
    /// works: it costs no new work).
    pub fn join(&self, key: K, options: &CallOptions) -> Result<Joined<T>, Overloaded> {
        self.calls.join(key, options)
    }

    /// Leads a new flight for `key` unless one runs, without waiting on it:
    /// for background work such as a refresh. Returns `None` when a flight
    /// already runs (or a bound is reached, or the table is
    /// [shutting down](Self::shutdown)).
    pub fn try_lead(&self, key: K, options: &CallOptions) -> Option<Leader<T>> {
        self.calls.try_lead(key, options)
    }

    /// Runs `work` once for all concurrent callers of `key` and resolves to its
    /// shared outcome. `work` is only called by the leader.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use tower_singleflight::{flight::CallOptions, Flights};
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

    /// The key's hash in the table of shared calls, for
    /// [`enter_inline`](Self::enter_inline).
    pub(crate) fn key_hash(&self, key: &K) -> u64 {
        self.calls.hash(key)
    }

    /// Like [`join`](Self::join), for a leader that polls the work in its own
    /// future. `hash` is the key's [`key_hash`](Self::key_hash).
    pub(crate) fn enter_inline(
        &self,
        key: K,
        hash: u64,
        options: &CallOptions,
    ) -> Result<Inlined<K, T>, Overloaded> {
        Ok(match self.calls.enter(key, hash, options, true)? {
            Entered::Leader {
                completion,
                deadline,
                ..
            } => Inlined::Leader(InlineLeader::new(
                completion,
                deadline,
                options.abort_when_unused,
            )),
            Entered::Follower(waiter, watch, key) => Inlined::Follower(waiter, watch, key),
        })
    }

    /// Shuts the table down, for a graceful exit: refuses new work, signals
    /// the jobs, and waits up to `grace` for them to let go of their keys.
    ///
    /// - From the first call on, every clone of the table refuses new
    ///   leases: [`try_acquire`](Self::try_acquire) and
    ///   [`spawn`](Self::spawn) give [`Refused::Unavailable`]
    ///   ([`Unavailable::is_shutting_down`]); the `Flight` extractor and
    ///   reject mode answer `503 Service Unavailable` with `Retry-After`, and
    ///   the handler does not run. New shared flights are refused too
    ///   ([`Overloaded::ShuttingDown`]); callers joining a flight that runs
    ///   still get its outcome.
    /// - Every job holding a lease of the table is signalled:
    ///   [`LeaseHandle::is_cancelled`] turns `true` and
    ///   [`LeaseHandle::cancelled`] resolves. Stopping is up to the job.
    /// - Then it waits until every [`LeaseGuard`] of the table in this
    ///   process is dropped, or `grace` has passed, and says how many were
    ///   [`Drained::finished`] and [`Drained::still_running`] (these end with
    ///   the runtime, and a remote store frees their keys at their TTL).
    ///   Last, within the same `grace`, it waits for the releases a remote
    ///   store sends in the background ([`LeaseStore::flush`]), so that the
    ///   keys are free for the next process.
    ///
    /// An acquisition the store was still answering when the shutdown
    /// started is refused and gives the key back when its answer arrives,
    /// possibly after this returned (a remote store's answer that is never
    /// read leaves the key to its TTL, see [`LeaseStore`]).
    ///
    /// `Duration::MAX` waits as long as the jobs take. Calling it again, or
    /// from several tasks at once, is fine: each call waits on its own
    /// deadline and counts from its own start. There is no way back: a
    /// table that shut down stays shut.
    ///
    /// Shared calls ([`join_or_lead`](Self::join_or_lead)) are not waited
    /// for: their callers are (axum's graceful shutdown waits for the
    /// requests in flight). [`in_flight`](Self::in_flight) tells how many
    /// run.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use axum::{Extension, Router};
    /// use tower_singleflight::Flights;
    ///
    /// # async fn run(app: Router, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    /// let jobs: Flights<String> = Flights::new();
    /// let app = app.layer(Extension(jobs.clone()));
    /// axum::serve(listener, app)
    ///     .with_graceful_shutdown(async {
    ///         let _ = tokio::signal::ctrl_c().await;
    ///     })
    ///     .await?;
    /// // No more requests: tell the jobs to stop, and give them 10 seconds.
    /// let drained = jobs.shutdown(Duration::from_secs(10)).await;
    /// if !drained.is_complete() {
    ///     eprintln!("{} jobs did not stop in time", drained.still_running);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(&self, grace: Duration) -> Drained {
        let deadline = time::after(Instant::now(), grace);
        let stats = &self.table.stats;
        let alive_before = stats.leases_alive();
        stats.shutdown.start();
        let drained = stats.shutdown.drain(stats, deadline, alive_before).await;
        let flush = self.table.store.flush();
        if tokio::time::timeout_at(deadline, flush).await.is_err() {
            tracing::warn!("lease store did not send every release before the deadline");
        }
        tracing::info!(
            finished = drained.finished,
            still_running = drained.still_running,
            "flight table shut down"
        );
        drained
    }

    /// Whether [`shutdown`](Self::shutdown) was called on this table (or a
    /// clone): new work is refused. For a readiness endpoint, say.
    pub fn is_shutting_down(&self) -> bool {
        self.table.stats.shutdown.is_started()
    }

    /// How many shared calls are running now.
    pub fn in_flight(&self) -> usize {
        self.calls.len()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> FlightStats {
        self.table.stats.snapshot(self.in_flight())
    }

    /// The counters, for the HTTP layer to record what happens there.
    pub(crate) fn recorder(&self) -> Arc<Stats> {
        Arc::clone(&self.table.stats)
    }

    /// The counters, borrowed.
    pub(crate) fn counters(&self) -> &Stats {
        &self.table.stats
    }

    /// The table's instruments, for the HTTP layer (nothing without the
    /// `metrics` feature).
    #[inline]
    pub(crate) fn meter(&self) -> crate::metrics::Meter {
        crate::metrics::Meter::of(&self.table.stats)
    }

    /// The table's name, in metrics and traces.
    pub fn name(&self) -> std::sync::Arc<str> {
        self.table.stats.name.get()
    }

    /// Names the table, for the `layer` label of its metrics (feature
    /// `metrics`) and its traces: the table and every clone of it. Default:
    /// `"default"`. Name it while building it: its metrics are registered
    /// under the name it has when it first counts something.
    /// [`SingleFlightLayer::name`](crate::SingleFlightLayer::name) names
    /// the layer's table.
    #[must_use]
    pub fn with_name(self, name: impl Into<std::sync::Arc<str>>) -> Self {
        self.table.stats.name.set(name.into());
        self
    }
}

impl<K, T> fmt::Debug for Flights<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flights")
            .field("stats", &self.table.stats)
            .finish_non_exhaustive()
    }
}

/// The future of [`Flights::try_acquire`].
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<K: 'static> {
    answer: StoreFuture<Result<LeaseId, Refused>>,
    /// The key, and the table a guard will report to: moved into the
    /// guard, not cloned, when the key is taken.
    pending: Option<(K, GuardTable<K>)>,
}

/// What an acquisition came to, with the key kept when it was refused (to
/// estimate when to retry).
pub(crate) enum Settled<K: 'static> {
    Acquired(LeaseGuard<K>),
    Held(Holder, K),
    Unavailable(Unavailable),
}

impl<K: 'static> Acquire<K> {
    /// The answer if the store gave it at once (always, for [`MemoryStore`]);
    /// otherwise poll [`poll_settled`](Self::poll_settled).
    pub(crate) fn settle_now(&mut self) -> Option<Settled<K>> {
        let answer = self.answer.take_ready()?;
        Some(self.settle(answer))
    }

    pub(crate) fn poll_settled(&mut self, cx: &mut Context<'_>) -> Poll<Settled<K>> {
        let answer = ready!(Pin::new(&mut self.answer).poll(cx));
        Poll::Ready(self.settle(answer))
    }

    fn settle(&mut self, answer: Result<LeaseId, Refused>) -> Settled<K> {
        let (key, table) = self.pending.take().expect("Acquire settles once");
        match answer {
            Ok(lease) => {
                let guard = LeaseGuard::new(table, key, lease);
                // Read after the guard is counted (see `shutdown.rs`).
                if guard.is_cancelled() {
                    return give_back(guard);
                }
                guard.table().stats.record(Event::Led);
                Settled::Acquired(guard)
            }
            Err(Refused::Unavailable(unavailable)) if unavailable.is_shutting_down() => {
                tracing::debug!("the table is shutting down; refused");
                Settled::Unavailable(unavailable)
            }
            Err(Refused::Held(holder)) => {
                table.stats.record(Event::Rejected);
                tracing::debug!(generation = holder.generation(), "key already held");
                Settled::Held(holder, key)
            }
            Err(Refused::Unavailable(unavailable)) => {
                table.stats.record(Event::Unavailable);
                tracing::warn!(
                    reason = unavailable.reason(),
                    "lease store unavailable; refused"
                );
                Settled::Unavailable(unavailable)
            }
        }
    }
}

/// A lease the store granted as the table started shutting down: given
/// back, and refused. Out of line: a lease's common path stays short.
#[cold]
#[inline(never)]
fn give_back<K: 'static>(guard: LeaseGuard<K>) -> Settled<K> {
    drop(guard);
    tracing::debug!("lease taken as the table shuts down; given back");
    Settled::Unavailable(Unavailable::shutting_down())
}

impl<K: 'static> Future for Acquire<K> {
    type Output = Result<LeaseGuard<K>, Refused>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match ready!(self.poll_settled(cx)) {
            Settled::Acquired(guard) => Ok(guard),
            Settled::Held(holder, _) => Err(Refused::Held(holder)),
            Settled::Unavailable(unavailable) => Err(Refused::Unavailable(unavailable)),
        })
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

/// A key's digest, as traces show it: the same for the same key within one
/// process, so that a flight's events can be followed, and keyed with a
/// random key per process, so that no key can be found from it.
pub(crate) fn digest<K: Hash + ?Sized>(key: &K) -> u64 {
    use std::{hash::BuildHasher, sync::OnceLock};
    // An unkeyed hash would let whoever reads the traces find a key by
    // hashing guesses: an IP address, a user id.
    static KEY: OnceLock<std::hash::RandomState> = OnceLock::new();
    KEY.get_or_init(std::hash::RandomState::new).hash_one(key)
}

/// A key as traces name it: its [`digest`] in hex, computed only when an
/// event or span that shows it is written.
pub(crate) struct KeyDigest<'a, K: ?Sized>(pub(crate) &'a K);

impl<K: Hash + ?Sized> fmt::Display for KeyDigest<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", digest(self.0))
    }
}

/// Locks a table, ignoring poison: no code that can panic runs under these
/// locks, and a request path must never panic because another one did.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
