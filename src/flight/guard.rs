//! Holding a key: the guard that frees it, and the handle that reports on it.

use std::{fmt, hash::Hash, ops::Deref, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use futures_util::FutureExt;
use tokio::time::Instant;

use super::{
    history::RecordRun,
    lease::{LeaseId, LeaseStore, StoreFuture},
    progress::Progress,
    stats::{Event, Stats},
};

/// Proof that the caller holds a key; dropping it frees the key.
///
/// Release happens in `Drop`, so completion, an error, a panic and the owning
/// task being cancelled all free the key. The guard is `Send + 'static` when
/// `K` is: move it into a spawned task to hold the key for as long as that
/// task runs.
///
/// A guard whose lease has expired (or was force-released) is stale: its drop
/// does nothing to whoever holds the key now.
///
/// It dereferences to its [`LeaseHandle`], to report progress or renew.
pub struct LeaseGuard<K: 'static> {
    handle: LeaseHandle<K>,
    acquired: Instant,
}

/// A view of one holding, to report progress and renew the lease; cheap to
/// clone, and dropping it frees nothing (the [`LeaseGuard`] does that).
pub struct LeaseHandle<K: 'static> {
    table: GuardTable<K>,
    key: K,
    lease: LeaseId,
}

/// The parts of the table a guard reports to.
pub(crate) struct GuardTable<K> {
    pub(crate) store: Arc<dyn LeaseStore<K>>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) history: Arc<dyn RecordRun<K>>,
}

impl<K> Clone for GuardTable<K> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            stats: Arc::clone(&self.stats),
            history: Arc::clone(&self.history),
        }
    }
}

impl<K: 'static> LeaseGuard<K> {
    // Inlined into `Acquire`: as a call, it costs a lease 3% more.
    #[inline]
    pub(crate) fn new(table: GuardTable<K>, key: K, lease: LeaseId) -> Self {
        table.stats.lease_taken();
        tracing::debug!(generation = lease.generation(), "lease acquired");
        Self {
            handle: LeaseHandle { table, key, lease },
            acquired: Instant::now(),
        }
    }

    /// The table it reports to.
    pub(super) fn table(&self) -> &GuardTable<K> {
        &self.handle.table
    }

    /// A handle on this holding, for code that reports progress but must not
    /// decide when the key is freed.
    pub fn handle(&self) -> LeaseHandle<K>
    where
        K: Clone,
    {
        self.handle.clone()
    }
}

impl<K: 'static> Deref for LeaseGuard<K> {
    type Target = LeaseHandle<K>;

    fn deref(&self) -> &LeaseHandle<K> {
        &self.handle
    }
}

impl<K: 'static> Drop for LeaseGuard<K> {
    fn drop(&mut self) {
        let LeaseHandle { table, key, lease } = &self.handle;
        // Only runs that ended while holding their key say how long runs
        // take (a hung or force-released one would skew `Retry-After`), and
        // only keys that get duplicates need to know.
        let released = table.store.release(key, *lease);
        if released.is_some_and(|holder| holder.was_contended()) {
            table.history.record(key, self.acquired.elapsed());
        }
        table.stats.lease_dropped(self.acquired);
        table.stats.shutdown.released();
        tracing::debug!(generation = lease.generation(), "lease released");
    }
}

impl<K: 'static> LeaseHandle<K> {
    /// The key held.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// This holding's id.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// This holding's fencing token: greater than every token given before
    /// it by the same store, across replicas for a shared store. (A lease a
    /// shared store could only take in this process, under
    /// [`WhenUnavailable::LocalLease`](crate::redis::WhenUnavailable), has
    /// this process's own token and does not keep that promise: fail closed
    /// where fencing matters.)
    ///
    /// A lease can end while its holder still runs (a pause, a hang, a
    /// network partition), and the key pass to another holder. Pass the token
    /// with every write to the resource the work changes, and let the
    /// resource refuse a token older than the last one it saw, so a holder
    /// that lost its lease cannot overwrite its successor's work:
    ///
    /// ```sql
    /// UPDATE phases SET state = $2, fence = $1
    ///  WHERE id = $3 AND fence < $1;   -- 0 rows: a newer holder wrote
    /// ```
    pub fn fencing_token(&self) -> u64 {
        self.lease.token()
    }

    /// Extends the lease to `ttl` from now. Resolves to `false` when this
    /// holding no longer holds the key (expired, force-released, taken over).
    pub fn renew(&self, ttl: Duration) -> StoreFuture<bool> {
        self.table.store.renew(&self.key, self.lease, ttl)
    }

    /// Reports how far the work has got; duplicates see it in their `409`.
    /// Resolves to `false` when this holding no longer holds the key.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_singleflight::{Flights, Progress};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let flights: Flights<&str> = Flights::new();
    /// let guard = flights.try_acquire("import", Duration::from_secs(60)).await.unwrap();
    /// for step in 0..3 {
    ///     guard.report(Progress::steps(step, 3)).await;
    ///     // ... one step of the work ...
    /// }
    /// # }
    /// ```
    pub fn report(&self, progress: Progress) -> StoreFuture<bool> {
        self.table
            .store
            .set_progress(&self.key, self.lease, progress)
    }

    /// Whether the table is shutting down ([`Flights::shutdown`]): the job
    /// should stop soon, leaving its work where it can be resumed, and drop
    /// its guard. Cheap enough to ask between any two steps.
    ///
    /// Not set when only this lease ends (expired, force-released): then
    /// [`renew`](Self::renew) and [`report`](Self::report) answer `false`.
    ///
    /// [`Flights::shutdown`]: super::Flights::shutdown
    pub fn is_cancelled(&self) -> bool {
        self.table.stats.shutdown.is_started()
    }

    /// Resolves once the table starts shutting down (at once if it has):
    /// [`is_cancelled`](Self::is_cancelled) as a future, to race a step of
    /// the work against.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_singleflight::Flights;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let flights: Flights<&str> = Flights::new();
    /// # async fn copy_next_batch() -> bool {
    /// #     tokio::time::sleep(Duration::from_millis(10)).await;
    /// #     true
    /// # }
    /// let job = flights
    ///     .spawn("export", Duration::from_secs(600), |lease| async move {
    ///         loop {
    ///             tokio::select! {
    ///                 () = lease.cancelled() => return "stopped: resumes from the last batch",
    ///                 more = copy_next_batch() => if !more { return "done" },
    ///             }
    ///         }
    ///     })
    ///     .await
    ///     .unwrap();
    /// let drained = flights.shutdown(Duration::from_secs(10)).await;
    /// assert_eq!(drained.still_running, 0);
    /// assert_eq!(job.await.unwrap(), "stopped: resumes from the last batch");
    /// # }
    /// ```
    pub async fn cancelled(&self) {
        self.table.stats.shutdown.cancelled().await;
    }

    /// Resolves to whether this holding is still the key's current one.
    pub async fn is_current(&self) -> bool {
        self.table
            .store
            .holder(&self.key)
            .await
            .is_some_and(|holder| holder.lease() == self.lease)
    }
}

impl<K: Clone + 'static> Clone for LeaseHandle<K> {
    fn clone(&self) -> Self {
        Self {
            table: self.table.clone(),
            key: self.key.clone(),
            lease: self.lease,
        }
    }
}

impl<K: 'static> fmt::Debug for LeaseGuard<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("lease", &self.handle.lease)
            .finish_non_exhaustive()
    }
}

impl<K: 'static> fmt::Debug for LeaseHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseHandle")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// Runs `job` in a spawned task that owns `guard`: the key is held for as
/// long as the task runs, whatever `job` keeps, and freed however it ends.
///
/// A panic counts in the table's `panicked` and is logged, then resumed: the
/// task's `JoinHandle` still reports it. `K` need not be `Debug`, so the
/// event names the key by its digest ([`digest`](super::digest)) and the lease generation.
pub(crate) fn spawn_holding<K, F, Fut>(
    guard: LeaseGuard<K>,
    job: F,
) -> tokio::task::JoinHandle<Fut::Output>
where
    K: Hash + Clone + Send + Sync + 'static,
    F: FnOnce(LeaseHandle<K>) -> Fut,
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let work = job(guard.handle());
    tokio::spawn(async move {
        let ran = AssertUnwindSafe(work).catch_unwind().await;
        match ran {
            Ok(output) => output,
            Err(panic) => {
                let LeaseHandle { table, key, lease } = &guard.handle;
                table.stats.record(Event::Panicked);
                tracing::error!(
                    key_digest = format_args!("{:016x}", super::digest(key)),
                    generation = lease.generation(),
                    "a job holding a key panicked; the key is freed"
                );
                drop(guard);
                std::panic::resume_unwind(panic)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::flight::Flights;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_job_counts_frees_its_key_and_still_panics() {
        let flights: Flights<String> = Flights::new();
        let ttl = Duration::from_secs(60);
        let job = flights
            .spawn("job".to_owned(), ttl, |_| async { panic!("job failed") })
            .await
            .unwrap();
        let error = job.await.unwrap_err();
        assert!(error.is_panic(), "the JoinHandle still reports the panic");
        assert_eq!(flights.stats().panicked, 1);
        assert_eq!(flights.stats().leases_held, 0);
        assert!(flights.holder(&"job".to_owned()).await.is_none());
        assert!(flights.try_acquire("job".to_owned(), ttl).await.is_ok());
    }
}
