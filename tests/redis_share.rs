//! Share mode across replicas on a real `redis-server`: one handler run in
//! the cluster, a dead leader replaced by exactly one waiter, unshareable
//! answers, and Redis going away.

mod common;

use std::{sync::Arc, time::Duration};

use axum::{routing::get, Router};
use common::{
    redis_server::{connect, RedisServer, StallingProxy},
    Reply, Runs,
};
use http::StatusCode;
use tokio::sync::Notify;
use tower_singleflight::{
    redis::{Cluster, Redis},
    SingleFlightLayer,
};

/// A replica serving `/report` through share mode across the cluster.
fn replica(redis: Redis, runs: &Runs, handler_time: Duration) -> Router {
    let runs = runs.clone();
    let report = move || {
        let runs = runs.clone();
        async move {
            let run = runs.bump();
            tokio::time::sleep(handler_time).await;
            format!("report #{run}")
        }
    };
    Router::new().route("/report", get(report)).layer(
        SingleFlightLayer::share()
            .max_wait(Duration::from_secs(10))
            .cluster(Cluster::new(redis).leader_lease(Duration::from_secs(1))),
    )
}

async fn gather(tasks: Vec<tokio::task::JoinHandle<Reply>>) -> Vec<Reply> {
    let mut replies = Vec::with_capacity(tasks.len());
    for task in tasks {
        replies.push(task.await.expect("the request task ran"));
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_900_identical_gets_run_the_handler_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runs = Runs::default();
    let replicas: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            replica(
                connect(&server.url(), name),
                &runs,
                Duration::from_millis(300),
            )
        })
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..300 {
        for replica in &replicas {
            tasks.push(common::spawn(replica, common::get("/report")));
        }
    }
    let replies = gather(tasks).await;
    assert_eq!(runs.get(), 1, "one handler run in the cluster");
    assert_eq!(common::count(&replies, StatusCode::OK), 900);
    assert!(replies.iter().all(|reply| reply.text() == "report #1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leader_replica_is_replaced_by_exactly_one_waiter() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Replica A leads, then loses Redis for good (a crash, as Redis sees
    // it: no answer, no release, no renewal).
    let proxy = StallingProxy::start(server.port()).await;
    let runs = Runs::default();
    let stuck = Arc::new(Notify::new());
    let dead = {
        let (runs, stuck) = (runs.clone(), Arc::clone(&stuck));
        let handler = move || {
            let (runs, stuck) = (runs.clone(), Arc::clone(&stuck));
            async move {
                runs.bump();
                stuck.notified().await;
                "never"
            }
        };
        Router::new().route("/report", get(handler)).layer(
            SingleFlightLayer::share()
                .max_wait(Duration::from_secs(3))
                .cluster(
                    Cluster::new(connect(&proxy.url(), "a")).leader_lease(Duration::from_secs(1)),
                ),
        )
    };
    let leader = common::spawn(&dead, common::get("/report"));
    common::until(|| runs.get() == 1).await;
    proxy.stall();

    let others: Vec<_> = ["b", "c"]
        .iter()
        .map(|name| {
            replica(
                connect(&server.url(), name),
                &runs,
                Duration::from_millis(50),
            )
        })
        .collect();
    let mut tasks = Vec::new();
    for replica in &others {
        for _ in 0..20 {
            tasks.push(common::spawn(replica, common::get("/report")));
        }
    }
    let replies = gather(tasks).await;
    assert_eq!(runs.get(), 2, "exactly one waiter took over");
    assert_eq!(common::count(&replies, StatusCode::OK), 40);
    assert!(replies.iter().all(|reply| reply.text() == "report #2"));
    // The dead replica's own request ends with a clear answer, not a hang.
    let own = leader.await.unwrap();
    assert_eq!(own.status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unshareable_answer_sends_every_replica_to_run_its_own_at_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runs = Runs::default();
    let gate = Arc::new(Notify::new());
    let make = |name: &str| {
        let (runs, gate) = (runs.clone(), Arc::clone(&gate));
        let handler = move || {
            let (runs, gate) = (runs.clone(), Arc::clone(&gate));
            async move {
                if runs.bump() == 1 {
                    gate.notified().await;
                }
                ([(http::header::SET_COOKIE, "session=abc")], "mine")
            }
        };
        let redis = connect(&server.url(), name);
        let app = Router::new().route("/report", get(handler)).layer(
            SingleFlightLayer::share()
                .max_wait(Duration::from_secs(10))
                .cluster(Cluster::new(redis.clone())),
        );
        (app, redis)
    };
    let ((a, _), (b, redis_b)) = (make("a"), make("b"));
    let first = common::spawn(&a, common::get("/report"));
    common::until(|| runs.get() == 1).await;
    let waiting = common::spawn(&b, common::get("/report"));
    // B asked Redis, found A leading, and waits on A's flight until A's
    // answer turns out unshareable.
    while redis_b.stats().calls == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(runs.get(), 1, "B waits for the cluster leader");
    gate.notify_one();
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    let own = waiting.await.unwrap();
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(runs.get(), 2, "B ran its own request");
    assert_eq!(own.headers[http::header::SET_COOKIE], "session=abc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_replica_coalesces_on_its_own_and_nothing_hangs() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    server.kill();
    let runs = Runs::default();
    let replicas: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| replica(connect(&url, name), &runs, Duration::from_millis(200)))
        .collect();
    let mut tasks = Vec::new();
    for replica in &replicas {
        for _ in 0..20 {
            tasks.push(common::spawn(replica, common::get("/report")));
        }
    }
    let replies = tokio::time::timeout(Duration::from_secs(5), gather(tasks))
        .await
        .expect("no request hangs on redis");
    assert_eq!(common::count(&replies, StatusCode::OK), 40);
    assert_eq!(runs.get(), 2, "one run per replica: local-only coalescing");
}
