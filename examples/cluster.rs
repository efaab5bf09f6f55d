//! Run with a local Redis:
//!
//! ```text
//! redis-server --daemonize yes --save ''   # if none runs yet
//! cargo run --example cluster --features redis
//! ```
//!
//! Starts three replicas of one axum app on three ports, each with its own
//! Redis connection (`REDIS_URL`, default `redis://127.0.0.1:6379`), as three
//! processes behind a load balancer would be. Fires 300 concurrent identical
//! GETs spread over the three at a share-mode route and 30 POSTs at a
//! reject-mode trigger, then prints per replica: requests, handler runs,
//! statuses, and how long the GETs took. Exits with status 1 unless the
//! cluster ran the report once and the trigger once.
//!
//! As separate processes:
//!
//! ```text
//! cargo run --example cluster --features redis -- serve 3001 &   # one replica
//! cargo run --example cluster --features redis -- serve 3002 &
//! cargo run --example cluster --features redis -- serve 3003 &
//! cargo run --example cluster --features redis -- fire 3001 3002 3003
//! ```

use std::{
    collections::BTreeMap,
    error::Error,
    process::ExitCode,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{
    routing::{get, post},
    Json, Router,
};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio::{net::TcpListener, task::JoinSet};
use tower_singleflight::{
    key,
    redis::{Cluster, Redis, RedisStore},
    Flights, SingleFlightLayer,
};

type BoxError = Box<dyn Error + Send + Sync>;
type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// What one replica did, as its `/stats` tells it.
#[derive(Default)]
struct Counters {
    report_runs: AtomicUsize,
    job_runs: AtomicUsize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ran = match args.first().map(String::as_str) {
        None => in_one_process().await,
        Some("serve") => serve_one(args.get(1)).await,
        Some("fire") => fire_at(&args[1..]).await,
        Some(other) => {
            Err(format!("unknown mode {other:?}: none, `serve PORT` or `fire PORT...`").into())
        }
    };
    match ran {
        Ok(true) => {
            println!("\nok: one report run and one job run in the whole cluster");
            ExitCode::SUCCESS
        }
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("FAIL: {error}");
            ExitCode::FAILURE
        }
    }
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Three replicas in this process, each with its own connection.
async fn in_one_process() -> Result<bool, BoxError> {
    let url = redis_url();
    check_reachable(&url).await?;
    let mut bases = Vec::new();
    for name in ["replica-1", "replica-2", "replica-3"] {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        bases.push(format!("http://{}", listener.local_addr()?));
        let app = app(connect(&url, name)?);
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    fire(&bases).await
}

/// One replica on `port`, until the process is killed.
async fn serve_one(port: Option<&String>) -> Result<bool, BoxError> {
    let port: u16 = port.ok_or("serve needs a port")?.parse()?;
    let url = redis_url();
    check_reachable(&url).await?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app(connect(&url, &format!("replica-{port}"))?)).await?;
    Ok(true)
}

/// Fires at replicas already running on these ports.
async fn fire_at(ports: &[String]) -> Result<bool, BoxError> {
    let bases: Vec<String> = ports
        .iter()
        .map(|port| format!("http://127.0.0.1:{port}"))
        .collect();
    if bases.is_empty() {
        return Err("fire needs the replicas' ports".into());
    }
    fire(&bases).await
}

fn connect(url: &str, name: &str) -> Result<Redis, BoxError> {
    Ok(Redis::builder(url)
        .prefix("cluster-example")
        .replica(name)
        .build()?)
}

/// One replica: a slow report shared across the cluster, a trigger whose
/// job must run once in the cluster, and what it ran.
fn app(redis: Redis) -> Router {
    let counters = Arc::new(Counters::default());
    let (reports, jobs, stats) = (Arc::clone(&counters), Arc::clone(&counters), counters);
    let report = move || {
        let counters = Arc::clone(&reports);
        async move {
            counters.report_runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            "the report"
        }
    };
    let job = move || {
        let counters = Arc::clone(&jobs);
        async move {
            counters.job_runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            "started"
        }
    };
    let shared = Router::new()
        .route("/report", get(report))
        .layer(SingleFlightLayer::share().cluster(Cluster::new(redis.clone())));
    let trigger = Router::new().route("/jobs/{name}", post(job)).layer(
        SingleFlightLayer::reject()
            .key(key::path())
            .flights(Flights::with_store(RedisStore::new(redis))),
    );
    let stats = move || {
        let counters = Arc::clone(&stats);
        async move {
            Json(serde_json::json!({
                "report_runs": counters.report_runs.load(Ordering::SeqCst),
                "job_runs": counters.job_runs.load(Ordering::SeqCst),
            }))
        }
    };
    shared.merge(trigger).route("/stats", get(stats))
}

/// One answer: which replica, what, how it went, how long it took.
struct Reply {
    replica: usize,
    method: Method,
    status: StatusCode,
    took: Duration,
    /// When the answer arrived.
    at: Instant,
}

/// Fires 300 GETs and 30 POSTs spread over the replicas, all at once, and
/// prints what each replica did.
async fn fire(bases: &[String]) -> Result<bool, BoxError> {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut sent = JoinSet::new();
    for index in 0..330 {
        let replica = index % bases.len();
        let (method, path) = if index < 300 {
            (Method::GET, "/report")
        } else {
            (Method::POST, "/jobs/nightly")
        };
        // Behind a load balancer every replica sees the site's name, not
        // its own address: requests for the same page are the same request.
        let request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", bases[replica]))
            .header(http::header::HOST, "app.example")
            .body(Empty::new())?;
        let client = client.clone();
        sent.spawn(async move {
            let started = Instant::now();
            let answer = client.request(request).await;
            let took = started.elapsed();
            answer.map(|response| Reply {
                replica,
                method,
                status: response.status(),
                took,
                at: Instant::now(),
            })
        });
    }
    let mut replies = Vec::new();
    while let Some(done) = sent.join_next().await {
        replies.push(done??);
    }
    let mut runs = Vec::new();
    for base in bases {
        let uri = format!("{base}/stats");
        let body = client
            .get(uri.parse()?)
            .await?
            .into_body()
            .collect()
            .await?;
        let stats: serde_json::Value = serde_json::from_slice(&body.to_bytes())?;
        let count = |name: &str| stats[name].as_u64().unwrap_or(0);
        runs.push((count("report_runs"), count("job_runs")));
    }
    print_table(bases.len(), &replies, &runs);
    check(&replies, &runs)
}

fn print_table(replicas: usize, replies: &[Reply], runs: &[(u64, u64)]) {
    println!(
        "{:<10} {:>8} {:>11} {:>8} {:>12}  statuses",
        "replica", "requests", "report runs", "job runs", "GET p50/p99"
    );
    for (replica, (reports, jobs)) in runs.iter().enumerate().take(replicas) {
        let mine: Vec<&Reply> = replies.iter().filter(|r| r.replica == replica).collect();
        let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
        for reply in &mine {
            *statuses
                .entry(format!("{} {}", reply.method, reply.status.as_u16()))
                .or_default() += 1;
        }
        let statuses: Vec<_> = statuses.iter().map(|(s, n)| format!("{s} x{n}")).collect();
        let mut gets: Vec<Duration> = mine
            .iter()
            .filter(|r| r.method == Method::GET)
            .map(|r| r.took)
            .collect();
        gets.sort();
        let at = |share: f64| {
            gets.get(((gets.len() as f64 - 1.0) * share) as usize)
                .map_or(0, |d| d.as_millis())
        };
        println!(
            "{:<10} {:>8} {reports:>11} {jobs:>8} {:>12}  {}",
            format!("replica-{}", replica + 1),
            mine.len(),
            format!("{} / {} ms", at(0.5), at(0.99)),
            statuses.join(", ")
        );
    }
    let reports: u64 = runs.iter().map(|(reports, _)| reports).sum();
    let jobs: u64 = runs.iter().map(|(_, jobs)| jobs).sum();
    println!(
        "{:<10} {:>8} {reports:>11} {jobs:>8}",
        "cluster",
        replies.len()
    );
    print_fan_out(replies, runs);
}

/// When the GETs' answers arrived, from the first one: on the replica that
/// ran the report, and on the others (which got it through Redis).
fn print_fan_out(replies: &[Reply], runs: &[(u64, u64)]) {
    let Some(leader) = runs.iter().position(|(reports, _)| *reports == 1) else {
        return;
    };
    let gets = || replies.iter().filter(|reply| reply.method == Method::GET);
    let Some(first) = gets().map(|reply| reply.at).min() else {
        return;
    };
    let p99 = |on_leader: bool| {
        let mut after: Vec<Duration> = gets()
            .filter(|reply| (reply.replica == leader) == on_leader)
            .map(|reply| reply.at - first)
            .collect();
        after.sort();
        let index = (after.len().saturating_sub(1) as f64 * 0.99) as usize;
        after.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "GET answers after the first, p99: {:.1} ms on the leader's replica, {:.1} ms on the others",
        p99(true),
        p99(false)
    );
}

fn check(replies: &[Reply], runs: &[(u64, u64)]) -> Result<bool, BoxError> {
    let count = |method: &Method, status: StatusCode| {
        replies
            .iter()
            .filter(|reply| reply.method == *method && reply.status == status)
            .count()
    };
    let reports: u64 = runs.iter().map(|(reports, _)| reports).sum();
    let jobs: u64 = runs.iter().map(|(_, jobs)| jobs).sum();
    let mut good = true;
    for (what, ok) in [
        ("the report ran once in the cluster", reports == 1),
        (
            "all 300 GETs got the report",
            count(&Method::GET, StatusCode::OK) == 300,
        ),
        ("the job ran once in the cluster", jobs == 1),
        (
            "one POST started it, 29 were told it runs",
            count(&Method::POST, StatusCode::OK) == 1
                && count(&Method::POST, StatusCode::CONFLICT) == 29,
        ),
    ] {
        if !ok {
            eprintln!("FAIL: {what}");
            good = false;
        }
    }
    Ok(good)
}

/// Fails with a hint when no Redis answers at `url`.
async fn check_reachable(url: &str) -> Result<(), BoxError> {
    let redis = Redis::builder(url)
        .timeout(Duration::from_secs(1))
        .build()?;
    let flights: Flights<String> = Flights::with_store(RedisStore::new(redis));
    let ping = flights.try_acquire("cluster-example:ping".to_owned(), Duration::from_millis(10));
    match ping.await {
        Err(tower_singleflight::flight::Refused::Unavailable(_)) => Err(format!(
            "no Redis answers at {url}: start one with `redis-server --daemonize yes --save ''` \
             or set REDIS_URL"
        )
        .into()),
        _ => Ok(()),
    }
}
