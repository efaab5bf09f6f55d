//! Leases across replicas on a real `redis-server`: reject mode, the `Flight`
//! extractor, expiry, fencing, the admin list, and Redis going away.
//!
//! Each replica is its own router with its own `Redis` connection. Tests skip
//! with a printed reason only when `redis-server` is not installed.

mod common;

use std::{sync::Arc, time::Duration};

use axum::{extract::Path, routing::post, Extension, Router};
use common::{
    redis_server::{connect, wait_for, RedisServer, StallingProxy, TIMEOUT},
    send, send_all, Runs,
};
use http::StatusCode;
use tokio::sync::Notify;
use tower_singleflight::{
    admin,
    extract::Flight,
    flight::Refused,
    redis::{RedisStore, WhenUnavailable},
    Flights, Progress, SingleFlightLayer,
};

fn table(url: &str, replica: &str) -> Flights<String> {
    Flights::with_store(RedisStore::new(connect(url, replica)))
}

/// A replica of a trigger endpoint: the job reports its progress, then
/// holds the key in the background until `finish` is notified.
fn trigger_replica(flights: &Flights<String>, runs: &Runs, finish: &Arc<Notify>) -> Router {
    let (runs, finish) = (runs.clone(), Arc::clone(finish));
    let trigger = move |flight: Flight<Path<String>>| {
        let (runs, finish) = (runs.clone(), Arc::clone(&finish));
        async move {
            runs.bump();
            flight.guard().report(Progress::steps(1, 10)).await;
            flight.spawn(move |lease| async move {
                lease.report(Progress::steps(3, 10)).await;
                finish.notified().await;
            });
            StatusCode::OK
        }
    };
    Router::new()
        .route("/jobs/{name}", post(trigger))
        .layer(Extension(flights.clone()))
}

fn post_to(uri: &str) -> http::Request<axum::body::Body> {
    common::request("POST", uri)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_twenty_posts_each_one_runs_the_rest_see_its_progress() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runs = Runs::default();
    let finish = Arc::new(Notify::new());
    let tables: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|name| table(&server.url(), name))
        .collect();
    let replicas: Vec<_> = tables
        .iter()
        .map(|flights| trigger_replica(flights, &runs, &finish))
        .collect();

    let mut tasks = Vec::new();
    for replica in &replicas {
        for _ in 0..20 {
            tasks.push(common::spawn(replica, post_to("/jobs/nightly")));
        }
    }
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    assert_eq!(runs.get(), 1, "one handler run in the cluster");
    assert_eq!(common::count(&replies, StatusCode::OK), 1);
    assert_eq!(common::count(&replies, StatusCode::CONFLICT), 59);
    for reply in replies.iter().filter(|r| r.status == StatusCode::CONFLICT) {
        assert_eq!(reply.json()["status"], "already_running");
    }

    // The job reports from its own replica; every replica's 409 shows it.
    let winner = tables
        .iter()
        .position(|flights| flights.stats().leaders == 1)
        .expect("one replica ran the job");
    wait_for("the job's progress reaches redis", || {
        let flights = tables[(winner + 1) % 3].clone();
        async move {
            flights
                .holder(&"nightly".to_owned())
                .await
                .and_then(|holder| holder.progress().and_then(Progress::done))
                == Some(3)
        }
    })
    .await;
    for (index, replica) in replicas.iter().enumerate() {
        let reply = send(replica, post_to("/jobs/nightly")).await;
        assert_eq!(reply.status, StatusCode::CONFLICT);
        let progress = &reply.json()["progress"];
        assert_eq!(
            (progress["done"].as_u64(), progress["total"].as_u64()),
            (Some(3), Some(10))
        );
        let holder = tables[index].holder(&"nightly".to_owned()).await.unwrap();
        assert_eq!(holder.replica(), Some(["a", "b", "c"][winner]));
    }

    // It ends; the next POST on any replica runs.
    finish.notify_one();
    wait_for("the lease is released", || {
        let flights = tables[0].clone();
        async move { flights.holder(&"nightly".to_owned()).await.is_none() }
    })
    .await;
    let next = (winner + 1) % 3;
    let reply = send(&replicas[next], post_to("/jobs/nightly")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(runs.get(), 2);
    finish.notify_one();
}

#[tokio::test]
async fn an_expired_lease_passes_to_another_replica_and_its_late_release_does_nothing() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis_a = connect(&server.url(), "a");
    let a: Flights<String> = Flights::with_store(RedisStore::new(redis_a.clone()));
    let b = table(&server.url(), "b");
    let key = "import".to_owned();
    let ttl = Duration::from_millis(400);
    let hung = a.try_acquire(key.clone(), ttl).await.expect("free");
    assert!(matches!(
        b.try_acquire(key.clone(), ttl).await,
        Err(Refused::Held(_))
    ));

    // A hangs past its TTL: B takes the key, with a greater fencing token.
    let successor = loop {
        if let Ok(guard) = b.try_acquire(key.clone(), Duration::from_secs(60)).await {
            break guard;
        }
        assert!(hung.is_current().await, "nobody holds a key B cannot take");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(successor.fencing_token() > hung.fencing_token());
    assert_eq!(
        successor.lease().generation(),
        hung.lease().generation() + 1
    );

    // A wakes up: it can neither renew, nor report, nor release B's lease.
    assert!(!hung.renew(Duration::from_secs(60)).await);
    assert!(!hung.report(Progress::message("stale")).await);
    assert!(!hung.is_current().await);
    let calls = redis_a.stats().calls;
    drop(hung);
    wait_for("A's late release reached redis", || {
        let done = redis_a.stats().calls > calls;
        async move { done }
    })
    .await;
    let holder = b.holder(&key).await.expect("B still holds the key");
    assert_eq!(holder.lease(), successor.lease());
    assert_eq!(holder.replica(), Some("b"));
    assert!(successor.is_current().await);

    // Tokens keep increasing across replicas.
    drop(successor);
    wait_for("B's release", || {
        let (b, key) = (b.clone(), key.clone());
        async move { b.holder(&key).await.is_none() }
    })
    .await;
    let third = a.try_acquire(key.clone(), ttl).await.expect("free again");
    assert!(third.fencing_token() > holder.lease().token());
}

#[tokio::test]
async fn a_crashed_holder_leaves_nothing_behind_but_its_ttl() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let key = "report".to_owned();
    {
        // A replica that dies holding the key: its connection and runtime go,
        // no release is ever sent.
        let url = server.url();
        let key = key.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let a = table(&url, "a");
                let guard = a
                    .try_acquire(key, Duration::from_millis(300))
                    .await
                    .unwrap();
                std::mem::forget(guard);
            });
        })
        .join()
        .unwrap();
    }
    let b = table(&server.url(), "b");
    assert!(
        b.holder(&key).await.is_some(),
        "the dead holder still holds"
    );
    wait_for("the dead holder's lease ends", || {
        let (b, key) = (b.clone(), key.clone());
        async move { b.try_acquire(key, Duration::from_secs(5)).await.is_ok() }
    })
    .await;
}

#[tokio::test]
async fn the_admin_router_on_one_replica_lists_and_frees_what_another_holds() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (table(&server.url(), "a"), table(&server.url(), "b"));
    let held = a
        .try_acquire("rebuild".to_owned(), Duration::from_secs(60))
        .await
        .unwrap();
    held.report(Progress::message("halfway")).await;
    let _other = a
        .try_acquire("reindex".to_owned(), Duration::from_secs(60))
        .await
        .unwrap();
    let admin: Router = admin::router(b.clone());

    let listed = send(&admin, common::get("/flights")).await.json();
    let mut keys: Vec<_> = listed["flights"]
        .as_array()
        .expect("a list of held keys")
        .iter()
        .map(|entry| entry["key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, ["rebuild", "reindex"]);

    let one = send(&admin, common::get("/flights/rebuild")).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["progress"]["message"], "halfway");
    assert_eq!(one.json()["replica"], "a");

    let freed = send(&admin, common::request("DELETE", "/flights/rebuild")).await;
    assert_eq!(freed.status, StatusCode::OK);
    assert!(!held.is_current().await, "the old holder is locked out");
    assert!(!held.renew(Duration::from_secs(60)).await);
    let next = b
        .try_acquire("rebuild".to_owned(), Duration::from_secs(60))
        .await;
    assert!(next.is_ok(), "the key is free on every replica");
    assert_eq!(
        send(&admin, common::request("DELETE", "/flights/absent"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_listed_holding_is_force_released_only_if_it_still_holds() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (table(&server.url(), "a"), table(&server.url(), "b"));
    let key = "sync".to_owned();
    let first = a
        .try_acquire(key.clone(), Duration::from_millis(300))
        .await
        .unwrap();
    let listed = b.holders().await;
    assert_eq!(listed.len(), 1);
    let (listed_key, listed_holder) = &listed[0];
    assert_eq!(listed_key, &key);
    drop(first);
    wait_for("the first holding ends", || {
        let (b, key) = (b.clone(), key.clone());
        async move { b.holder(&key).await.is_none() }
    })
    .await;
    let second = a
        .try_acquire(key.clone(), Duration::from_secs(60))
        .await
        .unwrap();
    // The operator decided on the first holding: the second is left alone.
    assert_eq!(b.force_release_if(&key, listed_holder.lease()).await, None);
    assert!(second.is_current().await);
    assert!(b.force_release_if(&key, second.lease()).await.is_some());
    assert!(!second.is_current().await);
}

/// A trigger replica behind the reject layer, keyed by path.
fn reject_replica(flights: Flights<String>, runs: &Runs, gate: &Arc<Notify>) -> Router {
    let (runs, gate) = (runs.clone(), Arc::clone(gate));
    let handler = move || {
        let (runs, gate) = (runs.clone(), Arc::clone(&gate));
        async move {
            runs.bump();
            gate.notified().await;
            StatusCode::OK
        }
    };
    Router::new().route("/sync", post(handler)).layer(
        SingleFlightLayer::reject()
            .key(|parts: &http::request::Parts| Some(parts.uri.path().to_owned()))
            .flights(flights),
    )
}

/// Sends a request, failing the test if it takes more than `bound`: no
/// request may hang on Redis.
async fn answered_within(
    bound: Duration,
    app: &Router,
    request: http::Request<axum::body::Body>,
) -> common::Reply {
    tokio::time::timeout(bound, send(app, request))
        .await
        .expect("answered without hanging on redis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_mode_on_redis_runs_once_across_replicas() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (runs, gate) = (Runs::default(), Arc::new(Notify::new()));
    let replicas: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|name| reject_replica(table(&server.url(), name), &runs, &gate))
        .collect();
    let running = common::spawn(&replicas[0], post_to("/sync"));
    wait_for("the first run starts", || {
        let started = runs.get() == 1;
        async move { started }
    })
    .await;
    let mut rejected = Vec::new();
    for replica in &replicas {
        rejected.extend(send_all(replica, (0..10).map(|_| post_to("/sync"))).await);
    }
    assert_eq!(common::count(&rejected, StatusCode::CONFLICT), 30);
    gate.notify_one();
    assert_eq!(running.await.unwrap().status, StatusCode::OK);
    assert_eq!(runs.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_then_restarted_fails_closed_then_coordinates_again() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let (runs, gate) = (Runs::default(), Arc::new(Notify::new()));
    let redis = connect(&server.url(), "a");
    let app = reject_replica(
        Flights::with_store(RedisStore::new(redis.clone())),
        &runs,
        &gate,
    );
    let other = reject_replica(table(&server.url(), "b"), &runs, &gate);
    // Connected and working before the crash.
    let first = common::spawn(&app, post_to("/sync"));
    wait_for("a run", || {
        let started = runs.get() == 1;
        async move { started }
    })
    .await;
    gate.notify_one();
    assert_eq!(first.await.unwrap().status, StatusCode::OK);

    server.kill();
    let bound = TIMEOUT * 4;
    for _ in 0..3 {
        let reply = answered_within(bound, &app, post_to("/sync")).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "fails closed"
        );
        assert_eq!(reply.json()["status"], "unavailable");
        assert!(reply.headers.contains_key(http::header::RETRY_AFTER));
    }
    assert_eq!(runs.get(), 1, "nothing ran while redis was away");
    assert!(redis.stats().refused >= 3);

    // Back, empty: the same replicas coordinate again without a restart.
    server.restart();
    wait_for("the replica reconnects", || {
        let app = app.clone();
        let gate = Arc::clone(&gate);
        async move {
            let reply = common::spawn(&app, post_to("/sync"));
            tokio::task::yield_now().await;
            // Let any run that started end, whatever its status.
            gate.notify_one();
            reply.await.unwrap().status == StatusCode::OK
        }
    })
    .await;
    // A permit left by the loop above would let the next run end at once.
    let _ = tokio::time::timeout(Duration::from_millis(1), gate.notified()).await;
    // A run that holds the key. (An attempt that timed out while Redis came
    // back may have taken the lease after all: it is given back as soon as
    // Redis answers, and the next attempt runs.)
    let held = loop {
        let runs_before = runs.get();
        let attempt = common::spawn(&app, post_to("/sync"));
        wait_for("a run or an answer", || {
            let settled = runs.get() > runs_before || attempt.is_finished();
            async move { settled }
        })
        .await;
        if runs.get() > runs_before {
            break attempt;
        }
    };
    let duplicate = answered_within(bound, &other, post_to("/sync")).await;
    assert_eq!(
        duplicate.status,
        StatusCode::CONFLICT,
        "the replicas coordinate again"
    );
    gate.notify_one();
    assert_eq!(held.await.unwrap().status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_times_out_and_the_policy_applies() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = StallingProxy::start(server.port()).await;
    let (runs, gate) = (Runs::default(), Arc::new(Notify::new()));
    let closed = connect(&proxy.url(), "closed");
    let open = connect(&proxy.url(), "open");
    let fail_closed = reject_replica(
        Flights::with_store(RedisStore::new(closed.clone())),
        &runs,
        &gate,
    );
    let fail_open = reject_replica(
        Flights::with_store(
            RedisStore::new(open.clone()).when_unavailable(WhenUnavailable::LocalLease),
        ),
        &runs,
        &gate,
    );
    // Both connected through the proxy before it stalls.
    let key = "warm".to_owned();
    let warm = Flights::<String>::with_store(RedisStore::new(closed.clone()));
    assert!(warm.holder(&key).await.is_none());
    let warm = Flights::<String>::with_store(RedisStore::new(open.clone()));
    assert!(warm.holder(&key).await.is_none());

    proxy.stall();
    let bound = TIMEOUT * 4;
    let reply = answered_within(bound, &fail_closed, post_to("/sync")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let failed = closed.stats();
    assert!(
        failed.timeouts + failed.errors >= 1 && failed.refused == 1,
        "{failed:?}"
    );
    assert_eq!(runs.get(), 0);

    // Fail open: the lease is this replica's own, and still single-flight here.
    let running = common::spawn(&fail_open, post_to("/sync"));
    wait_for("the local run starts", || {
        let started = runs.get() == 1;
        async move { started }
    })
    .await;
    let duplicate = answered_within(bound, &fail_open, post_to("/sync")).await;
    assert_eq!(
        duplicate.status,
        StatusCode::CONFLICT,
        "single-flight within the replica"
    );
    assert_eq!(open.stats().local_leases, 2);
    gate.notify_one();
    assert_eq!(running.await.unwrap().status, StatusCode::OK);

    proxy.resume();
    let owner = Flights::<String>::with_store(RedisStore::new(closed.clone()));
    wait_for("redis answers again", || {
        let owner = owner.clone();
        async move {
            owner
                .try_acquire("after".to_owned(), Duration::from_secs(5))
                .await
                .is_ok()
        }
    })
    .await;
}

#[tokio::test]
async fn a_lease_costs_two_round_trips_to_redis() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis = connect(&server.url(), "a");
    let flights: Flights<String> = Flights::with_store(RedisStore::new(redis.clone()));
    let guard = flights
        .try_acquire("job".to_owned(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        redis.stats().calls,
        1,
        "acquire, fencing token and holder: one script"
    );
    drop(guard);
    wait_for("the release", || {
        let calls = redis.stats().calls;
        async move { calls == 2 }
    })
    .await;
    assert_eq!(server.command(&["EXISTS", "tsf:lease:\"job\""]), ":0\r\n");
}

#[tokio::test]
async fn a_key_this_replica_holds_in_redis_is_not_taken_again_locally_while_redis_is_away() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let flights: Flights<String> = Flights::with_store(
        RedisStore::new(connect(&server.url(), "a")).when_unavailable(WhenUnavailable::LocalLease),
    );
    let held = flights
        .try_acquire("import".to_owned(), Duration::from_secs(60))
        .await
        .unwrap();
    server.kill();
    assert!(
        matches!(
            flights
                .try_acquire("import".to_owned(), Duration::from_secs(60))
                .await,
            Err(Refused::Unavailable(_))
        ),
        "the Redis lease still holds: no second, local one"
    );
    let other = flights
        .try_acquire("other".to_owned(), Duration::from_secs(60))
        .await;
    assert!(other.is_ok(), "another key falls back to a local lease");
    drop(held);
}

#[tokio::test]
async fn a_replica_shutting_down_stops_its_job_and_frees_its_key_in_redis_before_it_exits() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let key = "report".to_owned();
    let drained = {
        let (url, key) = (server.url(), key.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let drained = runtime.block_on(async {
                let a = table(&url, "a");
                a.spawn(key.clone(), Duration::from_secs(60), |lease| async move {
                    lease.cancelled().await;
                })
                .await
                .unwrap();
                assert!(a.holder(&key).await.is_some());
                let drained = a.shutdown(Duration::from_secs(5)).await;
                let refused = a.try_acquire("other".to_owned(), Duration::from_secs(60));
                assert!(matches!(
                    refused.await,
                    Err(Refused::Unavailable(unavailable)) if unavailable.is_shutting_down()
                ));
                drained
            });
            // The process exits: what was not sent by now never is.
            drop(runtime);
            drained
        })
        .join()
        .unwrap()
    };
    assert_eq!((drained.finished, drained.still_running), (1, 0));
    let b = table(&server.url(), "b");
    assert!(
        b.holder(&key).await.is_none(),
        "the release reached redis before the replica exited, not at the TTL"
    );
    assert!(
        b.holder(&"other".to_owned()).await.is_none(),
        "nothing was asked of redis during the shutdown"
    );
}
