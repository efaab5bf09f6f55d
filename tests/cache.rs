//! The response cache: cold stampedes, expiry under load, failures, bounds.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
        Arc,
    },
    time::Duration,
};

use axum::{
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing, Router,
};
use common::{
    call_kept, count, get, get_with, gets_ready, played, request, send, send_all, spawn, Runs,
};
use tokio::time::{sleep, Instant};
use tower_singleflight::{layer::ShareLayer, CacheConfig, FlightRole, SingleFlightLayer};

const WORK: Duration = Duration::from_millis(200);
const TTL: Duration = Duration::from_secs(1);

/// `GET /total` (and `/total/{n}`): takes `WORK`, answers which run it was,
/// or `500` while `failing`.
fn totals(layer: ShareLayer, runs: &Runs, failing: &Arc<AtomicBool>) -> Router {
    let (runs, failing) = (runs.clone(), failing.clone());
    let handler = move || async move {
        let run = runs.bump();
        sleep(WORK).await;
        if failing.load(SeqCst) {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("run {run} failed"),
            )
                .into_response();
        }
        format!("run {run}").into_response()
    };
    Router::new()
        .route("/total", routing::get(handler.clone()))
        .route("/total/{n}", routing::get(handler))
        .layer(layer)
}

fn cached(config: CacheConfig) -> ShareLayer {
    SingleFlightLayer::share().cache(config)
}

#[tokio::test(start_paused = true)]
async fn a_cold_stampede_runs_once_and_the_next_one_not_at_all() {
    let runs = Runs::default();
    let layer = cached(CacheConfig::new().ttl(Duration::from_secs(60)));
    let app = totals(layer.clone(), &runs, &Arc::default());

    let cold = send_all(&app, (0..1000).map(|_| get("/total"))).await;
    assert_eq!(runs.get(), 1);
    assert_eq!(count(&cold, StatusCode::OK), 1000);

    let warm = send_all(&app, (0..1000).map(|_| get("/total"))).await;
    assert_eq!(runs.get(), 1, "no run for a warm cache");
    assert_eq!(played(&warm, FlightRole::CacheHit), 1000);
    assert!(warm.iter().all(|reply| reply.text() == "run 1"));
    assert_eq!(warm[0].headers[header::AGE], "0");
    let stats = layer.response_cache().unwrap().stats();
    assert_eq!((stats.hits, stats.stored), (1000, 1));
}

#[tokio::test(start_paused = true)]
async fn expiry_under_load_refreshes_once_per_ttl_and_nobody_waits() {
    let runs = Runs::default();
    let config = CacheConfig::new()
        .ttl(TTL)
        .stale_while_revalidate(Duration::from_secs(10));
    let layer = cached(config);
    let app = totals(layer.clone(), &runs, &Arc::default());

    // The first request fills the cache.
    assert_eq!(send(&app, get("/total")).await.text(), "run 1");

    // Then bursts of 20 concurrent requests every 50 ms for 6 seconds.
    let start = Instant::now();
    let mut bodies = Vec::new();
    while start.elapsed() < Duration::from_secs(6) {
        let sent = Instant::now();
        let burst = send_all(&app, (0..20).map(|_| get("/total"))).await;
        assert_eq!(
            sent.elapsed(),
            Duration::ZERO,
            "no request waited for the handler"
        );
        assert!(burst.iter().all(|reply| reply.status == StatusCode::OK));
        assert!(burst
            .iter()
            .all(|reply| matches!(reply.role, Some(FlightRole::CacheHit | FlightRole::Stale))));
        bodies.extend(burst.into_iter().map(|reply| reply.text().to_owned()));
        sleep(Duration::from_millis(50)).await;
    }
    // One refresh per TTL + work: at 1.2 s, 2.4 s, 3.6 s, 4.8 s, 6.0 s at most.
    assert!((5..=7).contains(&runs.get()), "{} runs", runs.get());
    assert!(
        bodies.iter().any(|body| body == "run 4"),
        "refreshed answers were served"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_serves_stale_and_is_never_stored() {
    let (runs, failing) = (Runs::default(), Arc::new(AtomicBool::new(false)));
    let config = CacheConfig::new()
        .ttl(TTL)
        .stale_if_error(Duration::from_secs(30));
    let app = totals(cached(config), &runs, &failing);
    assert_eq!(send(&app, get("/total")).await.text(), "run 1");

    failing.store(true, SeqCst);
    sleep(Duration::from_millis(1500)).await;
    let during = send_all(&app, (0..10).map(|_| get("/total"))).await;
    assert_eq!(runs.get(), 2, "one attempt at the origin");
    assert!(during
        .iter()
        .all(|reply| reply.status == StatusCode::OK && reply.text() == "run 1"));
    assert_eq!(played(&during, FlightRole::Stale), 10);

    // Backing off: the stale copy at once, the origin left alone.
    sleep(Duration::from_millis(500)).await;
    let backing_off = send(&app, get("/total")).await;
    assert_eq!((backing_off.text(), runs.get()), ("run 1", 2));

    // After the window, the next request tries again, and the healed
    // origin's answer (not the error) is what gets served.
    failing.store(false, SeqCst);
    sleep(Duration::from_millis(1000)).await;
    assert_eq!(send(&app, get("/total")).await.text(), "run 3");
    assert_eq!(
        send(&app, get("/total")).await.role,
        Some(FlightRole::CacheHit)
    );
}

#[tokio::test(start_paused = true)]
async fn errors_are_never_cached() {
    let (runs, failing) = (Runs::default(), Arc::new(AtomicBool::new(true)));
    let app = totals(cached(CacheConfig::new()), &runs, &failing);
    assert_eq!(
        send(&app, get("/total")).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        send(&app, get("/total")).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(runs.get(), 2);
}

/// `GET /thing`: answers what `respond` builds, counting runs.
fn thing(layer: ShareLayer, runs: &Runs, respond: fn(usize) -> Response) -> Router {
    let runs = runs.clone();
    Router::new()
        .route(
            "/thing",
            routing::get(move || async move { respond(runs.bump()) }),
        )
        .layer(layer)
}

async fn never_cached(layer: ShareLayer, respond: fn(usize) -> Response) {
    let runs = Runs::default();
    let app = thing(layer, &runs, respond);
    for _ in 0..3 {
        let reply = send(&app, get("/thing")).await;
        assert_ne!(reply.role, Some(FlightRole::CacheHit));
    }
    assert_eq!(runs.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn set_cookie_is_never_cached() {
    never_cached(cached(CacheConfig::new()), |run| {
        ([(header::SET_COOKIE, format!("s={run}"))], "hi").into_response()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn no_store_is_never_cached() {
    never_cached(cached(CacheConfig::new()), |_| {
        ([(header::CACHE_CONTROL, "no-store")], "hi").into_response()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn private_is_never_cached_across_identities() {
    let across = SingleFlightLayer::share()
        .share_across_identities()
        .cache(CacheConfig::new());
    never_cached(across, |_| {
        ([(header::CACHE_CONTROL, "private")], "mine").into_response()
    })
    .await;
}

/// A cached answer that depends on the request's `echo` header (as its
/// `answer` header says) is served again for the same value, never for
/// another: `GET /thing` answers the value it was sent.
async fn cached_per_value(
    echo: header::HeaderName,
    answer: (header::HeaderName, &'static str),
    same: &'static str,
    other: &'static str,
) {
    let runs = Runs::default();
    let app = {
        let (runs, echo) = (runs.clone(), echo.clone());
        let handler = move |headers: HeaderMap| async move {
            runs.bump();
            let echoed = headers.get(&echo).and_then(|value| value.to_str().ok());
            ([answer], echoed.unwrap_or("?").to_owned())
        };
        Router::new()
            .route("/thing", routing::get(handler))
            .layer(cached(CacheConfig::new()))
    };
    let with = |value| get_with("/thing", echo.clone(), value);
    assert_eq!(send(&app, with(same)).await.text(), same);
    let again = send(&app, with(same)).await;
    assert_eq!(
        (again.text(), again.role),
        (same, Some(FlightRole::CacheHit))
    );
    let differing = send(&app, with(other)).await;
    assert_eq!(differing.text(), other, "never the first answer");
    assert_eq!(runs.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn max_age_shortens_the_ttl() {
    let runs = Runs::default();
    let layer = cached(CacheConfig::new().ttl(Duration::from_secs(60)));
    let app = thing(layer, &runs, |run| {
        ([(header::CACHE_CONTROL, "max-age=2")], run.to_string()).into_response()
    });
    send(&app, get("/thing")).await;
    sleep(Duration::from_millis(1999)).await;
    assert_eq!(
        send(&app, get("/thing")).await.role,
        Some(FlightRole::CacheHit)
    );
    sleep(Duration::from_millis(2)).await;
    assert_eq!(send(&app, get("/thing")).await.text(), "2");
}

#[tokio::test(start_paused = true)]
async fn the_byte_bound_holds() {
    let max_bytes = 16 * 1024;
    let layer = cached(CacheConfig::new().max_bytes(max_bytes));
    let app = Router::new()
        .route("/blob/{n}", routing::get(|| async { "x".repeat(1024) }))
        .layer(layer.clone());
    for n in 0..100 {
        assert_eq!(
            send(&app, get(&format!("/blob/{n}"))).await.status,
            StatusCode::OK
        );
    }
    let cache = layer.response_cache().unwrap();
    cache.run_pending_tasks();
    assert!(
        cache.weighted_size() <= max_bytes,
        "{} bytes",
        cache.weighted_size()
    );
    assert!(cache.entry_count() > 0);
    assert_eq!(cache.stats().stored, 100);
}

#[tokio::test(start_paused = true)]
async fn answers_can_be_invalidated() {
    let runs = Runs::default();
    let layer = cached(CacheConfig::new().invalidate_on_write(true));
    let app = {
        let runs = runs.clone();
        let read = routing::get(move || async move { runs.bump().to_string() });
        Router::new()
            .route("/item", read.post(|| async { StatusCode::NO_CONTENT }))
            .route("/other", routing::get(|| async { "other" }))
            .layer(layer.clone())
    };
    let cache = layer.response_cache().unwrap().clone();
    assert_eq!(send(&app, get("/item")).await.text(), "1");
    assert_eq!(send(&app, get("/item?page=2")).await.text(), "2");
    assert_eq!(send(&app, get("/item")).await.text(), "1", "cached");

    // A successful write to the path drops every cached read of it.
    assert_eq!(
        send(&app, request("POST", "/item")).await.status,
        StatusCode::NO_CONTENT
    );
    cache.run_pending_tasks();
    assert_eq!(send(&app, get("/item")).await.text(), "3");
    assert_eq!(send(&app, get("/item?page=2")).await.text(), "4");

    cache.invalidate_if(|key| key.path_and_query() == "/item");
    cache.run_pending_tasks();
    assert_eq!(send(&app, get("/item")).await.text(), "5");

    cache.invalidate_all();
    cache.run_pending_tasks();
    assert_eq!(send(&app, get("/item?page=2")).await.text(), "6");
}

#[tokio::test(start_paused = true)]
async fn a_cached_answer_is_served_only_to_requests_it_varies_with() {
    let answer = (header::VARY, "accept-language");
    cached_per_value(header::ACCEPT_LANGUAGE, answer, "fr", "de").await;
}

/// `GET /total`: run 1 answers 200; afterwards, while `failing`, a `503`
/// with `Cache-Control: no-store` (what many error pages send).
fn flaky_no_store(
    layer: ShareLayer,
    runs: &Runs,
    failing: &Arc<AtomicBool>,
    slow: Duration,
) -> Router {
    let (runs, failing) = (runs.clone(), failing.clone());
    Router::new()
        .route(
            "/total",
            routing::get(move || async move {
                let run = runs.bump();
                sleep(if run == 1 { WORK } else { slow }).await;
                if failing.load(SeqCst) {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::CACHE_CONTROL, "no-store")],
                        "down",
                    )
                        .into_response();
                }
                format!("run {run}").into_response()
            }),
        )
        .layer(layer)
}

#[tokio::test(start_paused = true)]
async fn a_5xx_no_store_still_serves_stale_if_error() {
    let (runs, failing) = (Runs::default(), Arc::new(AtomicBool::new(false)));
    let config = CacheConfig::new()
        .ttl(Duration::from_secs(1))
        .stale_if_error(Duration::from_secs(30));
    let app = flaky_no_store(
        SingleFlightLayer::share().cache(config),
        &runs,
        &failing,
        WORK,
    );
    assert_eq!(send(&app, get("/total")).await.text(), "run 1");
    failing.store(true, SeqCst);
    sleep(Duration::from_millis(1500)).await;
    let during = send_all(&app, (0..10).map(|_| get("/total"))).await;
    assert_eq!(count(&during, StatusCode::OK), 10, "stale copy, not 503");
    assert!(runs.get() <= 2, "{} origin calls", runs.get());
}

#[tokio::test(start_paused = true)]
async fn a_failed_background_refresh_with_no_store_keeps_the_stale_copy() {
    let (runs, failing) = (Runs::default(), Arc::new(AtomicBool::new(false)));
    let config = CacheConfig::new()
        .ttl(Duration::from_secs(1))
        .stale_while_revalidate(Duration::from_secs(10))
        .stale_if_error(Duration::from_secs(30));
    let app = flaky_no_store(
        SingleFlightLayer::share().cache(config),
        &runs,
        &failing,
        WORK,
    );
    send(&app, get("/total")).await;
    failing.store(true, SeqCst);
    sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        send(&app, get("/total")).await.role,
        Some(FlightRole::Stale)
    );
    sleep(Duration::from_millis(300)).await; // the refresh got its 503
    let next = send(&app, get("/total")).await;
    assert_eq!((next.status, next.text()), (StatusCode::OK, "run 1"));
}

#[tokio::test(start_paused = true)]
async fn max_wait_serves_the_stale_copy_not_504() {
    let (runs, failing) = (Runs::default(), Arc::new(AtomicBool::new(false)));
    let layer = SingleFlightLayer::share()
        .max_wait(Duration::from_millis(100))
        .cache(
            CacheConfig::new()
                .ttl(Duration::from_secs(1))
                .stale_if_error(Duration::from_secs(30)),
        );
    let app = flaky_no_store(layer, &runs, &failing, Duration::from_secs(5));
    send(&app, get("/total")).await;
    sleep(Duration::from_millis(1500)).await;
    let reply = send(&app, get("/total")).await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "run 1"));
}

#[tokio::test(start_paused = true)]
async fn backing_off_leaves_the_origin_alone_for_longer_at_each_failure() {
    let (runs, failing) = (Runs::default(), Arc::new(AtomicBool::new(false)));
    let app = {
        let (runs, failing) = (runs.clone(), failing.clone());
        Router::new()
            .route(
                "/total",
                routing::get(move || async move {
                    let run = runs.bump();
                    sleep(WORK).await;
                    if failing.load(SeqCst) {
                        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                    }
                    format!("run {run}").into_response()
                }),
            )
            .layer(
                SingleFlightLayer::share().cache(
                    CacheConfig::new()
                        .ttl(Duration::from_secs(60))
                        .stale_while_revalidate(Duration::from_secs(3600)),
                ),
            )
    };
    send(&app, get("/total")).await;
    failing.store(true, SeqCst);
    sleep(Duration::from_secs(61)).await;
    // Each request in a row of them, 100 ms apart: the stale copy, always;
    // the origin, only when its back-off is over.
    for _ in 0..100 {
        assert_eq!(send(&app, get("/total")).await.text(), "run 1");
        sleep(Duration::from_millis(100)).await;
    }
    // Over those 10 s: a refresh at once, then 1 s, 2 s and 4 s after each
    // failure (each takes 200 ms): at 0, 1.2, 3.4 and 7.6 s; the next would
    // be at 15.8 s.
    assert_eq!(runs.get(), 1 + 4, "the origin was called during a back-off");
}

/// moka evicts on its own clock, which Tokio cannot pause: this one runs on
/// real time, with a second of margin either side.
#[tokio::test]
async fn a_refreshed_answer_is_not_evicted_by_the_old_expiry() {
    let runs = Runs::default();
    let app = {
        let runs = runs.clone();
        Router::new()
            .route(
                "/t",
                routing::get(move || async move { format!("run {}", runs.bump()) }),
            )
            .layer(
                SingleFlightLayer::share().cache(
                    CacheConfig::new()
                        .ttl(Duration::from_secs(3))
                        .stale_while_revalidate(Duration::from_millis(500)),
                ),
            )
    };
    send(&app, get("/t")).await;
    sleep(Duration::from_millis(3100)).await;
    assert_eq!(send(&app, get("/t")).await.role, Some(FlightRole::Stale));
    sleep(Duration::from_millis(100)).await; // refreshed in place: fresh till ~6.1 s
    assert_eq!(runs.get(), 2);
    sleep(Duration::from_millis(1800)).await; // t = 5.0 s
    let reply = send(&app, get("/t")).await;
    assert_eq!((reply.role, runs.get()), (Some(FlightRole::CacheHit), 2));
}

#[tokio::test(start_paused = true)]
async fn the_byte_bound_counts_keys() {
    let layer = SingleFlightLayer::share().cache(CacheConfig::new().max_bytes(64 * 1024));
    let app = Router::new()
        .route("/x", routing::get(|| async { "x" }))
        .layer(layer.clone());
    for n in 0..200 {
        let mut req = get("/x");
        let cookie = format!("s={n}{}", "a".repeat(16 * 1024));
        req.headers_mut()
            .insert(header::COOKIE, cookie.parse().unwrap());
        send(&app, req).await;
    }
    let cache = layer.response_cache().unwrap();
    cache.run_pending_tasks();
    let held = cache.entry_count() * 16 * 1024;
    assert!(
        held <= 64 * 1024,
        "{} entries hold >= {held} bytes of keys",
        cache.entry_count()
    );
}

#[tokio::test(start_paused = true)]
async fn a_read_in_flight_during_a_write_is_not_stored() {
    let version = Arc::new(AtomicUsize::new(1));
    let layer = SingleFlightLayer::share().cache(CacheConfig::new().invalidate_on_write(true));
    let app = {
        let (read, write) = (version.clone(), version.clone());
        Router::new()
            .route(
                "/item",
                routing::get(move || async move {
                    let seen = read.load(SeqCst);
                    sleep(WORK).await;
                    seen.to_string()
                })
                .post(move || async move {
                    write.store(2, SeqCst);
                    StatusCode::NO_CONTENT
                }),
            )
            .layer(layer.clone())
    };
    let reading = spawn(&app, get("/item"));
    sleep(Duration::from_millis(50)).await;
    assert_eq!(
        send(&app, request("POST", "/item")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(reading.await.unwrap().text(), "1");
    layer.response_cache().unwrap().run_pending_tasks();
    let after = send(&app, get("/item")).await;
    assert_eq!(
        after.text(),
        "2",
        "served {:?} data from before the write",
        after.role
    );
}

/// Issue 11's race: a write to one path used to keep every read in flight
/// anywhere in the cache from being stored.
#[tokio::test(start_paused = true)]
async fn a_write_to_another_path_does_not_keep_a_read_from_being_stored() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::share().cache(CacheConfig::new().invalidate_on_write(true));
    let app = {
        let runs = runs.clone();
        Router::new()
            .route(
                "/a",
                routing::get(move || async move {
                    sleep(WORK).await;
                    format!("run {}", runs.bump())
                }),
            )
            .route(
                "/config/x",
                routing::put(|| async { StatusCode::NO_CONTENT }),
            )
            .layer(layer.clone())
    };
    let reading = spawn(&app, get("/a"));
    sleep(Duration::from_millis(50)).await;
    assert_eq!(
        send(&app, request("PUT", "/config/x")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(reading.await.unwrap().text(), "run 1");
    layer.response_cache().unwrap().run_pending_tasks();
    let after = send(&app, get("/a")).await;
    assert_eq!(
        after.role,
        Some(FlightRole::CacheHit),
        "the read was stored"
    );
    assert_eq!(runs.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_unshareable_refresh_does_not_cost_the_stale_copy() {
    let runs = Runs::default();
    let app = {
        let runs = runs.clone();
        Router::new()
            .route(
                "/total",
                routing::get(move || async move {
                    // The first answer is shareable; later ones set a cookie.
                    let run = runs.bump();
                    sleep(WORK).await;
                    if run == 1 {
                        return "run 1".into_response();
                    }
                    ([(header::SET_COOKIE, "s=1")], format!("run {run}")).into_response()
                }),
            )
            .layer(cached(
                CacheConfig::new()
                    .ttl(TTL)
                    .stale_while_revalidate(Duration::from_secs(10)),
            ))
    };
    assert_eq!(send(&app, get("/total")).await.text(), "run 1");
    sleep(Duration::from_millis(1500)).await;
    // Stale, and a refresh whose answer cannot be stored.
    assert_eq!(
        send(&app, get("/total")).await.role,
        Some(FlightRole::Stale)
    );
    sleep(WORK * 2).await;
    let next = send(&app, get("/total")).await;
    assert_eq!((next.text(), next.role), ("run 1", Some(FlightRole::Stale)));
}

/// A service that panics in `call` itself (not in its future) is a failed
/// origin like any other: the stale copy stands in.
#[tokio::test(start_paused = true)]
async fn a_panic_in_call_serves_stale_if_error() {
    use tower::ServiceExt;
    let armed = Arc::new(AtomicBool::new(false));
    let origin = tower::service_fn({
        let armed = armed.clone();
        move |_: http::Request<axum::body::Body>| {
            assert!(!armed.load(SeqCst), "the origin panics in call");
            async { Ok::<_, std::convert::Infallible>("run 1".into_response()) }
        }
    });
    let config = CacheConfig::new()
        .ttl(TTL)
        .stale_if_error(Duration::from_secs(30));
    let service = tower::ServiceBuilder::new()
        .layer(SingleFlightLayer::share().cache(config))
        .service(origin);
    let read = |response: Response| async move {
        let (parts, body) = response.into_parts();
        let body = http_body_util::BodyExt::collect(body).await.unwrap();
        (parts.status, body.to_bytes())
    };
    let first = service.clone().oneshot(get("/p")).await.unwrap();
    assert_eq!(read(first.map(axum::body::Body::new)).await.1, "run 1");

    armed.store(true, SeqCst);
    sleep(TTL + Duration::from_millis(500)).await;
    let later = service.clone().oneshot(get("/p")).await.unwrap();
    let (status, body) = read(later.map(axum::body::Body::new)).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"run 1"[..]));
}

/// A cache hit runs nothing: a caller that keeps its service keeps none of
/// the inner service's capacity.
#[tokio::test(start_paused = true)]
async fn a_cache_hit_whose_caller_keeps_its_service_holds_no_permit() {
    use tower::ServiceExt;
    let app: Router = Router::new().route("/fast", routing::get(|| async { "fast" }));
    let service = tower::ServiceBuilder::new()
        .layer(SingleFlightLayer::share().cache(CacheConfig::new().ttl(TTL)))
        .layer(tower::limit::ConcurrencyLimitLayer::new(1))
        .service(app);
    let warm = service.clone().oneshot(get("/fast")).await.unwrap();
    assert_eq!(warm.status(), StatusCode::OK);

    let mut kept = service.clone();
    let hit = call_kept(&mut kept, get("/fast")).await.await.unwrap();
    assert_eq!(
        hit.extensions().get::<FlightRole>(),
        Some(&FlightRole::CacheHit)
    );
    assert!(gets_ready(&service).await, "a cache hit's permit was kept");
}

/// Observation 2: keys are weighed, so unique long queries cannot fill the
/// heap past `max_bytes`; queries past the key cap are never kept at all.
#[tokio::test(start_paused = true)]
async fn unique_long_queries_are_weighed() {
    const MAX_BYTES: u64 = 1024 * 1024;
    let layer = SingleFlightLayer::share().cache(CacheConfig::new().max_bytes(MAX_BYTES));
    let app = Router::new()
        .route("/echo", routing::get(|| async { "small" }))
        .layer(layer.clone());
    let cache = layer.response_cache().expect("a cache").clone();
    for n in 0..400 {
        send(&app, get(&format!("/echo?pad={n:08}{}", "q".repeat(6000)))).await;
    }
    cache.run_pending_tasks();
    assert!(cache.weighted_size() <= MAX_BYTES);
    assert!(
        cache.entry_count() * 6000 <= MAX_BYTES,
        "{} entries of 6 KB each",
        cache.entry_count()
    );
    for n in 0..10 {
        send(
            &app,
            get(&format!("/echo?pad={n:08}{}", "q".repeat(60_000))),
        )
        .await;
    }
    assert_eq!(layer.stats().unkeyed, 10);
}
