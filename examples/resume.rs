//! Run with: cargo run --example resume
//!
//! The seed use case in full: a "resume this phase" button that users click
//! five times. The first click starts the phase's background job and gets
//! `202 Accepted`; the others get `409` with the job's progress. A status
//! endpoint tells the truth about the job (never "running" once it ended),
//! and an admin router lists and frees the keys.
//!
//! The router is driven in-process so the story prints in a few seconds;
//! `cargo run --example server` serves the same routes over HTTP.

use std::time::Duration;

use axum::{
    body::Body,
    extract::Path,
    http::{Request, StatusCode},
    routing::{get, post},
    Extension, Json, Router,
};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt;
use tower_singleflight::{
    admin, extract::Flight, flight::FlightStatus, flight::LeaseHandle, Flights, Progress,
};

/// A phase of a workflow: the key of its job, shown as `flow/phase`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
struct PhaseKey {
    flow: String,
    phase: String,
}

impl std::fmt::Display for PhaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.flow, self.phase)
    }
}

const STEPS: u64 = 10;
const STEP: Duration = Duration::from_millis(150);

#[tokio::main]
async fn main() {
    // One table for the phase jobs; a crashed or hung job frees its key
    // after ten minutes at the latest.
    let jobs: Flights<PhaseKey> = Flights::new().with_lease_ttl(Duration::from_secs(600));
    let app = app(jobs.clone());

    println!("five clicks on \"resume\" at once:");
    let clicks = (0..5).map(|_| call(&app, "POST", "/flows/f1/phases/p1/resume"));
    for (status, body) in futures_util::future::join_all(clicks).await {
        println!("  {status}  {body}");
    }

    println!("\nthe admin view while it runs:");
    let (_, listing) = call(&app, "GET", "/admin/flights").await;
    println!("  {}", listing["flights"]);

    println!("\nthe status endpoint, until the job is done:");
    loop {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (_, status) = call(&app, "GET", "/flows/f1/phases/p1").await;
        println!("  {status}");
        if status["state"] == "idle" {
            break;
        }
    }

    let (status, _) = call(&app, "POST", "/flows/f1/phases/p1/resume").await;
    println!("\nclicking again once it ended: {status}");
    assert_eq!(status, StatusCode::ACCEPTED);
}

fn app(jobs: Flights<PhaseKey>) -> Router {
    Router::new()
        .route("/flows/{flow}/phases/{phase}/resume", post(resume))
        .route("/flows/{flow}/phases/{phase}", get(status))
        // Mount the admin router behind your own authentication.
        .nest("/admin", admin::router(jobs.clone()))
        .layer(Extension(jobs))
}

/// `409` with progress is answered by the extractor before this runs.
async fn resume(flight: Flight<Path<PhaseKey>>) -> (StatusCode, Json<Value>) {
    flight.guard().report(Progress::steps(0, STEPS)).await;
    flight.spawn(run_phase);
    (StatusCode::ACCEPTED, Json(json!({ "status": "started" })))
}

/// The phase's work, in steps; the task that runs it holds the key.
async fn run_phase(lease: LeaseHandle<PhaseKey>) {
    for done in 0..STEPS {
        let message = format!("step {} of {STEPS}", done + 1);
        if !lease
            .report(Progress::steps(done, STEPS).with_message(message))
            .await
        {
            return; // lease lost (expired or force-released): stop
        }
        tokio::time::sleep(STEP).await;
    }
}

async fn status(
    Extension(jobs): Extension<Flights<PhaseKey>>,
    Path(key): Path<PhaseKey>,
) -> Json<Value> {
    Json(match jobs.status(&key).await {
        FlightStatus::Running {
            progress,
            generation,
            since,
            ..
        } => json!({
            "state": "running",
            "generation": generation,
            "running_for_ms": since.elapsed().as_millis() as u64,
            "progress": progress.map(|progress| progress.to_json()),
        }),
        _ => json!({ "state": "idle" }),
    })
}

/// Sends one request through the router; returns its status and JSON body.
async fn call(app: &Router, method: &str, uri: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .expect("a valid request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a readable body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
