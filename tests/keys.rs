//! Key extractors through an axum router: extractors that answer a request
//! themselves, and keys made of two.

mod common;

use std::time::Duration;

use axum::{
    http::{request::Parts, HeaderName, Response, StatusCode},
    routing, Router,
};
use common::{call_kept, count, gets_ready, request, send, send_all, with_headers, work_app, Runs};
use tokio::time::sleep;
use tower_singleflight::{
    identity::RequestIdentity,
    key::{self, Extracted, KeyExtractor},
    FlightRole, SingleFlightLayer,
};

const WORK: Duration = Duration::from_millis(300);

fn api_key() -> HeaderName {
    HeaderName::from_static("x-api-key")
}

fn unauthorized(_: &Parts) -> Response<&'static str> {
    let mut response = Response::new("missing API key");
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response
}

#[tokio::test(start_paused = true)]
async fn reject_mode_answers_with_the_extractors_response_and_runs_nothing() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::reject().key(key::header(api_key()).or_reject(unauthorized));
    let app = work_app(layer, &runs, WORK);

    let reply = send(&app, request("POST", "/work")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.text(), "missing API key");
    assert_eq!(reply.role, Some(FlightRole::Rejected));
    assert_eq!(runs.get(), 0, "the service ran for a rejected request");

    // With the key, the lock works as ever.
    let keyed = || with_headers("POST", "/work", &[("x-api-key", "k1")]);
    let replies = send_all(&app, [keyed(), keyed()]).await;
    assert_eq!(count(&replies, StatusCode::OK), 1);
    assert_eq!(count(&replies, StatusCode::CONFLICT), 1);
    assert_eq!(runs.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn share_mode_answers_with_the_extractors_response_and_runs_nothing() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::share().key(
        key::method_path_query()
            .and(key::header(api_key()))
            .or_reject(unauthorized),
    );
    let app = work_app(layer, &runs, WORK);

    let replies = send_all(&app, (0..3).map(|_| request("GET", "/work"))).await;
    assert_eq!(count(&replies, StatusCode::UNAUTHORIZED), 3);
    for reply in &replies {
        assert_eq!(reply.text(), "missing API key");
        assert_eq!(reply.role, Some(FlightRole::Rejected));
    }
    assert_eq!(runs.get(), 0, "the service ran for a rejected request");

    // With the key, one run for the three.
    let keyed = || with_headers("GET", "/work", &[("x-api-key", "k1")]);
    let replies = send_all(&app, [keyed(), keyed(), keyed()]).await;
    assert_eq!(count(&replies, StatusCode::OK), 3);
    assert_eq!(runs.get(), 1);
}

/// An extractor of one's own decides with `extract_or_reject`: here `400`
/// for a malformed job id, a pass for none, a key otherwise.
#[derive(Clone)]
struct JobId;

impl KeyExtractor for JobId {
    type Key = u64;

    fn extract(&self, parts: &Parts) -> Option<u64> {
        parts.headers.get("x-job")?.to_str().ok()?.parse().ok()
    }

    fn extract_or_reject(&self, parts: &Parts, _: &RequestIdentity<'_>) -> Extracted<u64> {
        let Some(value) = parts.headers.get("x-job") else {
            return Extracted::Pass;
        };
        match value.to_str().ok().and_then(|text| text.parse().ok()) {
            Some(id) => Extracted::Key(id),
            None => {
                let mut response = Response::new(bytes::Bytes::from_static(b"bad job id"));
                *response.status_mut() = StatusCode::BAD_REQUEST;
                Extracted::Reject(response)
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_extractor_of_ones_own_can_reject_pass_or_key() {
    for share in [false, true] {
        let runs = Runs::default();
        let app = if share {
            work_app(SingleFlightLayer::share().key(JobId), &runs, WORK)
        } else {
            work_app(SingleFlightLayer::reject().key(JobId), &runs, WORK)
        };
        let method = if share { "GET" } else { "POST" };

        let bad = send(&app, with_headers(method, "/work", &[("x-job", "seven")])).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "share: {share}");
        assert_eq!(bad.text(), "bad job id");
        assert_eq!(runs.get(), 0, "share: {share}");

        let passed = send_all(&app, [request(method, "/work"), request(method, "/work")]).await;
        assert_eq!(count(&passed, StatusCode::OK), 2, "share: {share}");
        assert_eq!(runs.get(), 2, "share: {share}: a pass runs every request");

        let job = || with_headers(method, "/work", &[("x-job", "7")]);
        let keyed = send_all(&app, [job(), job()]).await;
        assert_eq!(runs.get(), 3, "share: {share}: one run for one key");
        let expected = if share { 2 } else { 1 };
        assert_eq!(count(&keyed, StatusCode::OK), expected, "share: {share}");
    }
}

/// The extractor is asked only about requests the layer would key: reject
/// mode lets a `GET` through without asking.
#[tokio::test(start_paused = true)]
async fn requests_the_layer_does_not_key_are_not_rejected() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::reject().key(key::header(api_key()).or_reject(unauthorized));
    let app = work_app(layer, &runs, WORK);
    let reply = send(&app, request("GET", "/work")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(runs.get(), 1);
}

/// A rejected caller that keeps its service holds none of the inner
/// service's capacity.
#[tokio::test(start_paused = true)]
async fn a_rejected_caller_holds_no_permit_in_reject_mode() {
    let layer = SingleFlightLayer::reject().key(key::header(api_key()).or_reject(unauthorized));
    let service = tower::ServiceBuilder::new()
        .layer(layer)
        .layer(tower::limit::ConcurrencyLimitLayer::new(1))
        .service(slow_app());
    let mut kept = service.clone();
    let rejected = call_kept(&mut kept, request("POST", "/work")).await;
    assert_eq!(rejected.await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert!(
        gets_ready(&service).await,
        "the rejected caller kept its permit"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rejected_caller_holds_no_permit_in_share_mode() {
    let layer = SingleFlightLayer::share().key(key::header(api_key()).or_reject(unauthorized));
    let service = tower::ServiceBuilder::new()
        .layer(layer)
        .layer(tower::limit::ConcurrencyLimitLayer::new(1))
        .service(slow_app());
    let mut kept = service.clone();
    let rejected = call_kept(&mut kept, request("GET", "/work")).await;
    assert_eq!(rejected.await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert!(
        gets_ready(&service).await,
        "the rejected caller kept its permit"
    );
}

fn slow_app() -> Router {
    Router::new().route(
        "/work",
        routing::any(|| async {
            sleep(Duration::from_secs(60)).await;
            "done"
        }),
    )
}

/// `and`: the pair of both keys. Same path, other tenant: both run; same
/// both: one runs; no tenant: passes through.
#[tokio::test(start_paused = true)]
async fn and_keys_by_both_and_passes_without_either() {
    let runs = Runs::default();
    let tenant = HeaderName::from_static("x-tenant");
    let layer = SingleFlightLayer::reject().key(key::path().and(key::header(tenant)));
    let app = work_app(layer, &runs, WORK);
    let as_tenant = |tenant: &str| with_headers("POST", "/work", &[("x-tenant", tenant)]);

    let replies = send_all(&app, [as_tenant("a"), as_tenant("b")]).await;
    assert_eq!(count(&replies, StatusCode::OK), 2, "two tenants, two keys");

    let replies = send_all(&app, [as_tenant("a"), as_tenant("a")]).await;
    assert_eq!(
        count(&replies, StatusCode::CONFLICT),
        1,
        "one tenant, one key"
    );

    let replies = send_all(&app, [request("POST", "/work"), request("POST", "/work")]).await;
    assert_eq!(count(&replies, StatusCode::OK), 2, "no tenant: no key");
    assert_eq!(runs.get(), 5);
}

/// `and` with a rejecting half rejects, even when the other half passes.
#[tokio::test(start_paused = true)]
async fn and_rejects_when_either_half_rejects() {
    let runs = Runs::default();
    let tenant = HeaderName::from_static("x-tenant");
    let layer = SingleFlightLayer::reject()
        .key(key::header(tenant).and(key::header(api_key()).or_reject(unauthorized)));
    let app = work_app(layer, &runs, WORK);
    for request in [
        request("POST", "/work"),
        with_headers("POST", "/work", &[("x-tenant", "a")]),
    ] {
        let reply = send(&app, request).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(runs.get(), 0);
}

/// The pair's bytes are the sum of both halves': two header values that
/// are each under `max_key_bytes` but together over it are not keyed.
#[tokio::test(start_paused = true)]
async fn and_counts_the_bytes_of_both_keys() {
    let runs = Runs::default();
    let (a, b) = (
        HeaderName::from_static("x-a"),
        HeaderName::from_static("x-b"),
    );
    let layer = SingleFlightLayer::share()
        .max_key_bytes(1000)
        .key(key::path().and(key::header(a)).and(key::header(b)));
    let app = work_app(layer, &runs, WORK);
    let half = "x".repeat(600);
    let big = || with_headers("GET", "/work", &[("x-a", &half), ("x-b", &half)]);
    let replies = send_all(&app, [big(), big()]).await;
    assert_eq!(count(&replies, StatusCode::OK), 2);
    assert_eq!(runs.get(), 2, "a key over max_key_bytes was coalesced");

    let small = || with_headers("GET", "/work", &[("x-a", "1"), ("x-b", "2")]);
    send_all(&app, [small(), small()]).await;
    assert_eq!(runs.get(), 3, "small keys coalesce");
}

/// Reject mode counts what a key keeps besides the target towards
/// `max_key_bytes`, as share mode does: a header value over it gets `414`
/// instead of a place in the table.
#[tokio::test(start_paused = true)]
async fn reject_mode_counts_the_keys_own_bytes_towards_max_key_bytes() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::reject()
        .max_key_bytes(1000)
        .key(key::path().and(key::header(api_key())));
    let app = work_app(layer.clone(), &runs, WORK);
    let long = "k".repeat(2000);
    let reply = send(&app, with_headers("POST", "/work", &[("x-api-key", &long)])).await;
    assert_eq!(reply.status, StatusCode::URI_TOO_LONG);
    assert_eq!(runs.get(), 0);
    assert_eq!(layer.stats().unkeyed, 1);

    let reply = send(&app, with_headers("POST", "/work", &[("x-api-key", "k1")])).await;
    assert_eq!(reply.status, StatusCode::OK);
}

/// An extractor that says its keys keep every byte there is.
#[derive(Clone)]
struct Boundless;

impl KeyExtractor for Boundless {
    type Key = ();

    fn extract(&self, _: &Parts) -> Option<()> {
        Some(())
    }

    fn key_bytes(&self, _: &()) -> usize {
        usize::MAX
    }
}

/// A user's `key_bytes` near `usize::MAX` is over any bound, never an
/// overflow: the request passes through (share) or gets `414` (reject).
#[tokio::test(start_paused = true)]
async fn a_key_of_usize_max_bytes_is_too_long_not_an_overflow() {
    let runs = Runs::default();
    let share = work_app(SingleFlightLayer::share().key(Boundless), &runs, WORK);
    let replies = send_all(
        &share,
        [
            with_headers("GET", "/work", &[("x-api-key", "a")]),
            with_headers("GET", "/work", &[("x-api-key", "a")]),
        ],
    )
    .await;
    assert_eq!(count(&replies, StatusCode::OK), 2);
    assert_eq!(runs.get(), 2, "too long to key: each ran");

    let reject = work_app(SingleFlightLayer::reject().key(Boundless), &runs, WORK);
    let reply = send(&reject, request("POST", "/work")).await;
    assert_eq!(reply.status, StatusCode::URI_TOO_LONG);
}
