//! Instruction counts (callgrind, through gungraun) of one request's trip
//! through an axum router: bare, and behind each mode of the layer.
//!
//! Run with: cargo bench -p tower-singleflight-benches --bench instructions -- --save-summary=json
//! (needs `cargo install gungraun-runner@0.20.0` and valgrind), then
//! `python3 bench/instructions.py` for the ratios to the bare route.
//!
//! Every benchmark sends the same 100 requests to `/hello/{n}` on a warm
//! router; only the requests are counted, never the setup or the teardown.
//! The `_browser` cases send the headers a browser sends with each request
//! (their ratios are to `bare_browser`): what the layer reads and copies of
//! a request grows with its headers.

use std::{hint::black_box, time::Duration};

use axum::{
    body::Body,
    extract::Path,
    routing::{get, post},
    Router,
};
use bytes::Bytes;
use gungraun::prelude::*;
use http::{HeaderValue, Request};
use http_body_util::BodyExt;
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tower_singleflight::{CacheConfig, Flights, SingleFlightLayer};

const REQUESTS: u32 = 100;

/// A runtime, a router, and the requests to send through it.
struct Bench {
    runtime: Runtime,
    app: Router,
    method: &'static str,
    /// The path of the n-th request.
    path: fn(u32) -> String,
    headers: &'static [(&'static str, &'static str)],
}

include!("common/browser.rs");

async fn hello(Path(id): Path<u32>) -> String {
    format!("hello {id}")
}

/// Every request its own key.
fn unique(n: u32) -> String {
    format!("/hello/{n}")
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn bench(app: Router, method: &'static str) -> Bench {
    bench_on(runtime(), app, method, unique, &[])
}

fn browser(app: Router) -> Bench {
    bench_on(runtime(), app, "GET", unique, BROWSER)
}

fn bench_on(
    runtime: Runtime,
    app: Router,
    method: &'static str,
    path: fn(u32) -> String,
    headers: &'static [(&'static str, &'static str)],
) -> Bench {
    // What `axum::serve` does: routes are built once, not per request.
    let app = app.with_state(());
    let bench = Bench {
        runtime,
        app,
        method,
        path,
        headers,
    };
    // Warm up: first-use allocations are not what is measured.
    bench.send_all();
    bench
}

impl Bench {
    fn send_all(&self) -> usize {
        self.runtime.block_on(async {
            let mut bytes = 0;
            for n in 0..REQUESTS {
                let mut request = Request::builder().method(self.method).uri((self.path)(n));
                // Values sliced from one buffer, as hyper parses them: a
                // copy of one is a reference count, not an allocation.
                let read: String = self.headers.iter().map(|(_, value)| *value).collect();
                let read = Bytes::from(read);
                let mut at = 0;
                for (name, value) in self.headers {
                    let value = read.slice(at..at + value.len());
                    at += value.len();
                    let value = HeaderValue::from_maybe_shared(value).expect("a valid value");
                    request = request.header(*name, value);
                }
                let request = request.body(Body::empty()).expect("a valid request");
                let response = self.app.clone().oneshot(request).await.expect("infallible");
                let body = response.into_body().collect().await.expect("a body");
                bytes += body.to_bytes().len();
            }
            bytes
        })
    }
}

fn hello_route() -> Router {
    Router::new().route("/hello/{id}", get(hello))
}

fn bare() -> Bench {
    bench(hello_route(), "GET")
}

fn share_unique_keys() -> Bench {
    bench(hello_route().layer(SingleFlightLayer::share()), "GET")
}

fn bare_browser() -> Bench {
    browser(hello_route())
}

fn share_unique_keys_browser() -> Bench {
    browser(hello_route().layer(SingleFlightLayer::share()))
}

fn cache_hit_browser() -> Bench {
    browser(hello_route().layer(SingleFlightLayer::share().cache(cache_config())))
}

fn reject_unique_keys() -> Bench {
    let app = Router::new()
        .route("/hello/{id}", post(hello))
        .layer(SingleFlightLayer::reject());
    bench(app, "POST")
}

/// One request holds `/held/0` (its handler never ends): every measured
/// request is a duplicate, answered `409`.
fn reject_conflict() -> Bench {
    let app = Router::new()
        .route("/held/{id}", post(std::future::pending::<()>))
        .layer(SingleFlightLayer::reject())
        .with_state(());
    let runtime = runtime();
    let holder = Request::post("/held/0")
        .body(Body::empty())
        .expect("a valid request");
    runtime.spawn(app.clone().oneshot(holder));
    // Let the holder take the key.
    runtime.block_on(tokio::task::yield_now());
    bench_on(runtime, app, "POST", |_| "/held/0".to_owned(), &[])
}

/// For reference, not gated: what any layer costs through `Router::layer`
/// (another `Route`: a service clone, a boxed future and a boxed body per
/// request), with one that does nothing at all.
fn identity_layer() -> Bench {
    bench(
        hello_route().layer(tower::layer::layer_fn(|service| service)),
        "GET",
    )
}

/// For reference, not gated: the no-op middleware most axum users would
/// write.
fn noop_from_fn() -> Bench {
    async fn pass(
        request: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        next.run(request).await
    }
    bench(hello_route().layer(axum::middleware::from_fn(pass)), "GET")
}

/// The warm-up fills the cache: every measured request is a hit.
fn cache_hit() -> Bench {
    bench(
        hello_route().layer(SingleFlightLayer::share().cache(cache_config())),
        "GET",
    )
}

/// Every measured request the same key: a hit on an answer served again
/// and again (the front each thread keeps).
fn cache_hit_hot_key() -> Bench {
    let app = hello_route().layer(SingleFlightLayer::share().cache(cache_config()));
    bench_on(runtime(), app, "GET", |_| "/hello/1".to_owned(), &[])
}

/// Every measured request a key of its own: a miss, answered by the handler
/// and stored.
fn cache_miss_unique_keys() -> Bench {
    /// Never the same key twice, warm-up included.
    fn fresh(_: u32) -> String {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        unique(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
    let app = hello_route().layer(SingleFlightLayer::share().cache(cache_config()));
    bench_on(runtime(), app, "GET", fresh, &[])
}

/// Nothing expires while it is measured.
fn cache_config() -> CacheConfig {
    CacheConfig::new().ttl(Duration::from_secs(3600))
}

#[library_benchmark]
#[bench::bare(setup = bare)]
#[bench::share_unique_keys(setup = share_unique_keys)]
#[bench::reject_unique_keys(setup = reject_unique_keys)]
#[bench::reject_conflict(setup = reject_conflict)]
#[bench::cache_hit(setup = cache_hit)]
#[bench::cache_hit_hot_key(setup = cache_hit_hot_key)]
#[bench::cache_miss_unique_keys(setup = cache_miss_unique_keys)]
#[bench::identity_layer(setup = identity_layer)]
#[bench::noop_from_fn(setup = noop_from_fn)]
#[bench::bare_browser(setup = bare_browser)]
#[bench::share_unique_keys_browser(setup = share_unique_keys_browser)]
#[bench::cache_hit_browser(setup = cache_hit_browser)]
fn request(bench: Bench) -> Bench {
    black_box(bench.send_all());
    // Returned, so that tearing the router and its cache down is not counted.
    bench
}

/// A table and a runtime, for leases taken outside any request.
fn table() -> (Runtime, Flights<u32>) {
    (runtime(), Flights::new())
}

#[library_benchmark]
#[bench::lease_acquire_release(setup = table)]
fn acquire_release((runtime, flights): (Runtime, Flights<u32>)) -> (Runtime, Flights<u32>) {
    let held = runtime.block_on(async {
        let mut held = 0;
        for key in 0..REQUESTS {
            let guard = flights.try_acquire(key, Duration::from_secs(60)).await;
            held += u32::from(guard.is_ok());
        }
        held
    });
    black_box(held);
    (runtime, flights)
}

library_benchmark_group!(name = requests, benchmarks = [request]);
library_benchmark_group!(name = leases, benchmarks = [acquire_release]);

main!(library_benchmark_groups = requests, leases);
