//! What the layer, its table and its cache export through the
//! [`metrics`](https://docs.rs/metrics) facade (feature `metrics`).
//!
//! With the feature on, every instrument below is registered with the
//! process's recorder (the Prometheus exporter, say) the first time its
//! layer, table or cache has something to count, and the request path then
//! costs an atomic add per count. Install the recorder before the first
//! request. Without the feature, nothing is compiled in and this page is
//! the only trace of it.
//!
//! Every instrument carries the label `layer`: the name given to the layer
//! ([`SingleFlightLayer::name`](crate::SingleFlightLayer::name); its response
//! cache shares it) or to a table used on its own, as by the `Flight`
//! extractor ([`Flights::with_name`](crate::Flights::with_name));
//! [`DEFAULT_NAME`] when none was given. Durations are in seconds, sizes in
//! bytes. (`ValueCache` is not instrumented yet: read its `stats()`.)
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `singleflight_requests_total` | counter | `layer`; `role`: `leader`, `follower`, `rejected`, `bypass`, `fallback`, `cache-hit`, `stale` | Responses the layer returned, by the [`FlightRole`](crate::FlightRole) the request played (an error of the inner service is not counted). |
//! | `singleflight_generated_responses_total` | counter | `layer`; `status`: `409`, `500`, `503`, `504` | Answers the layer wrote itself: 409 (the key is held), 503 (a bound was reached, or the lease store is away), 504 (a waiter's `max_wait` or the flight's lease ran out), 500 (the work panicked); also 502, 400 and 414 when they happen. |
//! | `singleflight_unkeyed_requests_total` | counter | `layer`; `reason`: `no_key`, `unkeyable` | Requests that were not keyed: their key extractor returned `None` (`no_key`: they pass through), or they named two hosts or were longer than `max_key_bytes` (`unkeyable`: share mode passes them through, reject mode answers 400 or 414). |
//! | `singleflight_follower_wait_seconds` | histogram | `layer` | How long each follower waited for its leader's outcome, or until it gave up. |
//! | `singleflight_flight_duration_seconds` | histogram | `layer` | How long each flight ran, from its leader's arrival to its outcome, and how long each lease was held. |
//! | `singleflight_leases_held` | gauge | `layer` | Lease guards alive now (reject mode's requests, `Flight` extractors, spawned jobs). |
//! | `singleflight_panics_total` | counter | `layer` | Shared work that panicked, and jobs holding a lease that panicked (`Flight::spawn`, `Flights::spawn`). |
//! | `singleflight_cache_requests_total` | counter | `layer`; `result`: `hit`, `stale`, `miss`, `pass` | Requests that consulted the response cache, by what they found (as [`CacheStats`](crate::cache::CacheStats) counts them). |
//! | `singleflight_cache_stores_total` | counter | `layer` | Answers stored in the response cache. |
//! | `singleflight_cache_evictions_total` | counter | `layer` | Cached entries evicted for room or at the end of their lifetime (not those replaced or invalidated). |
//! | `singleflight_cache_bytes` | gauge | `layer` | Bytes the response cache's entries weigh now, as its `max_bytes` counts them. |
//!
//! Each name is also a constant of this module, for the exporter's settings
//! (histogram buckets, say).
//!
//! With `metrics-exporter-prometheus`, for instance, give the followers'
//! waits buckets of their own with
//! `PrometheusBuilder::new().set_buckets_for_metric(Matcher::Full(FOLLOWER_WAIT.into()), &[0.001, 0.01, 0.1, 1.0, 10.0])`.
//! `observability/examples/metrics.rs` does that and serves them at
//! `/metrics` (`cargo run --example metrics` from the repository's root).

#[cfg(feature = "metrics")]
mod on;

#[cfg(all(feature = "metrics", feature = "cache"))]
pub(crate) use on::CacheMeter;
#[cfg(feature = "metrics")]
pub(crate) use on::{Handles, Meter, Since};

#[cfg(not(feature = "metrics"))]
mod off;

#[cfg(all(not(feature = "metrics"), feature = "cache"))]
pub(crate) use off::CacheMeter;
#[cfg(not(feature = "metrics"))]
pub(crate) use off::{Handles, Meter, Since};

mod name;

pub(crate) use name::Name;

/// Why a request was not keyed (the `reason` label).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum Unkeyed {
    /// Its key extractor returned `None`.
    NoKey = 0,
    /// It named two hosts, or was longer than the layer keys.
    Unkeyable = 1,
}

/// What a request found in a cache (the `result` label).
#[cfg(feature = "cache")]
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum CacheResult {
    Hit = 0,
    Stale = 1,
    Miss = 2,
    Pass = 3,
}

/// The `layer` label of what was not named.
pub const DEFAULT_NAME: &str = "default";

/// Responses the layer returned, by role (counter).
pub const REQUESTS: &str = "singleflight_requests_total";
/// Answers the layer wrote itself, by status (counter).
pub const GENERATED_RESPONSES: &str = "singleflight_generated_responses_total";
/// Requests that were not keyed, by reason (counter).
pub const UNKEYED_REQUESTS: &str = "singleflight_unkeyed_requests_total";
/// How long followers waited (histogram, seconds).
pub const FOLLOWER_WAIT: &str = "singleflight_follower_wait_seconds";
/// How long flights ran and leases were held (histogram, seconds).
pub const FLIGHT_DURATION: &str = "singleflight_flight_duration_seconds";
/// Lease guards alive (gauge).
pub const LEASES_HELD: &str = "singleflight_leases_held";
/// Shared work and jobs that panicked (counter).
pub const PANICS: &str = "singleflight_panics_total";
/// Requests that consulted the response cache, by result (counter).
pub const CACHE_REQUESTS: &str = "singleflight_cache_requests_total";
/// Answers stored in the response cache (counter).
pub const CACHE_STORES: &str = "singleflight_cache_stores_total";
/// Cached entries evicted (counter).
pub const CACHE_EVICTIONS: &str = "singleflight_cache_evictions_total";
/// Bytes the response cache holds (gauge).
pub const CACHE_BYTES: &str = "singleflight_cache_bytes";
