//! Shared calls: one future per key, its outcome handed to every waiter.

use std::{
    fmt,
    future::Future,
    hash::{BuildHasher, Hash, RandomState},
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
use hashbrown::{hash_table, HashTable};
use tokio::{sync::oneshot, task::AbortHandle, time::Instant};

use super::{
    lock,
    memory::deadline,
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
    pub(super) lease: Duration,
    max_waiters: usize,
    max_flights: usize,
    pub(super) abort_when_unused: bool,
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
///
/// A key is hashed once, when a caller enters; afterwards its call is found by
/// that hash and its generation, which no other call shares, so handles keep
/// no copy of the key and never hash it again.
pub(crate) struct Calls<K, T> {
    map: Mutex<HashTable<Call<K, T>>>,
    hasher: RandomState,
    next_generation: AtomicU64,
    stats: Arc<Stats>,
}

struct Call<K, T> {
    key: K,
    hash: u64,
    generation: u64,
    started: Instant,
    /// When its lease ends: past it, the call no longer holds the key.
    deadline: Instant,
    /// Apart from the followers: "does anybody else wait?" must not depend
    /// on where the leader sits among them.
    leader: Seat<T>,
    followers: Vec<oneshot::Sender<Outcome<T>>>,
    /// Fixed by the leader's options: callers joining later with other
    /// options cannot turn it on or off.
    abort_when_unused: bool,
    abort: Option<AbortHandle>,
}

/// Where a flight's leader waits for its outcome.
pub(super) enum Seat<T> {
    /// The work runs in a spawned task; the outcome comes on a channel.
    Channel(oneshot::Sender<Outcome<T>>),
    /// The leader polls the work in its own future and needs no channel.
    Inline,
    /// The leader left; its work was handed to a task.
    Left,
}

impl<T> Seat<T> {
    fn waits(&self) -> bool {
        match self {
            Self::Channel(sender) => !sender.is_closed(),
            Self::Inline => true,
            Self::Left => false,
        }
    }
}

impl<K, T> Call<K, T> {
    fn info(&self) -> CallInfo {
        CallInfo {
            started: self.started,
            waiters: usize::from(self.leader.waits()) + self.followers(),
        }
    }

    /// Followers still waiting.
    fn followers(&self) -> usize {
        self.followers.iter().filter(|w| !w.is_closed()).count()
    }

    /// What `max_waiters` bounds: the leader while it waits, and the
    /// followers' slots (those who left keep theirs until reclaimed).
    fn slots(&self) -> usize {
        usize::from(self.leader.waits()) + self.followers.len()
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

/// Who a caller entering the table is, before the public wrapping.
pub(super) enum Entered<T> {
    /// Leads: publishes the outcome through the completion; with a channel
    /// seat, also receives it on the receiver.
    Leader {
        completion: Completion<T>,
        receiver: Option<oneshot::Receiver<Outcome<T>>>,
        generation: u64,
        deadline: Instant,
    },
    /// Follows, with a watch on the flight's lease.
    Follower(Waiter<T>, LeaseWatch<T>),
}

/// A follower's watch on the lease of an inline flight, which nobody else
/// enforces while the leader is not polled.
pub(crate) struct LeaseWatch<T> {
    call: Box<dyn CallHandle<T>>,
    deadline: Instant,
}

impl<T> LeaseWatch<T> {
    /// When the flight's lease ends.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The lease is over: ends the flight, if still running, with
    /// [`FlightError::TimedOut`] for every waiter.
    pub(crate) fn expire(&self) {
        self.call.expire();
    }
}

/// A handle on one call of the table. Erased over the key, so that leaders and
/// waiters carry no key type and no bounds.
pub(super) trait CallHandle<T>: Send + Sync {
    fn finish(&self, outcome: Result<T, FlightError>);
    fn waiter_left(&self);
    /// The leader stopped waiting; its work goes on in the task `abort`
    /// stops (`None`: it goes on whatever happens).
    fn leader_left(&self, abort: Option<AbortHandle>);
    fn set_abort(&self, abort: AbortHandle);
    /// The lease ended: everybody gets [`FlightError::TimedOut`].
    fn expire(&self);
    fn followers(&self) -> usize;
    fn hash(&self) -> u64;
}

struct Handle<K, T> {
    calls: Arc<Calls<K, T>>,
    hash: u64,
    generation: u64,
}

impl<K, T> CallHandle<T> for Handle<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    fn finish(&self, outcome: Result<T, FlightError>) {
        self.calls.finish(self.hash, self.generation, outcome);
    }

    fn waiter_left(&self) {
        self.calls.waiter_left(self.hash, self.generation);
    }

    fn leader_left(&self, abort: Option<AbortHandle>) {
        self.calls.leader_left(self.hash, self.generation, abort);
    }

    fn expire(&self) {
        self.calls.expire(self.hash, self.generation);
    }

    fn set_abort(&self, abort: AbortHandle) {
        self.calls.with_call(self.hash, self.generation, |call| {
            call.abort = Some(abort);
        });
    }

    fn followers(&self) -> usize {
        self.calls
            .with_call(self.hash, self.generation, |call| call.followers())
            .unwrap_or(0)
    }

    fn hash(&self) -> u64 {
        self.hash
    }
}

impl<K, T> Calls<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        Self {
            map: Mutex::new(HashTable::new()),
            hasher: RandomState::new(),
            next_generation: AtomicU64::new(1),
            stats,
        }
    }

    /// The key's hash in this table (keyed per table: clients cannot aim
    /// collisions at it).
    pub(crate) fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.map).len()
    }

    pub(crate) fn info(&self, key: &K) -> Option<CallInfo> {
        let hash = self.hash(key);
        lock(&self.map)
            .find(hash, |call| call.key == *key)
            .map(Call::info)
    }

    pub(crate) fn snapshot(&self) -> Vec<(K, CallInfo)> {
        lock(&self.map)
            .iter()
            .map(|call| (call.key.clone(), call.info()))
            .collect()
    }

    pub(crate) fn join(
        self: &Arc<Self>,
        key: K,
        options: &CallOptions,
    ) -> Result<Joined<T>, Overloaded> {
        let hash = self.hash(&key);
        Ok(match self.enter(key, hash, options, false)? {
            Entered::Leader {
                completion,
                receiver,
                generation,
                ..
            } => {
                let membership = options
                    .abort_when_unused
                    .then(|| self.handle(hash, generation));
                Joined::Leader(Leader {
                    completion: Some(completion),
                    waiter: receiver.map(|receiver| Waiter::new(receiver, membership)),
                    lease: options.lease,
                })
            }
            Entered::Follower(waiter, _) => Joined::Follower(waiter),
        })
    }

    /// Joins the flight for `key` (whose [`hash`](Self::hash) is `hash`), or
    /// leads it: with `inline`, the leader polls the work itself and takes
    /// no channel.
    pub(super) fn enter(
        self: &Arc<Self>,
        key: K,
        hash: u64,
        options: &CallOptions,
        inline: bool,
    ) -> Result<Entered<T>, Overloaded> {
        let now = Instant::now();
        let mut map = lock(&self.map);
        let flights = map.len();
        let mut expired = None;
        let entry = match map.entry(hash, |call| call.key == key, |call| call.hash) {
            // Past its lease (its leader hangs, or is never polled): it no
            // longer holds the key.
            hash_table::Entry::Occupied(entry) if entry.get().deadline <= now => {
                let (call, vacant) = entry.remove();
                expired = Some(call);
                hash_table::Entry::Vacant(vacant)
            }
            entry => entry,
        };
        let entered = match entry {
            hash_table::Entry::Occupied(mut entry) => {
                let call = entry.get_mut();
                if call.slots() >= options.max_waiters {
                    // Followers who left still have a slot; reclaim them first.
                    call.followers.retain(|waiter| !waiter.is_closed());
                }
                if call.slots() >= options.max_waiters {
                    drop(map);
                    return Err(self.overloaded(Overloaded::TooManyWaiters));
                }
                let (sender, receiver) = oneshot::channel();
                call.followers.push(sender);
                let membership = call
                    .abort_when_unused
                    .then(|| self.handle(hash, call.generation));
                let watch = LeaseWatch {
                    call: self.handle(hash, call.generation),
                    deadline: call.deadline,
                };
                Entered::Follower(Waiter::new(receiver, membership), watch)
            }
            hash_table::Entry::Vacant(entry) => {
                if flights - usize::from(expired.is_some()) >= options.max_flights {
                    drop(map);
                    self.time_out(expired);
                    return Err(self.overloaded(Overloaded::TooManyFlights));
                }
                let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
                let (leader, receiver) = if inline {
                    (Seat::Inline, None)
                } else {
                    let (sender, receiver) = oneshot::channel();
                    (Seat::Channel(sender), Some(receiver))
                };
                let deadline = deadline(now, options.lease);
                entry.insert(Call {
                    key,
                    hash,
                    generation,
                    started: now,
                    deadline,
                    leader,
                    followers: Vec::new(),
                    abort_when_unused: options.abort_when_unused,
                    abort: None,
                });
                let completion = Completion {
                    handle: Arc::new(Handle {
                        calls: Arc::clone(self),
                        hash,
                        generation,
                    }),
                    finished: false,
                };
                Entered::Leader {
                    completion,
                    receiver,
                    generation,
                    deadline,
                }
            }
        };
        drop(map);
        self.time_out(expired);
        self.stats.record(match entered {
            Entered::Leader { .. } => Event::Led,
            Entered::Follower(..) => Event::Followed,
        });
        Ok(entered)
    }

    /// Leads a new flight for `key`, or does nothing if one runs: for work
    /// nobody waits for (a background refresh).
    pub(crate) fn try_lead(self: &Arc<Self>, key: K, options: &CallOptions) -> Option<Leader<T>> {
        let hash = self.hash(&key);
        if lock(&self.map).find(hash, |call| call.key == key).is_some() {
            return None;
        }
        match self.join(key, options) {
            Ok(Joined::Leader(leader)) => Some(leader),
            _ => None,
        }
    }

    fn handle(self: &Arc<Self>, hash: u64, generation: u64) -> Box<dyn CallHandle<T>> {
        Box::new(Handle {
            calls: Arc::clone(self),
            hash,
            generation,
        })
    }

    /// Runs `f` on the call of this generation, if it is still in the table.
    fn with_call<R>(
        &self,
        hash: u64,
        generation: u64,
        f: impl FnOnce(&mut Call<K, T>) -> R,
    ) -> Option<R> {
        lock(&self.map)
            .find_mut(hash, |call| call.generation == generation)
            .map(f)
    }

    fn overloaded(&self, reason: Overloaded) -> Overloaded {
        self.stats.record(Event::Overloaded);
        tracing::debug!(%reason, "single-flight bound reached");
        reason
    }

    /// Removes the call (if it is still this generation's) and hands every
    /// waiter the outcome.
    fn finish(&self, hash: u64, generation: u64, outcome: Result<T, FlightError>) {
        let call = lock(&self.map)
            .find_entry(hash, |call| call.generation == generation)
            .ok()
            .map(|entry| entry.remove().0);
        // Gone already (expired, or every waiter left): nobody to tell.
        let Some(call) = call else { return };
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
        let leader = match call.leader {
            Seat::Channel(sender) => Some(sender),
            Seat::Inline | Seat::Left => None,
        };
        if call.followers.is_empty() && leader.is_none() {
            // Nobody to hand it to: not even worth an `Arc`.
            return;
        }
        let outcome = outcome.map(Arc::new);
        // A waiter that left has closed its receiver; nothing to do.
        for waiter in call.followers {
            let _ = waiter.send(outcome.clone());
        }
        if let Some(leader) = leader {
            let _ = leader.send(outcome);
        }
    }

    /// Ends the call of this generation if its lease is over: for a waiter
    /// whose own timer says so, whatever its leader does.
    fn expire(&self, hash: u64, generation: u64) {
        let now = Instant::now();
        let call = lock(&self.map)
            .find_entry(hash, |call| call.generation == generation)
            .ok()
            .filter(|entry| entry.get().deadline <= now)
            .map(|entry| entry.remove().0);
        self.time_out(call);
    }

    /// A call removed past its lease: its work is stopped, its waiters get
    /// [`FlightError::TimedOut`].
    fn time_out(&self, call: Option<Call<K, T>>) {
        let Some(call) = call else { return };
        self.stats.record(Event::TimedOut);
        tracing::warn!(
            generation = call.generation,
            "single-flight work outlived its lease; its waiters get an error"
        );
        if let Some(abort) = &call.abort {
            abort.abort();
        }
        for waiter in call.followers {
            let _ = waiter.send(Err(FlightError::TimedOut));
        }
        if let Seat::Channel(leader) = call.leader {
            let _ = leader.send(Err(FlightError::TimedOut));
        }
    }

    /// The leader left; its work goes on in a task. Under one lock, so that
    /// a follower leaving meanwhile cannot be missed: with
    /// `abort_when_unused` and nobody left, the task is stopped at once.
    fn leader_left(&self, hash: u64, generation: u64, abort: Option<AbortHandle>) {
        let mut map = lock(&self.map);
        let Ok(mut entry) = map.find_entry(hash, |call| call.generation == generation) else {
            // Already over (finished or expired): nobody waits for the work.
            if let Some(abort) = abort {
                abort.abort();
            }
            return;
        };
        let call = entry.get_mut();
        call.leader = Seat::Left;
        let Some(abort) = abort else { return };
        if call.abort_when_unused && call.info().waiters == 0 {
            entry.remove();
            drop(map);
            tracing::debug!(generation, "every waiter left; single-flight work aborted");
            abort.abort();
        } else {
            call.abort = Some(abort);
        }
    }

    /// With `abort_when_unused`: once no waiter is left, free the key and stop
    /// the work.
    fn waiter_left(&self, hash: u64, generation: u64) {
        let call = {
            let mut map = lock(&self.map);
            let Ok(entry) = map.find_entry(hash, |call| call.generation == generation) else {
                return;
            };
            let call = entry.get();
            if !call.abort_when_unused || call.info().waiters > 0 {
                return;
            }
            entry.remove().0
        };
        if let Some(abort) = call.abort {
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
        let work = make(completion.peers());
        let deadline = deadline(Instant::now(), self.lease);
        let task = spawn_to_finish(Box::pin(work), completion, deadline, None);
        let waiter = self.waiter.take().expect("a leader runs once");
        if let Some(membership) = &waiter.membership {
            membership.set_abort(task.abort_handle());
        }
        waiter
    }
}

/// Runs `work` in a task until `deadline`, then publishes what came of it.
///
/// Boxed before it gets here, so that spawning moves a pointer, not the whole
/// (often kilobytes large) future, several times over.
///
/// On `runtime`, or on the current one.
pub(super) fn spawn_to_finish<T: Send + 'static>(
    work: Pin<Box<dyn Future<Output = T> + Send>>,
    completion: Completion<T>,
    deadline: Instant,
    runtime: Option<&tokio::runtime::Handle>,
) -> tokio::task::JoinHandle<()> {
    let task = async move {
        let caught = AssertUnwindSafe(work).catch_unwind();
        let outcome = match tokio::time::timeout_at(deadline, caught).await {
            Ok(Ok(value)) => Ok(value),
            // The panic payload is dropped here: it never reaches a waiter.
            Ok(Err(_panic)) => Err(FlightError::Panicked),
            Err(_elapsed) => Err(FlightError::TimedOut),
        };
        completion.finish(outcome);
    };
    match runtime {
        Some(runtime) => runtime.spawn(task),
        None => tokio::spawn(task),
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

    /// The flight's key as its table hashed it: to remember the key
    /// without a copy of it.
    pub(crate) fn key_hash(&self) -> u64 {
        self.call.hash()
    }
}

impl<T> fmt::Debug for Peers<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peers").finish_non_exhaustive()
    }
}

/// Publishes the outcome exactly once; if the work is dropped before it
/// finishes (aborted, never run, runtime shut down), publishes `Abandoned`.
pub(super) struct Completion<T> {
    pub(super) handle: Arc<dyn CallHandle<T>>,
    finished: bool,
}

impl<T> Completion<T> {
    pub(super) fn finish(mut self, outcome: Result<T, FlightError>) {
        self.finished = true;
        self.handle.finish(outcome);
    }

    pub(super) fn peers(&self) -> Peers<T> {
        Peers {
            call: Arc::clone(&self.handle),
        }
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
