//! The admin router: what is held, and force-release.

mod common;

use std::{fmt, time::Duration};

use axum::{http::StatusCode, Router};
use common::{get, request, send};
use serde_json::json;
use tokio::time::sleep;
use tower_singleflight::{admin, flight::FlightStatus, Flights, Progress};

/// A phase of a flow, shown as `flow/phase`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PhaseKey {
    flow: &'static str,
    phase: &'static str,
}

impl fmt::Display for PhaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.flow, self.phase)
    }
}

const KEY: PhaseKey = PhaseKey {
    flow: "f1",
    phase: "p1",
};
const TTL: Duration = Duration::from_secs(60);

fn admin_app(flights: &Flights<PhaseKey>) -> Router {
    Router::new().nest("/admin", admin::router(flights.clone()))
}

#[tokio::test(start_paused = true)]
async fn the_listing_shows_each_held_key() {
    let flights = Flights::new();
    let app = admin_app(&flights);
    let guard = flights.try_acquire(KEY, TTL).await.unwrap();
    assert!(guard.report(Progress::steps(3, 10)).await);
    sleep(Duration::from_millis(1500)).await;

    let listing = send(&app, get("/admin/flights")).await;
    assert_eq!(listing.status, StatusCode::OK);
    let body = listing.json();
    let flight = &body["flights"][0];
    assert_eq!(flight["key"], "f1/p1");
    assert_eq!(flight["generation"], 1);
    assert_eq!(flight["running_for_ms"], 1500);
    assert_eq!(flight["lease_expires_in_ms"], 58_500);
    assert_eq!(flight["progress"], json!({ "done": 3, "total": 10 }));
    assert!(flight["started_at_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(body["stats"]["leases_held"], 1);

    let one = send(&app, get("/admin/flights/f1/p1")).await;
    assert_eq!(
        (one.status, one.json()["key"].clone()),
        (StatusCode::OK, json!("f1/p1"))
    );
    drop(guard);
    let gone = send(&app, get("/admin/flights/f1/p1")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.json()["status"], "idle");
}

#[tokio::test(start_paused = true)]
async fn force_release_locks_the_old_holder_out() {
    let flights = Flights::new();
    let app = admin_app(&flights);
    let old = flights.try_acquire(KEY, TTL).await.unwrap();

    let released = send(&app, request("DELETE", "/admin/flights/f1/p1")).await;
    assert_eq!(released.status, StatusCode::OK);
    assert_eq!(released.json()["released"]["generation"], 1);
    assert_eq!(flights.status(&KEY).await, FlightStatus::Idle);

    let new = flights
        .try_acquire(KEY, TTL)
        .await
        .expect("the key is free");
    assert_eq!(new.lease().generation(), 2, "the generation follows on");
    assert!(!old.renew(TTL).await, "the old holder cannot renew");
    drop(old);
    assert!(
        new.is_current().await,
        "the old holder's drop does nothing to the new one"
    );

    let listing = send(&app, get("/admin/flights")).await;
    assert_eq!(listing.json()["flights"][0]["generation"], 2);
}

#[tokio::test(start_paused = true)]
async fn releasing_an_idle_key_is_a_404() {
    let flights = Flights::new();
    let app = admin_app(&flights);
    let reply = send(&app, request("DELETE", "/admin/flights/f1/p1")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let empty = send(&app, get("/admin/flights")).await;
    assert_eq!(empty.json()["flights"], json!([]));
}

#[tokio::test(start_paused = true)]
async fn shared_calls_are_listed_with_their_waiters() {
    let flights: Flights<PhaseKey, u8> = Flights::new();
    let app = Router::new().nest("/admin", admin::router(flights.clone()));
    let options = tower_singleflight::flight::CallOptions::default();
    let tower_singleflight::flight::Joined::Leader(leader) = flights.join(KEY, &options).unwrap()
    else {
        panic!("first caller leads");
    };
    let _leader = leader.run(std::future::pending());
    let _follower = flights.join(KEY, &options).unwrap();
    let listing = send(&app, get("/admin/flights")).await;
    assert_eq!(listing.json()["calls"][0]["key"], "f1/p1");
    assert_eq!(listing.json()["calls"][0]["waiters"], 2);
}

/// A key whose `Display` can collide: `("a/b", "c")` and `("a", "b/c")`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Pair(&'static str, &'static str);

impl fmt::Display for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0, self.1)
    }
}

#[tokio::test(start_paused = true)]
async fn an_ambiguous_key_is_refused_not_guessed() {
    let flights: Flights<Pair> = Flights::new();
    let app = Router::new().nest("/admin", admin::router(flights.clone()));
    let _one = flights.try_acquire(Pair("a/b", "c"), TTL).await.unwrap();
    let _two = flights.try_acquire(Pair("a", "b/c"), TTL).await.unwrap();
    let reply = send(&app, request("DELETE", "/admin/flights/a/b/c")).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.json()["status"], "ambiguous");
    assert_eq!(flights.holders().await.len(), 2, "nothing was released");
}
