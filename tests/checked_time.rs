//! Durations too long to add (`Duration::MAX` settings, huge `Cache-Control`
//! delta-seconds) mean "never", and never a panic turned into a `500`.

mod common;

use std::{io, time::Duration};

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing, Router,
};
use common::{get, send, Reply, Runs};
use tower_singleflight::{
    cache::Peek, layer::ShareLayer, CacheConfig, FlightRole, SingleFlightLayer, ValueCache,
};

const HOUR: Duration = Duration::from_secs(3600);

/// `GET /thing`: answers what `respond` builds, counting runs.
fn thing(layer: ShareLayer, runs: &Runs, respond: fn(usize) -> Response) -> Router {
    let runs = runs.clone();
    Router::new()
        .route(
            "/thing",
            routing::get(move || async move { respond(runs.bump()) }),
        )
        .layer(layer.expose_role())
}

fn plain(run: usize) -> Response {
    format!("run {run}").into_response()
}

/// Two requests, `apart`: both `200`, the second a hit on the first.
async fn cached_apart(apart: Duration, layer: ShareLayer, respond: fn(usize) -> Response) {
    let runs = Runs::default();
    let app = thing(layer, &runs, respond);
    let first = send(&app, get("/thing")).await;
    tokio::time::sleep(apart).await;
    let again = send(&app, get("/thing")).await;
    assert_ok(&first, "run 1");
    assert_ok(&again, "run 1");
    assert_eq!(again.role, Some(FlightRole::CacheHit));
    assert_eq!(runs.get(), 1);
}

fn assert_ok(reply: &Reply, body: &str) {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), body);
}

#[tokio::test(start_paused = true)]
async fn a_cache_ttl_of_duration_max_never_expires() {
    let config = CacheConfig::new().ttl(Duration::MAX);
    cached_apart(HOUR, SingleFlightLayer::share().cache(config), plain).await;
}

#[tokio::test(start_paused = true)]
async fn a_stale_while_revalidate_of_duration_max_is_stored() {
    let config = CacheConfig::new()
        .ttl(Duration::from_secs(7200))
        .stale_while_revalidate(Duration::MAX);
    cached_apart(HOUR, SingleFlightLayer::share().cache(config), plain).await;
}

#[tokio::test(start_paused = true)]
async fn a_stale_if_error_of_duration_max_is_stored() {
    let config = CacheConfig::new()
        .ttl(Duration::from_secs(7200))
        .stale_if_error(Duration::MAX);
    cached_apart(HOUR, SingleFlightLayer::share().cache(config), plain).await;
}

#[tokio::test(start_paused = true)]
async fn a_stale_if_error_header_past_u64_seconds_is_clamped() {
    let layer = SingleFlightLayer::share().cache(CacheConfig::new());
    // Fresh for its max-age; the clamped window must not break storing it.
    cached_apart(Duration::from_secs(30), layer, |run| {
        let cc = "max-age=60, stale-if-error=18446744073709551615";
        ([(header::CACHE_CONTROL, cc)], format!("run {run}")).into_response()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_hit_for_pass_of_duration_max_passes_for_ever() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::share().hit_for_pass(Duration::MAX);
    let app = thing(layer, &runs, |run| {
        (
            [(header::SET_COOKIE, format!("s={run}"))],
            format!("run {run}"),
        )
            .into_response()
    });
    let first = send(&app, get("/thing")).await;
    assert_ok(&first, "run 1");
    tokio::time::sleep(HOUR).await;
    let again = send(&app, get("/thing")).await;
    assert_ok(&again, "run 2");
    assert_eq!(again.role, Some(FlightRole::Bypass), "still passing");
}

#[tokio::test(start_paused = true)]
async fn value_cache_windows_of_duration_max_never_expire() {
    let builders = [
        ValueCache::builder().ttl(Duration::MAX),
        ValueCache::builder().stale_while_revalidate(Duration::MAX),
        ValueCache::builder().stale_if_error(Duration::MAX),
        ValueCache::builder().compute_timeout(Duration::MAX),
    ];
    for builder in builders {
        let cache: ValueCache<&str, u64, io::Error> = builder.build();
        let compute = || async { Ok(42) };
        assert_eq!(cache.get_or_compute("k", compute).await.unwrap(), 42);
        assert_eq!(cache.get_or_compute("k", compute).await.unwrap(), 42);
        let stats = cache.stats();
        assert_eq!((stats.computations, stats.hits), (1, 1));
    }
    let endless: ValueCache<&str, u64, io::Error> =
        ValueCache::builder().ttl(Duration::MAX).build();
    endless
        .get_or_compute("k", || async { Ok(7) })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(86_400 * 365)).await;
    assert_eq!(endless.peek(&"k").await, Peek::Fresh(7));
}
