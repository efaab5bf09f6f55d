//! Instruction counts (callgrind, through gungraun) of requests through each
//! variant of `tower_singleflight_peers`: the bare route, the crate's modes,
//! and the crates users would pick instead, all on the same route and
//! handler. The request builders are those of the crate's own
//! `benches/instructions.rs`.
//!
//! Run with: cargo bench -p tower-singleflight-peers --bench instructions -- --save-summary=json
//! (needs `cargo install gungraun-runner@0.20.0` and valgrind), or
//! `python3 bench/peers.py`, which runs it and reads the summaries.
//!
//! Each benchmark sends `REQUESTS` requests, one after the other, through a
//! warm application (the same number were sent before, uncounted); only the
//! requests are counted, never the setup or the teardown.
//!
//! - `unique`: every request a key no request had before, warm-up included:
//!   a miss for every cache, a lone flight for every coalescer.
//! - `hot`: every request `/item/hot`: a hit for every cache (the warm-up
//!   stored it), a lone flight for the coalescers that keep nothing.
//! - `browser`: as `unique`, with the ten headers a browser sends.

use std::{cell::Cell, hint::black_box};

use axum::{body::Body, extract::Request};
use bytes::Bytes;
use gungraun::prelude::*;
use http::HeaderValue;
use http_body_util::BodyExt;
use tokio::runtime::Runtime;
use tower_singleflight_peers::{variant, App, Work};

const REQUESTS: u32 = 5_000;

include!("../../benches/common/browser.rs");

/// A runtime, an application, and the requests to send through it.
struct Bench {
    runtime: Runtime,
    app: App,
    hot: bool,
    headers: &'static [(&'static str, &'static str)],
    /// The first key of the next round of unique keys.
    next: Cell<u32>,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn bench(name: &str, hot: bool, headers: &'static [(&'static str, &'static str)]) -> Bench {
    let app = variant(name).expect("a variant")(Work::new());
    let bench = Bench {
        runtime: runtime(),
        app,
        hot,
        headers,
        next: Cell::new(0),
    };
    // Warm up: first-use allocations are not what is measured, and the hot
    // key is stored where it can be.
    bench.send_all();
    bench
}

fn unique(name: &str) -> Bench {
    bench(name, false, &[])
}

fn hot(name: &str) -> Bench {
    bench(name, true, &[])
}

fn browser(name: &str) -> Bench {
    bench(name, false, BROWSER)
}

impl Bench {
    fn send_all(&self) -> usize {
        let first = self.next.get();
        self.next.set(first + REQUESTS);
        self.runtime.block_on(async {
            let mut bytes = 0;
            for n in first..first + REQUESTS {
                let path = if self.hot {
                    "/item/hot".to_owned()
                } else {
                    format!("/item/{n}")
                };
                let mut request = Request::get(path);
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
                let response = self.app.send(request).await;
                let body = response.into_body().collect().await.expect("a body");
                bytes += body.to_bytes().len();
            }
            bytes
        })
    }
}

#[library_benchmark]
#[benches::unique(
    args = [
        "bare",
        "identity_layer",
        "share",
        "share_across_callers",
        "share_cache",
        "async_singleflight",
        "tower_resilience_coalesce",
        "moka_get_with",
        "axum_response_cache",
        "hitbox",
    ],
    setup = unique
)]
#[benches::hot(
    args = [
        "bare",
        "identity_layer",
        "share",
        "share_across_callers",
        "share_cache",
        "async_singleflight",
        "tower_resilience_coalesce",
        "moka_get_with",
        "axum_response_cache",
        "hitbox",
    ],
    setup = hot
)]
#[benches::browser(
    args = [
        "bare",
        "identity_layer",
        "share",
        "share_across_callers",
        "share_cache",
        "async_singleflight",
        "tower_resilience_coalesce",
        "moka_get_with",
        "axum_response_cache",
        "hitbox",
    ],
    setup = browser
)]
fn request(bench: Bench) -> Bench {
    black_box(bench.send_all());
    // Returned, so that tearing the application and its cache down is not
    // counted.
    bench
}

library_benchmark_group!(name = peers, benchmarks = [request]);

main!(library_benchmark_groups = peers);
