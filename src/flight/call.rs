//! Shared calls: one future per key, its outcome handed to every waiter.

use std::{
    collections::{hash_map::Entry, HashMap},
    fmt,
    future::Future,
    hash::Hash,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_util::FutureExt;
use tokio::{sync::oneshot, task::AbortHandle, time::Instant};

use super::{
    lock,
    stats::{Event, Stats},
};

/// What every waiter of a flight receives: the leader's value, shared, or why
/// there is none.
pub type Outcome<T> = Result<Arc<T>, FlightError>;

/// Why a flight gave its waiters no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlightError {
    /// The work panicked. The panic's message is not passed on.
    Panicked,
    /// The work outlived the flight's lease and was aborted.
    TimedOut,
    /// The work was dropped before it finished: the leader never ran it, or
    /// every waiter left and [`CallOptions::abort_when_unused`] was set.
    Abandoned,
    /// A bound was reached; the work was not started.
    Overloaded(Overloaded),
}

impl fmt::Display for FlightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked => f.write_str("the shared work panicked"),
            Self::TimedOut => f.write_str("the shared work outlived its lease"),
            Self::Abandoned => f.write_str("the shared work was dropped before it finished"),
            Self::Overloaded(overloaded) => overloaded.fmt(f),
        }
    }
}

impl std::error::Error for FlightError {}

/// A bound of [`CallOptions`] was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overloaded {
    /// The key already has `max_waiters` callers waiting.
    TooManyWaiters,
    /// The table already runs `max_flights` flights.
    TooManyFlights,
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyWaiters => f.write_str("too many callers wait for this key"),
            Self::TooManyFlights => f.write_str("too many flights are running"),
        }
    }
}

impl std::error::Error for Overloaded {}

/// How a flight runs, and its bounds.
///
/// ```
/// use std::time::Duration;
/// use tower_singleflight::CallOptions;
///
/// // Defaults: a 5 minute lease, 10,000 waiters per key, 10,000 flights,
/// // and the work runs to completion even when every waiter left.
/// let defaults = CallOptions::default();
///
/// let tight = CallOptions::default()
///     .lease(Duration::from_secs(30))
///     .max_waiters(100)
///     .abort_when_unused(true);
/// # let _ = (defaults, tight);
/// ```
#[derive(Debug, Clone)]
pub struct CallOptions {
    lease: Duration,
    max_waiters: usize,
    max_flights: usize,
    abort_when_unused: bool,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(5 * 60),
            max_waiters: 10_000,
            max_flights: 10_000,
            abort_when_unused: false,
        }
    }
}

impl CallOptions {
    /// How long the work may run; past it, it is aborted, its waiters get
    /// [`FlightError::TimedOut`] and the key is free.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How many callers may wait on one key, the leader included.
    #[must_use]
    pub fn max_waiters(mut self, max: usize) -> Self {
        self.max_waiters = max;
        self
    }

    /// How many flights may run at once in one table.
    #[must_use]
    pub fn max_flights(mut self, max: usize) -> Self {
        self.max_flights = max;
        self
    }

    /// Abort the work as soon as every waiter has gone. Off by default: the
    /// work runs to completion, so a leader's client disconnecting never
    /// wastes what was already spent. The leader's options decide for the
    /// whole flight.
    #[must_use]
    pub fn abort_when_unused(mut self, abort: bool) -> Self {
        self.abort_when_unused = abort;
        self
    }
}

/// The table of running flights.
pub(crate) struct Calls<K, T> {
    map: Mutex<HashMap<K, Call<T>>>,
    next_generation: AtomicU64,
    stats: Arc<Stats>,
}

struct Call<T> {
    generation: u64,
    started: Instant,
    /// The leader's own waiter, apart: "does anybody else wait?" must not
    /// depend on where it sits among the followers.
    leader: oneshot::Sender<Outcome<T>>,
    followers: Vec<oneshot::Sender<Outcome<T>>>,
    /// Fixed by the leader's options: callers joining later with other
    /// options cannot turn it on or off.
    abort_when_unused: bool,
    abort: Option<AbortHandle>,
}

impl<T> Call<T> {
    fn info(&self) -> CallInfo {
        CallInfo {
            started: self.started,
            waiters: usize::from(!self.leader.is_closed()) + self.followers(),
        }
    }

    /// Followers still waiting.
    fn followers(&self) -> usize {
        self.followers.iter().filter(|w| !w.is_closed()).count()
    }

    /// What `max_waiters` bounds: the leader while it waits, and the
    /// followers' slots (those who left keep theirs until reclaimed).
    fn slots(&self) -> usize {
        usize::from(!self.leader.is_closed()) + self.followers.len()
    }
}

/// A shared call running now, as [`Flights::calls`](super::Flights::calls)
/// lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallInfo {
    /// When its leader started it.
    pub started: Instant,
    /// Callers waiting for its outcome, the leader included.
    pub waiters: usize,
}

/// Who the caller of [`Flights::join`](super::Flights::join) is.
#[derive(Debug)]
pub enum Joined<T> {
    /// Nobody was running this key: the caller must [`run`](Leader::run) it.
    Leader(Leader<T>),
    /// A flight is running: wait for its outcome.
    Follower(Waiter<T>),
}

/// A handle on one call of the table. Erased over the key, so that leaders and
/// waiters carry no key type and no bounds.
trait CallHandle<T>: Send + Sync {
    fn finish(&self, outcome: Outcome<T>);
    fn waiter_left(&self);
    fn set_abort(&self, abort: AbortHandle);
    fn followers(&self) -> usize;
    fn key_hash(&self, state: &std::hash::RandomState) -> u64;
}

struct Handle<K, T> {
    calls: Arc<Calls<K, T>>,
    key: K,
    generation: u64,
}

impl<K, T> CallHandle<T> for Handle<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    fn finish(&self, outcome: Outcome<T>) {
        self.calls.finish(&self.key, self.generation, outcome);
    }

    fn waiter_left(&self) {
        self.calls.waiter_left(&self.key, self.generation);
    }

    fn set_abort(&self, abort: AbortHandle) {
        self.calls.set_abort(&self.key, self.generation, abort);
    }

    fn key_hash(&self, state: &std::hash::RandomState) -> u64 {
        std::hash::BuildHasher::hash_one(state, &self.key)
    }

    fn followers(&self) -> usize {
        let map = lock(&self.calls.map);
        map.get(&self.key)
            .filter(|call| call.generation == self.generation)
            .map_or(0, Call::followers)
    }
}

impl<K, T> Calls<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
            stats,
        }
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.map).len()
    }

    pub(crate) fn info(&self, key: &K) -> Option<CallInfo> {
        lock(&self.map).get(key).map(Call::info)
    }

    pub(crate) fn snapshot(&self) -> Vec<(K, CallInfo)> {
        lock(&self.map)
            .iter()
            .map(|(key, call)| (key.clone(), call.info()))
            .collect()
    }

    pub(crate) fn join(
        self: &Arc<Self>,
        key: K,
        options: &CallOptions,
    ) -> Result<Joined<T>, Overloaded> {
        let (sender, receiver) = oneshot::channel();
        let mut map = lock(&self.map);
        let flights = map.len();
        let joined = match map.entry(key) {
            Entry::Occupied(mut entry) => {
                let call = entry.get_mut();
                if call.slots() >= options.max_waiters {
                    // Followers who left still have a slot; reclaim them first.
                    call.followers.retain(|waiter| !waiter.is_closed());
                }
                if call.slots() >= options.max_waiters {
                    drop(map);
                    return Err(self.overloaded(Overloaded::TooManyWaiters));
                }
                call.followers.push(sender);
                let generation = call.generation;
                let membership = call
                    .abort_when_unused
                    .then(|| self.handle(entry.key(), generation));
                Joined::Follower(Waiter::new(receiver, membership))
            }
            Entry::Vacant(entry) => {
                if flights >= options.max_flights {
                    drop(map);
                    return Err(self.overloaded(Overloaded::TooManyFlights));
                }
                let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
                let completion = Completion {
                    handle: Arc::from(self.handle(entry.key(), generation)),
                    finished: false,
                };
                let membership = options
                    .abort_when_unused
                    .then(|| self.handle(entry.key(), generation));
                entry.insert(Call {
                    generation,
                    started: Instant::now(),
                    leader: sender,
                    followers: Vec::new(),
                    abort_when_unused: options.abort_when_unused,
                    abort: None,
                });
                Joined::Leader(Leader {
                    completion: Some(completion),
                    waiter: Some(Waiter::new(receiver, membership)),
                    lease: options.lease,
                })
            }
        };
        drop(map);
        self.stats.record(match joined {
            Joined::Leader(_) => Event::Led,
            Joined::Follower(_) => Event::Followed,
        });
        Ok(joined)
    }

    /// Leads a new flight for `key`, or does nothing if one runs: for work
    /// nobody waits for (a background refresh).
    pub(crate) fn try_lead(self: &Arc<Self>, key: K, options: &CallOptions) -> Option<Leader<T>> {
        if lock(&self.map).contains_key(&key) {
            return None;
        }
        match self.join(key, options) {
            Ok(Joined::Leader(leader)) => Some(leader),
            _ => None,
        }
    }

    fn handle(self: &Arc<Self>, key: &K, generation: u64) -> Box<dyn CallHandle<T>> {
        Box::new(Handle {
            calls: Arc::clone(self),
            key: key.clone(),
            generation,
        })
    }

    fn overloaded(&self, reason: Overloaded) -> Overloaded {
        self.stats.record(Event::Overloaded);
        tracing::debug!(%reason, "single-flight bound reached");
        reason
    }

    /// Removes the call (if it is still this generation's) and hands every
    /// waiter the outcome.
    fn finish(&self, key: &K, generation: u64, outcome: Outcome<T>) {
        let call = {
            let mut map = lock(&self.map);
            // One hash in the usual case; a later flight (rare) goes back.
            match map.remove_entry(key) {
                Some((_, call)) if call.generation == generation => Some(call),
                Some((key, later)) => {
                    map.insert(key, later);
                    None
                }
                None => None,
            }
        };
        match &outcome {
            Err(FlightError::Panicked) => {
                self.stats.record(Event::Panicked);
                tracing::warn!(
                    generation,
                    "single-flight work panicked; its waiters get an error"
                );
            }
            Err(FlightError::TimedOut) => {
                self.stats.record(Event::TimedOut);
                tracing::warn!(
                    generation,
                    "single-flight work outlived its lease and was aborted"
                );
            }
            _ => tracing::trace!(generation, "single-flight work finished"),
        }
        if let Some(call) = call {
            // A waiter that left has closed its receiver; nothing to do.
            for waiter in call.followers {
                let _ = waiter.send(outcome.clone());
            }
            let _ = call.leader.send(outcome);
        }
    }

    fn set_abort(&self, key: &K, generation: u64, abort: AbortHandle) {
        let mut map = lock(&self.map);
        if let Some(call) = map
            .get_mut(key)
            .filter(|call| call.generation == generation)
        {
            call.abort = Some(abort);
        }
    }

    /// With `abort_when_unused`: once no waiter is left, free the key and stop
    /// the work.
    fn waiter_left(&self, key: &K, generation: u64) {
        let mut map = lock(&self.map);
        let unused = map.get(key).is_some_and(|call| {
            call.generation == generation && call.abort_when_unused && call.info().waiters == 0
        });
        if !unused {
            return;
        }
        let call = map.remove(key);
        drop(map);
        if let Some(abort) = call.and_then(|call| call.abort) {
            tracing::debug!(generation, "every waiter left; single-flight work aborted");
            abort.abort();
        }
    }
}

/// The caller that runs a flight's work.
///
/// Dropping it without calling [`run`](Leader::run) frees the key and gives
/// waiters that already joined [`FlightError::Abandoned`].
pub struct Leader<T> {
    completion: Option<Completion<T>>,
    waiter: Option<Waiter<T>>,
    lease: Duration,
}

impl<T> Leader<T>
where
    T: Send + Sync + 'static,
{
    /// Runs `work` in a spawned task and returns the leader's own waiter.
    ///
    /// The task is detached: dropping the returned waiter does not cancel the
    /// work (unless [`CallOptions::abort_when_unused`] is set and nobody else
    /// waits). A panic becomes [`FlightError::Panicked`] for every waiter; the
    /// lease elapsing becomes [`FlightError::TimedOut`].
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, like [`tokio::spawn`].
    pub fn run<F>(self, work: F) -> Waiter<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        self.run_with(|_| work)
    }

    /// Like [`run`](Self::run), with a view of the flight for the work: to
    /// ask whether anybody but the leader waits for its outcome.
    pub fn run_with<F, Fut>(mut self, make: F) -> Waiter<T>
    where
        F: FnOnce(Peers<T>) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let completion = self.completion.take().expect("a leader runs once");
        let work = make(Peers {
            call: Arc::clone(&completion.handle),
        });
        let lease = self.lease;
        // Boxed once here, so that spawning moves a pointer, not the whole
        // (often kilobytes large) future, several times over.
        let work = Box::pin(work);
        let task = tokio::spawn(async move {
            let caught = AssertUnwindSafe(work).catch_unwind();
            let outcome = match tokio::time::timeout(lease, caught).await {
                Ok(Ok(value)) => Ok(Arc::new(value)),
                // The panic payload is dropped here: it never reaches a waiter.
                Ok(Err(_panic)) => Err(FlightError::Panicked),
                Err(_elapsed) => Err(FlightError::TimedOut),
            };
            completion.finish(outcome);
        });
        let waiter = self.waiter.take().expect("a leader runs once");
        if let Some(membership) = &waiter.membership {
            membership.set_abort(task.abort_handle());
        }
        waiter
    }
}

impl<T> fmt::Debug for Leader<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leader")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// A view of a running flight, for its work.
pub struct Peers<T> {
    call: Arc<dyn CallHandle<T>>,
}

impl<T> Peers<T> {
    /// How many callers besides the leader wait for the outcome now.
    pub fn followers(&self) -> usize {
        self.call.followers()
    }

    /// The flight's key, hashed with `state`: to remember the key without
    /// a copy of it.
    pub(crate) fn key_hash(&self, state: &std::hash::RandomState) -> u64 {
        self.call.key_hash(state)
    }
}

impl<T> fmt::Debug for Peers<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peers").finish_non_exhaustive()
    }
}

/// Publishes the outcome exactly once; if the work is dropped before it
/// finishes (aborted, never run, runtime shut down), publishes `Abandoned`.
struct Completion<T> {
    handle: Arc<dyn CallHandle<T>>,
    finished: bool,
}

impl<T> Completion<T> {
    fn finish(mut self, outcome: Outcome<T>) {
        self.finished = true;
        self.handle.finish(outcome);
    }
}

impl<T> Drop for Completion<T> {
    fn drop(&mut self) {
        if !self.finished {
            self.handle.finish(Err(FlightError::Abandoned));
        }
    }
}

/// Waits for a flight's [`Outcome`].
///
/// Dropping a waiter never disturbs the flight or the other waiters.
pub struct Waiter<T> {
    receiver: Option<oneshot::Receiver<Outcome<T>>>,
    /// Set with `abort_when_unused`, to stop the work when the last one leaves.
    membership: Option<Box<dyn CallHandle<T>>>,
}

impl<T> Waiter<T> {
    fn new(
        receiver: oneshot::Receiver<Outcome<T>>,
        membership: Option<Box<dyn CallHandle<T>>>,
    ) -> Self {
        Self {
            receiver: Some(receiver),
            membership,
        }
    }
}

impl<T> Future for Waiter<T> {
    type Output = Outcome<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<T>> {
        let Some(receiver) = self.receiver.as_mut() else {
            return Poll::Ready(Err(FlightError::Abandoned));
        };
        // A sender dropped unsent means the call's entry went without an
        // outcome: treat it as abandoned rather than hanging.
        Pin::new(receiver)
            .poll(cx)
            .map(|received| received.unwrap_or(Err(FlightError::Abandoned)))
    }
}

impl<T> Drop for Waiter<T> {
    fn drop(&mut self) {
        // Close our receiver first, so the check below sees this waiter gone.
        drop(self.receiver.take());
        if let Some(membership) = self.membership.take() {
            membership.waiter_left();
        }
    }
}

impl<T> fmt::Debug for Waiter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter").finish_non_exhaustive()
    }
}
