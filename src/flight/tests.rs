//! The table's guarantees, exercised without HTTP.

use std::{
    future::pending,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
        Arc,
    },
    time::Duration,
};

use tokio::{sync::Notify, task::JoinSet};

use super::*;

const TTL: Duration = Duration::from_secs(30);

/// Yields until `condition` holds; fails loudly instead of hanging.
async fn until(condition: impl Fn() -> bool) {
    for _ in 0..100_000 {
        if condition() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition never became true");
}

/// Sets its flag when dropped: shows that work was cancelled.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_run() {
    let flights: Flights<&str, usize> = Flights::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let mut callers = JoinSet::new();
    for _ in 0..100 {
        let (flights, runs) = (flights.clone(), runs.clone());
        callers.spawn(async move {
            flights
                .join_or_lead("k", &CallOptions::default(), || async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    runs.fetch_add(1, SeqCst) + 1
                })
                .await
        });
    }
    let outcomes = callers.join_all().await;
    assert_eq!(runs.load(SeqCst), 1);
    assert!(outcomes.iter().all(|outcome| outcome.as_deref() == Ok(&1)));
    let stats = flights.stats();
    assert_eq!(
        (stats.leaders, stats.followers, stats.in_flight),
        (1, 99, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_panic_reaches_every_waiter_and_frees_the_key() {
    let flights: Flights<&str, u8> = Flights::new();
    let options = CallOptions::default();
    let started = Arc::new(Notify::new());
    let Ok(Joined::Leader(leader)) = flights.join("k", &options) else {
        panic!("first caller leads");
    };
    let leader = leader.run({
        let started = started.clone();
        async move {
            started.notified().await;
            panic!("boom");
        }
    });
    let Ok(Joined::Follower(follower)) = flights.join("k", &options) else {
        panic!("second caller follows");
    };
    started.notify_one();
    assert_eq!(leader.await, Err(FlightError::Panicked));
    assert_eq!(follower.await, Err(FlightError::Panicked));
    assert_eq!(flights.stats().panicked, 1);
    assert_eq!(flights.in_flight(), 0);

    let next = flights.join_or_lead("k", &options, || async { 7 }).await;
    assert_eq!(next.as_deref(), Ok(&7));
}

#[tokio::test(start_paused = true)]
async fn work_past_its_lease_is_aborted_and_the_key_freed() {
    let flights: Flights<&str, ()> = Flights::new();
    let options = CallOptions::default().lease(Duration::from_secs(1));
    let cancelled = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(cancelled.clone());
    let outcome = flights
        .join_or_lead("k", &options, || async move {
            let _flag = flag;
            pending::<()>().await;
        })
        .await;
    assert_eq!(outcome, Err(FlightError::TimedOut));
    assert!(cancelled.load(SeqCst), "the work was dropped");
    assert_eq!(flights.in_flight(), 0);
    assert_eq!(flights.stats().timed_out, 1);
}

#[tokio::test(start_paused = true)]
async fn the_work_outlives_its_callers_by_default() {
    let flights: Flights<&str, ()> = Flights::new();
    let finished = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(Notify::new());
    let Ok(Joined::Leader(leader)) = flights.join("k", &CallOptions::default()) else {
        panic!("first caller leads");
    };
    let waiter = leader.run({
        let (finished, gate) = (finished.clone(), gate.clone());
        async move {
            gate.notified().await;
            finished.store(true, SeqCst);
        }
    });
    drop(waiter);
    gate.notify_one();
    until(|| finished.load(SeqCst)).await;
    until(|| flights.in_flight() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn abort_when_unused_stops_work_nobody_waits_for() {
    let flights: Flights<&str, ()> = Flights::new();
    let options = CallOptions::default().abort_when_unused(true);
    let cancelled = Arc::new(AtomicBool::new(false));
    let Ok(Joined::Leader(leader)) = flights.join("k", &options) else {
        panic!("first caller leads");
    };
    let flag = DropFlag(cancelled.clone());
    let leader = leader.run(async move {
        let _flag = flag;
        pending::<()>().await;
    });
    let Ok(Joined::Follower(follower)) = flights.join("k", &options) else {
        panic!("second caller follows");
    };

    drop(leader);
    tokio::task::yield_now().await;
    assert!(!cancelled.load(SeqCst), "a follower still waits");
    assert_eq!(flights.in_flight(), 1);

    drop(follower);
    assert_eq!(flights.in_flight(), 0, "the key is free at once");
    until(|| cancelled.load(SeqCst)).await;
}

#[tokio::test(start_paused = true)]
async fn a_follower_cannot_switch_abort_when_unused_on() {
    let flights: Flights<&str, ()> = Flights::new();
    let gate = Arc::new(Notify::new());
    let Ok(Joined::Leader(leader)) = flights.join("k", &CallOptions::default()) else {
        panic!("first caller leads");
    };
    drop(leader.run({
        let gate = gate.clone();
        async move { gate.notified().await }
    }));
    let aborting = CallOptions::default().abort_when_unused(true);
    drop(flights.join("k", &aborting).unwrap());
    assert_eq!(
        flights.in_flight(),
        1,
        "the key stays held while its work runs"
    );
    gate.notify_one();
    until(|| flights.in_flight() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn bounds_turn_callers_away_without_queueing() {
    let flights: Flights<u32, ()> = Flights::new();
    let options = CallOptions::default().max_waiters(2).max_flights(2);
    let leader = flights.join(1, &options).unwrap();
    let follower = flights.join(1, &options).unwrap();
    assert!(matches!(
        flights.join(1, &options),
        Err(Overloaded::TooManyWaiters)
    ));

    // A waiter that left gives its place back.
    drop(follower);
    let again = flights.join(1, &options).unwrap();

    let other = flights.join(2, &options).unwrap();
    assert!(matches!(
        flights.join(3, &options),
        Err(Overloaded::TooManyFlights)
    ));
    assert_eq!(flights.stats().overloaded, 2);
    drop((leader, again, other));
    assert_eq!(flights.in_flight(), 0, "unrun leaders free their keys");
}

#[tokio::test(start_paused = true)]
async fn a_leader_dropped_unrun_lets_followers_know() {
    let flights: Flights<&str, ()> = Flights::new();
    let options = CallOptions::default();
    let leader = flights.join("k", &options).unwrap();
    let Ok(Joined::Follower(follower)) = flights.join("k", &options) else {
        panic!("second caller follows");
    };
    drop(leader);
    assert_eq!(follower.await, Err(FlightError::Abandoned));
    assert_eq!(flights.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn no_state_is_left_after_many_unique_keys() {
    let flights: Flights<u32, u32> = Flights::new();
    let options = CallOptions::default();
    for key in 0..10_000 {
        let value = flights
            .join_or_lead(key, &options, move || async move { key })
            .await;
        assert_eq!(value.as_deref(), Ok(&key));
        let guard = flights.try_acquire(key, TTL).await.unwrap();
        drop(guard);
    }
    let stats = flights.stats();
    assert_eq!((stats.in_flight, stats.leases_held), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_guard_holds_the_key_until_dropped() {
    let store = Arc::new(MemoryStore::new());
    let flights: Flights<&str> = Flights::with_store(store.clone());
    let guard = flights.try_acquire("job", TTL).await.unwrap();
    let holder = flights
        .try_acquire("job", TTL)
        .await
        .unwrap_err()
        .into_holder()
        .unwrap();
    assert_eq!(holder.lease(), guard.lease());
    assert!(guard.is_current().await);

    drop(guard);
    assert!(store.is_empty());
    assert!(flights.holder(&"job").await.is_none());
    let stats = flights.stats();
    assert_eq!(
        (stats.leaders, stats.rejected, stats.leases_held),
        (1, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_guard_cannot_touch_the_new_holder() {
    let flights: Flights<&str> = Flights::new();
    let old = flights.try_acquire("job", TTL).await.unwrap();

    tokio::time::advance(TTL - Duration::from_millis(1)).await;
    assert!(
        flights.try_acquire("job", TTL).await.is_err(),
        "held at TTL - 1 ms"
    );
    tokio::time::advance(Duration::from_millis(2)).await;
    let new = flights
        .try_acquire("job", TTL)
        .await
        .expect("free at TTL + 1 ms");
    assert_eq!(new.lease().generation(), 2);

    assert!(!old.is_current().await);
    assert!(!old.renew(TTL).await, "a stale guard cannot renew");
    drop(old);
    assert!(new.is_current().await, "a stale guard's drop frees nothing");
    assert!(flights.try_acquire("job", TTL).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_guard_moves_into_a_task_and_a_panic_there_frees_the_key() {
    let flights: Flights<String> = Flights::new();
    let guard = flights.try_acquire("job".to_owned(), TTL).await.unwrap();
    let task = tokio::spawn(async move {
        let _guard = guard;
        panic!("job failed");
    });
    assert!(task.await.unwrap_err().is_panic());
    assert!(flights.try_acquire("job".to_owned(), TTL).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn only_runs_that_ended_holding_their_key_inform_retry_after() {
    let ttl = Duration::from_secs(7200);
    let flights: Flights<&str> = Flights::new();
    for _ in 0..4 {
        let run = flights.try_acquire("k", ttl).await.unwrap();
        // A duplicate turned away: this key's runs are worth knowing.
        assert!(flights.try_acquire("k", ttl).await.is_err());
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(run);
    }
    let hung = flights.try_acquire("k", ttl).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    flights.force_release(&"k").await.unwrap();
    let _new = flights.try_acquire("k", ttl).await.unwrap();
    drop(hung);

    let holder = flights.holder(&"k").await.unwrap();
    assert_eq!(flights.retry_hint(&"k", &holder), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn followers_are_counted_after_the_leader_left_and_slots_were_reclaimed() {
    let flights: Flights<&str, usize> = Flights::new();
    let options = CallOptions::default().max_waiters(1);
    let Ok(Joined::Leader(leader)) = flights.join("k", &options) else {
        panic!("first caller leads");
    };
    let (release, gate) = tokio::sync::oneshot::channel::<()>();
    let (report, counted) = tokio::sync::oneshot::channel();
    let leader = leader.run_with(move |peers| async move {
        let _ = gate.await;
        let followers = peers.followers();
        let _ = report.send(followers);
        followers
    });
    drop(leader); // the leader's client left: its slot is reclaimable
    let Ok(Joined::Follower(follower)) = flights.join("k", &options) else {
        panic!("a slot was reclaimed for the follower");
    };
    let _ = release.send(());
    assert_eq!(counted.await.unwrap(), 1, "the follower is counted");
    assert_eq!(*follower.await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn runs_nobody_duplicated_are_not_recorded() {
    let ttl = Duration::from_secs(600);
    let flights: Flights<&str> = Flights::new();
    let quiet = flights.try_acquire("k", ttl).await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    drop(quiet);

    let run = flights.try_acquire("k", ttl).await.unwrap();
    let holder = flights
        .try_acquire("k", ttl)
        .await
        .unwrap_err()
        .into_holder()
        .unwrap();
    assert!(holder.was_contended());
    let fallback = Duration::from_secs(1);
    assert_eq!(
        flights.retry_hint(&"k", &holder),
        fallback,
        "no history yet"
    );
    drop(run);
}

#[tokio::test(start_paused = true)]
async fn try_lead_takes_over_a_call_past_its_lease() {
    let flights: Flights<&str, u32> = Flights::new();
    let options = CallOptions::default().lease(Duration::from_millis(100));
    let Ok(Joined::Leader(stuck)) = flights.join("k", &options) else {
        panic!("a fresh table");
    };
    assert!(flights.try_lead("k", &options).is_none(), "it runs");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let refresh = flights.try_lead("k", &options);
    assert!(
        refresh.is_some(),
        "past its lease, it no longer holds the key"
    );
    drop(stuck);
}

#[tokio::test(start_paused = true)]
async fn a_large_bound_admits_every_flight_below_it_and_refuses_before_twice_it() {
    let flights: Flights<u32, ()> = Flights::new();
    let max = shards::count() * 64 * 2;
    let options = CallOptions::default().max_flights(max);
    let mut running = Vec::new();
    for key in 0..max as u32 {
        running.push(flights.join(key, &options).expect("below the bound"));
    }
    let refused_at = (max as u32..2 * max as u32)
        .find(|key| match flights.join(*key, &options) {
            Ok(flight) => {
                running.push(flight);
                false
            }
            Err(refused) => {
                assert_eq!(refused, Overloaded::TooManyFlights);
                true
            }
        })
        .expect("refused before twice the bound");
    assert!(flights.stats().in_flight <= 2 * max);
    assert!(refused_at as usize >= max);
}

#[test]
fn counts_from_every_thread_add_up_and_a_lease_dropped_elsewhere_nets_out() {
    let stats = Arc::new(stats::Stats::default());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let stats = Arc::clone(&stats);
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    stats.record(stats::Event::Led);
                }
                stats.lease_taken();
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("no panic");
    }
    assert_eq!(stats.snapshot(0).leaders, 4000);
    assert_eq!(stats.snapshot(0).leases_held, 4);
    for _ in 0..4 {
        stats.lease_dropped(tokio::time::Instant::now()); // all on this thread's stripe
    }
    assert_eq!(stats.snapshot(0).leases_held, 0);
}

// Shutdown.

/// Whether `refused` is the refusal of a table shutting down.
fn shutting_down<T: std::fmt::Debug>(refused: Result<T, Refused>) -> bool {
    matches!(
        refused,
        Err(Refused::Unavailable(unavailable)) if unavailable.is_shutting_down()
    )
}

#[tokio::test(start_paused = true)]
async fn shutdown_refuses_new_leases_on_every_clone_without_asking_the_store() {
    let flights: Flights<&str> = Flights::new();
    let clone = flights.clone();
    assert!(!clone.is_shutting_down());

    let drained = flights.shutdown(Duration::from_secs(10)).await;
    assert_eq!((drained.finished, drained.still_running), (0, 0));
    assert!(clone.is_shutting_down(), "clones share the shutdown");

    assert!(shutting_down(clone.try_acquire("k", TTL).await));
    let spawned = clone.spawn("k", TTL, |_| async { unreachable!("refused") });
    assert!(shutting_down(spawned.await));
    assert!(
        clone.holder(&"k").await.is_none(),
        "the key was never taken"
    );
    let stats = clone.stats();
    assert_eq!((stats.leaders, stats.leases_held), (0, 0));
    assert_eq!(stats.unavailable, 0, "a shutdown is not a store outage");
}

#[tokio::test(start_paused = true)]
async fn a_job_that_watches_its_token_stops_and_shutdown_returns_when_it_lets_go() {
    let flights: Flights<&str> = Flights::new();
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let finish = Arc::new(Notify::new());
    let job = flights
        .spawn("job", TTL, {
            let (saw_cancel, finish) = (saw_cancel.clone(), finish.clone());
            |lease| async move {
                assert!(!lease.is_cancelled());
                lease.cancelled().await;
                assert!(lease.is_cancelled());
                saw_cancel.store(true, SeqCst);
                // Winding down: saving where it got to.
                finish.notified().await;
                "stopped"
            }
        })
        .await
        .unwrap();

    let started = Instant::now();
    let grace = Duration::from_secs(60);
    let shutdown = tokio::spawn({
        let flights = flights.clone();
        async move { flights.shutdown(grace).await }
    });
    until(|| saw_cancel.load(SeqCst)).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(
        !shutdown.is_finished(),
        "returned while the job held its key"
    );

    finish.notify_one();
    let drained = shutdown.await.unwrap();
    assert_eq!((drained.finished, drained.still_running), (1, 0));
    assert!(drained.is_complete());
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "did not wait for the deadline"
    );
    assert_eq!(job.await.unwrap(), "stopped");
    assert!(flights.holder(&"job").await.is_none());
    assert_eq!(flights.stats().leases_held, 0);
}

#[tokio::test(start_paused = true)]
async fn a_job_that_ignores_its_token_is_reported_at_the_deadline() {
    let flights: Flights<&str> = Flights::new();
    let ignores = flights
        .spawn("ignores", TTL, |_lease| pending::<()>())
        .await
        .unwrap();
    let stops = flights
        .spawn("stops", TTL, |lease| async move { lease.cancelled().await })
        .await
        .unwrap();

    let started = Instant::now();
    let drained = flights.shutdown(Duration::from_secs(10)).await;
    assert_eq!((drained.finished, drained.still_running), (1, 1));
    assert!(!drained.is_complete());
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(10),
        "returned at the deadline"
    );
    stops.await.unwrap();
    assert!(
        !ignores.is_finished(),
        "left running: it ends with the runtime"
    );
    assert!(flights.holder(&"ignores").await.is_some());
    ignores.abort();
}

#[tokio::test(start_paused = true)]
async fn concurrent_and_repeated_shutdowns_each_keep_their_own_deadline() {
    let flights: Flights<&str> = Flights::new();
    let gate = Arc::new(Notify::new());
    flights
        .spawn("job", TTL, {
            let gate = gate.clone();
            |lease| async move {
                lease.cancelled().await;
                gate.notified().await;
            }
        })
        .await
        .unwrap();
    let started = Instant::now();
    let ended_at = |drained: Drained| (drained, started.elapsed());

    let (short, long, ()) = tokio::join!(
        async { ended_at(flights.shutdown(Duration::from_secs(5)).await) },
        async { ended_at(flights.clone().shutdown(Duration::from_secs(60)).await) },
        async {
            tokio::time::sleep(Duration::from_secs(20)).await;
            gate.notify_one();
        },
    );
    let (short, long) = ((short.0.still_running, short.1), (long.0.finished, long.1));
    assert_eq!(short, (1, Duration::from_secs(5)));
    assert_eq!(long, (1, Duration::from_secs(20)));

    let again = flights.shutdown(Duration::from_secs(60)).await;
    assert_eq!((again.finished, again.still_running), (0, 0));
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(20),
        "nothing left to wait for"
    );
    assert!(flights.is_shutting_down());
}

#[tokio::test(start_paused = true)]
async fn a_deadline_of_duration_max_waits_as_long_as_the_job_takes() {
    let flights: Flights<&str> = Flights::new();
    let wind_down = Duration::from_secs(3 * 3600);
    flights
        .spawn("job", Duration::MAX, move |lease| async move {
            lease.cancelled().await;
            tokio::time::sleep(wind_down).await;
        })
        .await
        .unwrap();
    let started = Instant::now();
    let drained = flights.shutdown(Duration::MAX).await;
    assert_eq!((drained.finished, drained.still_running), (1, 0));
    assert_eq!(started.elapsed(), wind_down);
}

#[tokio::test(start_paused = true)]
async fn shutdown_refuses_new_flights_and_a_running_one_still_takes_followers() {
    let flights: Flights<&str, u32> = Flights::new();
    let options = CallOptions::default();
    let Ok(Joined::Leader(leader)) = flights.join("running", &options) else {
        panic!("a fresh table");
    };
    flights.shutdown(Duration::ZERO).await;

    assert_eq!(
        flights.join("new", &options).err(),
        Some(Overloaded::ShuttingDown)
    );
    assert!(flights.try_lead("new", &options).is_none());
    let refused = flights
        .join_or_lead("new", &options, || async { unreachable!("refused") })
        .await;
    assert_eq!(
        refused,
        Err(FlightError::Overloaded(Overloaded::ShuttingDown))
    );

    let Ok(Joined::Follower(follower)) = flights.join("running", &options) else {
        panic!("joins the flight that runs");
    };
    let (led, followed) = tokio::join!(leader.run(async { 7 }), follower);
    assert_eq!(
        (led.unwrap(), followed.unwrap()),
        (Arc::new(7), Arc::new(7))
    );
    assert_eq!(flights.stats().overloaded, 0, "a shutdown is not a bound");
    assert_eq!(flights.in_flight(), 0);
}

/// A store whose answers to `acquire` wait for a gate: the lease is taken
/// when asked, the answer arrives when the gate opens.
struct Gated {
    store: MemoryStore<&'static str>,
    gate: Arc<Notify>,
}

impl LeaseStore<&'static str> for Gated {
    fn acquire(&self, key: &&'static str, ttl: Duration) -> StoreFuture<Result<LeaseId, Refused>> {
        let mut answer = self.store.acquire(key, ttl);
        let answer = answer.take_ready().expect("a memory store answers at once");
        let gate = Arc::clone(&self.gate);
        StoreFuture::pending(async move {
            gate.notified().await;
            answer
        })
    }

    fn renew(&self, key: &&'static str, lease: LeaseId, ttl: Duration) -> StoreFuture<bool> {
        self.store.renew(key, lease, ttl)
    }

    fn release(&self, key: &&'static str, lease: LeaseId) -> Option<Holder> {
        self.store.release(key, lease)
    }

    fn holder(&self, key: &&'static str) -> StoreFuture<Option<Holder>> {
        self.store.holder(key)
    }

    fn set_progress(
        &self,
        key: &&'static str,
        lease: LeaseId,
        progress: Progress,
    ) -> StoreFuture<bool> {
        self.store.set_progress(key, lease, progress)
    }

    fn list(&self) -> StoreFuture<Vec<(&'static str, Holder)>> {
        self.store.list()
    }

    fn force_release(
        &self,
        key: &&'static str,
        only: Option<LeaseId>,
    ) -> StoreFuture<Option<Holder>> {
        self.store.force_release(key, only)
    }
}

#[tokio::test(start_paused = true)]
async fn a_lease_the_store_grants_as_shutdown_starts_is_given_back() {
    let gate = Arc::new(Notify::new());
    let flights: Flights<&str> = Flights::with_store(Gated {
        store: MemoryStore::new(),
        gate: gate.clone(),
    });
    let asking = tokio::spawn(flights.try_acquire("k", TTL));
    tokio::task::yield_now().await;
    assert!(
        flights.holder(&"k").await.is_some(),
        "the store took the key"
    );

    flights.shutdown(Duration::ZERO).await;
    gate.notify_one();
    assert!(shutting_down(asking.await.unwrap()));
    assert!(
        flights.holder(&"k").await.is_none(),
        "given back to the store"
    );
    let stats = flights.stats();
    assert_eq!((stats.leaders, stats.leases_held), (0, 0));
}

#[test]
fn a_key_digest_is_stable_in_a_process_and_keyed_against_guessing() {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let key = ("GET", "203.0.113.7");
    assert_eq!(
        super::digest(&key),
        super::digest(&key),
        "one key, one digest"
    );
    // The unkeyed hash anyone could compute for a guess is not it.
    let guessable = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
    assert_ne!(super::digest(&key), guessable);
}

/// A job on another worker may stop the moment it is signalled, before the
/// shutdown's first count: it still counts as finished, not as never there.
/// (Driven through the steps `shutdown` takes, with the drop between them
/// that a second worker can make.)
#[tokio::test(start_paused = true)]
async fn a_job_that_stops_at_the_signal_before_the_first_count_is_finished() {
    let flights: Flights<&str> = Flights::new();
    let guard = flights.try_acquire("job", TTL).await.unwrap();
    let stats = &flights.table.stats;
    let alive_before = stats.leases_alive();
    stats.shutdown.start();
    drop(guard); // the job saw the signal at once
    let deadline = Instant::now() + Duration::from_secs(1);
    let drained = stats.shutdown.drain(stats, deadline, alive_before).await;
    assert_eq!((drained.finished, drained.still_running), (1, 0));
}
