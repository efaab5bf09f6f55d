//! Reject mode through an axum router: one runs, duplicates get 409.

mod common;

use std::{io, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::Query,
    http::{header, Request, Response, StatusCode},
    routing, Router,
};
use common::{call_kept, count, gets_ready, played, request, send, send_all, spawn, until, Runs};
use http_body_util::BodyExt;
use serde::Deserialize;
use tokio::time::sleep;
use tower::{Service, ServiceExt};
use tower_singleflight::{
    flight::MemoryStore, key, layer::AlreadyRunning, layer::RejectLayer, FlightRole, Flights,
    SingleFlightLayer,
};

#[derive(Deserialize)]
struct Work {
    ms: Option<u64>,
}

/// `POST /jobs/{name}?ms=N`, keyed by path: sleeps N ms (default 1000).
fn jobs_app(layer: RejectLayer<key::PathOnly>, runs: &Runs) -> Router {
    let runs = runs.clone();
    Router::new()
        .route(
            "/jobs/{name}",
            routing::post(move |Query(work): Query<Work>| async move {
                runs.bump();
                sleep(Duration::from_millis(work.ms.unwrap_or(1000))).await;
                axum::Json(serde_json::json!({ "status": "done" }))
            }),
        )
        .layer(layer)
}

fn post(uri: &str) -> Request<Body> {
    request("POST", uri)
}

fn by_path() -> RejectLayer<key::PathOnly> {
    SingleFlightLayer::reject().key(key::path())
}

#[tokio::test(start_paused = true)]
async fn one_of_many_concurrent_triggers_runs_the_rest_get_409() {
    let runs = Runs::default();
    let layer = by_path();
    let app = jobs_app(layer.clone(), &runs);

    let replies = send_all(&app, (0..20).map(|_| post("/jobs/x"))).await;

    assert_eq!(runs.get(), 1);
    assert_eq!(count(&replies, StatusCode::OK), 1);
    assert_eq!(count(&replies, StatusCode::CONFLICT), 19);
    assert_eq!(played(&replies, FlightRole::Rejected), 19);
    for reply in replies
        .iter()
        .filter(|reply| reply.status == StatusCode::CONFLICT)
    {
        assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(reply.headers[header::RETRY_AFTER], "1");
        let body = reply.json();
        assert_eq!(body["status"], "already_running");
        assert!(body["message"].is_string());
        assert_eq!(body["running_for_ms"], 0, "paused time: rejected at once");
    }

    let next = send(&app, post("/jobs/x")).await;
    assert_eq!(
        next.status,
        StatusCode::OK,
        "the key is free once the job ended"
    );
    assert_eq!(runs.get(), 2);
    assert_eq!(layer.stats().leases_held, 0);
}

#[tokio::test(start_paused = true)]
async fn running_for_reports_how_long_the_holder_has_run() {
    let runs = Runs::default();
    let app = jobs_app(by_path(), &runs);
    let holder = spawn(&app, post("/jobs/x"));
    until(|| runs.get() == 1).await;
    sleep(Duration::from_millis(250)).await;
    let duplicate = send(&app, post("/jobs/x?ms=5")).await;
    assert_eq!(duplicate.json()["running_for_ms"], 250);
    assert_eq!(holder.await.unwrap().status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn different_keys_run_side_by_side() {
    let runs = Runs::default();
    let app = jobs_app(by_path(), &runs);
    let replies = send_all(&app, ["/jobs/a", "/jobs/b", "/jobs/c"].map(post)).await;
    assert_eq!((runs.get(), count(&replies, StatusCode::OK)), (3, 3));
}

#[tokio::test(start_paused = true)]
async fn the_lease_ends_at_its_ttl_and_the_old_holder_cannot_free_the_new_one() {
    let ttl = Duration::from_secs(10);
    let runs = Runs::default();
    let layer = by_path().lease_ttl(ttl);
    let app = jobs_app(layer.clone(), &runs);

    // A job that hangs far past its lease.
    let hung = spawn(&app, post("/jobs/x?ms=3600000"));
    until(|| runs.get() == 1).await;

    sleep(ttl - Duration::from_millis(1)).await;
    let early = send(&app, post("/jobs/x?ms=1")).await;
    assert_eq!(early.status, StatusCode::CONFLICT, "held at TTL - 1 ms");

    sleep(Duration::from_millis(2)).await;
    let new_holder = spawn(&app, post("/jobs/x?ms=5000"));
    until(|| runs.get() == 2).await;

    // The hung request finally goes away; its guard must not free the key.
    hung.abort();
    assert!(hung.await.unwrap_err().is_cancelled());
    let duplicate = send(&app, post("/jobs/x?ms=1")).await;
    assert_eq!(
        duplicate.status,
        StatusCode::CONFLICT,
        "the new holder still holds"
    );

    assert_eq!(new_holder.await.unwrap().status, StatusCode::OK);
    assert_eq!(layer.stats().leases_held, 0);
}

#[tokio::test(start_paused = true)]
async fn the_lease_lasts_until_the_response_body_is_done() {
    let runs = Runs::default();
    let app = jobs_app(by_path(), &runs);

    let response = app.clone().oneshot(post("/jobs/x?ms=1")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let duplicate = send(&app, post("/jobs/x?ms=1")).await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT, "body not sent yet");

    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, r#"{"status":"done"}"#);
    assert_eq!(
        send(&app, post("/jobs/x?ms=1")).await.status,
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_response_frees_the_key() {
    let runs = Runs::default();
    let app = jobs_app(by_path(), &runs);
    let response = app.clone().oneshot(post("/jobs/x?ms=1")).await.unwrap();
    drop(response);
    assert_eq!(
        send(&app, post("/jobs/x?ms=1")).await.status,
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_request_frees_the_key() {
    let runs = Runs::default();
    let app = jobs_app(by_path(), &runs);
    let request = spawn(&app, post("/jobs/x"));
    until(|| runs.get() == 1).await;
    request.abort();
    let _ = request.await;
    assert_eq!(
        send(&app, post("/jobs/x?ms=1")).await.status,
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_frees_the_key() {
    let runs = Runs::default();
    let app = {
        let runs = runs.clone();
        Router::new()
            .route(
                "/jobs/{name}",
                routing::post(move || async move {
                    if runs.bump() == 1 {
                        panic!("job crashed");
                    }
                    "done"
                }),
            )
            .layer(by_path())
    };
    let crashed = spawn(&app, post("/jobs/x"));
    assert!(crashed.await.unwrap_err().is_panic());
    let next = send(&app, post("/jobs/x")).await;
    assert_eq!((next.status, next.text()), (StatusCode::OK, "done"));
}

#[tokio::test(start_paused = true)]
async fn an_inner_error_is_passed_through_and_frees_the_key() {
    let runs = Runs::default();
    let inner = {
        let runs = runs.clone();
        tower::service_fn(move |_request: Request<Body>| {
            let run = runs.bump();
            async move {
                if run == 1 {
                    Err(io::Error::other("backend down"))
                } else {
                    Ok(Response::new(Body::from("ok")))
                }
            }
        })
    };
    let mut service = tower::ServiceBuilder::new()
        .layer(SingleFlightLayer::reject())
        .service(inner);

    let error = service
        .ready()
        .await
        .unwrap()
        .call(post("/jobs/x"))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "backend down",
        "the error type is the inner one"
    );
    let response = service
        .ready()
        .await
        .unwrap()
        .call(post("/jobs/x"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_key_pass_through() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::reject()
        .key(|parts: &http::request::Parts| parts.headers.get("x-job").cloned())
        .expose_role();
    let app = {
        let runs = runs.clone();
        Router::new()
            .route(
                "/run",
                routing::post(move || async move {
                    runs.bump();
                    sleep(Duration::from_millis(100)).await;
                }),
            )
            .layer(layer)
    };
    let replies = send_all(&app, (0..4).map(|_| post("/run"))).await;
    assert_eq!(runs.get(), 4);
    assert_eq!(played(&replies, FlightRole::Bypass), 4);
    assert_eq!(replies[0].headers["x-singleflight-role"], "bypass");
}

#[tokio::test(start_paused = true)]
async fn problem_json_is_available() {
    let runs = Runs::default();
    let app = jobs_app(by_path().problem_json(), &runs);
    let replies = send_all(&app, (0..2).map(|_| post("/jobs/x"))).await;
    let conflict = replies
        .iter()
        .find(|r| r.status == StatusCode::CONFLICT)
        .unwrap();
    assert_eq!(
        conflict.headers[header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert_eq!(conflict.json()["status"], 409);
    assert_eq!(conflict.json()["code"], "already_running");
}

#[tokio::test(start_paused = true)]
async fn the_conflict_response_can_be_replaced() {
    let runs = Runs::default();
    let layer =
        by_path()
            .retry_after(Duration::from_secs(30))
            .on_conflict(|busy: &AlreadyRunning| {
                Response::builder()
                    .status(StatusCode::ACCEPTED)
                    .body(format!("still working (generation {})", busy.generation()))
                    .unwrap()
            });
    let app = jobs_app(layer, &runs);
    let replies = send_all(&app, (0..2).map(|_| post("/jobs/x"))).await;
    let duplicate = &replies[1];
    assert_eq!(duplicate.status, StatusCode::ACCEPTED);
    assert_eq!(duplicate.text(), "still working (generation 1)");
    assert_eq!(duplicate.headers[header::RETRY_AFTER], "30");
    assert_eq!(duplicate.role, Some(FlightRole::Rejected));
}

#[tokio::test(start_paused = true)]
async fn no_lease_is_left_after_100_000_requests_over_unique_keys() {
    let runs = Runs::default();
    let store = Arc::new(MemoryStore::new());
    let layer = SingleFlightLayer::reject().flights(Flights::with_store(store.clone()));
    let app = {
        let runs = runs.clone();
        Router::new()
            .route(
                "/jobs/{id}",
                routing::post(move || async move { runs.bump().to_string() }),
            )
            .layer(layer.clone())
    };
    for batch in 0..100 {
        let requests = (0..1000).map(|i| post(&format!("/jobs/{}", batch * 1000 + i)));
        let replies = send_all(&app, requests).await;
        assert_eq!(count(&replies, StatusCode::OK), 1000);
    }
    let stats = layer.stats();
    assert_eq!(
        (stats.leaders, stats.leases_held, stats.rejected),
        (100_000, 0, 0)
    );
    assert!(store.is_empty(), "no entry is left in the lease store");
}

#[tokio::test(start_paused = true)]
async fn safe_methods_pass_through_by_default() {
    let runs = Runs::default();
    let app = {
        let runs = runs.clone();
        Router::new()
            .route(
                "/jobs/{name}",
                routing::get(|| async { "status" }).post(move || async move {
                    runs.bump();
                    sleep(Duration::from_secs(1)).await;
                    "done"
                }),
            )
            .layer(by_path().expose_role())
    };
    let job = spawn(&app, post("/jobs/x"));
    until(|| runs.get() == 1).await;
    for method in ["GET", "HEAD", "OPTIONS"] {
        let probe = send(&app, request(method, "/jobs/x")).await;
        assert_eq!(probe.role, Some(FlightRole::Bypass), "{method}");
        assert_ne!(probe.status, StatusCode::CONFLICT, "{method}");
    }
    assert_eq!(job.await.unwrap().status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_lease_ttl_of_duration_max_means_no_ttl() {
    let runs = Runs::default();
    let app = jobs_app(by_path().lease_ttl(Duration::MAX), &runs);
    let replies = send_all(&app, (0..3).map(|_| post("/jobs/x?ms=10"))).await;
    assert_eq!(count(&replies, StatusCode::OK), 1);
    assert_eq!(count(&replies, StatusCode::CONFLICT), 2);
}

/// A caller that keeps its service (a connection) and is answered `409`
/// keeps none of the inner service's capacity: the layer ran nothing for it.
#[tokio::test(start_paused = true)]
async fn a_409_whose_caller_keeps_its_service_holds_no_permit() {
    let app: Router = Router::new().route(
        "/jobs/{name}",
        routing::post(|| async {
            sleep(Duration::from_secs(60)).await;
            "done"
        }),
    );
    let service = tower::ServiceBuilder::new()
        .layer(SingleFlightLayer::reject().key(key::path()))
        .layer(tower::limit::ConcurrencyLimitLayer::new(2))
        .service(app);
    let (mut first, mut duplicate) = (service.clone(), service.clone());
    let running = tokio::spawn(call_kept(&mut first, request("POST", "/jobs/x")).await);
    tokio::task::yield_now().await;
    let rejected = call_kept(&mut duplicate, request("POST", "/jobs/x")).await;
    assert_eq!(rejected.await.unwrap().status(), StatusCode::CONFLICT);

    // One inner call runs; the 409 ran none: the second permit is free.
    assert!(
        gets_ready(&service).await,
        "the 409'd caller's service kept its permit"
    );
    running.abort();
}

#[tokio::test(start_paused = true)]
async fn a_table_shutting_down_waits_for_the_requests_in_flight_then_answers_503() {
    let runs = Runs::default();
    let flights = Flights::new();
    let layer = by_path()
        .flights(flights.clone())
        .retry_after(Duration::from_secs(7));
    let app = jobs_app(layer, &runs);
    let in_flight = spawn(&app, post("/jobs/x?ms=1000"));
    until(|| runs.get() == 1).await;

    let started = tokio::time::Instant::now();
    let drained = flights.shutdown(Duration::from_secs(30)).await;
    assert_eq!((drained.finished, drained.still_running), (1, 0));
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "waited for the lease of the request in flight, no longer"
    );
    assert_eq!(in_flight.await.unwrap().status, StatusCode::OK);

    let refused = send(&app, post("/jobs/y")).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers[header::RETRY_AFTER], "7");
    assert_eq!(refused.json()["status"], "unavailable");
    assert_eq!(refused.role, Some(FlightRole::Rejected));
    assert_eq!(runs.get(), 1, "the service was not called");
}
