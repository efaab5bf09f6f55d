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
//! - `POST /flows/{flow}/phases/{phase}/resume?ms=N&lease_ms=L`: the `Flight`
//!   extractor; answers `202` and runs a background job of N ms (default
//!   2000) in ten steps; duplicates get `409` with the job's progress.
//!   `lease_ms` sets the job's lease (default 5 minutes).
//! - `GET /admin/flights`, `GET|DELETE /admin/flights/{flow}/{phase}`: the
//!   admin router over the resume jobs.
//! - `GET /totals?ms=N`: cached (TTL 1 s, stale-while-revalidate 10 s); the
//!   handler takes N ms (default 200).
//! - `GET /flaky`: cached (TTL 1 s, stale-if-error 30 s); answers `500` while
//!   `POST /flaky/fail` is in force, until `POST /flaky/heal`.
//! - `GET /values/{key}`: a `ValueCache` seen through `peek`:
//!   `{"state":"fresh|stale|computing|missing", ...}`; starts a computation
//!   (1 s) when the value is missing or stale.
//! - `GET /events?n=N&ms=M`: share mode; a server-sent-events stream of N
//!   events M ms apart (default 1000; endless without `n`). Streams are
//!   never held: try two `curl -N` at once, each gets its own stream at once.
//! - `GET /stats`: how often each handler and job ran, and the counters.
//!
//! With the `redis` feature and `REDIS_URL` set (`cargo run --example server
//! --features redis`), every route coordinates through that Redis: leases,
//! share mode, the caches and the admin router, so that several copies
//! started on different `PORT`s act as one cluster; `/stats` reports this
//! replica's own runs.

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
    http::{header, HeaderMap, StatusCode},
    routing::{get, post},
    Extension, Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpSocket};
use tower_singleflight::{
    admin,
    cache::Peek,
    extract::Flight,
    flight::LeaseHandle,
    key::{self, PathOnly},
    layer::RejectLayer,
    layer::ShareLayer,
    CacheConfig, Flights, Progress, SingleFlightLayer, ValueCache,
};

const DEFAULT_PORT: u16 = 3000;
/// No request may keep a handler busy for longer than this.
const MAX_DELAY_MS: u64 = 60_000;

/// How many times each handler body (and background job) ran.
#[derive(Default)]
struct Runs {
    report: AtomicU64,
    jobs: AtomicU64,
    private: AtomicU64,
    resume_jobs: AtomicU64,
    totals: AtomicU64,
    flaky: AtomicU64,
    values: AtomicU64,
    events: AtomicU64,
}

/// A phase of a flow: the key of its resume job, shown as `flow/phase`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
struct PhaseKey {
    flow: String,
    phase: String,
}

impl std::fmt::Display for PhaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.flow, self.phase)
    }
}

/// Clones of the layers are kept only to read their counters.
#[derive(Clone)]
struct AppState {
    runs: Arc<Runs>,
    share: ShareLayer,
    reject: RejectLayer<PathOnly>,
    resumes: Flights<PhaseKey>,
    cached: ShareLayer,
    flaky: ShareLayer,
    failing: Arc<std::sync::atomic::AtomicBool>,
    values: ValueCache<String, u64, std::convert::Infallible>,
}

/// `?ms=N`: how long the handler pretends to work; `lease_ms=L`, how long a
/// background job's lease lasts.
#[derive(Deserialize)]
struct Delay {
    ms: Option<u64>,
    lease_ms: Option<u64>,
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
        resumes: Flights::new(),
        cached: SingleFlightLayer::share().expose_role().cache(
            CacheConfig::new()
                .ttl(Duration::from_secs(1))
                .stale_while_revalidate(Duration::from_secs(10)),
        ),
        flaky: SingleFlightLayer::share().expose_role().cache(
            CacheConfig::new()
                .ttl(Duration::from_secs(1))
                .stale_if_error(Duration::from_secs(30)),
        ),
        failing: Arc::default(),
        values: ValueCache::builder()
            .ttl(Duration::from_secs(10))
            .stale_while_revalidate(Duration::from_secs(60))
            .build(),
    };
    #[cfg(feature = "redis")]
    let state = match std::env::var("REDIS_URL") {
        Ok(url) => across_replicas(state, &url),
        Err(_) => state,
    };
    let listener = listen(SocketAddr::from(([127, 0, 0, 1], port())));
    announce(&listener);
    axum::serve(listener, app(state))
        .with_graceful_shutdown(ctrl_c())
        .await
        .expect("serve");
}

/// Every route on the Redis at `url`: leases in Redis, share mode across
/// replicas (with the caches' Redis tier), `ValueCache`'s Redis tier.
#[cfg(feature = "redis")]
fn across_replicas(state: AppState, url: &str) -> AppState {
    use tower_singleflight::redis::{Cluster, Redis, RedisStore, ValueTier};
    let redis = Redis::builder(url)
        .prefix("server-example")
        .replica(format!("server-{}", port()))
        .build()
        .expect("REDIS_URL must be a redis:// URL");
    println!("coordinating through {url}");
    let cluster = || Cluster::new(redis.clone());
    AppState {
        share: state.share.cluster(cluster()),
        reject: state
            .reject
            .flights(Flights::with_store(RedisStore::new(redis.clone()))),
        resumes: Flights::with_store(RedisStore::new(redis.clone())),
        cached: state.cached.cluster(cluster()),
        flaky: state.flaky.cluster(cluster()),
        values: ValueCache::builder()
            .ttl(Duration::from_secs(10))
            .stale_while_revalidate(Duration::from_secs(60))
            .redis(ValueTier::new(redis.clone(), "values"))
            .build(),
        ..state
    }
}

/// A listening socket whose queue holds a burst of connections: what
/// `TcpListener::bind` gives holds 128, and a burst of 200 `curl --parallel`
/// connections would see some of theirs dropped, retried a second later, and
/// arrive after the flight they were meant to join.
fn listen(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(addr).expect("bind the listening socket");
    socket.listen(4096).expect("listen")
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
        .route("/events", get(events))
        .layer(state.share.clone());
    let reject_routes = Router::new()
        .route("/jobs/{name}", post(job))
        .layer(state.reject.clone());
    let resume_routes = Router::new()
        .route("/flows/{flow}/phases/{phase}/resume", post(resume))
        // Unauthenticated only because this example listens on loopback:
        // mount the admin router behind your own auth.
        .nest("/admin", admin::router(state.resumes.clone()))
        .layer(Extension(state.resumes.clone()));
    let cached_routes = Router::new()
        .route("/totals", get(totals))
        .layer(state.cached.clone())
        .merge(
            Router::new()
                .route("/flaky", get(flaky))
                .layer(state.flaky.clone()),
        )
        .route("/flaky/fail", post(fail))
        .route("/flaky/heal", post(heal))
        .route("/values/{key}", get(value));
    share_routes
        .merge(reject_routes)
        .merge(resume_routes)
        .merge(cached_routes)
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

/// `?n=N&ms=M` of `/events`.
#[derive(Debug, serde::Deserialize)]
struct Events {
    n: Option<u64>,
    ms: Option<u64>,
}

async fn events(
    State(state): State<AppState>,
    Query(events): Query<Events>,
) -> axum::response::Response {
    let run = count(&state.runs.events);
    let every = Duration::from_millis(events.ms.unwrap_or(1000));
    let ticks = futures_util::stream::unfold(0u64, move |n| async move {
        if events.n.is_some_and(|last| n >= last) {
            return None;
        }
        tokio::time::sleep(every).await;
        let event = format!("id: {n}\ndata: run {run}, event {n}\n\n");
        Some((Ok::<_, std::convert::Infallible>(event), n + 1))
    });
    axum::response::Response::builder()
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(axum::body::Body::from_stream(ticks))
        .unwrap_or_default()
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

/// Starts the phase's job in the background and answers at once; the
/// extractor already answered `409` if the job was running.
async fn resume(
    State(state): State<AppState>,
    // Before the `Flight`: a bad query string must not take the lease.
    Query(delay): Query<Delay>,
    flight: Flight<Path<PhaseKey>>,
) -> (StatusCode, Json<Value>) {
    if let Some(lease_ms) = delay.lease_ms {
        let lease = Duration::from_millis(lease_ms.max(1));
        if !flight.guard().renew(lease).await {
            let body = json!({ "status": "error", "message": "the lease ended at once" });
            return (StatusCode::BAD_REQUEST, Json(body));
        }
    }
    // Reported before answering, so duplicates see progress at once.
    flight.guard().report(Progress::steps(0, STEPS)).await;
    let step = delay.or(2000) / STEPS as u32;
    flight.spawn(move |lease| phase_job(lease, state.runs, step));
    (StatusCode::ACCEPTED, Json(json!({ "status": "started" })))
}

const STEPS: u64 = 10;

/// The background job: ten steps, each reported. It stops as soon as it
/// learns it no longer holds its key (lease expired or force-released).
async fn phase_job(lease: LeaseHandle<PhaseKey>, runs: Arc<Runs>, step: Duration) {
    count(&runs.resume_jobs);
    for done in 0..STEPS {
        if !lease.report(Progress::steps(done, STEPS)).await {
            eprintln!("job {} lost its lease; stopping", lease.key());
            return;
        }
        tokio::time::sleep(step).await;
    }
}

/// A site-wide total that takes a while to compute.
async fn totals(State(state): State<AppState>, Query(delay): Query<Delay>) -> Json<Value> {
    let execution = count(&state.runs.totals);
    tokio::time::sleep(delay.or(200)).await;
    Json(json!({ "total": execution * 1000, "execution": execution }))
}

/// Fails while told to: the cache keeps serving its last good answer.
async fn flaky(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let execution = count(&state.runs.flaky);
    if state.failing.load(Ordering::SeqCst) {
        let body = json!({ "status": "error", "execution": execution });
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(body));
    }
    (
        StatusCode::OK,
        Json(json!({ "status": "ok", "execution": execution })),
    )
}

async fn fail(State(state): State<AppState>) -> StatusCode {
    state.failing.store(true, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

async fn heal(State(state): State<AppState>) -> StatusCode {
    state.failing.store(false, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

/// What a "Calculating..." page needs: the value's state, without waiting;
/// a computation starts in the background when there is nothing fresh.
async fn value(State(state): State<AppState>, Path(key): Path<String>) -> Json<Value> {
    let peeked = state.values.peek(&key).await;
    if matches!(peeked, Peek::Missing | Peek::Stale(_)) {
        let (values, runs) = (state.values.clone(), state.runs.clone());
        tokio::spawn(async move {
            let compute = || async move {
                let execution = count(&runs.values);
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(execution)
            };
            let _ = values.get_or_compute(key, compute).await;
        });
    }
    Json(match peeked {
        Peek::Fresh(value) => json!({ "state": "fresh", "value": value }),
        Peek::Stale(value) => json!({ "state": "stale", "value": value }),
        Peek::Computing { since } => json!({
            "state": "computing",
            "running_for_ms": since.elapsed().as_millis() as u64,
        }),
        _ => json!({ "state": "missing" }),
    })
}

async fn stats(State(state): State<AppState>) -> Json<Value> {
    let runs = &state.runs;
    Json(json!({
        "runs": {
            "report": runs.report.load(Ordering::SeqCst),
            "jobs": runs.jobs.load(Ordering::SeqCst),
            "private": runs.private.load(Ordering::SeqCst),
            "resume_jobs": runs.resume_jobs.load(Ordering::SeqCst),
            "totals": runs.totals.load(Ordering::SeqCst),
            "flaky": runs.flaky.load(Ordering::SeqCst),
            "values": runs.values.load(Ordering::SeqCst),
            "events": runs.events.load(Ordering::SeqCst),
        },
        "caches": {
            "totals": state.cached.response_cache().map(|cache| cache.stats()),
            "flaky": state.flaky.response_cache().map(|cache| cache.stats()),
            "values": state.values.stats(),
        },
        "flights": {
            "share": state.share.stats(),
            "reject": state.reject.stats(),
            "resume": state.resumes.stats(),
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
