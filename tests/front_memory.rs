//! What the front for hot answers keeps alive, counted by a global
//! allocator that tracks every live byte (as `tests/memory.rs`). Its own
//! binary, as the allocator counts the whole process.

mod common;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering::SeqCst},
    time::Duration,
};

use axum::{routing, Router};
use common::{get, send};
use tower_singleflight::{layer::ShareLayer, CacheConfig, SingleFlightLayer};

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

/// One test at a time: the allocator counts the whole process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `GET /*`: `body` bytes, fresh for a minute.
fn app(body: usize) -> (Router, ShareLayer) {
    let layer = SingleFlightLayer::share().cache(CacheConfig::new());
    let app = Router::new()
        .fallback(routing::get(move || async move {
            (
                [(http::header::CACHE_CONTROL, "max-age=60")],
                "x".repeat(body),
            )
        }))
        .layer(layer.clone());
    (app, layer)
}

/// `Front::keep` keeps `key.clone()`, the request's own key, where the
/// cache keeps `key.detached()`: its host (a normal-form `Host`, kept by
/// reference count) is a slice of the buffer hyper read the request head
/// into. A hot hit keeps that buffer alive in the front, unweighed, for as
/// long as the slot stays (until four other answers are kept on the stripe:
/// on an idle thread, for ever). Same scenario as `tests/memory.rs`
/// `a_failed_refresh_does_not_pin_the_requests_buffer_in_the_cache`.
#[tokio::test(start_paused = true)]
async fn a_hot_hit_does_not_pin_the_requests_buffer_in_the_front() {
    let _serial = SERIAL.lock().await;
    let (app, layer) = app(16);
    let cache = layer.response_cache().expect("a cache").clone();
    let with_host = |host: http::HeaderValue| {
        http::Request::builder()
            .uri("/page")
            .header(http::header::HOST, host)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let stored = send(&app, with_host(http::HeaderValue::from_static("a.example"))).await;
    assert_eq!(stored.text().len(), 16);
    cache.run_pending_tasks();
    let before = LIVE.load(SeqCst);

    // The request head as hyper reads it: its values are slices of one
    // large read buffer.
    const BUFFER: usize = 1 << 20;
    let mut head = b"a.example".to_vec();
    head.resize(BUFFER, b' ');
    let head = bytes::Bytes::from(head);
    let host = http::HeaderValue::from_maybe_shared(head.slice(..9)).unwrap();
    drop(head);
    // The second lookup of the key in a row on this thread: the front keeps it.
    let hit = send(&app, with_host(host)).await;
    assert_eq!(hit.text().len(), 16);
    cache.run_pending_tasks();
    let pinned = LIVE.load(SeqCst).saturating_sub(before);
    assert!(
        pinned < BUFFER / 2,
        "{pinned} bytes stay live after the request: its read buffer is kept by the front"
    );
}

/// A kept answer voided by an invalidation is not dropped: its slot stays
/// until the stripe keeps four other answers. `invalidate_all` (then
/// `run_pending_tasks`) frees every answer without the front; with it, the
/// hot ones stay in memory, counted by no `weighted_size` — on a thread that
/// serves nothing else, for ever.
#[tokio::test(start_paused = true)]
async fn invalidate_all_frees_hot_answers() {
    let _serial = SERIAL.lock().await;
    const BODY: usize = 60 * 1024;
    let (app, layer) = app(BODY);
    let cache = layer.response_cache().expect("a cache").clone();
    // Warm up: moka's tables, the runtime's, the router's.
    for _ in 0..3 {
        send(&app, get("/warm")).await;
    }
    cache.invalidate_all();
    cache.run_pending_tasks();
    let before = LIVE.load(SeqCst);

    for _ in 0..3 {
        assert_eq!(send(&app, get("/big")).await.text().len(), BODY);
    }
    cache.invalidate_all();
    cache.run_pending_tasks();
    assert_eq!(cache.weighted_size(), 0);
    let left = LIVE.load(SeqCst).saturating_sub(before);
    assert!(
        left < BODY / 2,
        "{left} bytes left once the cache was emptied: the front keeps the invalidated answer"
    );
    // Not a matter of time: still there a while later.
    tokio::time::sleep(Duration::from_secs(30)).await;
    cache.run_pending_tasks();
    let left = LIVE.load(SeqCst).saturating_sub(before);
    assert!(left < BODY / 2, "{left} bytes left 30 s later");
}
