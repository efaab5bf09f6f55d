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
//! statuses. Exits with status 1 unless the cluster ran the report once and
//! the trigger once.

use std::{
    collections::BTreeMap,
    error::Error,
    process::ExitCode,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    routing::{get, post},
    Router,
};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
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

/// What one replica did.
#[derive(Default)]
struct Counters {
    requests: AtomicUsize,
    report_runs: AtomicUsize,
    job_runs: AtomicUsize,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
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

async fn run() -> Result<bool, BoxError> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    check_reachable(&url).await?;
    let names = ["replica-1", "replica-2", "replica-3"];
    let mut replicas = Vec::new();
    for name in names {
        let counters = Arc::new(Counters::default());
        let redis = Redis::builder(url.as_str())
            .prefix("cluster-example")
            .replica(name)
            .build()?;
        let base = serve(app(redis, &counters)).await?;
        replicas.push((name, base, counters));
    }
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // Every request goes to the next replica in turn, as a load balancer
    // would send them; all of them at once.
    let mut sent = JoinSet::new();
    for index in 0..330 {
        let (_, base, counters) = &replicas[index % 3];
        let (method, path) = if index < 300 {
            (Method::GET, "/report")
        } else {
            (Method::POST, "/jobs/nightly")
        };
        counters.requests.fetch_add(1, Ordering::SeqCst);
        // Behind a load balancer every replica sees the site's name, not
        // its own address: requests for the same page are the same request.
        let request = Request::builder()
            .method(method.clone())
            .uri(format!("{base}{path}"))
            .header(http::header::HOST, "app.example")
            .body(Empty::new())?;
        let client = client.clone();
        sent.spawn(async move {
            let status = client
                .request(request)
                .await
                .map(|response| response.status());
            (index % 3, method, status)
        });
    }
    let mut statuses: Vec<BTreeMap<String, usize>> = vec![BTreeMap::new(); 3];
    let (mut report_ok, mut trigger_ok, mut conflicts) = (0, 0, 0);
    while let Some(done) = sent.join_next().await {
        let (replica, method, status) = done?;
        let status = status?;
        match (method == Method::GET, status) {
            (true, StatusCode::OK) => report_ok += 1,
            (false, StatusCode::OK) => trigger_ok += 1,
            (false, StatusCode::CONFLICT) => conflicts += 1,
            _ => {}
        }
        *statuses[replica]
            .entry(format!("{method} {}", status.as_u16()))
            .or_default() += 1;
    }

    println!(
        "{:<10} {:>8} {:>11} {:>8}  statuses",
        "replica", "requests", "report runs", "job runs"
    );
    let (mut report_runs, mut job_runs) = (0, 0);
    for ((name, _, counters), statuses) in replicas.iter().zip(&statuses) {
        let reports = counters.report_runs.load(Ordering::SeqCst);
        let jobs = counters.job_runs.load(Ordering::SeqCst);
        report_runs += reports;
        job_runs += jobs;
        let statuses: Vec<_> = statuses.iter().map(|(s, n)| format!("{s} x{n}")).collect();
        println!(
            "{name:<10} {:>8} {reports:>11} {jobs:>8}  {}",
            counters.requests.load(Ordering::SeqCst),
            statuses.join(", ")
        );
    }
    println!(
        "{:<10} {:>8} {report_runs:>11} {job_runs:>8}",
        "cluster", 330
    );

    let mut good = true;
    for (what, ok) in [
        ("the report ran once in the cluster", report_runs == 1),
        ("all 300 GETs got the report", report_ok == 300),
        ("the job ran once in the cluster", job_runs == 1),
        (
            "one POST started it, 29 were told it runs",
            trigger_ok == 1 && conflicts == 29,
        ),
    ] {
        if !ok {
            eprintln!("FAIL: {what}");
            good = false;
        }
    }
    Ok(good)
}

/// One replica: a slow report shared across the cluster, and a trigger
/// whose job must run once in the cluster.
fn app(redis: Redis, counters: &Arc<Counters>) -> Router {
    let (reports, jobs) = (Arc::clone(counters), Arc::clone(counters));
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
    shared.merge(trigger)
}

/// Fails with a hint when no Redis answers at `url`.
async fn check_reachable(url: &str) -> Result<(), BoxError> {
    let redis = Redis::builder(url)
        .timeout(Duration::from_secs(1))
        .build()?;
    let store: RedisStore<String> = RedisStore::new(redis);
    let flights: Flights<String> = Flights::with_store(store);
    match flights
        .try_acquire("cluster-example:ping".to_owned(), Duration::from_millis(10))
        .await
    {
        Err(tower_singleflight::Refused::Unavailable(_)) => Err(format!(
            "no Redis answers at {url}: start one with `redis-server --daemonize yes --save ''` \
             or set REDIS_URL"
        )
        .into()),
        _ => Ok(()),
    }
}

/// Serves `app` on a free local port; returns its base URL.
async fn serve(app: Router) -> Result<String, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}
