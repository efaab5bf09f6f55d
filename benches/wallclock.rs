//! Wall-clock benches (divan): the same requests as `instructions.rs`, and
//! the fan-out of one leader's outcome to N waiters.
//!
//! Run with: cargo bench -p tower-singleflight-benches --bench wallclock
//!
//! Timings vary from run to run on a shared machine; the instruction counts
//! of `instructions.rs` are the numbers that repeat. Read these as ratios
//! within one run.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::Path,
    routing::{get, post},
    Router,
};
use http::Request;
use http_body_util::BodyExt;
use tokio::{runtime::Runtime, sync::Notify, task::JoinSet};
use tower::ServiceExt;
use tower_singleflight::{
    flight::CallOptions, flight::Joined, CacheConfig, Flights, SingleFlightLayer,
};

fn main() {
    divan::main();
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

async fn hello(Path(id): Path<u32>) -> String {
    format!("hello {id}")
}

/// Sends `/hello/0..100` through `app` and reads every body.
async fn send_all(app: &Router, method: &'static str) {
    for n in 0..100 {
        let request = Request::builder()
            .method(method)
            .uri(format!("/hello/{n}"))
            .body(Body::empty())
            .expect("a valid request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        divan::black_box(response.into_body().collect().await.expect("a body"));
    }
}

mod hundred_requests {
    use super::*;

    fn run(bencher: divan::Bencher<'_, '_>, app: Router, method: &'static str) {
        // What `axum::serve` does: routes are built once, not per request.
        let app = app.with_state(());
        let runtime = runtime();
        runtime.block_on(send_all(&app, method)); // warm up (and fill a cache)
        bencher.bench_local(|| runtime.block_on(send_all(&app, method)));
    }

    fn hello_route() -> Router {
        Router::new().route("/hello/{id}", get(hello))
    }

    #[divan::bench]
    fn bare(bencher: divan::Bencher<'_, '_>) {
        run(bencher, hello_route(), "GET");
    }

    #[divan::bench]
    fn share_unique_keys(bencher: divan::Bencher<'_, '_>) {
        run(
            bencher,
            hello_route().layer(SingleFlightLayer::share()),
            "GET",
        );
    }

    #[divan::bench]
    fn reject_unique_keys(bencher: divan::Bencher<'_, '_>) {
        let app = Router::new()
            .route("/hello/{id}", post(hello))
            .layer(SingleFlightLayer::reject());
        run(bencher, app, "POST");
    }

    #[divan::bench]
    fn cache_hit(bencher: divan::Bencher<'_, '_>) {
        let cache = CacheConfig::new().ttl(Duration::from_secs(3600));
        let app = hello_route().layer(SingleFlightLayer::share().cache(cache));
        run(bencher, app, "GET");
    }
}

/// The multi-core cost: one request per iteration, from 1 and from 2
/// threads at once through the same router (each thread with its own
/// current-thread runtime, as a worker of a multi-threaded server would
/// poll its own connections). A route that scales as the bare one does keeps
/// its time per request from 1 to 2 threads as the bare route does; a lock
/// every request takes shows as a time that grows with the threads.
///
/// Read as: (layered time at 2 threads / at 1) / (bare time at 2 / at 1),
/// 1.0 when the layer adds no contention.
mod contention {
    use std::cell::Cell;

    use super::*;

    thread_local! {
        static RUNTIME: Runtime = runtime();
        /// This thread's next unique key: threads start far apart.
        static NEXT: Cell<u32> = Cell::new(thread_start());
    }

    fn thread_start() -> u32 {
        let thread = std::thread::current().id();
        let mut hash = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&thread, &mut hash);
        (std::hash::Hasher::finish(&hash) as u32) & 0xff00_0000
    }

    /// One request for `/hello/{id}` through `app`, its body read.
    fn one(app: &Router, method: &'static str, id: u32) {
        RUNTIME.with(|runtime| {
            runtime.block_on(async {
                let request = Request::builder()
                    .method(method)
                    .uri(format!("/hello/{id}"))
                    .body(Body::empty())
                    .expect("a valid request");
                let response = app.clone().oneshot(request).await.expect("infallible");
                divan::black_box(response.into_body().collect().await.expect("a body"));
            });
        });
    }

    fn unique() -> u32 {
        NEXT.with(|next| {
            let id = next.get();
            next.set(id.wrapping_add(1));
            id
        })
    }

    fn hello_route() -> Router {
        Router::new().route("/hello/{id}", get(hello))
    }

    fn run(bencher: divan::Bencher<'_, '_>, app: Router, method: &'static str, hot: bool) {
        let app = app.with_state(());
        one(&app, method, 7); // warm up (and fill a cache)
        bencher.bench(|| one(&app, method, if hot { 7 } else { unique() }));
    }

    #[divan::bench(threads = [1, 2])]
    fn bare_unique_keys(bencher: divan::Bencher<'_, '_>) {
        run(bencher, hello_route(), "GET", false);
    }

    #[divan::bench(threads = [1, 2])]
    fn bare_hot_key(bencher: divan::Bencher<'_, '_>) {
        run(bencher, hello_route(), "GET", true);
    }

    #[divan::bench(threads = [1, 2])]
    fn share_unique_keys(bencher: divan::Bencher<'_, '_>) {
        let app = hello_route().layer(SingleFlightLayer::share());
        run(bencher, app, "GET", false);
    }

    #[divan::bench(threads = [1, 2])]
    fn share_hot_key(bencher: divan::Bencher<'_, '_>) {
        let app = hello_route().layer(SingleFlightLayer::share());
        run(bencher, app, "GET", true);
    }

    #[divan::bench(threads = [1, 2])]
    fn cache_hit_hot_key(bencher: divan::Bencher<'_, '_>) {
        let cache = CacheConfig::new().ttl(Duration::from_secs(3600));
        let app = hello_route().layer(SingleFlightLayer::share().cache(cache));
        run(bencher, app, "GET", true);
    }

    #[divan::bench(threads = [1, 2])]
    fn reject_unique_keys(bencher: divan::Bencher<'_, '_>) {
        let app = Router::new()
            .route("/hello/{id}", post(hello))
            .layer(SingleFlightLayer::reject());
        run(bencher, app, "POST", false);
    }
}

/// moka alone, for what a shared cache costs across cores: a `get` of one
/// key from 1 and 2 threads, and of a key per thread. The cache's front
/// (each thread keeps its hot answers) exists because of the first.
mod moka_alone {
    use std::{cell::Cell, sync::Arc};

    use moka::sync::Cache;

    fn filled() -> Cache<u32, Arc<str>> {
        let cache = Cache::new(1_000);
        for key in 0..64 {
            cache.insert(key, Arc::from("hello"));
        }
        cache
    }

    #[divan::bench(threads = [1, 2])]
    fn get_one_key(bencher: divan::Bencher<'_, '_>) {
        let cache = filled();
        bencher.bench(|| divan::black_box(cache.get(&7)));
    }

    #[divan::bench(threads = [1, 2])]
    fn get_a_key_per_thread(bencher: divan::Bencher<'_, '_>) {
        thread_local! {
            static KEY: Cell<Option<u32>> = const { Cell::new(None) };
        }
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let cache = filled();
        bencher.bench(|| {
            let key = KEY.with(|key| {
                *key.get().get_or_insert_with(|| {
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 64
                })
            });
            divan::black_box(cache.get(&key))
        });
    }
}

/// One leader, N waiters parked on its flight: the time from the leader's
/// outcome to the last waiter having it.
#[divan::bench(args = [10, 1_000, 10_000])]
fn fan_out(bencher: divan::Bencher<'_, '_>, waiters: usize) {
    let runtime = runtime();
    bencher
        .with_inputs(|| runtime.block_on(parked(waiters)))
        .bench_local_values(|(gate, mut woken)| {
            runtime.block_on(async move {
                gate.notify_one();
                while let Some(outcome) = woken.join_next().await {
                    divan::black_box(outcome.expect("a waiter").expect("the outcome"));
                }
            })
        });
}

/// A flight whose work waits on the returned gate, and `waiters` tasks
/// (the leader's included) waiting for its outcome.
async fn parked(
    waiters: usize,
) -> (
    Arc<Notify>,
    JoinSet<Result<Arc<u64>, tower_singleflight::flight::FlightError>>,
) {
    let flights: Flights<u32, u64> = Flights::new();
    let options = CallOptions::default().max_waiters(waiters + 1);
    let gate = Arc::new(Notify::new());
    let mut woken = JoinSet::new();
    let Ok(Joined::Leader(leader)) = flights.join(7, &options) else {
        unreachable!("a fresh table");
    };
    let release = Arc::clone(&gate);
    woken.spawn(leader.run(async move {
        release.notified().await;
        42
    }));
    for _ in 1..waiters {
        let Ok(Joined::Follower(waiter)) = flights.join(7, &options) else {
            unreachable!("the flight runs");
        };
        woken.spawn(waiter);
    }
    // Let every waiter park before the clock starts.
    tokio::task::yield_now().await;
    (gate, woken)
}

/// The same through share mode: N identical requests wait on one handler;
/// the time from its answer to the last response read.
#[divan::bench(args = [10, 1_000, 10_000])]
fn fan_out_share_mode(bencher: divan::Bencher<'_, '_>, requests: usize) {
    let runtime = runtime();
    bencher
        .with_inputs(|| runtime.block_on(parked_requests(requests)))
        .bench_local_values(|(gate, mut answered)| {
            runtime.block_on(async move {
                gate.notify_one();
                while let Some(answer) = answered.join_next().await {
                    divan::black_box(answer.expect("a request"));
                }
            })
        });
}

/// `requests` identical requests waiting on a handler that waits on the
/// returned gate.
async fn parked_requests(requests: usize) -> (Arc<Notify>, JoinSet<usize>) {
    let gate = Arc::new(Notify::new());
    let handler_gate = Arc::clone(&gate);
    let app = Router::new()
        .route(
            "/report",
            get(move || async move {
                handler_gate.notified().await;
                "the report"
            }),
        )
        .layer(SingleFlightLayer::share().max_waiters(requests + 1))
        .with_state(());
    let mut answered = JoinSet::new();
    for _ in 0..requests {
        let request = Request::get("/report")
            .body(Body::empty())
            .expect("a request");
        let app = app.clone();
        answered.spawn(async move {
            let response = app.oneshot(request).await.expect("infallible");
            let body = response.into_body().collect().await.expect("a body");
            body.to_bytes().len()
        });
    }
    // Let every request park before the clock starts.
    tokio::task::yield_now().await;
    (gate, answered)
}
