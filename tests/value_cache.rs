//! `ValueCache`: one computation per key, exact counters, truthful `peek`.

mod common;

use std::{io, time::Duration};

use common::{eventually, Runs};
use tokio::{task::JoinSet, time::sleep};
use tower_singleflight::{cache::Peek, cache::ValueError, ValueCache};

const WORK: Duration = Duration::from_millis(100);

type Totals = ValueCache<&'static str, usize, io::Error>;

fn totals() -> Totals {
    ValueCache::builder()
        .ttl(Duration::from_secs(1))
        .stale_while_revalidate(Duration::from_secs(10))
        .compute_timeout(Duration::from_secs(5))
        .build()
}

/// A computation that takes `WORK` and returns its run number.
async fn compute(runs: Runs) -> Result<usize, io::Error> {
    let run = runs.bump();
    sleep(WORK).await;
    Ok(run)
}

#[tokio::test(start_paused = true)]
async fn counters_are_exact_after_10_000_concurrent_calls() {
    let (cache, runs) = (totals(), Runs::default());
    let mut calls = JoinSet::new();
    for i in 0..10_000 {
        let (cache, runs) = (cache.clone(), runs.clone());
        let key = ["a", "b", "c", "d"][i % 4];
        calls.spawn(async move { cache.get_or_compute(key, || compute(runs)).await });
    }
    let values = calls.join_all().await;
    assert!(values.iter().all(Result::is_ok));
    assert_eq!(runs.get(), 4, "one computation per key");

    let warm = (0..10_000).map(|i| {
        let cache = cache.clone();
        async move {
            cache
                .get_or_compute(["a", "b"][i % 2], || async { unreachable!() })
                .await
        }
    });
    assert!(futures_util::future::join_all(warm)
        .await
        .iter()
        .all(Result::is_ok));

    let stats = cache.stats();
    assert_eq!(stats.computations, 4);
    assert_eq!(stats.misses, 10_000);
    assert_eq!(stats.hits, 10_000);
    assert_eq!((stats.stale, stats.errors), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn errors_reach_current_waiters_and_are_not_stored() {
    let cache = totals();
    let failing = || async {
        sleep(WORK).await;
        Err(io::Error::other("backend down"))
    };
    let (a, b) = tokio::join!(
        cache.get_or_compute("a", failing),
        cache.get_or_compute("a", || async { unreachable!("already computing") }),
    );
    assert!(matches!(a, Err(ValueError::Failed(ref e)) if e.to_string() == "backend down"));
    assert!(matches!(b, Err(ValueError::Failed(_))));
    assert_eq!(cache.peek(&"a").await, Peek::Missing, "nothing stored");

    let runs = Runs::default();
    assert_eq!(
        cache
            .get_or_compute("a", || compute(runs.clone()))
            .await
            .unwrap(),
        1
    );
    let stats = cache.stats();
    assert_eq!((stats.computations, stats.errors), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn peek_tells_the_truth_at_every_stage() {
    let (cache, runs) = (totals(), Runs::default());
    assert_eq!(cache.peek(&"a").await, Peek::Missing);

    let caller = tokio::spawn({
        let (cache, runs) = (cache.clone(), runs.clone());
        async move { cache.get_or_compute("a", || compute(runs)).await }
    });
    eventually(|| runs.get() == 1).await;
    assert!(matches!(cache.peek(&"a").await, Peek::Computing { .. }));

    assert_eq!(caller.await.unwrap().unwrap(), 1);
    assert_eq!(cache.peek(&"a").await, Peek::Fresh(1));
    sleep(Duration::from_secs(1)).await;
    assert_eq!(cache.peek(&"a").await, Peek::Stale(1));
    sleep(Duration::from_secs(10)).await;
    assert_eq!(cache.peek(&"a").await, Peek::Missing);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_computation_leaves_nothing_computing() {
    let cache = totals();
    let (a, b) = tokio::join!(
        cache.get_or_compute("a", || async {
            sleep(WORK).await;
            panic!("computation crashed")
        }),
        cache.get_or_compute("a", || async { unreachable!("already computing") }),
    );
    assert!(matches!(a, Err(ValueError::Panicked)));
    assert!(matches!(b, Err(ValueError::Panicked)));
    assert_eq!(cache.peek(&"a").await, Peek::Missing);
    assert_eq!(cache.stats().errors, 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_caller_does_not_cancel_the_computation() {
    let (cache, runs) = (totals(), Runs::default());
    let caller = tokio::spawn({
        let (cache, runs) = (cache.clone(), runs.clone());
        async move { cache.get_or_compute("a", || compute(runs)).await }
    });
    eventually(|| runs.get() == 1).await;
    caller.abort();
    assert!(matches!(cache.peek(&"a").await, Peek::Computing { .. }));
    eventually(|| {
        matches!(
            futures_util::FutureExt::now_or_never(cache.peek(&"a")),
            Some(Peek::Fresh(1))
        )
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_computation_past_its_timeout_frees_the_key() {
    let cache: Totals = ValueCache::builder()
        .compute_timeout(Duration::from_secs(1))
        .build();
    let result = cache
        .get_or_compute("a", std::future::pending::<Result<usize, io::Error>>)
        .await;
    assert!(matches!(result, Err(ValueError::TimedOut)));
    assert_eq!(cache.peek(&"a").await, Peek::Missing);
    assert_eq!(cache.stats().errors, 1);
}

#[tokio::test(start_paused = true)]
async fn stale_values_are_returned_at_once_while_one_refresh_runs() {
    let (cache, runs) = (totals(), Runs::default());
    cache
        .get_or_compute("a", || compute(runs.clone()))
        .await
        .unwrap();
    sleep(Duration::from_secs(1)).await;

    let started = tokio::time::Instant::now();
    let stale = futures_util::future::join_all(
        (0..100).map(|_| cache.get_or_compute("a", || compute(runs.clone()))),
    )
    .await;
    assert_eq!(started.elapsed(), Duration::ZERO, "nobody waited");
    assert!(stale.iter().all(|value| matches!(value, Ok(1))));
    eventually(|| runs.get() == 2).await;
    sleep(WORK).await;
    assert_eq!(cache.peek(&"a").await, Peek::Fresh(2), "one refresh ran");
    assert_eq!(cache.stats().stale, 100);
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_returns_the_old_value_when_the_refresh_fails() {
    let cache: Totals = ValueCache::builder()
        .ttl(Duration::from_secs(1))
        .stale_if_error(Duration::from_secs(30))
        .build();
    cache.get_or_compute("a", || async { Ok(7) }).await.unwrap();
    sleep(Duration::from_secs(2)).await;
    let value = cache
        .get_or_compute("a", || async { Err(io::Error::other("down")) })
        .await;
    assert_eq!(value.unwrap(), 7);
    assert_eq!(
        cache.peek(&"a").await,
        Peek::Stale(7),
        "the error was not stored"
    );
}

/// A caller's own error type, as the README shows it.
#[derive(Debug)]
enum AppError {
    Backend(std::sync::Arc<io::Error>),
    Unavailable(ValueError<io::Error>),
}

impl From<ValueError<io::Error>> for AppError {
    fn from(error: ValueError<io::Error>) -> Self {
        match error.into_failure() {
            Ok(backend) => Self::Backend(backend),
            Err(other) => Self::Unavailable(other),
        }
    }
}

async fn total(cache: &Totals, fail: bool) -> Result<usize, AppError> {
    let value = cache
        .get_or_compute("site", move || async move {
            if fail {
                Err(io::Error::other("backend down"))
            } else {
                Ok(7)
            }
        })
        .await?;
    Ok(value)
}

#[tokio::test(start_paused = true)]
async fn question_mark_carries_the_computations_own_error_into_the_callers_type() {
    let cache = totals();
    match total(&cache, true).await {
        Err(AppError::Backend(error)) => assert_eq!(error.to_string(), "backend down"),
        other => panic!("expected the backend's error, got {other:?}"),
    }
    assert_eq!(total(&cache, false).await.ok(), Some(7));

    let timed_out = ValueError::<io::Error>::TimedOut;
    assert!(timed_out.failure().is_none());
    assert!(matches!(
        AppError::from(timed_out),
        AppError::Unavailable(ValueError::TimedOut)
    ));
    // As a `Box<dyn Error>`, the computation's error is its source.
    let boxed: Box<dyn std::error::Error> =
        ValueError::Failed(std::sync::Arc::new(io::Error::other("down"))).into();
    assert_eq!(
        boxed.source().map(ToString::to_string).as_deref(),
        Some("down")
    );
}
