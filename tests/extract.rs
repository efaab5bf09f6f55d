//! The `Flight` extractor: leases that outlive the request, with progress.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering::SeqCst},
        Arc,
    },
    time::Duration,
};

use axum::{
    extract::{FromRef, Path, Query},
    http::{header, StatusCode},
    routing::post,
    Extension, Router,
};
use common::{count, eventually, request, send, send_all, until, Runs};
use serde::Deserialize;
use serde_json::json;
use tokio::{sync::Notify, time::sleep};
use tower_singleflight::{
    extract::{Flight, FromState},
    flight::FlightStatus,
    layer::{AlreadyRunning, ConflictResponse},
    FlightRole, Flights, Progress, SingleFlightLayer,
};

type Phase = (String, String);

#[derive(Deserialize)]
struct Job {
    ms: Option<u64>,
    lease_ms: Option<u64>,
}

/// What the resume route's background jobs do, seen from the test.
#[derive(Clone, Default)]
struct Jobs {
    started: Runs,
    finished: Runs,
}

/// `POST /flows/{flow}/phases/{phase}/resume?ms=N&lease_ms=L`: answers 202
/// at once and runs a job of N ms in ten steps, reporting progress.
fn resume_app(flights: &Flights<Phase>, jobs: &Jobs) -> Router {
    let jobs = jobs.clone();
    let resume = move |flight: Flight<Path<Phase>>, Query(job): Query<Job>| async move {
        if let Some(lease) = job.lease_ms {
            flight.guard().renew(Duration::from_millis(lease)).await;
        }
        let step = Duration::from_millis(job.ms.unwrap_or(2000) / 10);
        flight.guard().report(Progress::steps(0, 10)).await;
        flight.spawn(move |lease| async move {
            jobs.started.bump();
            for done in 0..10 {
                lease.report(Progress::steps(done, 10)).await;
                sleep(step).await;
            }
            jobs.finished.bump();
        });
        (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "status": "started" })),
        )
    };
    Router::new()
        .route("/flows/{flow}/phases/{phase}/resume", post(resume))
        .layer(Extension(flights.clone()))
}

fn resume(uri: &str) -> http::Request<axum::body::Body> {
    request("POST", uri)
}

fn phase(flow: &str, phase: &str) -> Phase {
    (flow.to_owned(), phase.to_owned())
}

#[tokio::test(start_paused = true)]
async fn one_of_five_resumes_starts_the_job_the_others_see_its_progress() {
    let (flights, jobs) = (Flights::new(), Jobs::default());
    let app = resume_app(&flights, &jobs);

    let replies = send_all(&app, (0..5).map(|_| resume("/flows/f1/phases/p1/resume"))).await;

    assert_eq!(count(&replies, StatusCode::ACCEPTED), 1);
    assert_eq!(count(&replies, StatusCode::CONFLICT), 4);
    until(|| jobs.started.get() == 1).await;
    for conflict in replies
        .iter()
        .filter(|reply| reply.status == StatusCode::CONFLICT)
    {
        let body = conflict.json();
        assert_eq!(body["status"], "already_running");
        assert_eq!(body["progress"]["total"], 10);
        assert!(conflict.headers.contains_key(header::RETRY_AFTER));
    }

    // Half way through, a duplicate sees how far the job got.
    // Steps report every 200 ms; 1050 ms in, five are done.
    sleep(Duration::from_millis(1050)).await;
    let midway = send(&app, resume("/flows/f1/phases/p1/resume")).await;
    assert_eq!(midway.json()["progress"], json!({ "done": 5, "total": 10 }));
    assert_eq!(midway.json()["running_for_ms"], 1050);

    eventually(|| jobs.finished.get() == 1).await;
    let again = send(&app, resume("/flows/f1/phases/p1/resume")).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    eventually(|| jobs.finished.get() == 2).await;
    assert_eq!(jobs.started.get(), 2, "one job per accepted call");
}

#[tokio::test(start_paused = true)]
async fn retry_after_follows_how_long_the_keys_runs_take() {
    let (flights, jobs) = (Flights::new(), Jobs::default());
    let app = resume_app(&flights, &jobs);
    let uri = "/flows/f1/phases/p1/resume?ms=10000";

    assert_eq!(send(&app, resume(uri)).await.status, StatusCode::ACCEPTED);
    let first = send(&app, resume(uri)).await;
    assert_eq!(first.headers[header::RETRY_AFTER], "1", "no history yet");
    eventually(|| jobs.finished.get() == 1).await;

    assert_eq!(send(&app, resume(uri)).await.status, StatusCode::ACCEPTED);
    sleep(Duration::from_secs(4)).await;
    let later = send(&app, resume(uri)).await;
    assert_eq!(
        later.headers[header::RETRY_AFTER],
        "6",
        "a 10 s run, 4 s in"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_background_job_frees_the_key() {
    let flights: Flights<Phase> = Flights::new();
    let crash = Arc::new(AtomicBool::new(true));
    let app = {
        let crash = crash.clone();
        let handler = move |flight: Flight<Path<Phase>>| async move {
            let crash = crash.load(SeqCst);
            let job = flight.spawn(move |_lease| async move {
                assert!(!crash, "the job crashed");
            });
            if crash {
                assert!(job.await.unwrap_err().is_panic());
            }
            StatusCode::ACCEPTED
        };
        Router::new()
            .route("/flows/{flow}/phases/{phase}/resume", post(handler))
            .layer(Extension(flights.clone()))
    };
    assert_eq!(
        send(&app, resume("/flows/f/phases/p/resume")).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(flights.status(&phase("f", "p")).await, FlightStatus::Idle);
    crash.store(false, SeqCst);
    assert_eq!(
        send(&app, resume("/flows/f/phases/p/resume")).await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_job_loses_its_key_at_the_ttl_and_its_drop_spares_the_new_holder() {
    let ttl = Duration::from_secs(10);
    let flights: Flights<&str> = Flights::new().with_lease_ttl(ttl);
    let release_hung_job = Arc::new(Notify::new());
    let hung = flights
        .spawn("job", ttl, |_lease| {
            let release = release_hung_job.clone();
            async move { release.notified().await }
        })
        .await
        .unwrap();

    sleep(ttl - Duration::from_millis(1)).await;
    assert!(
        flights.try_acquire("job", ttl).await.is_err(),
        "held at TTL - 1 ms"
    );
    sleep(Duration::from_millis(2)).await;
    assert_eq!(
        flights.status(&"job").await,
        FlightStatus::Idle,
        "free at TTL + 1 ms"
    );

    let new = flights
        .try_acquire("job", ttl)
        .await
        .expect("a new holder acquires");
    release_hung_job.notify_one();
    hung.await.unwrap();
    assert!(
        new.is_current().await,
        "the hung job's drop spared the new holder"
    );
    assert!(matches!(
        flights.status(&"job").await,
        FlightStatus::Running { generation: 2, .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn renew_keeps_a_live_jobs_key() {
    let ttl = Duration::from_secs(10);
    let flights: Flights<&str> = Flights::new();
    let guard = flights.try_acquire("job", ttl).await.unwrap();
    for _ in 0..5 {
        sleep(ttl - Duration::from_secs(1)).await;
        assert!(guard.renew(ttl).await);
    }
    assert!(guard.is_current().await, "45 s into a 10 s lease, renewed");
}

#[tokio::test(start_paused = true)]
async fn status_is_idle_after_every_way_a_job_ends() {
    let ttl = Duration::from_secs(10);
    let flights: Flights<&str> = Flights::new();
    let key = "job";

    // Completion.
    let done = flights.spawn(key, ttl, |_lease| async {}).await.unwrap();
    done.await.unwrap();
    assert_eq!(
        flights.status(&key).await,
        FlightStatus::Idle,
        "after completion"
    );

    // Panic.
    let crashed = flights
        .spawn(key, ttl, |_lease| async { panic!("job failed") })
        .await
        .unwrap();
    assert!(crashed.await.unwrap_err().is_panic());
    assert_eq!(
        flights.status(&key).await,
        FlightStatus::Idle,
        "after a panic"
    );

    // Abort.
    // The job keeps nothing: the task still holds the key while it runs.
    let endless = flights
        .spawn(key, ttl, |_lease| std::future::pending::<()>())
        .await
        .unwrap();
    assert!(matches!(
        flights.status(&key).await,
        FlightStatus::Running { .. }
    ));
    endless.abort();
    assert!(endless.await.unwrap_err().is_cancelled());
    assert_eq!(
        flights.status(&key).await,
        FlightStatus::Idle,
        "after an abort"
    );

    // Drop.
    let guard = flights.try_acquire(key, ttl).await.unwrap();
    drop(guard);
    assert_eq!(
        flights.status(&key).await,
        FlightStatus::Idle,
        "after a drop"
    );

    // Expiry, the guard still alive.
    let _hung = flights.try_acquire(key, ttl).await.unwrap();
    sleep(ttl).await;
    assert_eq!(
        flights.status(&key).await,
        FlightStatus::Idle,
        "after expiry"
    );
    assert!(flights.holders().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn without_a_table_the_extractor_answers_a_clear_500() {
    let app = Router::new().route(
        "/flows/{flow}/phases/{phase}/resume",
        post(|_flight: Flight<Path<Phase>>| async { StatusCode::ACCEPTED }),
    );
    let reply = send(&app, resume("/flows/f/phases/p/resume")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        reply.text().contains("Missing single-flight table"),
        "{}",
        reply.text()
    );
    assert!(reply.text().contains("Extension"));
}

#[tokio::test(start_paused = true)]
async fn a_key_the_extractor_cannot_parse_is_its_own_rejection() {
    let flights: Flights<(String, u32)> = Flights::new();
    let app = Router::new()
        .route(
            "/flows/{flow}/phases/{phase}/resume",
            post(|_flight: Flight<Path<(String, u32)>>| async { StatusCode::ACCEPTED }),
        )
        .layer(Extension(flights.clone()));
    let reply = send(&app, resume("/flows/f/phases/not-a-number/resume")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(flights.holders().await.is_empty());
}

#[derive(Clone)]
struct AppState {
    flights: Flights<Phase>,
}

impl FromRef<AppState> for Flights<Phase> {
    fn from_ref(state: &AppState) -> Self {
        state.flights.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn the_table_can_live_in_the_router_state() {
    let state = AppState {
        flights: Flights::new(),
    };
    let app = Router::new()
        .route(
            "/flows/{flow}/phases/{phase}/resume",
            post(|flight: Flight<Path<Phase>, FromState>| async move {
                flight.spawn(|_lease| sleep(Duration::from_secs(1)));
                StatusCode::ACCEPTED
            }),
        )
        .with_state(state.clone());
    let replies = send_all(&app, (0..3).map(|_| resume("/flows/f/phases/p/resume"))).await;
    assert_eq!(count(&replies, StatusCode::ACCEPTED), 1);
    assert_eq!(count(&replies, StatusCode::CONFLICT), 2);
    assert!(matches!(
        state.flights.status(&phase("f", "p")).await,
        FlightStatus::Running { .. }
    ));
}

/// A job route whose extractor and a reject layer's route take one
/// `ConflictResponse`: a duplicate gets the same answer from both.
fn conflicting_apps(conflict: ConflictResponse) -> (Router, Router) {
    let job = post(|flight: Flight<Path<String>>| async move {
        flight.spawn(|_lease| sleep(Duration::from_secs(10)));
        StatusCode::ACCEPTED
    });
    let extractor = Router::new()
        .route("/jobs/{id}", job)
        .layer(Extension(conflict.clone()))
        .layer(Extension(Flights::<String>::new()));
    let layered = Router::new()
        .route(
            "/jobs/{id}",
            post(|| async {
                sleep(Duration::from_secs(10)).await;
                StatusCode::ACCEPTED
            }),
        )
        .layer(SingleFlightLayer::reject().conflict_response(conflict));
    (extractor, layered)
}

#[tokio::test(start_paused = true)]
async fn the_extractor_answers_and_marks_as_the_layer_with_problem_json() {
    let (extractor, layered) = conflicting_apps(ConflictResponse::problem_json());
    for app in [&extractor, &layered] {
        let replies = send_all(app, (0..2).map(|_| resume("/jobs/7"))).await;
        let duplicate = replies
            .iter()
            .find(|reply| reply.status == StatusCode::CONFLICT)
            .expect("one duplicate");
        assert_eq!(
            duplicate.headers[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(duplicate.role, Some(FlightRole::Rejected), "marked alike");
        let body = duplicate.json();
        assert_eq!(body["code"], "already_running");
        assert_eq!(body["status"], 409);
        assert!(duplicate.headers.contains_key(header::RETRY_AFTER));
    }
}

#[tokio::test(start_paused = true)]
async fn the_extractor_answers_with_a_custom_conflict_response() {
    let conflict = ConflictResponse::custom(|busy: &AlreadyRunning| {
        let mut response = http::Response::new(format!("busy since {:?}", busy.running_for()));
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        response
    });
    let (extractor, layered) = conflicting_apps(conflict);
    let from_extractor = send_all(&extractor, (0..2).map(|_| resume("/jobs/7"))).await;
    let from_layer = send_all(&layered, (0..2).map(|_| resume("/jobs/7"))).await;
    for replies in [&from_extractor, &from_layer] {
        assert_eq!(count(replies, StatusCode::TOO_MANY_REQUESTS), 1);
        let duplicate = replies
            .iter()
            .find(|reply| reply.status == StatusCode::TOO_MANY_REQUESTS)
            .expect("one duplicate");
        assert_eq!(duplicate.body, "busy since 0ns");
        assert_eq!(duplicate.headers[header::RETRY_AFTER], "1");
    }
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_stops_the_jobs_then_the_extractor_answers_503_and_the_handler_does_not_run() {
    let flights: Flights<Phase> = Flights::new();
    let (handled, stopped) = (Runs::default(), Runs::default());
    let app = {
        let (handled, stopped) = (handled.clone(), stopped.clone());
        let resume = move |flight: Flight<Path<Phase>>| async move {
            handled.bump();
            flight.spawn(move |lease| async move {
                // An hour of work, unless told to stop.
                tokio::select! {
                    () = lease.cancelled() => { stopped.bump(); }
                    () = sleep(Duration::from_secs(3600)) => {}
                }
            });
            StatusCode::ACCEPTED
        };
        Router::new()
            .route("/flows/{flow}/phases/{phase}/resume", post(resume))
            .layer(Extension(flights.clone()))
    };
    let accepted = send(&app, resume("/flows/f1/phases/p1/resume")).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);

    let started = tokio::time::Instant::now();
    let drained = flights.shutdown(Duration::from_secs(30)).await;
    assert_eq!((drained.finished, drained.still_running), (1, 0));
    assert_eq!(stopped.get(), 1, "the job stopped when told to");
    assert_eq!(started.elapsed(), Duration::ZERO);

    let refused = send(&app, resume("/flows/f1/phases/p2/resume")).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers.contains_key(header::RETRY_AFTER));
    assert_eq!(refused.json()["status"], "unavailable");
    assert_eq!(handled.get(), 1, "the handler did not run during shutdown");
    assert_eq!(
        flights.status(&phase("f1", "p2")).await,
        FlightStatus::Idle,
        "no key was taken"
    );
}
