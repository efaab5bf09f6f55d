//! Tower middleware and axum extractors that stop duplicate work in web
//! services.
//!
//! - **Reject mode** ([`SingleFlightLayer::reject`]), for trigger and resume
//!   endpoints: the first request for a key runs; duplicates get
//!   `409 Conflict` with `{"status":"already_running", ...}` and
//!   `Retry-After` at once.
//! - **Share mode** ([`SingleFlightLayer::share`]), for costly reads: the
//!   first request runs once and every identical request waiting on it
//!   receives a copy of that one response.
//! - **A cache that never lets the herd through** ([`CacheConfig`], feature
//!   `cache`): share mode's answers kept in moka, a miss computed once, stale
//!   answers served while one refresh runs, HTTP caching (RFC 9111) spoken
//!   correctly. [`ValueCache`] does the same for values.
//! - **Background jobs** ([`extract::Flight`], feature `axum`): a lease taken
//!   before the handler runs, that the handler moves into a spawned task;
//!   duplicates get `409` with the job's [`Progress`].
//! - **Several replicas** ([`redis`], feature `redis`): the same guarantees
//!   across every process that uses one Redis server.
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::{get, post}, Router};
//! use tower_singleflight::{key, CacheConfig, SingleFlightLayer};
//!
//! async fn report() -> &'static str { "an expensive report" }
//! async fn totals() -> &'static str { "totals" }
//! async fn resume() -> &'static str { "phase resumed" }
//!
//! let reads = Router::new()
//!     .route("/report", get(report))
//!     .layer(SingleFlightLayer::share().max_wait(Duration::from_secs(30)));
//!
//! let cached = Router::new()
//!     .route("/totals", get(totals))
//!     .layer(SingleFlightLayer::share().cache(
//!         CacheConfig::new()
//!             .ttl(Duration::from_secs(1))
//!             .stale_while_revalidate(Duration::from_secs(10)),
//!     ));
//!
//! let triggers = Router::new()
//!     .route("/flows/{id}/resume", post(resume))
//!     // Keyed by path: `?force=1` must not start a second run.
//!     .layer(SingleFlightLayer::reject().key(key::path()));
//!
//! let app: Router = reads.merge(cached).merge(triggers);
//! # let _ = app;
//! ```
//!
//! # What makes two requests the same
//!
//! The default key is the request's **method, host, path and query**: the
//! host lower-cased without a trailing dot or default port, the path and
//! query with percent-escapes of unreserved characters decoded (RFC 3986
//! §6.2.2). In share mode, and for the cache, it is also kept apart **per
//! caller**: the credential headers `Authorization`, `Proxy-Authorization`,
//! `X-Api-Key` and the `Cookie` header by default, or whatever
//! [`identity::CallerIdentity`] declares. Requests naming two hosts, requests
//! with a body, and conditional, range and upgrade requests are never
//! shared. [`key`] has other extractors (the path alone, a header, a request
//! extension, the peer's or the forwarded client's IP), combines them
//! (`key::path().and(key::peer_ip())`) and can answer a request it cannot
//! key (`.or_reject(..)`); what they add to a key can never take the caller
//! out of it.
//!
//! # What it guarantees
//!
//! - A key is never held forever: leases are drop guards (completion, error,
//!   panic and cancellation all release) with a TTL for work that hangs.
//! - A lease that expired cannot release or renew its successor's: every
//!   holding has its own fencing token ([`flight::LeaseId`]).
//! - In share mode a leader whose client leaves does not fail its followers:
//!   its work is handed to a task that finishes it; a panic gives every
//!   waiter `500` (never the panic's message) and frees the key.
//! - A response for one caller or tenant is never handed to another:
//!   `Set-Cookie` (headers or trailers), `no-store`, `private` and `Vary` are
//!   honoured, and what makes two requests the same is decided in one place,
//!   [`identity`].
//! - A stale answer is never served as fresh, and an error is never cached.
//! - Nothing grows without bound: waiters per key, flights, keys
//!   ([`max_key_bytes`](SingleFlightLayer::max_key_bytes)) and buffered bytes
//!   are capped, cached answers are weighed with everything they keep, and no
//!   state remains for a key once its last request ends.
//! - Streams are never held: event streams, and bodies slower than the
//!   [`buffer_budget`](SingleFlightLayer::buffer_budget), reach the leader as
//!   they come.
//! - No header value or setting can panic: `Duration::MAX` means "never".
//!
//! # Where things are
//!
//! | module | what it holds |
//! |---|---|
//! | the root | what most code names: [`SingleFlightLayer`], [`CacheConfig`], [`ValueCache`], [`Flights`], [`Progress`], [`FlightRole`] |
//! | [`layer`] | the Tower service, its futures and body, the `409` and how it is written |
//! | [`key`] | key extractors and their combinators |
//! | [`identity`] | what makes two requests the same: host, path, caller |
//! | [`cache`] | the response cache's handle and counters, [`ValueCache`]'s builder, errors and peeks |
//! | [`flight`] | the framework-agnostic core: the table of keys in flight, leases, lease stores |
//! | [`extract`] | the axum `Flight` extractor (feature `axum`) |
//! | [`admin`] | a router that lists and force-releases leases (feature `axum`) |
//! | [`redis`] | leases, share mode and cache tiers across replicas (feature `redis`) |
//! | [`metrics`] | the names, types and labels of what the feature `metrics` exports |
//!
//! The core, [`Flights`], works without HTTP: to take leases in your own
//! code, or to run any future once for concurrent callers.
//!
//! # Observability
//!
//! A response the layer answered for the request (a shared copy, a cache
//! hit, a `409`) carries its [`FlightRole`] in its extensions
//! ([`expose_role`](SingleFlightLayer::expose_role) marks every response, and
//! adds a header), and the counters are readable as a
//! [`flight::FlightStats`] snapshot. With the feature `metrics`, they go to
//! the `metrics` facade under the names [`metrics`] lists, labelled with the
//! layer's [`name`](SingleFlightLayer::name). Each shared flight has a
//! `debug` span with its role, a digest of its key, the layer and the route
//! (after OpenTelemetry's HTTP conventions), and `tracing` events mark
//! followers, cache answers, rejections, unkeyed requests, timeouts, panics
//! and fallbacks.
//!
//! # Shutdown
//!
//! [`Flights::shutdown`] refuses new work, tells the jobs holding leases to
//! stop ([`flight::LeaseHandle::cancelled`]) and waits for them, for a grace
//! period: call it after `axum::serve(..).with_graceful_shutdown(..)`.

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
pub mod cache;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod extract;
pub mod flight;
mod future;
pub mod identity;
pub mod key;
pub mod layer;
pub mod metrics;
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

// Every Rust snippet of the README compiles (with every feature on, as the
// README's test command builds it).
#[cfg(all(doctest, feature = "axum", feature = "cache", feature = "redis"))]
#[doc = include_str!("../README.md")]
struct ReadmeSnippets;

// What a user starts with; everything else lives in its module.
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub use cache::{CacheConfig, ValueCache};
pub use flight::{Flights, Progress};
pub use layer::SingleFlightLayer;
pub use role::FlightRole;
