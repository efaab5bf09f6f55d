//! A model check of the flight table and the lease store, with shuttle.
//!
//! Run with `RUSTFLAGS="--cfg shuttle" cargo test -p tower-singleflight --lib --no-default-features flight::model` (in
//! a target directory of its own: the flag rebuilds every dependency).
//!
//! # Why shuttle, not loom
//!
//! The table's flights hand their outcomes over Tokio's oneshot channels,
//! read Tokio's clock, spawn their work on a Tokio runtime and stop it with
//! its `AbortHandle`. Tokio swaps in loom's primitives only in its own test
//! builds (`cfg(all(test, loom))`): as this crate's dependency, under
//! `--cfg loom` too, its channels, runtime and clock stay on `std`, so the
//! work needs a real runtime driven by a thread of the model, as below. A
//! thread that drives a runtime polls in a loop, which loom's exhaustive
//! search cannot bound; loom also models at most 5 threads
//! (`loom::MAX_THREADS`), where these scenarios need the test's own, a
//! runtime worker and up to five more. Shuttle samples schedules instead, many per scenario
//! at a fixed cost, with PCT bounding the preemptions in each; its threads
//! are coroutines it schedules at each of its own primitives, whatever else
//! they do between them, and it runs async code (`block_on`) on the same
//! scheduler.
//!
//! # What is modelled, and what is not
//!
//! Every lock and atomic of the core is shuttle's here (`sync.rs`): at each
//! one the scheduler picks who runs next, over many schedules per scenario,
//! with a bounded number of preemptions (PCT, [`DEPTH`]) and then at random
//! for as many more.
//!
//! Tokio's oneshot channels stay Tokio's. Their wake-ups reach shuttle's
//! executor (a waiter blocks until the send), but a send, a close or an
//! `is_closed` is one step, never a preemption point; Tokio checks those
//! channels with loom itself.
//!
//! The work of a flight runs on a real current-thread Tokio runtime, driven
//! by one more shuttle thread (a runtime worker, interleaved with the
//! callers like any other), so `Leader::run`, the hand-off of an inline
//! leader, `abort_when_unused` and a lease's timer are the crate's own code.
//! The runtime's clock is paused: `Instant::now()` reads the same in every
//! schedule, and a scenario ends a lease by [`advance`]-ing it. (Shuttle
//! runs every thread of an execution as a coroutine on the test's own OS
//! thread, so the runtime entered at the start is every model thread's
//! context.)
//!
//! A waiter that never gets its outcome, or work left running that nobody
//! waits for, keeps the worker going until it gives up: a failure, with
//! the schedule to replay it.

use std::{
    future::{pending, Future},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
        Arc,
    },
    time::Duration,
};

use futures_util::FutureExt;
use shuttle::thread;
use tokio::{runtime::Runtime, sync::Semaphore};

use super::*;

/// Schedules explored per scenario by each of the two schedulers.
const ITERATIONS: usize = 300;

/// The preemptions PCT places in each schedule, at random points.
const DEPTH: usize = 3;

/// Turns of the worker after which a run counts as hung.
const WORKER_TURNS: usize = 20_000;

const KEY: u32 = 7;

/// A flight's lease that the scenario ends by moving the clock.
const SHORT: Duration = Duration::from_secs(10);

/// A lease no scenario reaches.
const LONG: Duration = Duration::from_secs(3600);

/// Explores `scenario` under PCT, then at random, each on a fresh table and
/// runtime.
fn explore(scenario: fn()) {
    shuttle::check_pct(move || on_runtime(scenario), ITERATIONS, DEPTH);
    shuttle::check_random(move || on_runtime(scenario), ITERATIONS);
}

/// Runs `scenario` with a paused Tokio runtime entered and a worker thread
/// running its tasks; then checks that every task ended.
fn on_runtime(scenario: fn()) {
    let runtime = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime"),
    );
    let entered = runtime.enter();
    let done = Arc::new(AtomicBool::new(false));
    let worker = thread::spawn({
        let (runtime, done) = (Arc::clone(&runtime), Arc::clone(&done));
        move || work(&runtime, &done)
    });
    scenario();
    done.store(true, SeqCst);
    worker.join().expect("every task ended");
    drop(entered);
}

/// A runtime worker: runs whatever is ready, then lets others run, until the
/// scenario is over and no task is left.
fn work(runtime: &Runtime, done: &AtomicBool) {
    for _ in 0..WORKER_TURNS {
        // Runs every ready task and fires the timers due, without parking.
        runtime.block_on(tokio::task::yield_now());
        if done.load(SeqCst) && runtime.metrics().num_alive_tasks() == 0 {
            return;
        }
        thread::yield_now();
    }
    panic!("hung: a waiter never got its outcome, or work nobody waits for never stopped");
}

/// Moves the paused clock on (at the future's first poll; its yield after
/// that is for timers, which the worker fires).
fn advance(by: Duration) {
    let _ = tokio::time::advance(by).now_or_never();
}

fn wait<F: Future>(future: F) -> F::Output {
    shuttle::future::block_on(future)
}

fn joined<T>(threads: Vec<thread::JoinHandle<T>>) -> Vec<T> {
    threads
        .into_iter()
        .map(|thread| thread.join().expect("no model thread panics"))
        .collect()
}

/// A gate the work waits at: open once, for every run.
#[derive(Clone)]
struct Gate(Arc<Semaphore>);

impl Gate {
    fn new() -> Self {
        Self(Arc::new(Semaphore::new(0)))
    }

    fn open(&self) {
        self.0.add_permits(Semaphore::MAX_PERMITS);
    }

    async fn pass(&self) {
        drop(self.0.acquire().await.expect("never closed"));
    }
}

/// Runs of the work for one key, of which the table allows one at a time
/// while its lease lasts. (Counted, not asserted, where they run: a panic
/// in a run becomes the flight's `Panicked`.)
#[derive(Clone, Default)]
struct Runs {
    live: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    overlapped: Arc<AtomicBool>,
}

/// A run going on; over when dropped (finished or stopped).
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

impl Runs {
    fn start(&self) -> Running {
        if self.live.fetch_add(1, SeqCst) > 0 {
            self.overlapped.store(true, SeqCst);
        }
        self.total.fetch_add(1, SeqCst);
        Running(Arc::clone(&self.live))
    }

    /// How many runs there were, none alongside another.
    fn total(&self) -> usize {
        assert!(!self.overlapped.load(SeqCst), "two runs of one key at once");
        self.total.load(SeqCst)
    }

    /// Work that runs once the gate opens and gives `value`; it yields
    /// once on the way, for others to see it running.
    fn work(&self, gate: &Gate, value: u32) -> impl Future<Output = u32> + Send + 'static {
        let (runs, gate) = (self.clone(), gate.clone());
        async move {
            let _running = runs.start();
            tokio::task::yield_now().await;
            gate.pass().await;
            value
        }
    }
}

fn table() -> Flights<u32, u32> {
    Flights::new()
}

/// Checks what every scenario leaves: no flight, no lease.
fn assert_empty(flights: &Flights<u32, u32>) {
    let stats = flights.stats();
    assert_eq!(stats.in_flight, 0, "a flight was left in the table");
    assert_eq!(
        stats.leases_held, 0,
        "a lease guard was counted twice or never"
    );
}

/// Three callers of one key, through `join` and `enter_inline`: one leads,
/// the work runs once, every caller gets its value.
#[test]
fn callers_of_one_key_share_one_run() {
    explore(|| {
        const CALLERS: usize = 3;
        let flights = table();
        let (gate, runs) = (Gate::new(), Runs::default());
        let arrived = Arc::new(AtomicUsize::new(0));
        let callers = (0..CALLERS)
            .map(|caller| {
                let (flights, gate, runs, arrived) =
                    (flights.clone(), gate.clone(), runs.clone(), arrived.clone());
                thread::spawn(move || {
                    let options = CallOptions::default();
                    // The work ends only once every caller is in the table.
                    let arrive = || {
                        if arrived.fetch_add(1, SeqCst) + 1 == CALLERS {
                            gate.open();
                        }
                    };
                    if caller == 1 {
                        let hash = flights.key_hash(&KEY);
                        match flights.enter_inline(KEY, hash, &options) {
                            Ok(Inlined::Leader(leader)) => {
                                arrive();
                                let value = wait(runs.work(&gate, 42));
                                leader.finish(Ok(value));
                                Ok(Arc::new(value))
                            }
                            Ok(Inlined::Follower(waiter, ..)) => {
                                arrive();
                                wait(waiter)
                            }
                            Err(overloaded) => panic!("{overloaded}"),
                        }
                    } else {
                        match flights.join(KEY, &options).expect("no bound is near") {
                            Joined::Leader(leader) => {
                                arrive();
                                wait(leader.run(runs.work(&gate, 42)))
                            }
                            Joined::Follower(waiter) => {
                                arrive();
                                wait(waiter)
                            }
                        }
                    }
                })
            })
            .collect();
        for outcome in joined(callers) {
            assert_eq!(outcome.as_deref(), Ok(&42));
        }
        assert_eq!(runs.total(), 1);
        let stats = flights.stats();
        assert_eq!((stats.leaders, stats.followers), (1, 2));
        assert_empty(&flights);
    });
}

/// An inline leader stops waiting while followers join: its work goes on
/// in a task and every follower gets its value; a caller that finds the
/// key free leads the next flight, never alongside the first.
#[test]
fn a_leader_that_stops_waiting_hands_its_work_off() {
    explore(|| {
        let flights = table();
        let (gate, runs) = (Gate::new(), Runs::default());
        gate.open();
        let options = CallOptions::default().lease(LONG);
        let hash = flights.key_hash(&KEY);
        let Ok(Inlined::Leader(leader)) = flights.enter_inline(KEY, hash, &options) else {
            panic!("the first caller leads");
        };
        let work = runs.work(&gate, 1);
        let leaving = thread::spawn(move || leader.hand_off(Box::pin(work)));
        let followers = (0..2)
            .map(|_| {
                let (flights, gate, runs, options) =
                    (flights.clone(), gate.clone(), runs.clone(), options.clone());
                thread::spawn(move || match flights.enter_inline(KEY, hash, &options) {
                    Ok(Inlined::Follower(waiter, ..)) => wait(waiter),
                    Ok(Inlined::Leader(leader)) => {
                        let value = wait(runs.work(&gate, 2));
                        leader.finish(Ok(value));
                        Ok(Arc::new(value))
                    }
                    Err(overloaded) => panic!("{overloaded}"),
                })
            })
            .collect();
        leaving.join().expect("the hand-off");
        for outcome in joined(followers) {
            let value = outcome.expect("every follower gets a value");
            assert!(matches!(*value, 1 | 2));
        }
        assert!(runs.total() >= 1);
        assert_empty(&flights);
    });
}

/// A leader dropped before it ran its work, while followers wait: they are
/// told at once and enter again, and one of them runs the work for all.
#[test]
fn a_leader_dropped_unrun_lets_a_follower_take_over() {
    explore(|| {
        let flights = table();
        let (gate, runs) = (Gate::new(), Runs::default());
        gate.open();
        let options = CallOptions::default();
        let Ok(Joined::Leader(leader)) = flights.join(KEY, &options) else {
            panic!("the first caller leads");
        };
        let Ok(Joined::Follower(waiter)) = flights.join(KEY, &options) else {
            panic!("the second caller follows");
        };
        let callers = [Some(waiter), None]
            .into_iter()
            .map(|waiter| {
                let (flights, gate, runs, options) =
                    (flights.clone(), gate.clone(), runs.clone(), options.clone());
                thread::spawn(move || {
                    let first = match waiter {
                        Some(waiter) => wait(waiter),
                        None => wait(flights.join_or_lead(KEY, &options, || runs.work(&gate, 3))),
                    };
                    match first {
                        // As share mode does: enter once more.
                        Err(FlightError::Abandoned) => {
                            wait(flights.join_or_lead(KEY, &options, || runs.work(&gate, 3)))
                        }
                        outcome => outcome,
                    }
                })
            })
            .collect();
        let cancelled = thread::spawn(move || drop(leader));
        cancelled.join().expect("the drop");
        for outcome in joined(callers) {
            assert_eq!(outcome.as_deref(), Ok(&3));
        }
        assert!(runs.total() >= 1);
        assert_empty(&flights);
    });
}

/// The work panics while followers join: every waiter gets `Panicked`, the
/// panic counts once, the key is free.
#[test]
fn a_panic_reaches_every_waiter_and_frees_the_key() {
    explore(|| {
        const CALLERS: usize = 3;
        let flights = table();
        let gate = Gate::new();
        let arrived = Arc::new(AtomicUsize::new(0));
        let callers = (0..CALLERS)
            .map(|_| {
                let (flights, gate, arrived) = (flights.clone(), gate.clone(), arrived.clone());
                thread::spawn(move || {
                    let joined = flights.join(KEY, &CallOptions::default());
                    if arrived.fetch_add(1, SeqCst) + 1 == CALLERS {
                        gate.open();
                    }
                    match joined.expect("no bound is near") {
                        Joined::Leader(leader) => wait(leader.run(async move {
                            gate.pass().await;
                            panic!("the work failed");
                        })),
                        Joined::Follower(waiter) => wait(waiter),
                    }
                })
            })
            .collect();
        for outcome in joined(callers) {
            assert_eq!(outcome, Err(FlightError::Panicked));
        }
        assert_eq!(flights.stats().panicked, 1);
        assert_empty(&flights);
    });
}

/// A flight's lease ends while its work finishes and new callers come: its
/// waiters get its value or `TimedOut`, never hang; the callers after the
/// lease lead a flight of their own, one at a time, and the old flight's
/// late end never reaches them.
#[test]
fn a_flight_past_its_lease_never_reaches_the_next_one() {
    explore(|| {
        let flights = table();
        let (old_gate, new_gate) = (Gate::new(), Gate::new());
        new_gate.open();
        let (old_runs, new_runs) = (Runs::default(), Runs::default());
        let short = CallOptions::default().lease(SHORT);
        let long = CallOptions::default().lease(LONG);
        let Ok(Joined::Leader(leader)) = flights.join(KEY, &short) else {
            panic!("the first caller leads");
        };
        let old_leader = leader.run(old_runs.work(&old_gate, 1));
        let Ok(Joined::Follower(old_follower)) = flights.join(KEY, &short) else {
            panic!("the second caller follows");
        };
        let old_waiters = [old_leader, old_follower]
            .into_iter()
            .map(|waiter| thread::spawn(move || wait(waiter)))
            .collect::<Vec<_>>();
        let finishing = thread::spawn(move || old_gate.open());
        let after_the_lease = thread::spawn({
            let (flights, new_runs) = (flights.clone(), new_runs.clone());
            move || {
                advance(SHORT);
                let second = thread::spawn({
                    let (flights, long, new_gate, new_runs) = (
                        flights.clone(),
                        long.clone(),
                        new_gate.clone(),
                        new_runs.clone(),
                    );
                    move || wait(flights.join_or_lead(KEY, &long, || new_runs.work(&new_gate, 2)))
                });
                let first = wait(flights.join_or_lead(KEY, &long, || new_runs.work(&new_gate, 2)));
                [first, second.join().expect("the second new caller")]
            }
        });
        finishing.join().expect("the old work's end");
        for outcome in joined(old_waiters) {
            assert!(
                matches!(outcome.as_deref(), Ok(&1) | Err(FlightError::TimedOut)),
                "{outcome:?}"
            );
        }
        for outcome in after_the_lease.join().expect("the new callers") {
            assert_eq!(outcome.as_deref(), Ok(&2), "a caller after the lease");
        }
        assert!(new_runs.total() >= 1);
        assert_empty(&flights);
    });
}

/// The same for an inline flight, whose lease its follower enforces: the
/// follower's expiry, the leader's late finish and the callers after the
/// lease race.
#[test]
fn an_inline_flight_past_its_lease_never_reaches_the_next_one() {
    explore(|| {
        let flights = table();
        let short = CallOptions::default().lease(SHORT);
        let hash = flights.key_hash(&KEY);
        let Ok(Inlined::Leader(leader)) = flights.enter_inline(KEY, hash, &short) else {
            panic!("the first caller leads");
        };
        let Ok(Inlined::Follower(waiter, watch, _)) = flights.enter_inline(KEY, hash, &short)
        else {
            panic!("the second caller follows");
        };
        let late = thread::spawn(move || leader.finish(Ok(1)));
        let follower = thread::spawn({
            let flights = flights.clone();
            move || {
                advance(SHORT);
                let newcomers = (0..2)
                    .map(|_| {
                        let flights = flights.clone();
                        thread::spawn(move || {
                            let long = CallOptions::default().lease(LONG);
                            match flights.enter_inline(KEY, hash, &long) {
                                Ok(Inlined::Leader(leader)) => {
                                    leader.finish(Ok(2));
                                    Ok(Arc::new(2))
                                }
                                Ok(Inlined::Follower(waiter, ..)) => wait(waiter),
                                Err(overloaded) => panic!("{overloaded}"),
                            }
                        })
                    })
                    .collect();
                // Its timer says the lease is over, as in share mode.
                watch.expire();
                (wait(waiter), joined(newcomers))
            }
        });
        late.join().expect("the late finish");
        let (outcome, newcomers) = follower.join().expect("the follower");
        assert!(
            matches!(outcome.as_deref(), Ok(&1) | Err(FlightError::TimedOut)),
            "{outcome:?}"
        );
        for outcome in newcomers {
            assert_eq!(outcome.as_deref(), Ok(&2), "a caller after the lease");
        }
        assert_empty(&flights);
    });
}

/// With `abort_when_unused`, the leader's client and a follower leave while
/// the work finishes and a newcomer joins: the newcomer always gets a
/// value, the old flight's or its own (the work is stopped only when
/// nobody waits, and then the key is free).
#[test]
fn the_last_waiter_leaving_races_a_newcomer_and_the_finish() {
    explore(|| {
        let flights = table();
        let gate = Gate::new();
        // An aborted run may still be dropping when the next one starts.
        let (old_runs, new_runs) = (Runs::default(), Runs::default());
        let options = CallOptions::default().abort_when_unused(true);
        let Ok(Joined::Leader(leader)) = flights.join(KEY, &options) else {
            panic!("the first caller leads");
        };
        let leader = leader.run(old_runs.work(&gate, 1));
        let Ok(Joined::Follower(follower)) = flights.join(KEY, &options) else {
            panic!("the second caller follows");
        };
        let leaving = [leader, follower]
            .into_iter()
            .map(|waiter| thread::spawn(move || drop(waiter)))
            .collect::<Vec<_>>();
        let finishing = thread::spawn({
            let gate = gate.clone();
            move || gate.open()
        });
        let newcomer = thread::spawn({
            let flights = flights.clone();
            move || wait(flights.join_or_lead(KEY, &options, || new_runs.work(&gate, 2)))
        });
        joined(leaving);
        finishing.join().expect("the gate");
        let outcome = newcomer.join().expect("the newcomer");
        assert!(matches!(outcome.as_deref(), Ok(&1 | &2)), "{outcome:?}");
        assert_empty(&flights);
    });
}

/// An inline leader hands its work off with `abort_when_unused` while its
/// only follower leaves: whichever goes last, the work is stopped (else
/// the worker never runs out of tasks) and the key is free.
#[test]
fn work_handed_off_as_the_last_follower_leaves_is_stopped() {
    explore(|| {
        let flights = table();
        let options = CallOptions::default().abort_when_unused(true);
        let hash = flights.key_hash(&KEY);
        let Ok(Inlined::Leader(leader)) = flights.enter_inline(KEY, hash, &options) else {
            panic!("the first caller leads");
        };
        let Ok(Inlined::Follower(waiter, ..)) = flights.enter_inline(KEY, hash, &options) else {
            panic!("the second caller follows");
        };
        // Work that never ends: only an abort ends its task.
        let handing = thread::spawn(move || leader.hand_off(Box::pin(pending::<u32>())));
        let leaving = thread::spawn(move || drop(waiter));
        handing.join().expect("the hand-off");
        leaving.join().expect("the follower");
        assert_empty(&flights);
    });
}

/// Three callers take and give back one key, twice each: one holder at a
/// time, and nothing held or counted after.
#[test]
fn one_holder_at_a_time() {
    explore(|| {
        let flights = table();
        let holders = Arc::new(AtomicUsize::new(0));
        let taken = Arc::new(AtomicUsize::new(0));
        let callers = (0..3)
            .map(|_| {
                let (flights, holders, taken) = (flights.clone(), holders.clone(), taken.clone());
                thread::spawn(move || {
                    for _ in 0..2 {
                        match wait(flights.try_acquire(KEY, LONG)) {
                            Ok(guard) => {
                                assert_eq!(holders.fetch_add(1, SeqCst), 0, "two holders");
                                taken.fetch_add(1, SeqCst);
                                thread::yield_now();
                                holders.fetch_sub(1, SeqCst);
                                drop(guard);
                            }
                            Err(Refused::Held(holder)) => assert_eq!(holder.generation(), 1),
                            Err(refused) => panic!("{refused:?}"),
                        }
                    }
                })
            })
            .collect();
        joined(callers);
        let stats = flights.stats();
        assert!(taken.load(SeqCst) >= 1);
        assert_eq!(stats.leaders, taken.load(SeqCst) as u64);
        assert_eq!(stats.leaders + stats.rejected, 6);
        assert!(wait(flights.holders()).is_empty());
        assert_empty(&flights);
    });
}

/// A holder whose lease ended lets go while the next one takes the key:
/// its release never frees its successor's holding.
#[test]
fn a_stale_release_never_frees_the_next_holder() {
    explore(|| {
        let flights = table();
        let old = wait(flights.try_acquire(KEY, SHORT)).expect("a fresh table");
        let letting_go = thread::spawn(move || drop(old));
        let next = thread::spawn({
            let flights = flights.clone();
            move || {
                advance(SHORT);
                let guard = wait(flights.try_acquire(KEY, LONG)).expect("the lease ended");
                thread::yield_now();
                assert!(wait(guard.is_current()), "the old holder freed the new one");
                let refused = wait(flights.try_acquire(KEY, LONG)).expect_err("held");
                assert_eq!(
                    refused.into_holder().map(|holder| holder.lease()),
                    Some(guard.lease())
                );
                drop(guard);
            }
        });
        letting_go.join().expect("the old holder");
        next.join().expect("the next holder");
        assert!(wait(flights.holder(&KEY)).is_none());
        assert_empty(&flights);
    });
}

/// Two keys in different shards taken at once: every fencing token the store
/// gives is its own.
#[test]
fn tokens_are_unique_across_shards() {
    explore(|| {
        let flights = table();
        let mut tokens = Vec::new();
        // Two keys whose tokens say they sit in different shards (a token's
        // low bits are its shard's index).
        let mut shard = |key: u32| {
            let guard = wait(flights.try_acquire(key, LONG)).expect("free");
            tokens.push(guard.fencing_token());
            guard.fencing_token() & 63
        };
        let first = shard(0);
        let other = (1..64).find(|key| shard(*key) != first).unwrap_or(1);
        let callers = [0, other]
            .into_iter()
            .map(|key| {
                let flights = flights.clone();
                thread::spawn(move || {
                    (0..2)
                        .map(|_| {
                            let guard = wait(flights.try_acquire(key, LONG)).expect("free");
                            guard.fencing_token()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        tokens.extend(joined(callers).into_iter().flatten());
        let given = tokens.len();
        tokens.sort_unstable();
        tokens.dedup();
        assert_eq!(tokens.len(), given, "a token given twice");
        assert_empty(&flights);
    });
}

/// Two callers of two keys in different shards, under `max_flights(1)`: at
/// most one may lead (both may be refused when they enter at the same
/// instant: each saw the other's announcement), and nothing they announced
/// outlives them: a caller alone afterwards leads.
///
/// Failed before each entrant announced its flight in its own shard's count
/// before reading the others' (schedule
/// `91022e80c7c2c0e4abed8a2c804092244992246cdbb66ddbb66d8b240900`: A locks
/// its shard and reads B's count, 0; B locks its shard, reads A's count, 0,
/// inserts its flight and is preempted before publishing its count; A reads
/// B's count again, still 0, and inserts its own: two flights).
#[test]
fn the_flight_bound_holds_across_shards() {
    explore(|| {
        let flights = table();
        let shard = |key: &u32| (flights.key_hash(key) >> 32) as usize & (shards::count() - 1);
        let other = (1..)
            .find(|key| shard(key) != shard(&0))
            .expect("more than one shard");
        let options = CallOptions::default().max_flights(1);
        let callers = [0, other]
            .into_iter()
            .map(|key| {
                let (flights, options) = (flights.clone(), options.clone());
                // Each holds its flight until both have entered.
                thread::spawn(move || flights.join(key, &options))
            })
            .collect();
        let entered = joined(callers);
        let admitted = entered.iter().filter(|entered| entered.is_ok()).count();
        assert!(admitted <= 1, "max_flights(1) admitted {admitted} flights");
        drop(entered);
        assert_empty(&flights);
        assert!(
            flights.join(other, &options).is_ok(),
            "a caller alone on an empty table leads"
        );
    });
}

/// Two callers take one key while the table shuts down, and a third joins
/// a flight. A caller is refused (the table is shutting down, or the other
/// holds the key), or holds the key, is signalled and lets go: the shutdown
/// never says "drained" while a guard is alive, never misses the release
/// it waits for (it would wait an hour the clock never reaches: a hang),
/// and no flight or lease starts once it has.
///
/// (The store may hold the key for a moment after the shutdown returned: an
/// acquisition it granted as the shutdown started, not yet settled, which
/// gives the key back when it settles. Checked once the callers are done.)
#[test]
fn shutdown_races_acquisitions() {
    explore(|| {
        let flights = table();
        // Guards alive: counted up once taken, down just before the drop.
        let alive = Arc::new(AtomicUsize::new(0));
        let callers = (0..2)
            .map(|_| {
                let (flights, alive) = (flights.clone(), alive.clone());
                thread::spawn(move || match wait(flights.try_acquire(KEY, LONG)) {
                    Ok(guard) => {
                        alive.fetch_add(1, SeqCst);
                        wait(guard.cancelled());
                        assert!(guard.is_cancelled());
                        thread::yield_now();
                        alive.fetch_sub(1, SeqCst);
                        drop(guard);
                        true
                    }
                    Err(Refused::Unavailable(unavailable)) => {
                        assert!(unavailable.is_shutting_down());
                        false
                    }
                    Err(Refused::Held(_)) => false,
                    Err(refused) => panic!("{refused:?}"),
                })
            })
            .collect();
        let joiner = thread::spawn({
            let flights = flights.clone();
            move || match flights.join(KEY, &CallOptions::default()) {
                Ok(Joined::Leader(leader)) => {
                    assert_eq!(wait(leader.run(async { 1 })), Ok(Arc::new(1)));
                }
                Ok(Joined::Follower(_)) => panic!("nobody else leads"),
                Err(refused) => assert_eq!(refused, Overloaded::ShuttingDown),
            }
        });
        let drained = wait(flights.shutdown(LONG));
        assert_eq!(drained.still_running, 0);
        assert_eq!(alive.load(SeqCst), 0, "drained while a guard was alive");
        let held = joined(callers).into_iter().filter(|held| *held).count();
        assert!(held <= 1, "two holders");
        joiner.join().expect("the joiner");
        assert!(wait(flights.holder(&KEY)).is_none(), "a lease was kept");
        assert!(wait(flights.try_acquire(KEY, LONG)).is_err());
        assert!(flights.join(KEY, &CallOptions::default()).is_err());
        assert_empty(&flights);
    });
}
