//! An admin router to see and free the keys of a [`Flights`] table.
//!
//! **Never expose it unauthenticated**: it shows what runs and lets whoever
//! reaches it free any key, so that a second copy of a job can start. Mount it
//! behind your own authentication:
//!
//! ```
//! use axum::{
//!     extract::Request,
//!     http::{header, StatusCode},
//!     middleware::{self, Next},
//!     response::Response,
//!     Router,
//! };
//! use tower_singleflight::{admin, Flights};
//!
//! async fn operators_only(request: Request, next: Next) -> Result<Response, StatusCode> {
//!     let token = request.headers().get(header::AUTHORIZATION);
//!     if token.is_some_and(|token| token == "Bearer let-me-in") {
//!         Ok(next.run(request).await)
//!     } else {
//!         Err(StatusCode::UNAUTHORIZED)
//!     }
//! }
//!
//! let jobs: Flights<String> = Flights::new();
//! let app: Router = Router::new().nest(
//!     "/admin",
//!     admin::router(jobs.clone()).layer(middleware::from_fn(operators_only)),
//! );
//! ```
//!
//! Routes, relative to where it is mounted:
//!
//! - `GET /flights`: every key held, with its generation, start, how long it
//!   has run, when its lease ends and its progress; the shared calls running
//!   and their waiters; the table's counters.
//! - `GET /flights/{key}`: one key, by its `Display` form, or `404`.
//! - `DELETE /flights/{key}`: force-release: the holder is locked out (its
//!   drop and renewals do nothing), the key is free, and the answer says
//!   what was released; `404` when the key is idle.
//!
//! Keys are named by their `Display` form. When two held keys show the same
//! (`("a/b", "c")` and `("a", "b/c")` as `a/b/c`), the answer is `409` and
//! nothing is released: make `Display` unambiguous for keys you administer.

use std::{
    fmt::Display,
    hash::Hash,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{extract::Path, routing::get, Json, Router};
use http::StatusCode;
use serde_json::{json, Value};

use crate::{
    flight::{CallInfo, Flights, Holder},
    rejection::millis,
};

/// The admin routes over `flights`; see the [module docs](self).
pub fn router<K, T, S>(flights: Flights<K, T>) -> Router<S>
where
    K: Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    let (one, release) = (flights.clone(), flights.clone());
    Router::new()
        .route("/flights", get(move || list(flights.clone())))
        .route(
            "/flights/{*key}",
            get(move |Path(key): Path<String>| show(one.clone(), key))
                .delete(move |Path(key): Path<String>| force_release(release.clone(), key)),
        )
}

async fn list<K, T>(flights: Flights<K, T>) -> Json<Value>
where
    K: Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    let leases: Vec<Value> = flights
        .holders()
        .await
        .iter()
        .map(|(key, holder)| lease_json(key, holder))
        .collect();
    let calls: Vec<Value> = flights
        .calls()
        .iter()
        .map(|(key, call)| call_json(key, call))
        .collect();
    Json(json!({
        "flights": leases,
        "calls": calls,
        "stats": flights.stats(),
    }))
}

async fn show<K, T>(flights: Flights<K, T>, key: String) -> (StatusCode, Json<Value>)
where
    K: Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    match find(&flights, &key).await {
        Found::One(key, holder) => (StatusCode::OK, Json(lease_json(&key, &holder))),
        Found::None => idle(&key),
        Found::Several => ambiguous(&key),
    }
}

async fn force_release<K, T>(flights: Flights<K, T>, key: String) -> (StatusCode, Json<Value>)
where
    K: Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    let (found, holder) = match find(&flights, &key).await {
        Found::One(found, holder) => (found, holder),
        Found::None => return idle(&key),
        Found::Several => return ambiguous(&key),
    };
    // Only the holding that was looked up: never one that took over since.
    match flights.force_release_if(&found, holder.lease()).await {
        Some(released) => {
            tracing::warn!(key = %found, generation = released.generation(), "lease force-released");
            let released = lease_json(&found, &released);
            (StatusCode::OK, Json(json!({ "released": released })))
        }
        // Released or expired between the lookup and now.
        None => idle(&key),
    }
}

/// What a `Display` form names among the held keys.
enum Found<K> {
    One(K, Holder),
    None,
    Several,
}

async fn find<K, T>(flights: &Flights<K, T>, shown: &str) -> Found<K>
where
    K: Display + Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    let mut matches = flights
        .holders()
        .await
        .into_iter()
        .filter(|(key, _)| key.to_string() == shown);
    match (matches.next(), matches.next()) {
        (Some((key, holder)), None) => Found::One(key, holder),
        (None, _) => Found::None,
        (Some(_), Some(_)) => Found::Several,
    }
}

fn ambiguous(key: &str) -> (StatusCode, Json<Value>) {
    let body = json!({
        "status": "ambiguous",
        "key": key,
        "message": "several held keys show as this; nothing was done",
    });
    (StatusCode::CONFLICT, Json(body))
}

fn idle(key: &str) -> (StatusCode, Json<Value>) {
    let body = json!({ "status": "idle", "key": key, "message": "nothing holds this key" });
    (StatusCode::NOT_FOUND, Json(body))
}

fn lease_json<K: Display>(key: &K, holder: &Holder) -> Value {
    let running_for = holder.running_for();
    json!({
        "key": key.to_string(),
        "generation": holder.generation(),
        "fencing_token": holder.lease().token(),
        "replica": holder.replica(),
        "started_at_ms": unix_millis_ago(running_for),
        "running_for_ms": millis(running_for),
        "lease_expires_in_ms": millis(holder.expires_in()),
        "progress": holder.progress().map(|progress| progress.to_json()),
    })
}

fn call_json<K: Display>(key: &K, call: &CallInfo) -> Value {
    json!({
        "key": key.to_string(),
        "waiters": call.waiters,
        "running_for_ms": millis(call.started.elapsed()),
    })
}

/// Wall-clock time, in Unix milliseconds, `ago` before now.
fn unix_millis_ago(ago: Duration) -> u64 {
    let then = SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH);
    then.duration_since(UNIX_EPOCH).map_or(0, millis)
}
