//! Run with: cargo run --release --example bench_server
//!
//! The server `bench/run.sh` measures. Listens on `127.0.0.1:${PORT:-3100}`
//! and prints `listening on http://ADDR`.
//!
//! - `/bare`: hello, no layer: the baseline.
//! - `/param/{key}`: the same, routed with a path parameter, as the layered
//!   routes are: what the route shape costs, without the layer.
//! - `/sf/{key}`: share mode, a fast handler.
//! - `/reject/{key}?ms=N`: reject mode; instant, or N ms with `ms`.
//! - `/cached/{key}`: share mode with the cache (TTL 60 s).
//! - `/slow/{key}?ms=N`: share mode over a handler of N ms (default 200).
//! - `/ttl/{key}?ms=N`: share mode with the cache (TTL 1 s,
//!   stale-while-revalidate 10 s) over a handler of N ms.
//! - `/nostore/{key}?ms=N`: share mode, a handler of N ms answering
//!   `Cache-Control: no-store`.
//! - `/origin/slow/{key}?ms=N`, `/origin/nostore/{key}?ms=N`: the same
//!   handlers with no layer, for nginx and Varnish to sit in front of
//!   (`/origin/slow` answers `Cache-Control: max-age=1`); both count their
//!   runs as `origin`.
//! - `/stream/{key}?wait=W&chunks=N&ms=M`: share mode, a head after W ms
//!   (default 0), then a body of N chunks of 1 KiB (default 20), one every M
//!   ms (default 100): slower than the layer's buffer budget (1 s), it
//!   streams to the leader; faster, it is shared, with the requests that came
//!   before the head (a leader alone at its head streams it). For the soak's
//!   clients that leave mid-response.
//! - `/stats`: handler runs per route, the flights in the air and the leases
//!   held (every layer's, added up), each layer's counters, and the cache's.
//! - `/gate/{key}?ms=N`: no layer; every request for the key waits until N ms
//!   after the first one came, then answers: N requests ready at the same
//!   instant, each answered by its own handler. The floor of a fan-out.
//! - `/answered?path=P`: how many answers to `P` (a `/slow` or `/gate` path)
//!   were made, and how far apart the first and the last were: a burst's
//!   fan-out as the server saw it, before the sockets and the client.

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    io::Write,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Path, Query, Request, State},
    http::header,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::json;
use tower_singleflight::{
    key, layer::RejectLayer, layer::ShareLayer, CacheConfig, SingleFlightLayer,
};

/// Handler runs, by route: statics, so that every route, `/bare` included,
/// pays the same (one atomic add) to be counted.
static RUNS: [(&str, AtomicU64); 9] = [
    ("bare", AtomicU64::new(0)),
    ("sf", AtomicU64::new(0)),
    ("reject", AtomicU64::new(0)),
    ("cached", AtomicU64::new(0)),
    ("slow", AtomicU64::new(0)),
    ("ttl", AtomicU64::new(0)),
    ("nostore", AtomicU64::new(0)),
    ("origin", AtomicU64::new(0)),
    ("stream", AtomicU64::new(0)),
];

fn count(route: usize) {
    RUNS[route].1.fetch_add(1, Ordering::Relaxed);
}

/// Values by request path or key, in a static as `RUNS` is.
struct ByPath<V>(Mutex<Option<HashMap<String, V>>>);

impl<V> ByPath<V> {
    const fn new() -> Self {
        Self(Mutex::new(None))
    }

    /// Runs `f` on the map (a panic elsewhere does not stop the benchmark).
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, V>) -> R) -> R {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(map.get_or_insert_with(HashMap::new))
    }
}

/// Answers made to one path.
struct Answers {
    first: Instant,
    last: Instant,
    count: u64,
}

/// The answers to each `/slow` or `/gate` path.
static ANSWERED: ByPath<Answers> = ByPath::new();

/// Notes when an answer leaves the layer it wraps.
async fn note_answer(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let now = Instant::now();
    ANSWERED.with(|answered| {
        let answers = answered.entry(path).or_insert(Answers {
            first: now,
            last: now,
            count: 0,
        });
        answers.last = now;
        answers.count += 1;
    });
    response
}

#[derive(Deserialize)]
struct Answered {
    path: String,
}

async fn answered(Query(query): Query<Answered>) -> Json<serde_json::Value> {
    Json(ANSWERED.with(|answered| match answered.get(&query.path) {
        Some(answers) => json!({
            "answers": answers.count,
            "spread_ms": (answers.last - answers.first).as_secs_f64() * 1000.0,
        }),
        None => json!({ "answers": 0, "spread_ms": null }),
    }))
}

#[derive(Deserialize)]
struct Work {
    ms: Option<u64>,
}

#[derive(Deserialize)]
struct Chunks {
    wait: Option<u64>,
    chunks: Option<u64>,
    ms: Option<u64>,
}

impl Work {
    fn duration(&self) -> Duration {
        Duration::from_millis(self.ms.unwrap_or(200).min(60_000))
    }
}

/// The bound of `/cached`'s cache (the default, stated for `/stats`).
const CACHE_MAX_BYTES: u64 = 64 * 1024 * 1024;

struct Layers {
    share: ShareLayer,
    reject: RejectLayer<key::PathOnly>,
    cached: ShareLayer,
    ttl: ShareLayer,
}

#[tokio::main]
async fn main() {
    let layers = Layers {
        share: SingleFlightLayer::share(),
        // A trigger is one job whatever its query says (`?ms=` sets the
        // handler's time): keyed by path.
        reject: SingleFlightLayer::reject().key(key::path()),
        cached: SingleFlightLayer::share().cache(
            CacheConfig::new()
                .ttl(Duration::from_secs(60))
                .max_bytes(CACHE_MAX_BYTES),
        ),
        ttl: SingleFlightLayer::share().cache(
            CacheConfig::new()
                .ttl(Duration::from_secs(1))
                .stale_while_revalidate(Duration::from_secs(10)),
        ),
    };
    let port = std::env::var("PORT")
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(3100);
    // A queue for the bursts of 1,000 connections (`bind` gives 128: the
    // rest would be dropped and retried a second later).
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .expect("bind the listening socket");
    let listener = socket.listen(4096).expect("listen");
    let addr = listener.local_addr().expect("the bound address");
    println!("listening on http://{addr}");
    std::io::stdout().flush().expect("flush stdout");
    axum::serve(listener, app(layers)).await.expect("serve");
}

fn app(layers: Layers) -> Router {
    let share = Router::new()
        .route("/sf/{key}", get(|| async { fast(1) }))
        .route("/nostore/{key}", get(|work| no_store(6, work)))
        .route("/stream/{key}", get(stream))
        .layer(layers.share.clone());
    // The same layer (one table), with the answers noted outside it.
    let noted = Router::new()
        .route("/slow/{key}", get(|work| slow(4, work)))
        .layer(layers.share.clone())
        .merge(Router::new().route("/gate/{key}", get(gate)))
        .layer(middleware::from_fn(note_answer));
    let reject = Router::new()
        .route("/reject/{key}", post(trigger))
        .layer(layers.reject.clone());
    let cached = Router::new()
        .route("/cached/{key}", get(|| async { fast(3) }))
        .layer(layers.cached.clone());
    let ttl = Router::new()
        .route("/ttl/{key}", get(|work| slow(5, work)))
        .layer(layers.ttl.clone());
    let origin = Router::new()
        .route("/origin/slow/{key}", get(slow_max_age))
        .route("/origin/nostore/{key}", get(|work| no_store(7, work)));
    Router::new()
        .route("/bare", get(|| async { fast(0) }))
        .route("/param/{key}", get(|| async { fast(0) }))
        .merge(share)
        .merge(noted)
        .merge(reject)
        .merge(cached)
        .merge(ttl)
        .merge(origin)
        .route("/stats", get(stats))
        .route("/answered", get(answered))
        // In an `Arc`: the router is copied for every connection.
        .with_state(Arc::new(layers))
}

/// A trigger: instant, or `?ms=N` long.
async fn trigger(Query(work): Query<Work>) -> &'static str {
    count(2);
    if work.ms.is_some() {
        tokio::time::sleep(work.duration()).await;
    }
    "done"
}

/// When each `/gate` key opens.
static GATES: ByPath<tokio::time::Instant> = ByPath::new();

async fn gate(Path(key): Path<String>, Query(work): Query<Work>) -> &'static str {
    let opens = GATES.with(|gates| {
        *gates
            .entry(key)
            .or_insert_with(|| tokio::time::Instant::now() + work.duration())
    });
    tokio::time::sleep_until(opens).await;
    "hello"
}

fn fast(route: usize) -> &'static str {
    count(route);
    "hello"
}

async fn slow(route: usize, Query(work): Query<Work>) -> &'static str {
    count(route);
    tokio::time::sleep(work.duration()).await;
    "slow answer"
}

async fn slow_max_age(Query(work): Query<Work>) -> impl IntoResponse {
    count(7);
    tokio::time::sleep(work.duration()).await;
    ([(header::CACHE_CONTROL, "max-age=1")], "slow answer")
}

async fn no_store(route: usize, Query(work): Query<Work>) -> impl IntoResponse {
    count(route);
    tokio::time::sleep(work.duration()).await;
    ([(header::CACHE_CONTROL, "no-store")], "not for sharing")
}

async fn stream(Query(chunks): Query<Chunks>) -> Body {
    count(8);
    tokio::time::sleep(Duration::from_millis(chunks.wait.unwrap_or(0).min(60_000))).await;
    let last = chunks.chunks.unwrap_or(20).min(1000);
    let every = Duration::from_millis(chunks.ms.unwrap_or(100).min(60_000));
    let body = futures_util::stream::unfold(0, move |n| async move {
        if n >= last {
            return None;
        }
        tokio::time::sleep(every).await;
        Some((Ok::<_, Infallible>(vec![b'x'; 1024]), n + 1))
    });
    Body::from_stream(body)
}

async fn stats(State(layers): State<Arc<Layers>>) -> Json<serde_json::Value> {
    let runs: BTreeMap<_, _> = RUNS
        .iter()
        .map(|(route, runs)| (*route, runs.load(Ordering::Relaxed)))
        .collect();
    let all = [
        layers.share.stats(),
        layers.reject.stats(),
        layers.cached.stats(),
        layers.ttl.stats(),
    ];
    let cache = layers.cached.response_cache().map(|cache| {
        json!({
            "stats": cache.stats(),
            "weighted_size": cache.weighted_size(),
            "entry_count": cache.entry_count(),
            "max_bytes": CACHE_MAX_BYTES,
        })
    });
    Json(json!({
        "runs": runs,
        "in_flight": all.iter().map(|stats| stats.in_flight).sum::<usize>(),
        "leases_held": all.iter().map(|stats| stats.leases_held).sum::<usize>(),
        "cache": cache,
        "share": layers.share.stats(),
        "reject": layers.reject.stats(),
        "cached": layers.cached.stats(),
        "ttl": layers.ttl.stats(),
    }))
}
