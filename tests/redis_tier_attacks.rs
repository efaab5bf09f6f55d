//! Attacks on the Redis tiers (response cache and `ValueCache`), from an
//! adversarial review: each test failed on the first version of the tiers.
//! Waits are polls with a bound, except where real time must pass for an
//! answer to age (Redis's clock cannot be paused).

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    redis_server::{connect, wait_for, RedisServer, StallingProxy},
    Runs,
};
use tower_singleflight::{
    cache::Peek,
    redis::{Cluster, Redis, ValueTier},
    CacheConfig, SingleFlightLayer, ValueCache,
};

type Totals = ValueCache<String, u64, std::io::Error>;

fn vreplica(url: &str, name: &str, ttl: Duration) -> Totals {
    ValueCache::builder()
        .ttl(ttl)
        .redis(ValueTier::new(connect(url, name), "totals"))
        .build()
}

/// `/slow`: "slow #n", held at the gate; else as `app`.
fn gated_app(
    redis: Redis,
    runs: &Runs,
    gate: Arc<tokio::sync::Notify>,
    ttl: Duration,
) -> axum::Router {
    use axum::routing::get;
    let runs = runs.clone();
    let slow = move || {
        let (runs, gate) = (runs.clone(), gate.clone());
        async move {
            let run = runs.bump();
            gate.notified().await;
            format!("slow #{run}")
        }
    };
    axum::Router::new()
        .route("/slow", get(slow).post(|| async { "written" }))
        .layer(
            SingleFlightLayer::share()
                .lease(Duration::from_secs(5))
                .cache(CacheConfig::new().ttl(ttl).cache_status("edge"))
                .cluster(Cluster::new(redis)),
        )
}

/// `/report` (and any `/report/*`): "report #n"; `?fail` answers 500;
/// POST is a write.
fn app(redis: Redis, runs: &Runs, ttl: Duration) -> axum::Router {
    use axum::{extract::RawQuery, http::StatusCode, routing::get};
    let runs = runs.clone();
    let report = move |RawQuery(query): RawQuery| {
        let runs = runs.clone();
        async move {
            let run = runs.bump();
            if query.as_deref() == Some("fail") {
                return (StatusCode::INTERNAL_SERVER_ERROR, format!("error #{run}"));
            }
            (StatusCode::OK, format!("report #{run}"))
        }
    };
    axum::Router::new()
        .route("/report", get(report.clone()).post(|| async { "written" }))
        .route("/report/{id}", get(report).post(|| async { "written" }))
        .layer(
            SingleFlightLayer::share()
                .lease(Duration::from_secs(5))
                .cache(CacheConfig::new().ttl(ttl).cache_status("edge"))
                .cluster(Cluster::new(redis)),
        )
}

/// Starts computing `key` on `cache` (value 1), held at `gate`; returns once
/// the computation runs.
async fn computing(
    cache: Totals,
    key: &str,
    gate: &Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<Result<u64, tower_singleflight::cache::ValueError<std::io::Error>>> {
    let runs = Runs::default();
    let (gate, key, counted) = (Arc::clone(gate), key.to_owned(), runs.clone());
    let task = tokio::spawn(async move {
        cache
            .get_or_compute(key, move || async move {
                counted.bump();
                gate.notified().await;
                Ok(1)
            })
            .await
    });
    common::eventually(|| runs.get() == 1).await;
    task
}

/// Waits until the write to `path` is counted in Redis.
async fn write_reached_redis(server: &RedisServer, path: &str) {
    let key = format!("tsf:response:path-epoch:{path}");
    wait_for("the write reaches redis", || {
        let counted = !server.command(&["GET", &key]).starts_with("$-1");
        async move { counted }
    })
    .await;
}

/// A server and two replicas of `app` on it, answers fresh for `ttl`.
struct Pair {
    server: RedisServer,
    runs: Runs,
    a: axum::Router,
    b: axum::Router,
}

/// `None` (the test skips) when `redis-server` is not installed.
fn pair(ttl: Duration) -> Option<Pair> {
    let server = RedisServer::start()?;
    let runs = Runs::default();
    let a = app(connect(&server.url(), "a"), &runs, ttl);
    let b = app(connect(&server.url(), "b"), &runs, ttl);
    Some(Pair { server, runs, a, b })
}

fn header(reply: &common::Reply, name: &str) -> String {
    reply
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- 1 / 7: age and Cache-Status of a tier-served answer ----------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_answer_on_b_carries_its_real_age() {
    let Some(Pair {
        server: _server,
        runs,
        a,
        b,
    }) = pair(Duration::from_secs(60))
    else {
        return;
    };
    let first = common::send(&a, common::get("/report")).await;
    eprintln!(
        "A: age={:?} cs={:?}",
        header(&first, "age"),
        header(&first, "cache-status")
    );
    // Real time must pass for the answer to age (Redis's clock).
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let from_tier = common::send(&b, common::get("/report")).await;
    let again = common::send(&b, common::get("/report")).await;
    eprintln!(
        "B first: {} age={:?} cs={:?}; B second: age={:?} cs={:?}",
        from_tier.text(),
        header(&from_tier, "age"),
        header(&from_tier, "cache-status"),
        header(&again, "age"),
        header(&again, "cache-status")
    );
    assert_eq!(runs.get(), 1);
    let age: u64 = header(&from_tier, "age").parse().unwrap_or(0);
    assert!(
        age >= 3,
        "B's answer from the tier is >= 3 s old; Age says {age:?}"
    );
    let age2: u64 = header(&again, "age").parse().unwrap_or(0);
    assert!(age2 >= 3, "B's local hit: Age {age2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_answer_cache_status_does_not_claim_full_ttl() {
    let Some(Pair {
        server: _server,
        runs: _,
        a,
        b,
    }) = pair(Duration::from_secs(60))
    else {
        return;
    };
    common::send(&a, common::get("/report")).await;
    // Real time must pass for the answer to age (Redis's clock).
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let from_tier = common::send(&b, common::get("/report")).await;
    let cs = header(&from_tier, "cache-status");
    eprintln!("B cache-status: {cs}");
    assert!(
        !cs.contains("ttl=60"),
        "ttl must be <= 57 after 3 s in the tier: {cs}"
    );
}

// ---- 3: invalidations lost while a replica's subscription reconnects ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_invalidation_missed_while_resubscribing_still_drops_the_copy() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let hour = Duration::from_secs(3600);
    let (a, b) = (
        vreplica(&server.url(), "a", hour),
        vreplica(&server.url(), "b", hour),
    );
    let runs = Runs::default();
    let key = "site".to_owned();
    let r = runs.clone();
    assert_eq!(
        a.get_or_compute(key.clone(), move || async move { Ok(r.bump() as u64) })
            .await
            .unwrap(),
        1
    );
    let r = runs.clone();
    assert_eq!(
        b.get_or_compute(key.clone(), move || async move { Ok(r.bump() as u64) })
            .await
            .unwrap(),
        1
    );
    // A network blip: the subscription connection drops (Redis restart,
    // failover, proxy idle timeout...). The hub resubscribes 100 ms later.
    server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    a.invalidate(&key).await;
    wait_for("B drops the invalidated value", || {
        let (b, key) = (b.clone(), key.clone());
        async move { b.peek(&key).await != Peek::Fresh(1) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_invalidation_missed_while_resubscribing_still_drops_the_copy() {
    let Some(Pair {
        server,
        runs: _,
        a,
        b,
    }) = pair(Duration::from_secs(3600))
    else {
        return;
    };
    common::send(&a, common::get("/report")).await;
    assert_eq!(
        common::send(&b, common::get("/report")).await.text(),
        "report #1"
    );
    server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(
        common::send(&a, common::request("POST", "/report"))
            .await
            .text(),
        "written"
    );
    wait_for("B drops the answer A's write replaced", || {
        let b = b.clone();
        async move { common::send(&b, common::get("/report")).await.text() != "report #1" }
    })
    .await;
}

// ---- 3: the path epoch expires, and old entries come back ---------------

fn path_epoch_keys(server: &RedisServer) -> Vec<String> {
    let reply = server.command(&["KEYS", "*path-epoch*"]);
    reply
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tier_entry_outlives_the_path_count_it_was_stored_under() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runs = Runs::default();
    // An answer fresh for 2 h: kept in the tier 2 h 10 min.
    let long = Duration::from_secs(7200);
    let a = app(connect(&server.url(), "a"), &runs, long);
    assert_eq!(
        common::send(&a, common::get("/report?page=2")).await.text(),
        "report #1"
    );
    // A write to /report: the path's count becomes 1, for an hour.
    assert_eq!(
        common::send(&a, common::request("POST", "/report"))
            .await
            .text(),
        "written"
    );
    write_reached_redis(&server, "/report").await;
    let keys = path_epoch_keys(&server);
    // No entry outlives the count it was stored under: once the count is
    // gone (and a count that starts again could match an old entry's), so
    // is every entry stored before it.
    let ttl = |key: &str| -> i64 {
        let reply = server.command(&["PTTL", key]);
        reply.trim().trim_start_matches(':').parse().unwrap()
    };
    let entries: Vec<String> = server
        .command(&[
            "KEYS",
            "tsf:response:????????????????????????????????????????????????????????????????",
        ])
        .lines()
        .filter(|line| line.starts_with("tsf:"))
        .map(str::to_owned)
        .collect();
    assert_eq!(entries.len(), 1, "the answer to page 2 is in the tier");
    assert!(ttl(&entries[0]) > 0 && ttl(&entries[0]) < ttl(&keys[0]));
}

// ---- 4: errors never stored / shared -----------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_never_reaches_the_tier() {
    let Some(Pair {
        server,
        runs: _,
        a,
        b,
    }) = pair(Duration::from_secs(60))
    else {
        return;
    };
    assert_eq!(
        common::send(&a, common::get("/report?fail")).await.status,
        500
    );
    assert_eq!(
        common::send(&b, common::get("/report?fail")).await.text(),
        "error #2"
    );
    assert_eq!(
        server.command(&["KEYS", "*response*"]).lines().next(),
        Some("*0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_error_never_reaches_the_tier() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let minute = Duration::from_secs(60);
    let (a, b) = (
        vreplica(&server.url(), "a", minute),
        vreplica(&server.url(), "b", minute),
    );
    let failed = a
        .get_or_compute("k".to_owned(), || async {
            Err(std::io::Error::other("boom"))
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(
        b.get_or_compute("k".to_owned(), || async { Ok(7) })
            .await
            .unwrap(),
        7
    );
}

// ---- 2: no cross-tenant or cross-host leak --------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_answer_is_not_found_by_another_caller_or_host() {
    let Some(Pair {
        server: _server,
        runs: _,
        a,
        b,
    }) = pair(Duration::from_secs(60))
    else {
        return;
    };
    let with = |h: &[(&str, &str)]| common::with_headers("GET", "/report", h);
    common::send(
        &a,
        with(&[("cookie", "sid=alice"), ("host", "one.example")]),
    )
    .await;
    let bob = common::send(&b, with(&[("cookie", "sid=bob"), ("host", "one.example")])).await;
    assert_ne!(bob.text(), "report #1", "bob got alice's answer");
    let other_host = common::send(
        &b,
        with(&[("cookie", "sid=alice"), ("host", "two.example")]),
    )
    .await;
    assert_ne!(
        other_host.text(),
        "report #1",
        "host two got host one's answer"
    );
    let auth_a = common::send(
        &a,
        with(&[("authorization", "Bearer a"), ("host", "one.example")]),
    )
    .await;
    let auth_b = common::send(
        &b,
        with(&[("authorization", "Bearer b"), ("host", "one.example")]),
    )
    .await;
    assert_ne!(auth_a.text(), auth_b.text());
}

// ---- 5: Redis away ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_bounds_every_request_and_the_cache_works_locally() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = StallingProxy::start(server.port()).await;
    let runs = Runs::default();
    let minute = Duration::from_secs(60);
    let a = app(connect(&proxy.url(), "a"), &runs, minute);
    let v = vreplica(&proxy.url(), "a", minute);
    common::send(&a, common::get("/warm")).await;
    proxy.stall();
    let started = Instant::now();
    let r1 = common::send(&a, common::get("/report")).await;
    let r2 = common::send(&a, common::get("/report")).await;
    let w = common::send(&a, common::request("POST", "/report")).await;
    let r3 = common::send(&a, common::get("/report")).await;
    let x = v
        .get_or_compute("k".into(), || async { Ok(1) })
        .await
        .unwrap();
    let y = v
        .get_or_compute("k".into(), || async { Ok(2) })
        .await
        .unwrap();
    let took = started.elapsed();
    eprintln!(
        "stalled: {} {} {} {} {x} {y} in {took:?}",
        r1.text(),
        r2.text(),
        w.text(),
        r3.text()
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!((r1.text(), r2.text()), ("report #1", "report #1"));
    assert_eq!(r3.text(), "report #2");
    assert_eq!((x, y), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_bounds_every_request() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let runs = Runs::default();
    let minute = Duration::from_secs(60);
    let a = app(connect(&server.url(), "a"), &runs, minute);
    common::send(&a, common::get("/report/x")).await;
    server.kill();
    let started = Instant::now();
    let r1 = common::send(&a, common::get("/report")).await;
    let r2 = common::send(&a, common::get("/report")).await;
    assert_eq!((r1.text(), r2.text()), ("report #2", "report #2"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

// ---- 6: growth from hostile input ---------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_to_unique_paths_leave_keys_that_expire() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runs = Runs::default();
    let a = app(connect(&server.url(), "a"), &runs, Duration::from_secs(60));
    for i in 0..200 {
        common::send(&a, common::request("POST", &format!("/report/{i}"))).await;
    }
    wait_for("the 200 writes reach redis", || {
        let count = server.command(&[
            "EVAL",
            "return #redis.call('KEYS', ARGV[1])",
            "0",
            "*path-epoch*",
        ]);
        async move { count.trim() == ":200" }
    })
    .await;
    let count = server.command(&[
        "EVAL",
        "return #redis.call('KEYS', ARGV[1])",
        "0",
        "*path-epoch*",
    ]);
    eprintln!("{} path-epoch keys after 200 POSTs", count.trim());
    let keys = path_epoch_keys(&server);
    for key in keys.iter().take(5) {
        let ttl = server.command(&["PTTL", key]);
        assert!(!ttl.starts_with(":-1"), "{key} has no TTL");
    }
}

// ---- 3: a flight started before an invalidation is stored after it -------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_from_a_flight_older_than_an_invalidation_is_not_kept() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let hour = Duration::from_secs(3600);
    let (a, b, c) = (
        vreplica(&server.url(), "a", hour),
        vreplica(&server.url(), "b", hour),
        vreplica(&server.url(), "c", hour),
    );
    let gate = Arc::new(tokio::sync::Notify::new());
    let key = "site".to_owned();
    // B computes from the data as it was before the write.
    let b_task = computing(b, &key, &gate).await;
    // The data changes; A invalidates (in Redis, before it returns).
    a.invalidate(&key).await;
    // C asks after the invalidation: it must not keep the old value.
    let (c2, k) = (c.clone(), key.clone());
    let c_task = tokio::spawn(async move { c2.get_or_compute(k, || async { Ok(2) }).await });
    wait_for("C asks", || {
        let (c, key) = (c.clone(), key.clone());
        async move { matches!(c.peek(&key).await, Peek::Computing { .. }) }
    })
    .await;
    gate.notify_one();
    let _ = b_task.await.unwrap();
    let got = c_task.await.unwrap().unwrap();
    let peek = c.peek(&key).await;
    eprintln!("C got {got}, C now holds {peek:?}");
    assert!(
        peek != Peek::Fresh(1),
        "C stored the pre-invalidation value as fresh (for an hour)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_from_a_flight_older_than_a_write_is_not_kept() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let hour = Duration::from_secs(3600);
    let (runs, gate) = (Runs::default(), Arc::new(tokio::sync::Notify::new()));
    let a = gated_app(connect(&server.url(), "a"), &runs, gate.clone(), hour);
    let b = gated_app(connect(&server.url(), "b"), &runs, gate.clone(), hour);
    let redis_c = connect(&server.url(), "c");
    let c = gated_app(redis_c.clone(), &runs, gate.clone(), hour);
    let b_req = common::spawn(&b, common::get("/slow"));
    common::eventually(|| runs.get() == 1).await;
    assert_eq!(
        common::send(&a, common::request("POST", "/slow"))
            .await
            .text(),
        "written"
    );
    write_reached_redis(&server, "/slow").await;
    let c_req = common::spawn(&c, common::get("/slow"));
    // C looked at the tier and found B's flight.
    wait_for("C joins B's flight", || {
        let calls = redis_c.stats().calls;
        async move { calls >= 2 }
    })
    .await;
    gate.notify_one();
    let _ = b_req.await.unwrap();
    let c_first = c_req.await.unwrap();
    let c_again = common::send(&c, common::get("/slow")).await;
    eprintln!(
        "C first {} then {} ({})",
        c_first.text(),
        c_again.text(),
        header(&c_again, "cache-status")
    );
    assert_ne!(
        c_again.text(),
        "slow #1",
        "C stored, after the write, the answer read before it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_put_after_an_invalidation_reached_redis_is_refused() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let hour = Duration::from_secs(3600);
    let (a, b) = (
        vreplica(&server.url(), "a", hour),
        vreplica(&server.url(), "b", hour),
    );
    let gate = Arc::new(tokio::sync::Notify::new());
    let key = "site".to_owned();
    let b_task = computing(b, &key, &gate).await;
    // B's subscription drops for a moment as A invalidates.
    server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    a.invalidate(&key).await;
    gate.notify_one();
    // B's computation ends, its put to Redis (refused or not) included.
    let _ = b_task.await.unwrap();
    // A fresh replica reads the tier after the invalidation reached Redis.
    let d = vreplica(&server.url(), "d", hour);
    let got = d
        .get_or_compute(key.clone(), || async { Ok(2) })
        .await
        .unwrap();
    assert_eq!(
        got, 2,
        "the tier holds the pre-invalidation value, put after the DEL"
    );
}

// ---- 7: the request's own directives are ignored by the tier --------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_cache_request_is_not_answered_from_the_tier() {
    let Some(Pair {
        server: _server,
        runs: _,
        a,
        b,
    }) = pair(Duration::from_secs(60))
    else {
        return;
    };
    common::send(&a, common::get("/report")).await;
    let reply = common::send(
        &b,
        common::with_headers("GET", "/report", &[("cache-control", "no-cache")]),
    )
    .await;
    eprintln!(
        "no-cache on B: {} cs={}",
        reply.text(),
        header(&reply, "cache-status")
    );
    assert_ne!(
        reply.text(),
        "report #1",
        "no-cache: a stored answer must not be used without validation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_age_request_gets_no_older_answer_from_the_tier() {
    let Some(Pair {
        server: _server,
        runs: _,
        a,
        b,
    }) = pair(Duration::from_secs(60))
    else {
        return;
    };
    common::send(&a, common::get("/report")).await;
    // Real time must pass for the answer to age (Redis's clock).
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let reply = common::send(
        &b,
        common::with_headers("GET", "/report", &[("cache-control", "max-age=1")]),
    )
    .await;
    eprintln!(
        "max-age=1 on B: {} cs={}",
        reply.text(),
        header(&reply, "cache-status")
    );
    assert_ne!(
        reply.text(),
        "report #1",
        "max-age=1: a 3 s old answer must not be served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_put_after_a_write_reached_redis_is_refused() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let hour = Duration::from_secs(3600);
    let (runs, gate) = (Runs::default(), Arc::new(tokio::sync::Notify::new()));
    let a = gated_app(connect(&server.url(), "a"), &runs, gate.clone(), hour);
    let b = gated_app(connect(&server.url(), "b"), &runs, gate.clone(), hour);
    let b_req = common::spawn(&b, common::get("/slow"));
    common::eventually(|| runs.get() == 1).await;
    // B's subscription drops for a moment as A's write goes through.
    server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(
        common::send(&a, common::request("POST", "/slow"))
            .await
            .text(),
        "written"
    );
    write_reached_redis(&server, "/slow").await;
    gate.notify_one();
    // B's answer, its put to the tier (refused or not) done before it.
    let _ = b_req.await.unwrap();
    let d = gated_app(connect(&server.url(), "d"), &runs, gate.clone(), hour);
    let d_req = common::spawn(&d, common::get("/slow"));
    // If the tier has nothing for it, D runs the handler: let it end.
    gate.notify_one();
    let reply = d_req.await.unwrap();
    assert_ne!(
        reply.text(),
        "slow #1",
        "D read from the tier the answer read before A's write"
    );
}
