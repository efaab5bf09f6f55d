//! Run with: cargo run --example server
//!
//! A long-running server to try the layer by hand (`curl -i` shows the
//! `x-singleflight-role` header) or to test it from outside. Listens on
//! `127.0.0.1:$PORT` (default 3000) and prints `listening on http://ADDR`.
//!
//! - `GET /report/{id}?ms=N`: share mode; identical requests share one run.
//! - `POST /jobs/{name}?ms=N`: reject mode keyed by path; duplicates get 409.
//! - `GET /private/{id}?ms=N`: share mode, `Cache-Control: private`; callers
//!   with different `Authorization` headers never share.
//! - `GET /stats`: how often each handler ran, and the layers' counters.

use std::{
    io::Write,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tower_singleflight::{
    key::{self, PathOnly},
    RejectLayer, ShareLayer, SingleFlightLayer,
};

const DEFAULT_PORT: u16 = 3000;
/// No request may keep a handler busy for longer than this.
const MAX_DELAY_MS: u64 = 60_000;

/// How many times each handler body ran.
#[derive(Default)]
struct Runs {
    report: AtomicU64,
    jobs: AtomicU64,
    private: AtomicU64,
}

/// Clones of the layers are kept only to read their counters.
#[derive(Clone)]
struct AppState {
    runs: Arc<Runs>,
    share: ShareLayer,
    reject: RejectLayer<PathOnly>,
}

/// `?ms=N`: how long the handler pretends to work.
#[derive(Deserialize)]
struct Delay {
    ms: Option<u64>,
}

impl Delay {
    fn or(&self, default_ms: u64) -> Duration {
        Duration::from_millis(self.ms.unwrap_or(default_ms).min(MAX_DELAY_MS))
    }
}

#[tokio::main]
async fn main() {
    let state = AppState {
        runs: Arc::default(),
        share: SingleFlightLayer::share().expose_role(),
        // Keyed by path so that `?ms=` does not make a second job.
        reject: SingleFlightLayer::reject().key(key::path()).expose_role(),
    };
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port())))
        .await
        .expect("bind the listening socket");
    announce(&listener);
    axum::serve(listener, app(state))
        .with_graceful_shutdown(ctrl_c())
        .await
        .expect("serve");
}

/// `$PORT`, or 3000 when it is unset.
fn port() -> u16 {
    match std::env::var("PORT") {
        Ok(port) => port.parse().expect("PORT must be a port number"),
        Err(_) => DEFAULT_PORT,
    }
}

/// Tells whoever started us (a person or a test harness) where to connect.
fn announce(listener: &TcpListener) {
    let addr = listener.local_addr().expect("read the bound address");
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{addr}").expect("write to stdout");
    stdout.flush().expect("flush stdout");
}

/// Each route group gets its layer; `/report` and `/private` share one table
/// (their paths differ, so their keys never meet).
fn app(state: AppState) -> Router {
    let share_routes = Router::new()
        .route("/report/{id}", get(report))
        .route("/private/{id}", get(private))
        .layer(state.share.clone());
    let reject_routes = Router::new()
        .route("/jobs/{name}", post(job))
        .layer(state.reject.clone());
    share_routes
        .merge(reject_routes)
        .route("/stats", get(stats))
        .with_state(state)
}

async fn report(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(delay): Query<Delay>,
) -> Json<Value> {
    let execution = count(&state.runs.report);
    tokio::time::sleep(delay.or(300)).await;
    Json(json!({ "id": id, "execution": execution }))
}

async fn job(State(state): State<AppState>, Query(delay): Query<Delay>) -> Json<Value> {
    count(&state.runs.jobs);
    tokio::time::sleep(delay.or(1000)).await;
    Json(json!({ "status": "done" }))
}

/// A per-caller answer: the layer shares it only among requests with the
/// same `Authorization`, and never among anonymous ones.
async fn private(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(delay): Query<Delay>,
    headers: HeaderMap,
) -> ([(header::HeaderName, &'static str); 1], Json<Value>) {
    let execution = count(&state.runs.private);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    tokio::time::sleep(delay.or(300)).await;
    let body = json!({ "id": id, "authorization": authorization, "execution": execution });
    ([(header::CACHE_CONTROL, "private")], Json(body))
}

async fn stats(State(state): State<AppState>) -> Json<Value> {
    let runs = &state.runs;
    Json(json!({
        "runs": {
            "report": runs.report.load(Ordering::SeqCst),
            "jobs": runs.jobs.load(Ordering::SeqCst),
            "private": runs.private.load(Ordering::SeqCst),
        },
        "flights": {
            "share": state.share.stats(),
            "reject": state.reject.stats(),
        },
    }))
}

/// Counts one run; returns its number, starting at 1.
fn count(runs: &AtomicU64) -> u64 {
    runs.fetch_add(1, Ordering::SeqCst) + 1
}

/// Resolves on Ctrl-C; if the handler cannot be installed, never resolves
/// rather than shutting the server down at once.
async fn ctrl_c() {
    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("cannot listen for Ctrl-C ({error}); stop the server another way");
        std::future::pending::<()>().await;
    }
}
