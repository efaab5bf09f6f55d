//! Run with: cargo run --example metrics --features metrics
//!
//! An axum server whose layers report through the `metrics` facade to a
//! Prometheus recorder, rendered at `GET /metrics` by the app itself (no
//! second listener). With no arguments it fires a burst at itself (shared
//! reads, a cached route, duplicate triggers, a background job), prints the
//! crate's lines of `/metrics`, and exits (status 1 if one is missing).
//! With `serve` it keeps serving on `$PORT` (or 127.0.0.1:3000):
//!
//! ```text
//! cargo run --example metrics --features metrics -- serve
//! curl localhost:3000/report & curl localhost:3000/report; curl localhost:3000/metrics
//! ```

use std::{error::Error, process::ExitCode, time::Duration};

use axum::{
    extract::Path,
    http::StatusCode,
    routing::{get, post},
    Extension, Router,
};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::{net::TcpListener, task::JoinSet};
use tower_singleflight::{
    extract::Flight,
    metrics::{FLIGHT_DURATION, FOLLOWER_WAIT},
    CacheConfig, Flights, SingleFlightLayer,
};

type BoxError = Box<dyn Error + Send + Sync>;
type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// What the burst must have produced, at least.
const EXPECTED: [&str; 5] = [
    r#"singleflight_requests_total{layer="reports",role="follower"}"#,
    r#"singleflight_requests_total{layer="totals",role="cache-hit"}"#,
    r#"singleflight_generated_responses_total{layer="jobs",status="409"}"#,
    r#"singleflight_leases_held{layer="tasks"}"#,
    r#"singleflight_follower_wait_seconds_bucket{layer="reports""#,
];

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("FAIL: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<bool, BoxError> {
    // Installed before the first request: the layers register with it then.
    let seconds = [0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 5.0, 30.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(FOLLOWER_WAIT.into()), &seconds)?
        .set_buckets_for_metric(Matcher::Full(FLIGHT_DURATION.into()), &seconds)?
        .install_recorder()?;
    let app = app(handle.clone());

    if std::env::args().nth(1).as_deref() == Some("serve") {
        let addr = std::env::var("PORT").map_or("127.0.0.1:3000".to_owned(), |port| {
            format!("127.0.0.1:{port}")
        });
        let listener = TcpListener::bind(&addr).await?;
        println!(
            "serving on http://{addr} (GET /report, /totals, /metrics; POST /jobs/1, /tasks/1)"
        );
        // The recorder's own housekeeping, as its docs ask.
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                handle.run_upkeep();
            }
        });
        axum::serve(listener, app).await?;
        return Ok(true);
    }

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let (reports, totals, jobs, tasks) = tokio::join!(
        fire(&client, Method::GET, format!("{base}/report"), 20),
        fire(&client, Method::GET, format!("{base}/totals"), 5),
        fire(&client, Method::POST, format!("{base}/jobs/1"), 5),
        fire(&client, Method::POST, format!("{base}/tasks/1"), 3),
    );
    for statuses in [reports?, totals?, jobs?, tasks?] {
        println!("statuses: {statuses:?}");
    }
    // Once more, from the cache.
    fire(&client, Method::GET, format!("{base}/totals"), 5).await?;

    let scraped = body(&client, Method::GET, format!("{base}/metrics")).await?;
    println!("\nGET /metrics (the crate's lines):");
    for line in scraped
        .lines()
        .filter(|line| line.contains("singleflight_"))
    {
        println!("{line}");
    }
    let missing: Vec<_> = EXPECTED
        .iter()
        .filter(|expected| !scraped.contains(*expected))
        .collect();
    for line in &missing {
        eprintln!("FAIL: no {line}");
    }
    Ok(missing.is_empty())
}

/// A shared report, a cached total, a trigger that must not run twice, a
/// background job under a lease, and the metrics.
fn app(handle: PrometheusHandle) -> Router {
    let reports = Router::new()
        .route(
            "/report",
            get(|| slow("report", Duration::from_millis(200))),
        )
        .layer(SingleFlightLayer::share().name("reports"));
    let totals = Router::new()
        .route(
            "/totals",
            get(|| slow("totals", Duration::from_millis(100))),
        )
        .layer(
            SingleFlightLayer::share()
                .name("totals")
                .cache(CacheConfig::new().ttl(Duration::from_secs(30))),
        );
    let jobs = Router::new()
        .route(
            "/jobs/{id}",
            post(|| slow("done", Duration::from_millis(200))),
        )
        .layer(SingleFlightLayer::reject().name("jobs"));
    let tasks = Router::new()
        .route("/tasks/{id}", post(start_task))
        .layer(Extension(Flights::<String>::new().with_name("tasks")));
    reports
        .merge(totals)
        .merge(jobs)
        .merge(tasks)
        .route("/metrics", get(move || std::future::ready(handle.render())))
}

/// Starts a job that holds its key while it runs; a duplicate gets `409`.
async fn start_task(flight: Flight<Path<String>>) -> StatusCode {
    flight.spawn(|_lease| tokio::time::sleep(Duration::from_millis(300)));
    StatusCode::ACCEPTED
}

async fn slow(answer: &'static str, takes: Duration) -> &'static str {
    tokio::time::sleep(takes).await;
    answer
}

/// Sends `count` identical requests at once; returns their statuses.
async fn fire(
    client: &HttpClient,
    method: Method,
    uri: String,
    count: usize,
) -> Result<Vec<u16>, BoxError> {
    let mut requests = JoinSet::new();
    for _ in 0..count {
        let request = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .body(Empty::new())?;
        let client = client.clone();
        requests.spawn(async move { client.request(request).await });
    }
    let mut statuses = Vec::with_capacity(count);
    while let Some(response) = requests.join_next().await {
        let response = response??;
        statuses.push(response.status().as_u16());
        response.into_body().collect().await?;
    }
    statuses.sort_unstable();
    Ok(statuses)
}

async fn body(client: &HttpClient, method: Method, uri: String) -> Result<String, BoxError> {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Empty::new())?;
    let response = client.request(request).await?;
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(bytes.to_vec())?)
}
