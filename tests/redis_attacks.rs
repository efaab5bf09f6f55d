//! Attacks on the promises of the `redis` feature, from an adversarial
//! review: each test failed on the first version and passes since its fix.

mod common;

use std::{sync::Arc, time::Duration};

use axum::{routing::get, Router};
use common::{
    redis_server::{connect, wait_for, RedisServer},
    Reply, Runs,
};
use http::{HeaderMap, StatusCode};
use tokio::sync::Notify;
use tower_singleflight::{
    redis::{Cluster, Redis},
    SingleFlightLayer,
};

fn layer(redis: Redis) -> tower_singleflight::layer::ShareLayer {
    SingleFlightLayer::share()
        .max_wait(Duration::from_secs(10))
        .cluster(Cluster::new(redis).leader_lease(Duration::from_secs(1)))
}

/// Waits until a replica's first call to Redis (its turn) was answered: it
/// waits on the cluster flight from then on.
async fn asked(redis: &Redis) {
    while redis.stats().calls == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How the first run of [`gated_leader`]'s handler ends once its gate opens.
#[derive(Clone, Copy)]
enum FirstRun {
    Fails,
    Panics,
}

/// A replica whose `/r` holds its first run at `gate`, which then fails or
/// panics; every later run answers `ok #N`.
fn gated_leader(runs: &Runs, gate: &Arc<Notify>, first: FirstRun, redis: Redis) -> Router {
    let (runs, gate) = (runs.clone(), Arc::clone(gate));
    let handler = move || {
        let (runs, gate) = (runs.clone(), Arc::clone(&gate));
        async move {
            let run = runs.bump();
            if run == 1 {
                gate.notified().await;
                match first {
                    FirstRun::Fails => {
                        return (StatusCode::INTERNAL_SERVER_ERROR, format!("boom #{run}"))
                    }
                    FirstRun::Panics => panic!("leader dies"),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            (StatusCode::OK, format!("ok #{run}"))
        }
    };
    Router::new().route("/r", get(handler)).layer(layer(redis))
}

/// Promise 4: a leader's 5xx is never published to other replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_500_is_not_published_to_another_replica() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runs = Runs::default();
    let gate = Arc::new(Notify::new());
    let make = |redis: Redis| gated_leader(&runs, &gate, FirstRun::Fails, redis);
    let redis_b = connect(&server.url(), "b");
    let (a, b) = (make(connect(&server.url(), "a")), make(redis_b.clone()));
    let first = common::spawn(&a, common::get("/r"));
    common::until(|| runs.get() == 1).await;
    let waiting = common::spawn(&b, common::get("/r"));
    asked(&redis_b).await;
    gate.notify_one();
    assert_eq!(
        first.await.unwrap().status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let other = waiting.await.unwrap();
    assert_eq!(
        (other.status, other.text()),
        (StatusCode::OK, "ok #2"),
        "replica B must not be handed replica A's 500"
    );
}

/// Promise 1/4: the cluster lease stores a random nonce, but ends and renewals
/// compare only the fence. After Redis loses its counter (restart, or an RDB
/// snapshot older than the last INCR) an old leader ends its successor's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_leader_does_not_end_its_successors_lease_after_a_fence_reset() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let runs = Runs::default();
    let (gate_a, gate_b) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let make = |redis: Redis| {
        let (runs, gate_a, gate_b) = (runs.clone(), Arc::clone(&gate_a), Arc::clone(&gate_b));
        let handler = move || {
            let (runs, gate_a, gate_b) = (runs.clone(), Arc::clone(&gate_a), Arc::clone(&gate_b));
            async move {
                let run = runs.bump();
                match run {
                    1 => gate_a.notified().await,
                    2 => gate_b.notified().await,
                    _ => {}
                }
                format!("report #{run}")
            }
        };
        Router::new().route("/r", get(handler)).layer(layer(redis))
    };
    let redis_a = connect(&server.url(), "a");
    let (a, b, c) = (
        make(redis_a.clone()),
        make(connect(&server.url(), "b")),
        make(connect(&server.url(), "c")),
    );
    let first = common::spawn(&a, common::get("/r"));
    common::until(|| runs.get() == 1).await;
    assert!(server.command(&["GET", "tsf:fence"]).contains("\r\n1\r\n"));
    let answered = redis_a.stats().calls;
    server.restart();
    // A's renewals notice, and its connection comes back.
    wait_for("A's connection answers again", || {
        let calls = redis_a.stats().calls;
        async move { calls > answered }
    })
    .await;
    let second = common::spawn(&b, common::get("/r"));
    common::until(|| runs.get() == 2).await;
    // B leads with fence 1 again.
    assert!(server.command(&["GET", "tsf:fence"]).contains("\r\n1\r\n"));
    // A's old flight (fence 1) ends.
    gate_a.notify_one();
    // Its lease ended before it answered.
    assert_eq!(first.await.unwrap().text(), "report #1");
    let leases = server.command(&["KEYS", "tsf:flight:*:lease"]);
    // C arrives while B still runs: it must wait for B, not lead a second run.
    let third = common::spawn(&c, common::get("/r"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let runs_while_b_ran = runs.get();
    gate_b.notify_one();
    let _ = second.await;
    let _ = third.await;
    assert_eq!(
        runs_while_b_ran, 2,
        "B's lease was ended by A's stale fence (lease keys after A ended: {leases:?})"
    );
}

fn echo_auth(runs: &Runs, redis: Redis) -> Router {
    let runs = runs.clone();
    let handler = move |headers: HeaderMap| {
        let runs = runs.clone();
        async move {
            runs.bump();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let get = |n: &str| {
                headers
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            format!("{}{}", get("authorization"), get("cookie"))
        }
    };
    Router::new().route("/r", get(handler)).layer(layer(redis))
}

/// Promise 2: different callers on two replicas never share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_authorization_across_replicas_is_not_shared() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runs = Runs::default();
    let a = echo_auth(&runs, connect(&server.url(), "a"));
    let b = echo_auth(&runs, connect(&server.url(), "b"));
    let cases: [(&'static str, &'static str); 3] = [
        ("Bearer alice", "Bearer bob"),
        ("Bearer alice", "bearer alice"),
        ("Bearer alice", "Bearer  alice"),
    ];
    for (left, right) in cases {
        let x = common::spawn(
            &a,
            common::get_with("/r", http::header::AUTHORIZATION, left),
        );
        let y = common::spawn(
            &b,
            common::get_with("/r", http::header::AUTHORIZATION, right),
        );
        let (x, y): (Reply, Reply) = (x.await.unwrap(), y.await.unwrap());
        assert_eq!(x.text(), left);
        assert_eq!(y.text(), right);
        // Let the pair's answers be published before the next pair.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Cookie and Host.
    let x = common::spawn(&a, common::get_with("/r", http::header::COOKIE, "s=1"));
    let y = common::spawn(&b, common::get_with("/r", http::header::COOKIE, "s=2"));
    let (x, y) = (x.await.unwrap(), y.await.unwrap());
    assert_eq!((x.text(), y.text()), ("s=1", "s=2"));
    assert_eq!(runs.get(), 8, "every pair ran twice");
}

fn counting(runs: &Runs, redis: Redis, body: usize) -> Router {
    let runs = runs.clone();
    let handler = move || {
        let runs = runs.clone();
        async move {
            let run = runs.bump();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut text = format!("report #{run}");
            text.push_str(&" ".repeat(body));
            text
        }
    };
    Router::new().route("/r", get(handler)).layer(
        SingleFlightLayer::share()
            .max_wait(Duration::from_secs(10))
            .cluster(
                Cluster::new(redis)
                    .leader_lease(Duration::from_secs(5))
                    .max_shared_body(64),
            ),
    )
}

/// Promise 5: an answer is not handed to a request that came after its flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_after_the_flight_runs_fresh() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runs = Runs::default();
    let a = counting(&runs, connect(&server.url(), "a"), 0);
    let b = counting(&runs, connect(&server.url(), "b"), 0);
    assert_eq!(
        common::send(&a, common::get("/r")).await.text(),
        "report #1"
    );
    assert_eq!(
        common::send(&b, common::get("/r")).await.text(),
        "report #2"
    );
    assert_eq!(
        common::send(&a, common::get("/r")).await.text(),
        "report #3"
    );
}

/// Promise 4: an oversized answer sends the other replica to run its own at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_answer_sends_waiters_off_at_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runs = Runs::default();
    let a = counting(&runs, connect(&server.url(), "a"), 200);
    let redis_b = connect(&server.url(), "b");
    let b = counting(&runs, redis_b.clone(), 200);
    let first = common::spawn(&a, common::get("/r"));
    common::until(|| runs.get() == 1).await;
    let started = tokio::time::Instant::now();
    let other = common::send(&b, common::get("/r")).await;
    let _ = first.await;
    assert!(other.text().starts_with("report #2"));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

/// Promise 4: a panicking leader is replaced by one waiter; no 5xx published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_leader_is_replaced_by_one_waiter() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runs = Runs::default();
    let gate = Arc::new(Notify::new());
    let make = |redis: Redis| gated_leader(&runs, &gate, FirstRun::Panics, redis);
    let a = make(connect(&server.url(), "a"));
    let (redis_b, redis_c) = (connect(&server.url(), "b"), connect(&server.url(), "c"));
    let (b, c) = (make(redis_b.clone()), make(redis_c.clone()));
    let first = common::spawn(&a, common::get("/r"));
    common::until(|| runs.get() == 1).await;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        tasks.push(common::spawn(&b, common::get("/r")));
        tasks.push(common::spawn(&c, common::get("/r")));
    }
    asked(&redis_b).await;
    asked(&redis_c).await;
    gate.notify_one();
    let _ = first.await;
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!((reply.status, reply.text()), (StatusCode::OK, "ok #2"));
    }
    assert_eq!(runs.get(), 2);
}

fn quick(runs: &Runs, redis: Redis) -> Router {
    let runs = runs.clone();
    let handler = move || {
        let runs = runs.clone();
        async move { format!("report #{}", runs.bump()) }
    };
    Router::new().route("/r", get(handler)).layer(layer(redis))
}

/// Promise 5: the leader's publication runs in a spawned task after its
/// client has the answer; a request sent after that answer arrived still
/// finds the old lease, waits on it, and is handed the old flight's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_after_the_previous_answer_arrived_is_not_handed_it() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runs = Runs::default();
    let a = quick(&runs, connect(&server.url(), "a"));
    let b = quick(&runs, connect(&server.url(), "b"));
    let mut stale = Vec::new();
    for round in 0..20 {
        let first = common::send(&a, common::get("/r")).await;
        // Sent only once the first answer is in the client's hands.
        let second = common::send(if round % 2 == 0 { &a } else { &b }, common::get("/r")).await;
        if first.text() == second.text() {
            stale.push(second.text().to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        stale.is_empty(),
        "sequential requests handed the previous flight's answer: {stale:?}"
    );
}

fn gated(runs: &Runs, gate: &Arc<Notify>, redis: Redis) -> Router {
    let (runs, gate) = (runs.clone(), Arc::clone(gate));
    let handler = move || {
        let (runs, gate) = (runs.clone(), Arc::clone(&gate));
        async move {
            let run = runs.bump();
            if run == 1 {
                gate.notified().await;
            }
            format!("report #{run}")
        }
    };
    Router::new().route("/r", get(handler)).layer(layer(redis))
}

/// Promise 3: a waiter whose link to Redis stalls, or whose Redis restarts,
/// mid-wait answers promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_answers_when_redis_stalls_or_restarts_mid_wait() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let proxy = common::redis_server::StallingProxy::start(server.port()).await;
    for restart in [true, false] {
        let runs = Runs::default();
        let gate = Arc::new(Notify::new());
        let a = gated(&runs, &gate, connect(&server.url(), "a"));
        let redis_b = connect(&proxy.url(), "b");
        let b = gated(&runs, &gate, redis_b.clone());
        let first = common::spawn(&a, common::get("/r"));
        common::until(|| runs.get() == 1).await;
        let waiting = common::spawn(&b, common::get("/r"));
        asked(&redis_b).await;
        let started = tokio::time::Instant::now();
        if restart {
            server.restart()
        } else {
            proxy.stall()
        }
        let reply = tokio::time::timeout(Duration::from_secs(3), waiting)
            .await
            .expect("the waiter answers")
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        assert!(reply.status == StatusCode::OK || reply.status.is_server_error());
        gate.notify_one();
        let _ = first.await;
        proxy.resume();
    }
}

/// Promise 2: scheme and method keep flights apart across replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheme_and_method_are_kept_apart_across_replicas() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runs = Runs::default();
    let a = counting(&runs, connect(&server.url(), "a"), 0);
    let b = counting(&runs, connect(&server.url(), "b"), 0);
    let x = common::spawn(&a, common::get("http://h.example/r"));
    let y = common::spawn(&b, common::get("https://h.example/r"));
    let (x, y) = (x.await.unwrap(), y.await.unwrap());
    assert_ne!(x.text(), y.text());
    let x = common::spawn(&a, common::get("http://h.example/r"));
    let y = common::spawn(&b, common::get("http://other.example/r"));
    let (x, y) = (x.await.unwrap(), y.await.unwrap());
    assert_ne!(x.text(), y.text());
}

/// Promise 3: a turn that timed out on a stalled link still runs in Redis
/// once the link delivers it, and takes the cluster lease for a leader that
/// gave up: every replica then waits a whole leader lease on nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_turn_leaves_no_phantom_leader() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = common::redis_server::StallingProxy::start(server.port()).await;
    let runs = Runs::default();
    let redis_b = connect(&proxy.url(), "b");
    // Connected, then stalled.
    let b = counting(&runs, redis_b.clone(), 0);
    let _ = redis_b.timeout();
    let warm = common::send(&b, common::get("/warm")).await;
    let _ = warm;
    proxy.stall();
    let own = common::send(&b, common::get("/r")).await;
    assert_eq!(
        own.text(),
        "report #1",
        "B ran alone while Redis was stalled"
    );
    proxy.resume();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let leases = server.command(&["KEYS", "tsf:flight:*:lease"]);
    let a = counting(&runs, connect(&server.url(), "a"), 0);
    let started = tokio::time::Instant::now();
    let reply = common::send(&a, common::get("/r")).await;
    assert_eq!(reply.text(), "report #2");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "A waited {:?} on a lease nobody holds (leases after resume: {leases:?})",
        started.elapsed()
    );
}

fn echo_who(
    runs: &Runs,
    redis: Redis,
    identity: tower_singleflight::identity::CallerIdentity,
) -> Router {
    let runs = runs.clone();
    let handler = move |headers: HeaderMap| {
        let runs = runs.clone();
        async move {
            runs.bump();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let get = |n: &str| {
                headers
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            format!("cookie={} tenant={}", get("cookie"), get("x-tenant"))
        }
    };
    Router::new().route("/r", get(handler)).layer(
        SingleFlightLayer::share()
            .identity(identity)
            .max_wait(Duration::from_secs(10))
            .cluster(Cluster::new(redis).leader_lease(Duration::from_secs(1))),
    )
}

/// Promise 2: the digest names a caller's credential by its index in the
/// replica's `CallerIdentity` list, not by its header name: two replicas
/// whose lists differ (a rolling deploy adding a credential header) give
/// `Cookie: abc` on one and `X-Tenant: abc` on the other the same digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_named_by_header_not_by_list_position() {
    use tower_singleflight::identity::CallerIdentity;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runs = Runs::default();
    let old = echo_who(&runs, connect(&server.url(), "v1"), CallerIdentity::new());
    let new = echo_who(
        &runs,
        connect(&server.url(), "v2"),
        CallerIdentity::new().header(http::HeaderName::from_static("x-tenant")),
    );
    let x = common::spawn(&old, common::get_with("/r", http::header::COOKIE, "abc"));
    // Running: its lease in the cluster was taken before.
    common::until(|| runs.get() == 1).await;
    let y = common::spawn(
        &new,
        common::get_with("/r", http::HeaderName::from_static("x-tenant"), "abc"),
    );
    let (x, y) = (x.await.unwrap(), y.await.unwrap());
    assert_eq!(x.text(), "cookie=abc tenant=");
    assert_eq!(
        y.text(),
        "cookie= tenant=abc",
        "tenant abc got the cookie caller's answer"
    );
}
