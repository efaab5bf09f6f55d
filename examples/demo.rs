//! Run with: cargo run --example demo
//!
//! Starts a server, fires 100 identical GETs at a share-mode route and 10
//! identical POSTs at a reject-mode route, and shows that each handler ran
//! once. Exits with status 1 if the figures are not what the layer promises.

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
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio::{net::TcpListener, task::JoinSet};
use tower_singleflight::{key, SingleFlightLayer};

type BoxError = Box<dyn Error + Send + Sync>;
type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// One response, reduced to what the checks look at.
struct Reply {
    status: StatusCode,
    retry_after: bool,
    already_running: bool,
}

/// A burst of identical requests at one route, what came back, and what
/// should have.
struct Burst {
    label: &'static str,
    replies: Vec<Reply>,
    executions: usize,
    expected: &'static str,
}

#[tokio::main]
async fn main() -> ExitCode {
    let problems = run().await.unwrap_or_else(|error| vec![error.to_string()]);
    if problems.is_empty() {
        println!("\nok: each handler ran once, whatever the crowd");
        return ExitCode::SUCCESS;
    }
    for problem in problems {
        eprintln!("FAIL: {problem}");
    }
    ExitCode::FAILURE
}

async fn run() -> Result<Vec<String>, BoxError> {
    let report_runs = Arc::new(AtomicUsize::new(0));
    let job_runs = Arc::new(AtomicUsize::new(0));
    let base = serve(app(&report_runs, &job_runs)).await?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // Both bursts at once: the two route groups have separate layers.
    let (reports, jobs) = tokio::join!(
        fire(&client, Method::GET, format!("{base}/report"), 100),
        fire(&client, Method::POST, format!("{base}/jobs/nightly"), 10),
    );
    let bursts = [
        Burst {
            label: "GET /report (share)",
            replies: reports?,
            executions: report_runs.load(Ordering::SeqCst),
            expected: "200 x100",
        },
        Burst {
            label: "POST /jobs/nightly (reject)",
            replies: jobs?,
            executions: job_runs.load(Ordering::SeqCst),
            expected: "200 x1, 409 x9",
        },
    ];
    print_table(&bursts);
    Ok(bursts.iter().flat_map(check).collect())
}

/// A slow report shared by everyone who asks meanwhile, and a slow job that
/// must not be started twice (keyed by path, so a query cannot split it).
fn app(report_runs: &Arc<AtomicUsize>, job_runs: &Arc<AtomicUsize>) -> Router {
    let (report_runs, job_runs) = (Arc::clone(report_runs), Arc::clone(job_runs));
    let reports = Router::new()
        .route(
            "/report",
            get(move || work(Arc::clone(&report_runs), Duration::from_millis(300))),
        )
        .layer(SingleFlightLayer::share());
    let jobs = Router::new()
        .route(
            "/jobs/{name}",
            post(move || work(Arc::clone(&job_runs), Duration::from_secs(1))),
        )
        .layer(SingleFlightLayer::reject().key(key::path()));
    reports.merge(jobs)
}

/// The expensive part: counts itself, then takes its time.
async fn work(runs: Arc<AtomicUsize>, takes: Duration) -> &'static str {
    runs.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(takes).await;
    "done"
}

/// Serves `app` on a free local port; returns its base URL.
async fn serve(app: Router) -> Result<String, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

/// Sends `count` identical requests at once; the client opens a connection
/// per request in flight, so none of them queues behind another.
async fn fire(
    client: &HttpClient,
    method: Method,
    uri: String,
    count: usize,
) -> Result<Vec<Reply>, BoxError> {
    let mut requests = JoinSet::new();
    for _ in 0..count {
        let request = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .body(Empty::new())?;
        requests.spawn(send(client.clone(), request));
    }
    let mut replies = Vec::with_capacity(count);
    while let Some(reply) = requests.join_next().await {
        replies.push(reply??);
    }
    Ok(replies)
}

async fn send(client: HttpClient, request: Request<Empty<Bytes>>) -> Result<Reply, BoxError> {
    let response = client.request(request).await?;
    let status = response.status();
    let retry_after = response.headers().contains_key(header::RETRY_AFTER);
    let body = response.into_body().collect().await?.to_bytes();
    let already_running = serde_json::from_slice::<serde_json::Value>(&body)
        .is_ok_and(|json| json["status"] == "already_running");
    Ok(Reply {
        status,
        retry_after,
        already_running,
    })
}

/// How many replies had each status, lowest status first: `200 x1, 409 x9`.
fn statuses(replies: &[Reply]) -> String {
    let mut counts = BTreeMap::<u16, usize>::new();
    for reply in replies {
        *counts.entry(reply.status.as_u16()).or_default() += 1;
    }
    let counts: Vec<String> = counts
        .iter()
        .map(|(status, n)| format!("{status} x{n}"))
        .collect();
    counts.join(", ")
}

fn print_table(bursts: &[Burst]) {
    println!(
        "{:<28} {:>9} {:>11}  statuses",
        "route", "requests", "executions"
    );
    for burst in bursts {
        println!(
            "{:<28} {:>9} {:>11}  {}",
            burst.label,
            burst.replies.len(),
            burst.executions,
            statuses(&burst.replies),
        );
    }
}

/// The handler ran once, the statuses are as expected, and every `409`
/// says why (in JSON) and when to come back (`Retry-After`).
fn check(burst: &Burst) -> Vec<String> {
    let label = burst.label;
    let mut problems = Vec::new();
    if burst.executions != 1 {
        problems.push(format!(
            "{label}: handler ran {} times, expected 1",
            burst.executions
        ));
    }
    let got = statuses(&burst.replies);
    if got != burst.expected {
        problems.push(format!("{label}: got {got}, expected {}", burst.expected));
    }
    let conflicts = burst
        .replies
        .iter()
        .filter(|reply| reply.status == StatusCode::CONFLICT);
    if conflicts.clone().any(|reply| !reply.already_running) {
        problems.push(format!(
            "{label}: a 409 without {{\"status\":\"already_running\"}}"
        ));
    }
    if conflicts.clone().any(|reply| !reply.retry_after) {
        problems.push(format!("{label}: a 409 without Retry-After"));
    }
    problems
}
