//! Run with: cargo run --example resume
//!
//! The seed use case in full: a "resume this phase" button that users click
//! five times. The first click starts the phase's background job and gets
//! `202 Accepted`; the others get `409` with the job's progress. A status
//! endpoint tells the truth about the job (never "running" once it ended),
//! and an admin router lists and frees the keys.
//!
//! Then a graceful shutdown: the app is served with `axum::serve` and
//! `with_graceful_shutdown`; on Ctrl-C (or, so that the example ends by
//! itself, once the story is told) the server stops accepting, and
//! `jobs.shutdown(..)` tells the jobs to stop and waits a moment for them: a
//! phase job stops at its next step, a job that does not listen is reported
//! still running.
//!
//! The story drives the router in-process so it prints in a few seconds;
//! `cargo run --example server` serves the same routes over HTTP.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

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

/// How long the jobs get to stop once the server has.
const GRACE: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // One table for the phase jobs; a crashed or hung job frees its key
    // after ten minutes at the latest.
    let jobs: Flights<PhaseKey> = Flights::new().with_lease_ttl(Duration::from_secs(600));
    let app = app(jobs.clone());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!(
        "serving on http://{} (Ctrl-C stops it; so does the end of the story)\n",
        listener.local_addr()?
    );
    // Whether Ctrl-C cut the story short: then whatever ran is drained,
    // and only the story's own end has known counts to check.
    let interrupted = Arc::new(AtomicBool::new(false));
    let stop = {
        let (app, jobs, interrupted) = (app.clone(), jobs.clone(), Arc::clone(&interrupted));
        async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {
                    println!("\nCtrl-C");
                    interrupted.store(true, Ordering::SeqCst);
                }
                () = story(&app, &jobs) => {}
            }
        }
    };
    // Stops accepting once `stop` resolves, and waits for the requests in
    // flight; the background jobs are the table's to stop.
    axum::serve(listener, app.clone())
        .with_graceful_shutdown(stop)
        .await?;

    println!("\nthe server stopped; the jobs are told to stop, and get {GRACE:?}:");
    let running = held(&jobs).await;
    let drained = jobs.shutdown(GRACE).await;
    let left = held(&jobs).await;
    for key in running.difference(&left) {
        println!("  stopped in time: {key}");
    }
    for key in &left {
        println!("  still running:   {key} (ends with the process)");
    }
    println!(
        "  {} finished, {} still running",
        drained.finished, drained.still_running
    );
    if !interrupted.load(Ordering::SeqCst) {
        // The story's end: one job stopped when told, one ignores it.
        assert_eq!((drained.finished, drained.still_running), (1, 1));
    }

    let (status, body) = call(&app, "POST", "/flows/f1/phases/p2/resume").await;
    println!("\na click that still reaches the app: {status}  {body}");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    Ok(())
}

/// The keys held now, as `flow/phase`.
async fn held(jobs: &Flights<PhaseKey>) -> BTreeSet<String> {
    let holders = jobs.holders().await;
    holders.iter().map(|(key, _)| key.to_string()).collect()
}

/// Clicks, duplicates, the status endpoint and the admin view; ends with
/// two jobs running, for the shutdown to find.
async fn story(app: &Router, jobs: &Flights<PhaseKey>) {
    println!("five clicks on \"resume\" at once:");
    let clicks = (0..5).map(|_| call(app, "POST", "/flows/f1/phases/p1/resume"));
    for (status, body) in futures_util::future::join_all(clicks).await {
        println!("  {status}  {body}");
    }

    println!("\nthe admin view while it runs:");
    let (_, listing) = call(app, "GET", "/admin/flights").await;
    println!("  {}", listing["flights"]);

    println!("\nthe status endpoint, until the job is done:");
    loop {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (_, status) = call(app, "GET", "/flows/f1/phases/p1").await;
        println!("  {status}");
        if status["state"] == "idle" {
            break;
        }
    }

    let (status, _) = call(app, "POST", "/flows/f1/phases/p1/resume").await;
    println!("\nclicking again once it ended: {status}");
    assert_eq!(status, StatusCode::ACCEPTED);

    // A job started by the app itself, written before shutdowns were
    // thought of: it never looks at its lease.
    let export = PhaseKey {
        flow: "nightly".to_owned(),
        phase: "export".to_owned(),
    };
    jobs.spawn(export, Duration::from_secs(600), |_lease| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    })
    .await
    .expect("nothing else exports");
    tokio::time::sleep(STEP * 2).await;
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

/// The phase's work, in steps; the task that runs it holds the key. It
/// stops between two steps when the server shuts down, where a later
/// "resume" picks it up.
async fn run_phase(lease: LeaseHandle<PhaseKey>) {
    for done in 0..STEPS {
        let message = format!("step {} of {STEPS}", done + 1);
        if !lease
            .report(Progress::steps(done, STEPS).with_message(message))
            .await
        {
            return; // lease lost (expired or force-released): stop
        }
        tokio::select! {
            () = tokio::time::sleep(STEP) => {}
            () = lease.cancelled() => {
                println!("  ({}: told to stop during step {}; saved, to resume later)", lease.key(), done + 1);
                return;
            }
        }
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
