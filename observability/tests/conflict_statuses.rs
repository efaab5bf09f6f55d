//! The `Flight` extractor and the reject layer answer a duplicate with one
//! `ConflictResponse`, and count it alike: by the status it was sent with.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use axum::{extract::Path, http::StatusCode, routing::post, Extension, Router};
use common::{request, send_all};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tokio::time::sleep;
use tower_singleflight::{
    extract::Flight,
    layer::{AlreadyRunning, ConflictResponse},
    FlightRole, Flights, SingleFlightLayer,
};

#[tokio::test(start_paused = true)]
async fn extractor_and_layer_count_a_custom_conflict_by_the_same_status() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let conflict = ConflictResponse::custom(|_: &AlreadyRunning| {
        let mut response = http::Response::new("busy");
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        response
    });
    let extractor = Router::new()
        .route(
            "/jobs/{id}",
            post(|flight: Flight<Path<String>>| async move {
                flight.spawn(|_lease| sleep(Duration::from_secs(10)));
                StatusCode::ACCEPTED
            }),
        )
        .layer(Extension(conflict.clone()))
        .layer(Extension(Flights::<String>::new().with_name("extractor")));
    let layered = Router::new()
        .route(
            "/jobs/{id}",
            post(|| async {
                sleep(Duration::from_secs(10)).await;
                StatusCode::ACCEPTED
            }),
        )
        .layer(
            SingleFlightLayer::reject()
                .name("layer")
                .conflict_response(conflict),
        );
    let from_extractor = send_all(&extractor, (0..2).map(|_| request("POST", "/jobs/7"))).await;
    let from_layer = send_all(&layered, (0..2).map(|_| request("POST", "/jobs/7"))).await;

    // One snapshot: the debugging recorder's counters are read once.
    let snapshot = snapshotter.snapshot().into_vec();
    let statuses = |layer: &str| -> Vec<String> {
        snapshot
            .iter()
            .filter(|(key, _, _, value)| {
                key.key().name() == "singleflight_generated_responses_total"
                    && key
                        .key()
                        .labels()
                        .any(|l| l.key() == "layer" && l.value() == layer)
                    && matches!(value, DebugValue::Counter(n) if *n > 0)
            })
            .flat_map(|(key, ..)| {
                key.key()
                    .labels()
                    .filter(|l| l.key() == "status")
                    .map(|l| l.value().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let roles = |replies: &[common::Reply]| -> Vec<Option<FlightRole>> {
        replies
            .iter()
            .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
            .map(|r| r.role)
            .collect()
    };
    assert_eq!(roles(&from_extractor), [Some(FlightRole::Rejected)]);
    assert_eq!(roles(&from_layer), [Some(FlightRole::Rejected)]);
    assert_eq!(statuses("layer"), ["429"], "the layer counts what it sent");
    assert_eq!(
        statuses("extractor"),
        ["429"],
        "the extractor sent a 429 but counted another status"
    );
}
