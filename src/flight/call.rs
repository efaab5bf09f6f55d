//! The table of shared calls: one flight per key, found again by its hash
//! and generation.

use std::{
    hash::{BuildHasher, Hash, RandomState},
    ops::{Deref, DerefMut},
    sync::{
        atomic::Ordering::{Relaxed, SeqCst},
        Arc,
    },
};

use hashbrown::{hash_table, HashTable};
use tokio::{runtime::Handle, sync::oneshot, task::AbortHandle, time::Instant};

use super::{
    callers::{Completion, Leader, Waiter},
    lock,
    options::{CallOptions, FlightError, Outcome, Overloaded},
    shards::Sharded,
    stats::{Event, Stats},
    sync::{AtomicUsize, Mutex, MutexGuard},
    KeyDigest,
};
use crate::time;

/// The table of running flights.
///
/// On the request path a key is hashed once; afterwards its call is found by
/// that hash and its generation, which no other call shares, so handles keep
/// no copy of the key and never hash it again. The table is sharded by that
/// hash: requests for different keys on different cores mostly take
/// different locks.
pub(crate) struct Calls<K, T> {
    shards: Sharded<Shard<K, T>>,
    hasher: RandomState,
    /// For keys that carry a keyed hash of their own (share keys): read,
    /// not hashed again.
    pub(crate) hashed: Option<fn(&K) -> u64>,
    stats: Arc<Stats>,
}

/// One shard: its calls under a lock, and how many there are, readable
/// without the lock (for the bound on flights across shards).
struct Shard<K, T> {
    state: Mutex<ShardState<K, T>>,
    len: AtomicUsize,
}

struct ShardState<K, T> {
    calls: HashTable<Call<K, T>>,
    /// Its generations are `n << SHARD_BITS | index`: unique table-wide
    /// without a counter every core writes.
    next: u64,
    index: u64,
}

/// Room for the shard's index in a generation (at most 64 shards).
const SHARD_BITS: u32 = 6;

/// Below this many flights per shard, `max_flights` is counted exactly.
const EXACT_SHARE: usize = 64;

/// A shard's calls, locked. Publishes their number when released.
struct Locked<'a, K, T> {
    state: MutexGuard<'a, ShardState<K, T>>,
    len: &'a AtomicUsize,
}

impl<K, T> Shard<K, T> {
    fn lock(&self) -> Locked<'_, K, T> {
        Locked {
            state: lock(&self.state),
            len: &self.len,
        }
    }
}

impl<K, T> Locked<'_, K, T> {
    fn next_generation(&mut self) -> u64 {
        let generation = self.state.next << SHARD_BITS | self.state.index;
        self.state.next += 1;
        generation
    }
}

impl<K, T> Deref for Locked<'_, K, T> {
    type Target = HashTable<Call<K, T>>;

    fn deref(&self) -> &Self::Target {
        &self.state.calls
    }
}

impl<K, T> DerefMut for Locked<'_, K, T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.state.calls
    }
}

impl<K, T> Drop for Locked<'_, K, T> {
    fn drop(&mut self) {
        self.len.store(self.state.calls.len(), Relaxed);
    }
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
    /// The runtime of the first follower: where the work goes if an inline
    /// leader is dropped off any runtime before it noted its own.
    runtime: Option<Handle>,
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
pub(super) enum Entered<K, T> {
    /// Leads: publishes the outcome through the completion; with a channel
    /// seat, also receives it on the receiver.
    Leader {
        completion: Completion<T>,
        receiver: Option<oneshot::Receiver<Outcome<T>>>,
        generation: u64,
        deadline: Instant,
    },
    /// Follows, with a watch on the flight's lease; the key is given back
    /// (a follower may have to enter again with it).
    Follower(Waiter<T>, LeaseWatch<T>, K),
}

/// A follower's watch on the lease of an inline flight, which nobody else
/// enforces while the leader is not polled.
pub(crate) struct LeaseWatch<T> {
    call: CallHandle<T>,
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

/// What a handle needs of its table, erased over the key.
trait Table<T>: Send + Sync {
    fn finish(&self, hash: u64, generation: u64, outcome: Result<T, FlightError>);
    fn waiter_left(&self, hash: u64, generation: u64);
    fn leader_left(&self, hash: u64, generation: u64, abort: Option<AbortHandle>);
    fn set_abort(&self, hash: u64, generation: u64, abort: AbortHandle);
    fn expire(&self, hash: u64, generation: u64);
    fn followers(&self, hash: u64, generation: u64) -> usize;
    fn runtime(&self, hash: u64, generation: u64) -> Option<Handle>;
}

/// A handle on one call of the table: leaders and waiters carry it, with no
/// key type and no bounds. Cloning it allocates nothing.
pub(super) struct CallHandle<T> {
    calls: Arc<dyn Table<T>>,
    pub(super) hash: u64,
    generation: u64,
}

impl<T> Clone for CallHandle<T> {
    fn clone(&self) -> Self {
        Self {
            calls: Arc::clone(&self.calls),
            hash: self.hash,
            generation: self.generation,
        }
    }
}

impl<T> CallHandle<T> {
    pub(super) fn finish(&self, outcome: Result<T, FlightError>) {
        self.calls.finish(self.hash, self.generation, outcome);
    }

    pub(super) fn waiter_left(&self) {
        self.calls.waiter_left(self.hash, self.generation);
    }

    /// The leader stopped waiting; its work goes on in the task `abort`
    /// stops (`None`: it goes on whatever happens).
    pub(super) fn leader_left(&self, abort: Option<AbortHandle>) {
        self.calls.leader_left(self.hash, self.generation, abort);
    }

    pub(super) fn set_abort(&self, abort: AbortHandle) {
        self.calls.set_abort(self.hash, self.generation, abort);
    }

    /// The lease ended: everybody gets [`FlightError::TimedOut`].
    fn expire(&self) {
        self.calls.expire(self.hash, self.generation);
    }

    pub(super) fn followers(&self) -> usize {
        self.calls.followers(self.hash, self.generation)
    }

    /// The runtime a follower joined from, if any did.
    pub(super) fn runtime(&self) -> Option<Handle> {
        self.calls.runtime(self.hash, self.generation)
    }
}

impl<K, T> Calls<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        Self {
            shards: Sharded::new(|index| Shard {
                state: Mutex::new(ShardState {
                    calls: HashTable::new(),
                    next: 1,
                    index,
                }),
                len: AtomicUsize::new(0),
            }),
            hasher: RandomState::new(),
            hashed: None,
            stats,
        }
    }

    fn lock(&self, hash: u64) -> Locked<'_, K, T> {
        self.shards.of(hash).lock()
    }

    /// Whether the table holds `max` flights, given `local` in the shard
    /// whose lock the caller holds (`own`): read only, to decide whether to
    /// sweep.
    fn at_bound(&self, own: &Shard<K, T>, local: usize, max: usize) -> bool {
        self.counted(local, max) && local.saturating_add(self.others(own)) >= max
    }

    /// Whether one more flight may start in `own`, whose lock the caller
    /// holds and which runs `local` flights.
    ///
    /// With a large bound, other shards are only counted when this one holds
    /// its share of `max`, so that the common case reads no other shard's
    /// line: keyed hashes spread keys evenly, and crowded shards cannot take
    /// the table past about twice `max`. Small bounds are kept exactly, even
    /// when callers enter several shards at once: each announces its flight
    /// in its shard's count before reading the others' (sequentially
    /// consistent, as in Dekker's lock), so that of two racing callers at
    /// least one sees the other. Both may then refuse, never both admit; the
    /// count is set back to what the shard holds when its lock is released.
    fn admits(&self, own: &Shard<K, T>, local: usize, max: usize) -> bool {
        if !self.counted(local, max) {
            return true;
        }
        let with_mine = local.saturating_add(1);
        own.len.store(with_mine, SeqCst);
        with_mine.saturating_add(self.others(own)) <= max
    }

    /// Whether this admission must count the other shards (see
    /// [`admits`](Self::admits)).
    fn counted(&self, local: usize, max: usize) -> bool {
        let shards = self.shards.len();
        max / shards < EXACT_SHARE || local.saturating_mul(shards) >= max
    }

    /// The flights of every shard but `own`, as their counts last said.
    fn others(&self, own: &Shard<K, T>) -> usize {
        self.shards
            .iter()
            .filter(|shard| !std::ptr::eq(*shard, own))
            .map(|shard| shard.len.load(SeqCst))
            .sum()
    }

    /// Removes the calls past their lease from every shard, one shard at a
    /// time.
    fn sweep(&self, now: Instant) -> Vec<Call<K, T>> {
        let mut expired = Vec::new();
        for shard in self.shards.iter() {
            expired.extend(shard.lock().extract_if(|call| call.deadline <= now));
        }
        expired
    }

    /// The key's hash in this table (keyed per table: clients cannot aim
    /// collisions at it).
    pub(crate) fn hash(&self, key: &K) -> u64 {
        match self.hashed {
            Some(hashed) => hashed(key),
            None => self.hasher.hash_one(key),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().len()).sum()
    }

    pub(crate) fn info(&self, key: &K) -> Option<CallInfo> {
        let hash = self.hash(key);
        self.lock(hash)
            .find(hash, |call| call.key == *key)
            .map(Call::info)
    }

    pub(crate) fn snapshot(&self) -> Vec<(K, CallInfo)> {
        let mut calls = Vec::new();
        for shard in self.shards.iter() {
            calls.extend(
                shard
                    .lock()
                    .iter()
                    .map(|call| (call.key.clone(), call.info())),
            );
        }
        calls
    }

    pub(crate) fn join(
        self: &Arc<Self>,
        key: K,
        options: &CallOptions,
    ) -> Result<Joined<T>, Overloaded> {
        let hash = self.hash(&key);
        self.join_hashed(key, hash, options)
    }

    fn join_hashed(
        self: &Arc<Self>,
        key: K,
        hash: u64,
        options: &CallOptions,
    ) -> Result<Joined<T>, Overloaded> {
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
                let waiter = receiver.map(|receiver| Waiter::new(receiver, membership));
                Joined::Leader(Leader::new(completion, waiter, options.lease))
            }
            Entered::Follower(waiter, ..) => Joined::Follower(waiter),
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
    ) -> Result<Entered<K, T>, Overloaded> {
        let now = Instant::now();
        let shard = self.shards.of(hash);
        let mut map = shard.lock();
        // Calls past their lease (their leader hangs, or is never polled) no
        // longer hold their key, nor, at the bound, a slot.
        let mut expired = Vec::new();
        if self.at_bound(shard, map.len(), options.max_flights) {
            drop(map);
            expired = self.sweep(now);
            map = shard.lock();
        }
        let mut local = map.len();
        // Taken now, while the shard is borrowed whole; used if this caller
        // leads (a follower's skips a number, which costs nothing).
        let fresh_generation = map.next_generation();
        let entry = match map.entry(hash, |call| call.key == key, |call| call.hash) {
            hash_table::Entry::Occupied(entry) if entry.get().deadline <= now => {
                let (call, vacant) = entry.remove();
                expired.push(call);
                local -= 1;
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
                if call.runtime.is_none() {
                    call.runtime = Handle::try_current().ok();
                }
                let membership = call
                    .abort_when_unused
                    .then(|| self.handle(hash, call.generation));
                let watch = LeaseWatch {
                    call: self.handle(hash, call.generation),
                    deadline: call.deadline,
                };
                Entered::Follower(Waiter::new(receiver, membership), watch, key)
            }
            hash_table::Entry::Vacant(entry) => {
                if self.stats.shutdown.is_started() {
                    drop(map);
                    self.time_out(expired);
                    tracing::debug!("the table is shutting down; no new flight");
                    return Err(Overloaded::ShuttingDown);
                }
                if !self.admits(shard, local, options.max_flights) {
                    drop(map);
                    self.time_out(expired);
                    return Err(self.overloaded(Overloaded::TooManyFlights));
                }
                let generation = fresh_generation;
                let (leader, receiver) = if inline {
                    (Seat::Inline, None)
                } else {
                    let (sender, receiver) = oneshot::channel();
                    (Seat::Channel(sender), Some(receiver))
                };
                let deadline = time::after(now, options.lease);
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
                    runtime: None,
                });
                let completion = Completion::new(self.handle(hash, generation));
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
        let now = Instant::now();
        let running = self
            .lock(hash)
            .find(hash, |call| call.key == key && call.deadline > now)
            .is_some();
        if running {
            return None;
        }
        match self.join_hashed(key, hash, options) {
            Ok(Joined::Leader(leader)) => Some(leader),
            _ => None,
        }
    }

    fn handle(self: &Arc<Self>, hash: u64, generation: u64) -> CallHandle<T> {
        CallHandle {
            calls: Arc::clone(self) as Arc<dyn Table<T>>,
            hash,
            generation,
        }
    }

    /// Runs `f` on the call of this generation, if it is still in the table.
    fn with_call<R>(
        &self,
        hash: u64,
        generation: u64,
        f: impl FnOnce(&mut Call<K, T>) -> R,
    ) -> Option<R> {
        self.lock(hash)
            .find_mut(hash, |call| call.generation == generation)
            .map(f)
    }

    fn overloaded(&self, reason: Overloaded) -> Overloaded {
        self.stats.record(Event::Overloaded);
        tracing::debug!(%reason, "single-flight bound reached");
        reason
    }

    /// Calls removed past their lease: their work is stopped, their waiters
    /// get [`FlightError::TimedOut`].
    fn time_out(&self, calls: Vec<Call<K, T>>) {
        for call in calls {
            self.end(call, Err(FlightError::TimedOut));
        }
    }

    /// A call out of the table: counts how it ended and hands every waiter
    /// the outcome.
    fn end(&self, call: Call<K, T>, outcome: Result<T, FlightError>) {
        let generation = call.generation;
        self.stats.flight_ended(call.started);
        match &outcome {
            Err(FlightError::Panicked) => {
                self.stats.record(Event::Panicked);
                tracing::warn!(
                    key_digest = %KeyDigest(&call.key),
                    generation,
                    "single-flight work panicked; its waiters get an error"
                );
            }
            Err(FlightError::TimedOut) => {
                self.stats.record(Event::TimedOut);
                tracing::warn!(
                    key_digest = %KeyDigest(&call.key),
                    generation,
                    "single-flight work outlived its lease; its waiters get an error"
                );
                if let Some(abort) = &call.abort {
                    abort.abort();
                }
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
}

impl<K, T> Table<T> for Calls<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    /// Removes the call (if it is still this generation's) and hands every
    /// waiter the outcome.
    fn finish(&self, hash: u64, generation: u64, outcome: Result<T, FlightError>) {
        let call = self
            .lock(hash)
            .find_entry(hash, |call| call.generation == generation)
            .ok()
            .map(|entry| entry.remove().0);
        // Gone already (expired, or every waiter left): nobody to tell.
        if let Some(call) = call {
            self.end(call, outcome);
        }
    }

    /// Ends the call of this generation if its lease is over: for a waiter
    /// whose own timer says so, whatever its leader does.
    fn expire(&self, hash: u64, generation: u64) {
        let now = Instant::now();
        let call = self
            .lock(hash)
            .find_entry(hash, |call| call.generation == generation)
            .ok()
            .filter(|entry| entry.get().deadline <= now)
            .map(|entry| entry.remove().0);
        self.time_out(call.into_iter().collect());
    }

    /// The leader left; its work goes on in a task. Under one lock, so that
    /// a follower leaving meanwhile cannot be missed: with
    /// `abort_when_unused` and nobody left, the task is stopped at once.
    fn leader_left(&self, hash: u64, generation: u64, abort: Option<AbortHandle>) {
        let mut map = self.lock(hash);
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
            let mut map = self.lock(hash);
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

    fn set_abort(&self, hash: u64, generation: u64, abort: AbortHandle) {
        self.with_call(hash, generation, |call| call.abort = Some(abort));
    }

    fn followers(&self, hash: u64, generation: u64) -> usize {
        self.with_call(hash, generation, |call| call.followers())
            .unwrap_or(0)
    }

    fn runtime(&self, hash: u64, generation: u64) -> Option<Handle> {
        self.with_call(hash, generation, |call| call.runtime.clone())
            .flatten()
    }
}
