//! Every metric the docs list is emitted: the names (and the label values
//! the table names) are read from the table in `src/metrics.rs`, a burst
//! drives every path, and a recorder shows what was counted.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::{collections::BTreeSet, time::Duration};

use axum::{
    body::Body,
    extract::Path,
    http::{header, request::Parts, HeaderValue, StatusCode},
    routing, Extension, Router,
};
use common::{get, get_with, request, send, spawn, until, Reply};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::{sync::watch, time::sleep};
use tower_singleflight::{extract::Flight, CacheConfig, FlightRole, Flights, SingleFlightLayer};

/// One row of the table: a name, and the label values it lists.
#[derive(Debug)]
struct Row {
    name: String,
    labels: Vec<(String, Vec<String>)>,
}

/// The table's rows: `| `name` | type | `label`; `label`: `value`, ... | what |`.
fn documented() -> Vec<Row> {
    let source = include_str!("../../src/metrics.rs");
    let rows: Vec<Row> = source
        .lines()
        .filter_map(|line| line.strip_prefix("//! | `singleflight_"))
        .map(|row| {
            let cells: Vec<&str> = row.split(" | ").collect();
            let name = format!("singleflight_{}", cells[0].trim_end_matches('`'));
            let labels = cells[2]
                .split(';')
                .map(|label| {
                    let mut ticked = label.split('`').skip(1).step_by(2).map(str::to_owned);
                    let key = ticked.next().expect("a label name in backticks");
                    (key, ticked.collect())
                })
                .collect();
            Row { name, labels }
        })
        .collect();
    assert!(rows.len() >= 10, "the table was found: {rows:?}");
    rows
}

/// A door the handlers wait at, until the test opens it.
#[derive(Clone)]
struct Gate(watch::Sender<bool>);

impl Gate {
    fn new() -> Self {
        Self(watch::channel(false).0)
    }

    async fn wait(&self) {
        let _ = self.0.subscribe().wait_for(|open| *open).await;
    }

    fn open(&self) {
        self.0.send_replace(true);
    }
}

fn post(uri: &str) -> http::Request<Body> {
    request("POST", uri)
}

#[tokio::test(start_paused = true)]
async fn every_documented_metric_is_emitted_with_the_layers_name() {
    let recorder = DebuggingRecorder::new();
    let snapshotter: Snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    // Share mode, named before its key is set (the name survives it);
    // `/free` is not keyed.
    let (shared, stuck, cookie) = (Gate::new(), Gate::new(), Gate::new());
    let reads = SingleFlightLayer::share()
        .name("reads")
        .key(|parts: &Parts| (parts.uri.path() != "/free").then(|| parts.uri.path().to_owned()))
        .max_waiters(2)
        .max_wait(Duration::from_secs(5));
    let reads_app = Router::new()
        .route(
            "/gated",
            routing::get({
                let gate = shared.clone();
                move || async move {
                    gate.wait().await;
                    "shared"
                }
            }),
        )
        .route(
            "/stuck",
            routing::get({
                let gate = stuck.clone();
                move || async move {
                    gate.wait().await;
                    "late"
                }
            }),
        )
        .route(
            "/cookie",
            routing::get({
                let gate = cookie.clone();
                move || async move {
                    gate.wait().await;
                    ([(header::SET_COOKIE, "session=1")], "yours")
                }
            }),
        )
        .route(
            "/panic",
            routing::get(|| async { panic!("the work failed") as &str }),
        )
        .route("/free", routing::get(|| async { "free" }))
        .layer(reads.clone());

    // Leader and follower; a third waiter is one too many (503).
    let leader = spawn(&reads_app, get("/gated"));
    until(|| reads.stats().leaders == 1).await;
    let follower = spawn(&reads_app, get("/gated"));
    until(|| reads.stats().followers == 1).await;
    assert_eq!(
        send(&reads_app, get("/gated")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    shared.open();
    let (leader, follower) = (leader.await.unwrap(), follower.await.unwrap());
    assert_eq!(
        (leader.status, follower.role),
        (StatusCode::OK, Some(FlightRole::Follower))
    );

    // Both waiters of a stuck flight give up at `max_wait` (504).
    let waiters = [
        spawn(&reads_app, get("/stuck")),
        spawn(&reads_app, get("/stuck")),
    ];
    until(|| reads.stats().followers == 2).await;
    sleep(Duration::from_secs(6)).await;
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().status, StatusCode::GATEWAY_TIMEOUT);
    }

    // A response with `Set-Cookie` is not shared: the follower falls back.
    let leader = spawn(&reads_app, get("/cookie"));
    until(|| reads.stats().leaders == 3).await;
    let follower = spawn(&reads_app, get("/cookie"));
    until(|| reads.stats().followers == 3).await;
    cookie.open();
    leader.await.unwrap();
    assert_eq!(follower.await.unwrap().role, Some(FlightRole::Fallback));

    // Work that panics (500); a request not keyed; one naming two hosts.
    let panicked = send(&reads_app, get("/panic")).await;
    assert_eq!(panicked.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(send(&reads_app, get("/free")).await.text(), "free");
    let mut two_hosts = get("http://a.example/free");
    two_hosts
        .headers_mut()
        .insert(header::HOST, HeaderValue::from_static("b.example"));
    send(&reads_app, two_hosts).await;
    let stats = reads.stats();
    assert_eq!((stats.keyless, stats.unkeyed, stats.panicked), (1, 1, 1));

    // Reject mode: a duplicate while the first holds its lease (409).
    let jobs_gate = Gate::new();
    let jobs = SingleFlightLayer::reject().name("jobs");
    let jobs_app = Router::new()
        .route(
            "/jobs/{id}",
            routing::post({
                let gate = jobs_gate.clone();
                move || async move {
                    gate.wait().await;
                    "done"
                }
            }),
        )
        .layer(jobs.clone());
    let first = spawn(&jobs_app, post("/jobs/1"));
    until(|| jobs.stats().leases_held == 1).await;
    assert_eq!(
        send(&jobs_app, post("/jobs/1")).await.status,
        StatusCode::CONFLICT
    );
    jobs_gate.open();
    assert_eq!(first.await.unwrap().status, StatusCode::OK);

    // A `Flight` job that panics in its task.
    let tasks: Flights<String> = Flights::new().with_name("tasks");
    let tasks_app = Router::new()
        .route(
            "/tasks/{id}",
            routing::post(|flight: Flight<Path<String>>| async move {
                flight.spawn(|_| async { panic!("the job failed") });
                StatusCode::ACCEPTED
            }),
        )
        .layer(Extension(tasks.clone()));
    assert_eq!(
        send(&tasks_app, post("/tasks/1")).await.status,
        StatusCode::ACCEPTED
    );
    until(|| tasks.stats().panicked == 1 && tasks.stats().leases_held == 0).await;

    // The cache: miss and store, hit, stale, pass, and evictions for room.
    let cached = SingleFlightLayer::share().name("cached").cache(
        CacheConfig::new()
            .ttl(Duration::from_secs(1))
            .stale_while_revalidate(Duration::from_secs(60))
            .max_bytes(4096),
    );
    let cached_app = Router::new()
        .route(
            "/c/{n}",
            routing::get(|Path(n): Path<u32>| async move { format!("page {n}") }),
        )
        .layer(cached.clone());
    let role = |reply: Reply| reply.role;
    assert_eq!(
        role(send(&cached_app, get("/c/1")).await),
        None,
        "the leader's own"
    );
    assert_eq!(
        role(send(&cached_app, get("/c/1")).await),
        Some(FlightRole::CacheHit)
    );
    sleep(Duration::from_secs(2)).await;
    assert_eq!(
        role(send(&cached_app, get("/c/1")).await),
        Some(FlightRole::Stale)
    );
    let no_store = get_with("/c/1", header::CACHE_CONTROL, "no-store");
    send(&cached_app, no_store).await;
    for n in 2..=6 {
        send(&cached_app, get(&format!("/c/{n}"))).await;
    }
    let cache = cached.response_cache().expect("a cache");
    cache.run_pending_tasks();
    let cache_stats = cache.stats();
    assert_eq!(
        (cache_stats.hits, cache_stats.stale, cache_stats.passes),
        (1, 1, 1)
    );

    let snapshot = snapshotter.snapshot().into_vec();
    let ours: Vec<_> = snapshot
        .iter()
        .filter(|(key, ..)| key.key().name().starts_with("singleflight_"))
        .collect();
    let label = |key: &metrics::Key, name: &str| {
        key.labels()
            .find(|label| label.key() == name)
            .map(|label| label.value().to_owned())
    };
    let emitted = |value: &DebugValue| match value {
        DebugValue::Counter(count) => *count > 0,
        DebugValue::Gauge(_) => true,
        DebugValue::Histogram(values) => !values.is_empty(),
    };

    // Every row, and every label value it lists, was recorded.
    for row in documented() {
        let recorded: Vec<_> = ours
            .iter()
            .filter(|(key, _, _, value)| key.key().name() == row.name && emitted(value))
            .collect();
        assert!(!recorded.is_empty(), "{} was never emitted", row.name);
        for (name, values) in &row.labels {
            let seen: BTreeSet<String> = recorded
                .iter()
                .filter_map(|(key, ..)| label(key.key(), name))
                .collect();
            assert!(!seen.is_empty(), "{} lacks the label {name}", row.name);
            for value in values {
                assert!(
                    seen.contains(value),
                    "{} never had {name}={value}: {seen:?}",
                    row.name
                );
            }
        }
    }

    // Each carries the name its layer, table or cache was given.
    let names: BTreeSet<String> = ours
        .iter()
        .map(|(key, ..)| label(key.key(), "layer").expect("a layer label"))
        .collect();
    let given = ["cached", "jobs", "reads", "tasks"].map(String::from);
    assert_eq!(names, BTreeSet::from(given));
    let value_of = |name: &str, layer: &str| {
        ours.iter()
            .find(|(key, ..)| {
                key.key().name() == name && label(key.key(), "layer").as_deref() == Some(layer)
            })
            .map(|(.., value)| value)
    };
    assert_eq!(
        value_of("singleflight_panics_total", "tasks"),
        Some(&DebugValue::Counter(1)),
        "the job's panic counts under its table's name"
    );
    // The bytes gauge follows what moka weighs, through stores,
    // replacements and evictions.
    let Some(&DebugValue::Gauge(bytes)) = value_of("singleflight_cache_bytes", "cached") else {
        panic!("no bytes gauge");
    };
    assert_eq!(bytes.into_inner(), cache.weighted_size() as f64);
}
