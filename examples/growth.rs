//! How a cached route's cost per request and the process's memory change as
//! the cache fills with unique keys: the crate's response cache against moka
//! `get_with` inside the handler, and the bare route, in one process.
//!
//! ```text
//! cargo run --release --example growth -- [crate|moka] [entries]
//! ```
//!
//! Fills the cache with unique keys up to 10,000, 100,000, ... `entries`
//! (default 1,000,000); at each step times 20,000 misses (new keys) and
//! 20,000 hits (keys already stored, spread over the cache) and reads the
//! process's RSS. Prints one JSON line per step. `max_bytes` is 4 GiB, so
//! nothing is evicted and the cost measured is the cache's size alone.
//! Run one variant per process: RSS is the whole process's.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{body::Body, extract::Path, routing::get, Router};
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_singleflight::{CacheConfig, SingleFlightLayer};

/// Requests timed per step, for misses and for hits.
const TIMED: u32 = 20_000;

async fn hello(Path(id): Path<u32>) -> String {
    format!("hello {id}")
}

fn bare() -> Router {
    Router::new().route("/item/{id}", get(hello))
}

fn with_crate() -> Router {
    let config = CacheConfig::new()
        .ttl(Duration::from_secs(3600))
        .max_bytes(4 << 30);
    bare().layer(SingleFlightLayer::share().cache(config))
}

fn with_moka() -> Router {
    let cache: moka::future::Cache<u32, String> = moka::future::Cache::builder()
        .max_capacity(u64::MAX)
        .time_to_live(Duration::from_secs(3600))
        .build();
    let cache = Arc::new(cache);
    Router::new().route(
        "/item/{id}",
        get(move |Path(id): Path<u32>| {
            let cache = Arc::clone(&cache);
            async move {
                cache
                    .get_with(id, async move { format!("hello {id}") })
                    .await
            }
        }),
    )
}

async fn send(app: &Router, id: u32) {
    let request = Request::get(format!("/item/{id}"))
        .body(Body::empty())
        .expect("a valid request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    std::hint::black_box(response.into_body().collect().await.expect("a body"));
}

/// Nanoseconds per request over `ids`.
async fn time(app: &Router, ids: impl Iterator<Item = u32>) -> f64 {
    let started = Instant::now();
    let mut count = 0u32;
    for id in ids {
        send(app, id).await;
        count += 1;
    }
    started.elapsed().as_nanos() as f64 / f64::from(count.max(1))
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_else(|| "crate".to_owned());
    let entries: u32 = args
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let app = match variant.as_str() {
        "crate" => with_crate(),
        "moka" => with_moka(),
        other => {
            eprintln!("unknown variant {other}: crate or moka");
            std::process::exit(2);
        }
    }
    .with_state(());
    let baseline = bare().with_state(());
    let rss_empty = rss_bytes();
    let mut filled = 0u32;
    let mut step = 10_000u32;
    while step <= entries {
        // Fill up to the step, timing the last TIMED misses.
        let untimed = step.saturating_sub(TIMED).max(filled);
        for id in filled..untimed {
            send(&app, id).await;
        }
        let miss_ns = time(&app, untimed..step).await;
        filled = step;
        // Hits spread over everything stored (a stride coprime to most sizes).
        let hit_ns = time(&app, (0..TIMED).map(|n| n.wrapping_mul(7919) % filled)).await;
        let bare_ns = time(&baseline, 0..TIMED).await;
        let rss = rss_bytes();
        println!(
            "{{\"variant\":\"{variant}\",\"entries\":{filled},\"miss_ns\":{miss_ns:.0},\"hit_ns\":{hit_ns:.0},\"bare_ns\":{bare_ns:.0},\"rss\":{rss},\"bytes_per_entry\":{:.0}}}",
            rss.saturating_sub(rss_empty) as f64 / f64::from(filled)
        );
        step = step.saturating_mul(10);
    }
}
