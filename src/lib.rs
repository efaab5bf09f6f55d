//! Tower middleware that stops duplicate work in web services.
//!
//! [`SingleFlightLayer`] finds identical in-flight requests by a key (method,
//! normalized host, path and query by default, kept apart per caller in share
//! mode) and, depending on its mode:
//!
//! - **reject** ([`SingleFlightLayer::reject`]), for trigger and resume
//!   endpoints: the first request for a key runs; duplicates get
//!   `409 Conflict` with `{"status":"already_running", ...}` at once;
//! - **share** ([`SingleFlightLayer::share`]), for costly reads: the first
//!   request runs once and every identical request waiting on it receives a
//!   copy of that one response.
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::{get, post}, Router};
//! use tower_singleflight::{key, SingleFlightLayer};
//!
//! async fn report() -> &'static str { "an expensive report" }
//! async fn resume() -> &'static str { "phase resumed" }
//!
//! let reads = Router::new()
//!     .route("/report", get(report))
//!     .layer(SingleFlightLayer::share().max_wait(Duration::from_secs(30)));
//!
//! let triggers = Router::new()
//!     .route("/flows/{id}/resume", post(resume))
//!     // Keyed by path: `?force=1` must not start a second run.
//!     .layer(SingleFlightLayer::reject().key(key::path()));
//!
//! let app: Router = reads.merge(triggers);
//! # let _ = app;
//! ```
//!
//! # What it guarantees
//!
//! - A key is never held forever: leases are drop guards (completion, error,
//!   panic and cancellation all release) with a TTL for work that hangs.
//! - A lease that expired cannot release or renew its successor's: every
//!   holding has its own fencing token ([`LeaseId`]).
//! - In share mode a leader whose client leaves does not fail its followers:
//!   its work is handed to a task that finishes it; a panic gives every
//!   waiter `500` (never the panic's message) and frees the key.
//! - A response for one caller or tenant is never handed to another: what
//!   makes two requests the same is decided in one place, [`identity`]
//!   (normalized host, path and query; the caller's declared
//!   [`CallerIdentity`]); requests naming two hosts, and requests with a
//!   body, are never shared; conditional, range and upgrade requests are not
//!   coalesced; `Set-Cookie` (headers or trailers), `no-store`, `private` and
//!   `Vary` are honoured.
//! - Nothing grows without bound: waiters per key, flights, keys
//!   ([`max_key_bytes`](SingleFlightLayer::max_key_bytes)) and buffered bytes
//!   are capped, cached answers are weighed with everything they keep, and no
//!   state remains for a key once its last request ends.
//! - Streams are never held: event streams, and bodies slower than the
//!   [`buffer_budget`](SingleFlightLayer::buffer_budget), reach the leader as
//!   they come.
//! - No header value or setting can panic: `Duration::MAX` means "never".
//!
//! The framework-agnostic core, [`Flights`], can be used on its own: to take
//! leases in your own code, or to run any future once for concurrent callers.
//!
//! # Several replicas
//!
//! Everything above holds in one process with no setup. With the `redis`
//! feature, it holds across replicas: leases in Redis
//! ([`RedisStore`](crate::redis::RedisStore), for reject mode, the `Flight`
//! extractor and the admin router), share mode with one handler run in the
//! cluster ([`cluster`](SingleFlightLayer::cluster)), and a Redis tier behind
//! the caches (share mode's, and [`ValueCache`]'s through
//! [`ValueCacheBuilder::redis`]); see the [`redis`] module.
//!
//! # Observability
//!
//! A response the layer answered for the request (a shared copy, a cache
//! hit, a `409`) carries its [`FlightRole`] in its extensions
//! ([`expose_role`](SingleFlightLayer::expose_role) marks every response, and
//! adds a header), the
//! counters are readable as a [`FlightStats`] snapshot, and `tracing` events
//! mark acquisitions, releases, timeouts, panics and fallbacks.

#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod admin;
mod body;
mod buffer;
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
mod cache;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod extract;
mod flight;
mod future;
pub mod identity;
pub mod key;
mod layer;
mod mode;
mod pass;
mod policy;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod rejection;
mod role;
mod service;
mod shared;
mod structured;
#[cfg(test)]
mod test_support;
mod time;

pub use body::ResponseBody;
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub use cache::{
    CacheConfig, CacheStats, Peek, ResponseCache, ValueCache, ValueCacheBuilder, ValueCacheStats,
    ValueError,
};
pub use flight::{
    Acquire, CallInfo, CallOptions, FlightError, FlightStats, FlightStatus, Flights, Holder,
    Joined, Leader, LeaseGuard, LeaseHandle, LeaseId, LeaseStore, MemoryStore, Outcome, Overloaded,
    Peers, Progress, Refused, StoreFuture, Unavailable, Waiter,
};
pub use future::{reject, share};
pub use identity::{CallerIdentity, HostSource};
pub use layer::{RejectLayer, ShareLayer, SingleFlightLayer};
pub use mode::{Reject, Share};
pub use rejection::AlreadyRunning;
pub use role::{FlightRole, ROLE_HEADER};
pub use service::SingleFlight;
