//! `ValueCache` with a Redis tier across replicas, on a real `redis-server`:
//! a value computed on one replica is a hit on another, a miss and a
//! stale-while-revalidate refresh run once in the cluster, an invalidation
//! reaches every replica.

mod common;

use std::{sync::Arc, time::Duration};

use common::{
    redis_server::{connect, wait_for, RedisServer},
    Runs,
};
use tokio::sync::Notify;
use tower_singleflight::{cache::Peek, redis::ValueTier, ValueCache};

type Totals = ValueCache<String, u64, std::io::Error>;

fn replica(url: &str, name: &str, ttl: Duration, swr: Duration) -> Totals {
    ValueCache::builder()
        .ttl(ttl)
        .stale_while_revalidate(swr)
        .redis(ValueTier::new(connect(url, name), "totals"))
        .build()
}

/// A computation that counts itself when it runs (not when it is made) and
/// returns its run number.
fn counted(
    runs: &Runs,
) -> impl FnOnce() -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<u64, std::io::Error>> + Send>,
> {
    let runs = runs.clone();
    move || Box::pin(async move { Ok(runs.bump() as u64) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_computed_on_one_replica_is_a_hit_on_another() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let minute = Duration::from_secs(60);
    let (a, b) = (
        replica(&server.url(), "a", minute, Duration::ZERO),
        replica(&server.url(), "b", minute, Duration::ZERO),
    );
    let runs = Runs::default();
    let key = "site".to_owned();
    assert_eq!(
        a.get_or_compute(key.clone(), counted(&runs)).await.unwrap(),
        1
    );
    assert_eq!(
        b.get_or_compute(key.clone(), counted(&runs)).await.unwrap(),
        1
    );
    assert_eq!(runs.get(), 1, "B found A's value in Redis");
    assert_eq!(b.stats().computations, 0);
    // Now in B's local tier too: no Redis call for the next read.
    assert_eq!(b.peek(&key).await, Peek::Fresh(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_in_both_tiers_is_computed_once_in_the_cluster() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let minute = Duration::from_secs(60);
    let replicas: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|name| replica(&server.url(), name, minute, Duration::ZERO))
        .collect();
    let (runs, gate) = (Runs::default(), Arc::new(Notify::new()));
    let mut tasks = Vec::new();
    for cache in &replicas {
        for _ in 0..10 {
            let (cache, runs, gate) = (cache.clone(), runs.clone(), Arc::clone(&gate));
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_compute("report".to_owned(), move || async move {
                        let run = runs.bump() as u64;
                        gate.notified().await;
                        Ok(run)
                    })
                    .await
            }));
        }
    }
    wait_for("one computation starts", || {
        let started = runs.get() == 1;
        async move { started }
    })
    .await;
    gate.notify_one();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 1);
    }
    assert_eq!(runs.get(), 1, "one computation in the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_on_one_replica_drops_the_others_local_copies() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let minute = Duration::from_secs(60);
    let (a, b) = (
        replica(&server.url(), "a", minute, Duration::ZERO),
        replica(&server.url(), "b", minute, Duration::ZERO),
    );
    let runs = Runs::default();
    let key = "site".to_owned();
    assert_eq!(
        a.get_or_compute(key.clone(), counted(&runs)).await.unwrap(),
        1
    );
    assert_eq!(
        b.get_or_compute(key.clone(), counted(&runs)).await.unwrap(),
        1
    );
    b.invalidate(&key).await;
    wait_for("A drops its local copy", || {
        let a = a.clone();
        let key = key.clone();
        async move { a.peek(&key).await == Peek::Missing }
    })
    .await;
    assert_eq!(
        a.get_or_compute(key.clone(), counted(&runs)).await.unwrap(),
        2
    );
    assert_eq!(
        b.get_or_compute(key.clone(), counted(&runs)).await.unwrap(),
        2
    );
    assert_eq!(runs.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_value_is_refreshed_once_in_the_cluster() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (ttl, swr) = (Duration::from_millis(300), Duration::from_secs(60));
    let replicas: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|name| replica(&server.url(), name, ttl, swr))
        .collect();
    let runs = Runs::default();
    let key = "site".to_owned();
    for cache in &replicas {
        assert_eq!(
            cache
                .get_or_compute(key.clone(), counted(&runs))
                .await
                .unwrap(),
            1
        );
    }
    assert_eq!(runs.get(), 1);
    wait_for("the value goes stale", || {
        let cache = replicas[0].clone();
        let key = key.clone();
        async move { cache.peek(&key).await == Peek::Stale(1) }
    })
    .await;

    // Every replica answers with the stale value at once; one refresh runs.
    let gate = Arc::new(Notify::new());
    for cache in &replicas {
        let (runs, gate) = (runs.clone(), Arc::clone(&gate));
        let refresh = move || async move {
            let run = runs.bump() as u64;
            gate.notified().await;
            Ok(run)
        };
        assert_eq!(cache.get_or_compute(key.clone(), refresh).await.unwrap(), 1);
    }
    wait_for("one refresh starts", || {
        let started = runs.get() == 2;
        async move { started }
    })
    .await;
    gate.notify_one();
    // Each replica's next read (stale, at once) refreshes from Redis, where
    // the one refresh stored its value: nothing runs again.
    for cache in &replicas {
        wait_for("the refreshed value reaches every replica", || {
            let (cache, key, runs) = (cache.clone(), key.clone(), runs.clone());
            async move {
                let _ = cache.get_or_compute(key.clone(), counted(&runs)).await;
                cache.peek(&key).await == Peek::Fresh(2)
            }
        })
        .await;
    }
    assert_eq!(runs.get(), 2, "one refresh in the cluster");
}

/// A replica whose `/report` goes through share mode with a cache and the
/// cluster: the cache keeps a Redis tier. `POST /report` is a write.
fn cached_replica(
    redis: tower_singleflight::redis::Redis,
    runs: &Runs,
    gate: Option<Arc<Notify>>,
    ttl: Duration,
) -> axum::Router {
    use axum::routing::get;
    use tower_singleflight::{redis::Cluster, CacheConfig, SingleFlightLayer};
    let runs = runs.clone();
    let report = move || {
        let (runs, gate) = (runs.clone(), gate.clone());
        async move {
            let run = runs.bump();
            if let Some(gate) = gate.filter(|_| run > 1) {
                gate.notified().await;
            }
            format!("report #{run}")
        }
    };
    axum::Router::new()
        .route("/report", get(report).post(|| async { "written" }))
        .layer(
            SingleFlightLayer::share()
                .lease(Duration::from_secs(5))
                .cache(
                    CacheConfig::new()
                        .ttl(ttl)
                        .stale_while_revalidate(Duration::from_secs(60)),
                )
                .cluster(Cluster::new(redis)),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_stored_on_one_replica_is_a_hit_on_another_then_a_local_one() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runs = Runs::default();
    let minute = Duration::from_secs(60);
    let a = cached_replica(connect(&server.url(), "a"), &runs, None, minute);
    let redis_b = connect(&server.url(), "b");
    let b = cached_replica(redis_b.clone(), &runs, None, minute);
    assert_eq!(
        common::send(&a, common::get("/report")).await.text(),
        "report #1"
    );
    let from_a = common::send(&b, common::get("/report")).await;
    assert_eq!(from_a.text(), "report #1");
    assert_eq!(runs.get(), 1, "B found A's answer in the tier");
    // Now in B's own cache: a hit costs no Redis call.
    let calls = redis_b.stats().calls;
    let hit = common::send(&b, common::get("/report")).await;
    assert_eq!(hit.text(), "report #1");
    assert_eq!(
        redis_b.stats().calls,
        calls,
        "a local hit makes no Redis round trip"
    );
    assert_eq!(runs.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_replica_invalidates_the_answer_on_every_replica_and_in_the_tier() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runs = Runs::default();
    let minute = Duration::from_secs(60);
    let a = cached_replica(connect(&server.url(), "a"), &runs, None, minute);
    let b = cached_replica(connect(&server.url(), "b"), &runs, None, minute);
    common::send(&a, common::get("/report")).await;
    common::send(&b, common::get("/report")).await;
    assert_eq!(runs.get(), 1);

    let written = common::send(&b, common::request("POST", "/report")).await;
    assert_eq!(written.text(), "written");
    // A drops its copy when B's write reaches it; the tier's is gone too.
    wait_for("A's copy is dropped", || {
        let a = a.clone();
        let runs = runs.clone();
        async move {
            let reply = common::send(&a, common::get("/report")).await;
            reply.text() != "report #1" && runs.get() == 2
        }
    })
    .await;
    let reply = common::send(&b, common::get("/report")).await;
    assert_eq!(
        reply.text(),
        "report #2",
        "B reads A's new answer from the tier"
    );
    assert_eq!(runs.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_response_is_refreshed_once_in_the_cluster() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (runs, gate) = (Runs::default(), Arc::new(Notify::new()));
    // Whole seconds: `Date` has no finer grain, and an answer's age counts
    // from it.
    let ttl = Duration::from_secs(3);
    let replicas: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            cached_replica(
                connect(&server.url(), name),
                &runs,
                Some(Arc::clone(&gate)),
                ttl,
            )
        })
        .collect();
    for replica in &replicas {
        let reply = common::send(replica, common::get("/report")).await;
        assert_eq!(reply.text(), "report #1");
    }
    assert_eq!(runs.get(), 1);
    // Past its freshness, every replica serves the stale answer at
    // once and asks for a refresh: one runs, in the whole cluster.
    wait_for("the answer goes stale", || {
        let replica = replicas[0].clone();
        async move {
            let reply = common::send(&replica, common::get("/report")).await;
            reply.role == Some(tower_singleflight::FlightRole::Stale)
        }
    })
    .await;
    // (A copy read back from the tier at the very instant it goes stale can
    // still be fresh by a millisecond: the next stale read asks again.)
    wait_for("the refresh starts", || {
        let replica = replicas[0].clone();
        let runs = runs.clone();
        async move {
            if runs.get() == 1 {
                common::send(&replica, common::get("/report")).await;
            }
            runs.get() == 2
        }
    })
    .await;
    for replica in &replicas[1..] {
        let reply = common::send(replica, common::get("/report")).await;
        assert_eq!(reply.text(), "report #1", "stale, at once");
    }
    gate.notify_one();
    for replica in &replicas {
        wait_for("the refreshed answer reaches every replica", || {
            let replica = replica.clone();
            async move { common::send(&replica, common::get("/report")).await.text() == "report #2" }
        })
        .await;
    }
    assert_eq!(runs.get(), 2, "one refresh in the cluster");
}
