//! The cache's heap stays within `max_bytes`, whatever the requests: counted
//! by a global allocator that tracks every live byte. Its own binary, as the
//! allocator counts the whole process.

mod common;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering::SeqCst},
};

use axum::{
    http::{header, HeaderMap},
    routing, Router,
};
use common::{get, send, Runs};
use tower_singleflight::{CacheConfig, ShareLayer, SingleFlightLayer};

/// The system allocator, counting the bytes live at any moment.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), SeqCst);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, SeqCst);
        LIVE.fetch_sub(layout.size(), SeqCst);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MAX_BYTES: u64 = 1024 * 1024;

/// `GET /echo`: a small answer that varies on `x-variant` and repeats the
/// request's query, so that every key is an answer of its own.
fn echo(runs: &Runs) -> (Router, ShareLayer) {
    let runs = runs.clone();
    let layer = SingleFlightLayer::share().cache(CacheConfig::new().max_bytes(MAX_BYTES));
    let app = Router::new()
        .route(
            "/echo",
            routing::get(move |headers: HeaderMap| async move {
                runs.bump();
                let variant = headers.get("x-variant").cloned();
                let mut response = http::Response::new(axum::body::Body::from("small"));
                response
                    .headers_mut()
                    .insert(header::VARY, "x-variant".parse().unwrap());
                if let Some(variant) = variant {
                    response.headers_mut().insert("x-echo", variant);
                }
                response
            }),
        )
        .layer(layer.clone());
    (app, layer)
}

/// The adversary: long unique queries, large unique identity headers, many
/// `Vary` values, keys past the cap.
fn hostile(n: usize) -> http::Request<axum::body::Body> {
    let pad = |len: usize| format!("{n:08}{}", "q".repeat(len));
    let mut request = match n % 4 {
        0 => get(&format!("/echo?pad={}", pad(6000))),
        1 => get(&format!("/echo?pad={}", pad(60_000))),
        _ => get(&format!("/echo?n={n}")),
    };
    let headers = request.headers_mut();
    if n % 4 == 2 {
        headers.insert("x-api-key", pad(4000).parse().unwrap());
    }
    if n % 4 == 3 {
        headers.insert("x-variant", pad(2000).parse().unwrap());
    }
    request
}

#[tokio::test(start_paused = true)]
async fn the_caches_heap_stays_within_max_bytes_under_hostile_requests() {
    let runs = Runs::default();
    let (app, layer) = echo(&runs);
    let cache = layer.response_cache().expect("a cache").clone();
    send(&app, get("/echo?warm=up")).await;
    cache.invalidate_all();
    cache.run_pending_tasks();
    let before = LIVE.load(SeqCst);

    let mut warmed = 0;
    for n in 0..10_000 {
        send(&app, hostile(n)).await;
        if n == 2_000 {
            cache.run_pending_tasks();
            warmed = LIVE.load(SeqCst);
        }
    }
    cache.run_pending_tasks();
    let after = LIVE.load(SeqCst);
    let grown = after.saturating_sub(before);

    assert!(runs.get() > 9_000, "nearly every request was new");
    assert!(
        cache.weighted_size() <= MAX_BYTES,
        "{}",
        cache.weighted_size()
    );
    // The constant: moka's own tables, sized on first use (about 1.8 MB
    // here, the same after 2,000 requests or 20,000).
    let constant = 2 * 1024 * 1024;
    assert!(
        grown as u64 <= MAX_BYTES + constant,
        "the cache holds {grown} bytes for a max_bytes of {MAX_BYTES}"
    );
    // Nothing grows with the number of requests.
    let since_warm = after.abs_diff(warmed);
    assert!(
        since_warm as u64 <= MAX_BYTES / 4,
        "{since_warm} more bytes after 8,000 more requests"
    );
}
