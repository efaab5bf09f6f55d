//! A request the key extractor rejects (`or_reject`, a 401 for a
//! missing API key: every request of an unauthenticated flood) looks its
//! counter up in the recorder, and allocates its label, per request.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use axum::{http::StatusCode, routing::post, Router};
use common::{request, send};
use http::{HeaderName, Response};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tower_singleflight::{key, key::KeyExtractor, SingleFlightLayer};

static REGISTERED: AtomicUsize = AtomicUsize::new(0);

struct Counting;

impl Recorder for Counting {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        REGISTERED.fetch_add(1, SeqCst);
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test]
async fn a_rejected_request_costs_no_registry_lookup() {
    metrics::set_global_recorder(Counting).unwrap();
    let api_key = HeaderName::from_static("x-api-key");
    let app = Router::new()
        .route("/jobs", post(|| async { StatusCode::ACCEPTED }))
        .layer(
            SingleFlightLayer::reject().key(key::header(api_key).or_reject(|_| {
                let mut response = Response::new("missing API key");
                *response.status_mut() = StatusCode::UNAUTHORIZED;
                response
            })),
        );
    // Warm up: the table's instruments are registered once.
    send(&app, request("POST", "/jobs")).await;
    let before = REGISTERED.load(SeqCst);
    for _ in 0..1000 {
        let reply = send(&app, request("POST", "/jobs")).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let lookups = REGISTERED.load(SeqCst) - before;
    assert_eq!(
        lookups, 0,
        "{lookups} counter lookups for 1000 rejected requests"
    );
}
