//! The cache's heap stays within `max_bytes`, whatever the requests: counted
//! by a global allocator that tracks every live byte. Its own binary, as the
//! allocator counts the whole process.

mod common;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering::SeqCst},
    time::Duration,
};

use axum::{
    http::{header, HeaderMap},
    routing, Router,
};
use common::{get, send, Runs};
use tower_singleflight::{layer::ShareLayer, CacheConfig, SingleFlightLayer};

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

/// One test at a time: the allocator counts the whole process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let _serial = SERIAL.lock().await;
    let runs = Runs::default();
    let (app, layer) = echo(&runs);
    let cache = layer.response_cache().expect("a cache").clone();
    send(&app, get("/echo?warm=up")).await;
    cache.invalidate_all();
    cache.run_pending_tasks();
    let before = LIVE.load(SeqCst);

    // Four rounds of 2,500: the cache full after each, then emptied. The
    // constant is moka's own tables, sized on first use and resized in
    // steps (1.5 to 1.9 MB here, whether after 2,000 requests or 20,000):
    // at no round may the cache hold more than it plus `max_bytes`, nor
    // keep more than it once emptied.
    let constant = 3 * 1024 * 1024;
    for round in 0..4 {
        for n in round * 2_500..(round + 1) * 2_500 {
            send(&app, hostile(n)).await;
        }
        cache.run_pending_tasks();
        let full = LIVE.load(SeqCst).saturating_sub(before);
        assert!(
            cache.weighted_size() <= MAX_BYTES,
            "{}",
            cache.weighted_size()
        );
        assert!(
            full as u64 <= MAX_BYTES + constant,
            "round {round}: the cache holds {full} bytes for a max_bytes of {MAX_BYTES}"
        );
        cache.invalidate_all();
        cache.run_pending_tasks();
        let left = LIVE.load(SeqCst).saturating_sub(before);
        assert!(
            left as u64 <= constant,
            "round {round}: {left} bytes left once emptied"
        );
    }
    assert!(runs.get() > 9_000, "nearly every request was new");
}

/// `header_bytes` weighs a header at its name, its value and 64 bytes; a
/// `HeaderMap` entry is a ~112-byte bucket (plus its index slot, plus the
/// spare capacity `rebuild` keeps "as roomy as the original"). An answer
/// with many short headers (a proxied upstream's, say) costs about twice
/// its weight, so the cache holds about twice `max_bytes`.
#[tokio::test(start_paused = true)]
async fn an_answer_with_many_headers_is_weighed_as_it_costs() {
    let _serial = SERIAL.lock().await;
    const MAX_BYTES: u64 = 4 * 1024 * 1024;
    let runs = Runs::default();
    let counted = runs.clone();
    let layer = SingleFlightLayer::share().cache(CacheConfig::new().max_bytes(MAX_BYTES));
    let app: Router = Router::new()
        .route(
            "/many",
            routing::get(move || async move {
                counted.bump();
                let mut response = http::Response::new(axum::body::Body::from("x"));
                for n in 0..400 {
                    let name = http::HeaderName::from_bytes(format!("x-h{n}").as_bytes()).unwrap();
                    response.headers_mut().insert(name, "v".parse().unwrap());
                }
                response
            }),
        )
        .layer(layer.clone());
    let cache = layer.response_cache().expect("a cache").clone();
    send(&app, get("/many?warm=up")).await;
    cache.invalidate_all();
    cache.run_pending_tasks();
    let before = LIVE.load(SeqCst);

    for n in 0..2_000 {
        send(&app, get(&format!("/many?n={n}"))).await;
    }
    cache.run_pending_tasks();
    let grown = LIVE.load(SeqCst).saturating_sub(before);

    assert!(cache.weighted_size() <= MAX_BYTES);
    // moka's own tables, as in `tests/memory.rs`.
    let constant = 2 * 1024 * 1024;
    assert!(
        grown as u64 <= MAX_BYTES + constant,
        "the cache holds {grown} bytes for a max_bytes of {MAX_BYTES} \
         ({} entries, weighed {})",
        cache.entry_count(),
        cache.weighted_size()
    );
}

/// `Store::back_off` hands the cache `self.key.clone()`, not
/// `key.detached()`: after a failed refresh the stale answer is put back
/// under the request's own key, whose host (a normal-form `Host`, kept "by
/// reference count, not copied") is a slice of the buffer the request head
/// was read into. moka replaces the stored key with the new one, so the
/// cached answer pins that buffer (hyper's read buffer: kilobytes to
/// hundreds of them) for as long as it is kept, unweighed.
#[tokio::test(start_paused = true)]
async fn a_failed_refresh_does_not_pin_the_requests_buffer_in_the_cache() {
    let _serial = SERIAL.lock().await;
    use std::time::Duration;

    let runs = Runs::default();
    let counted = runs.clone();
    let layer = SingleFlightLayer::share().cache(
        CacheConfig::new()
            .ttl(Duration::from_secs(1))
            .stale_if_error(Duration::from_secs(600)),
    );
    let app: Router = Router::new()
        .route(
            "/page",
            routing::get(move || async move {
                if counted.bump() == 1 {
                    (http::StatusCode::OK, "the page")
                } else {
                    (http::StatusCode::INTERNAL_SERVER_ERROR, "down")
                }
            }),
        )
        .layer(layer.clone());
    let cache = layer.response_cache().expect("a cache").clone();
    let stored = send(&app, with_host(http::HeaderValue::from_static("a.example"))).await;
    assert_eq!(stored.text(), "the page");
    tokio::time::sleep(Duration::from_secs(2)).await;
    cache.run_pending_tasks();
    let before = LIVE.load(SeqCst);

    let host = host_in_a_read_buffer();
    let stale = send(&app, with_host(host)).await;
    assert_eq!(stale.text(), "the page", "the stale copy stands in");
    assert_eq!(runs.get(), 2);
    cache.run_pending_tasks();
    let pinned = LIVE.load(SeqCst).saturating_sub(before);
    assert!(
        pinned < BUFFER / 2,
        "{pinned} bytes stay live after the request: its read buffer is kept by the cache"
    );
}

/// `GET /page` on `host`.
fn with_host(host: http::HeaderValue) -> http::Request<axum::body::Body> {
    http::Request::builder()
        .uri("/page")
        .header(http::header::HOST, host)
        .body(axum::body::Body::empty())
        .unwrap()
}

/// The size of the buffer [`host_in_a_read_buffer`] slices.
const BUFFER: usize = 1 << 20;

/// `a.example` as hyper reads a request head: a slice of one large read
/// buffer, which the slice keeps alive.
fn host_in_a_read_buffer() -> http::HeaderValue {
    let mut head = b"a.example".to_vec();
    head.resize(BUFFER, b' ');
    let head = bytes::Bytes::from(head);
    http::HeaderValue::from_maybe_shared(head.slice(..9)).unwrap()
}

/// `GET /*`: `body` bytes, fresh for a minute.
fn pages_of(body: usize) -> (Router, ShareLayer) {
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

/// The front for hot answers keeps the key detached, as the cache does: a
/// request's host (a normal-form `Host`, kept by reference count) is a slice
/// of the buffer hyper read the request head into, which a kept key would
/// keep alive, unweighed, for as long as its slot stays (on an idle thread,
/// for ever). As `a_failed_refresh_does_not_pin_the_requests_buffer_in_the_cache`.
#[tokio::test(start_paused = true)]
async fn a_hot_hit_does_not_pin_the_requests_buffer_in_the_front() {
    let _serial = SERIAL.lock().await;
    let (app, layer) = pages_of(16);
    let cache = layer.response_cache().expect("a cache").clone();
    let stored = send(&app, with_host(http::HeaderValue::from_static("a.example"))).await;
    assert_eq!(stored.text().len(), 16);
    cache.run_pending_tasks();
    let before = LIVE.load(SeqCst);

    let host = host_in_a_read_buffer();
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

/// An invalidation empties the front's slots: `invalidate_all` (then
/// `run_pending_tasks`) frees every answer, the hot ones kept by a thread
/// included, which no `weighted_size` would count.
#[tokio::test(start_paused = true)]
async fn invalidate_all_frees_hot_answers() {
    let _serial = SERIAL.lock().await;
    // Small enough for the front to keep, with its copy.
    const BODY: usize = 24 * 1024;
    let (app, layer) = pages_of(BODY);
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
