//! `ValueCache::get_or_compute_inline`: a computation that borrows from its
//! caller, run in the caller's own future, with the same one-per-key rule.

mod common;

use std::{
    io,
    sync::atomic::{AtomicUsize, Ordering::SeqCst},
    time::Duration,
};

use common::Runs;
use tokio::{sync::Notify, time::sleep};
use tower_singleflight::{
    cache::{Peek, ValueError},
    ValueCache,
};

const WORK: Duration = Duration::from_millis(100);

type Totals = ValueCache<&'static str, usize, io::Error>;

fn totals() -> Totals {
    ValueCache::builder()
        .ttl(Duration::from_secs(1))
        .stale_while_revalidate(Duration::from_secs(10))
        .compute_timeout(Duration::from_secs(5))
        .build()
}

/// What the computations borrow: a counter of their runs, owned by the test.
struct Backend {
    runs: AtomicUsize,
}

impl Backend {
    fn new() -> Self {
        Self {
            runs: AtomicUsize::new(0),
        }
    }

    async fn count(&self) -> Result<usize, io::Error> {
        let run = self.runs.fetch_add(1, SeqCst) + 1;
        sleep(WORK).await;
        Ok(run)
    }

    fn runs(&self) -> usize {
        self.runs.load(SeqCst)
    }
}

#[tokio::test(start_paused = true)]
async fn a_hundred_borrowing_callers_share_one_computation() {
    let (cache, backend) = (totals(), Backend::new());
    let values = futures_util::future::join_all(
        (0..100).map(|_| cache.get_or_compute_inline("a", || backend.count())),
    )
    .await;
    assert!(values.iter().all(|value| matches!(value, Ok(1))));
    assert_eq!(backend.runs(), 1, "one computation for every caller");
    assert_eq!(cache.peek(&"a").await, Peek::Fresh(1), "and it was stored");
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.computations), (100, 1));
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_leaves_hands_the_key_to_a_waiting_caller() {
    let (cache, backend) = (totals(), Backend::new());
    let started = Notify::new();
    let leader = cache.get_or_compute_inline("a", || async {
        started.notify_one();
        backend.count().await
    });
    let follower = async {
        started.notified().await;
        cache.get_or_compute_inline("a", || backend.count()).await
    };
    // The leader's caller gives up half way; the follower must not hang nor
    // fail: it computes with its own closure.
    let (left, value) = tokio::join!(tokio::time::timeout(WORK / 2, leader), follower);
    assert!(left.is_err(), "the leader was dropped mid-computation");
    assert_eq!(
        value.ok(),
        Some(2),
        "the follower ran the second computation"
    );
    assert_eq!(backend.runs(), 2);
    assert_eq!(cache.peek(&"a").await, Peek::Fresh(2));
}

#[tokio::test(start_paused = true)]
async fn a_stale_value_is_refreshed_by_one_caller_the_others_get_it_at_once() {
    let (cache, backend) = (totals(), Backend::new());
    cache
        .get_or_compute_inline("a", || backend.count())
        .await
        .unwrap();
    sleep(Duration::from_secs(1)).await;

    let before = tokio::time::Instant::now();
    let refresher = cache.get_or_compute_inline("a", || backend.count());
    let others = async {
        // Once the refresh runs, the others are answered with no wait.
        tokio::task::yield_now().await;
        let at = tokio::time::Instant::now();
        let values = futures_util::future::join_all(
            (0..10).map(|_| cache.get_or_compute_inline("a", || backend.count())),
        )
        .await;
        (values, at.elapsed())
    };
    let (fresh, (stale, waited)) = tokio::join!(refresher, others);
    assert_eq!(
        fresh.ok(),
        Some(2),
        "the refresher waited for the new value"
    );
    assert_eq!(before.elapsed(), WORK);
    assert!(stale.iter().all(|value| matches!(value, Ok(1))));
    assert_eq!(waited, Duration::ZERO, "the others did not wait");
    assert_eq!(backend.runs(), 2, "one refresh");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_inline_computation_answers_every_waiter_and_frees_the_key() {
    let cache = totals();
    let (a, b) = tokio::join!(
        cache.get_or_compute_inline("a", || async {
            sleep(WORK).await;
            panic!("computation crashed")
        }),
        cache.get_or_compute_inline("a", || async { unreachable!("already computing") }),
    );
    assert!(matches!(a, Err(ValueError::Panicked)));
    assert!(matches!(b, Err(ValueError::Panicked)));
    assert_eq!(cache.peek(&"a").await, Peek::Missing);
    let again = cache.get_or_compute_inline("a", || async { Ok(3) }).await;
    assert_eq!(again.ok(), Some(3));
}

#[tokio::test(start_paused = true)]
async fn an_inline_computation_past_its_timeout_frees_the_key() {
    let cache: Totals = ValueCache::builder()
        .compute_timeout(Duration::from_secs(1))
        .build();
    let (a, b) = tokio::join!(
        cache.get_or_compute_inline("a", std::future::pending::<Result<usize, io::Error>>),
        cache.get_or_compute_inline("a", || async { unreachable!("already computing") }),
    );
    assert!(matches!(a, Err(ValueError::TimedOut)));
    assert!(matches!(b, Err(ValueError::TimedOut)));
    assert_eq!(cache.peek(&"a").await, Peek::Missing);
}

/// An inline leader whose future is kept but never polled again (one
/// branch of a `join!`, say) cannot end its flight at the timeout: a
/// detached caller of the key must not wait on it.
#[tokio::test(start_paused = true)]
async fn a_parked_inline_leader_does_not_stall_a_detached_caller() {
    let cache = totals();
    let mut parked = tokio_test::task::spawn(cache.get_or_compute_inline("a", || async {
        sleep(WORK).await;
        Ok(1)
    }));
    tokio_test::assert_pending!(parked.poll());
    let detached = tokio::time::timeout(
        Duration::from_secs(3600),
        cache.get_or_compute("a", || async {
            sleep(WORK).await;
            Ok(2)
        }),
    )
    .await;
    assert_eq!(
        detached.expect("the detached caller was answered").ok(),
        Some(2),
        "it ran its own computation"
    );
    drop(parked);
}

/// A detached caller is never handed `Abandoned` because an inline leader's
/// caller left.
#[tokio::test(start_paused = true)]
async fn an_inline_leader_leaving_never_fails_a_detached_caller() {
    let (cache, backend) = (totals(), Backend::new());
    let started = Notify::new();
    let leader = cache.get_or_compute_inline("a", || async {
        started.notify_one();
        backend.count().await
    });
    let detached_runs = Runs::default();
    let detached = async {
        started.notified().await;
        let runs = detached_runs.clone();
        cache
            .get_or_compute("a", move || async move {
                sleep(WORK).await;
                Ok(runs.bump() + 100)
            })
            .await
    };
    let (left, value) = tokio::join!(tokio::time::timeout(WORK / 2, leader), detached);
    assert!(
        left.is_err(),
        "the inline leader was dropped mid-computation"
    );
    assert_eq!(
        value.ok(),
        Some(101),
        "the detached caller got its own value"
    );
    assert_eq!(detached_runs.get(), 1);
}

/// `peek` sees an inline computation, and a stale value is refreshed once:
/// a detached caller does not start a second refresh beside an inline one.
#[tokio::test(start_paused = true)]
async fn peek_sees_an_inline_computation_and_one_refresh_runs() {
    let (cache, backend) = (totals(), Backend::new());
    let started = Notify::new();
    let computing = cache.get_or_compute_inline("a", || async {
        started.notify_one();
        backend.count().await
    });
    let look = async {
        started.notified().await;
        cache.peek(&"a").await
    };
    let (value, seen) = tokio::join!(computing, look);
    assert_eq!(value.ok(), Some(1));
    assert!(matches!(seen, Peek::Computing { .. }), "{seen:?}");

    sleep(Duration::from_secs(1)).await; // stale now
    let detached_runs = Runs::default();
    let refresher = cache.get_or_compute_inline("a", || backend.count());
    let detached = async {
        tokio::task::yield_now().await;
        let runs = detached_runs.clone();
        cache
            .get_or_compute("a", move || async move { Ok(runs.bump() + 100) })
            .await
    };
    let (fresh, stale) = tokio::join!(refresher, detached);
    assert_eq!(fresh.ok(), Some(2));
    assert_eq!(
        stale.ok(),
        Some(1),
        "the detached caller got the stale value"
    );
    sleep(WORK).await;
    assert_eq!(detached_runs.get(), 0, "no second refresh");
}
