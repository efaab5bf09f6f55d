//! The Tower side: [`SingleFlightLayer`], the service it builds, and what
//! that service answers with.
//!
//! Most code only names [`SingleFlightLayer`] (re-exported at the crate
//! root). The rest is here for those who name types: a layer kept in state
//! ([`ShareLayer`], [`RejectLayer`]), the service ([`SingleFlight`]), its
//! response body and futures, and the `409` ([`AlreadyRunning`],
//! [`ConflictResponse`]).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderName, Method, Response};
use tower_layer::Layer;

#[cfg(feature = "cache")]
use crate::cache::CacheConfig;
use crate::{
    flight::{FlightStats, Flights},
    identity::{CallerIdentity, HostSource, Identify},
    key::{self, KeyExtractor, MethodPathQuery, RequestKey},
    service::Config,
};

pub use crate::body::ResponseBody;
pub use crate::future::{reject, share};
pub use crate::mode::{Reject, Share};
pub use crate::rejection::{AlreadyRunning, ConflictResponse};
pub use crate::role::{FlightRole, ROLE_HEADER};
pub use crate::service::SingleFlight;

/// Stops duplicate work: rejects or coalesces identical in-flight requests.
///
/// Two modes, chosen by the constructor:
///
/// - [`reject`](Self::reject), for trigger and resume endpoints: the first
///   request for a key runs; duplicates get `409 Conflict` at once.
/// - [`share`](Self::share), for costly reads: the first request for a key
///   runs once; every identical request that arrives meanwhile receives a
///   copy of its response.
///
/// Requests are "identical" when their keys are equal: method, path and
/// query by default, or whatever [`key`](Self::key) extracts.
///
/// Cloning this layer is cheap and does not create a new table: every route
/// it is applied to shares one set of flights. Errors of the inner service
/// are passed through unchanged; the layer's own answers (`409`, `503`,
/// `504`, `500`) are ordinary responses, so axum needs no
/// `HandleErrorLayer`.
///
/// A response the layer answered for the request (a follower's copy, a cache
/// hit, a `409`) carries its [`FlightRole`] in its
/// extensions; [`expose_role`](Self::expose_role) marks every response, and
/// puts the role in a header too.
#[derive(Debug, Clone)]
#[must_use]
pub struct SingleFlightLayer<M, X = MethodPathQuery> {
    mode: M,
    key: X,
    identify: Identify,
    expose_role: bool,
    trace_keys: bool,
}

/// A layer in share mode, with key extractor `X`: name it to keep a clone (to
/// read its [`stats`](SingleFlightLayer::stats)) in your application state.
pub type ShareLayer<X = MethodPathQuery> = SingleFlightLayer<Share<<X as KeyExtractor>::Key>, X>;

/// A layer in reject mode, with key extractor `X`.
pub type RejectLayer<X = MethodPathQuery> = SingleFlightLayer<Reject<<X as KeyExtractor>::Key>, X>;

impl SingleFlightLayer<Reject<RequestKey>> {
    /// Reject mode: one request per key runs, duplicates get `409`.
    ///
    /// The lease of the running request lasts until its response body has
    /// been sent or dropped, or until [`lease_ttl`](Self::lease_ttl)
    /// (default 5 minutes) frees the key of a request that hangs.
    ///
    /// A duplicate gets `409 Conflict`, `Content-Type: application/json`,
    /// `Retry-After`, and the body
    /// `{"status":"already_running","message":"...","running_for_ms":N}`.
    ///
    /// ```
    /// use axum::{routing::post, Router};
    /// use tower_singleflight::SingleFlightLayer;
    ///
    /// let app: Router = Router::new()
    ///     .route("/jobs/{name}", post(|| async { "done" }))
    ///     .layer(SingleFlightLayer::reject());
    /// ```
    ///
    /// Only methods that are not safe take a lease by default: `GET`, `HEAD`,
    /// `OPTIONS` and `TRACE` pass through (see [`methods`](Self::methods)).
    ///
    /// # Concurrent calls on the same key
    ///
    /// Exactly one runs; the others are answered at once without reaching
    /// the inner service. When the first finishes, the next request runs.
    ///
    /// # Cancellation
    ///
    /// The lease is a drop guard held by the response future and then by
    /// the response body: a client that disconnects, an error or a panic
    /// frees the key.
    ///
    /// # Timeouts
    ///
    /// At the end of the lease TTL the key is free for the next request; the
    /// old request, if it ever ends, cannot release the new holder's lease.
    pub fn reject() -> Self {
        Self {
            mode: Reject::new(),
            key: key::method_path_query(),
            identify: Identify::default(),
            expose_role: false,
            trace_keys: false,
        }
    }
}

impl SingleFlightLayer<Share<RequestKey>> {
    /// Share mode: one request per key runs, identical requests get a copy of
    /// its response.
    ///
    /// Coalesces `GET` and `HEAD` requests without a body (never a `GET`
    /// with a `HEAD`), keeping requests for different hosts and callers
    /// apart (see [`identity`](Self::identity) and [`crate::identity`]).
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use tower_singleflight::SingleFlightLayer;
    ///
    /// let app: Router = Router::new()
    ///     .route("/report", get(|| async { "an expensive report" }))
    ///     .layer(SingleFlightLayer::share());
    /// ```
    ///
    /// # Concurrent calls on the same key
    ///
    /// The first request is the leader: the inner service is called for it,
    /// in the leader's own response future (no task is spawned while it
    /// waits). If others wait too, the response is read into memory (up to
    /// [`max_body`](Self::max_body), 8 MiB by default) and every waiter, the
    /// leader included, receives a copy: same status, headers and body. A
    /// leader nobody else waits for gets its response streamed, untouched.
    ///
    /// A response that cannot be shared is not: `Set-Cookie` (in headers or
    /// trailers), `Cache-Control: no-store`, `private` (unless the key is per
    /// identity and a credential identifies the caller), `Vary: *`, a `Vary`
    /// header naming request headers on which a follower differs from the
    /// leader, a body over the cap, a `text/event-stream`, a body still
    /// arriving after the [`buffer_budget`](Self::buffer_budget). The leader
    /// gets its own response, streamed; each waiting follower then runs its
    /// own request, all at once, and the key passes straight through for
    /// [`hit_for_pass`](Self::hit_for_pass).
    ///
    /// # Errors
    ///
    /// When the inner service returns `Err` to the leader, the leader gets
    /// that error and its followers enter the table once more, together:
    /// one of them calls the service again for all of them. If that call
    /// fails as well, its followers get `502`. A failing backend thus sees
    /// at most one more call per flight, never one per waiter.
    ///
    /// # Cancellation
    ///
    /// The leader's client disconnecting (or its `max_wait` passing) does not
    /// cancel the work: it is handed to a task that finishes it, within the
    /// same lease, and the followers still get the response. A follower
    /// that leaves disturbs nobody. With
    /// [`abort_when_unused`](Self::abort_when_unused) the work stops once
    /// every waiter has left.
    ///
    /// # Panics
    ///
    /// A panic in the inner service (in `call` or in its future) gives every
    /// current waiter `500` with a JSON body that does not contain the panic
    /// message, and frees the key: the next request runs afresh.
    ///
    /// # Timeouts
    ///
    /// Each waiter gives up after [`max_wait`](Self::max_wait) with `504`;
    /// the flight goes on for the others. The work is aborted at the end of
    /// its [`lease`](Self::lease) (5 minutes by default): its waiters get
    /// `504` and the key is free.
    pub fn share() -> Self {
        Self {
            mode: Share::new(),
            key: key::method_path_query(),
            identify: Identify::default(),
            expose_role: false,
            trace_keys: false,
        }
    }
}

impl<M, X> SingleFlightLayer<M, X> {
    /// Marks every response with its [`FlightRole`]: in
    /// the `x-singleflight-role` header (`leader`, `follower`, `rejected`,
    /// `bypass`, `fallback`, `cache-hit`, `stale`), and in its extensions
    /// even when the inner service answered the request itself (`leader`,
    /// `bypass`), which by default carries no role, to spare an ordinary
    /// request the extension's allocations.
    pub fn expose_role(mut self) -> Self {
        self.expose_role = true;
        self
    }

    /// Traces name a request's key by a short digest (`singleflight.key_digest`),
    /// as keys can hold what must not reach a log; with `true`, spans and
    /// events also carry what the default key is made of: the query
    /// (`url.query`) and the host (`server.address`). Default: `false`.
    ///
    /// Each flight has a `debug` span, `singleflight`, which the leader's
    /// work runs in: with the role, the layer's [`name`](Self::name), the
    /// key's digest, and the request after OpenTelemetry's HTTP
    /// conventions (`http.request.method`, `http.route` from axum's
    /// `MatchedPath`, `url.path`). Followers, cache hits and rejected
    /// requests each write a `debug` event with their role and the same
    /// fields.
    pub fn trace_keys(mut self, show: bool) -> Self {
        self.trace_keys = show;
        self
    }

    /// Where the host of a request is read: the one the application picks
    /// its tenant or virtual host by. Default: [`HostSource::Request`], the
    /// URI authority and `Host` header, which must agree. Behind a proxy
    /// that rewrites `Host`, name the header it forwards the client's host
    /// in. A request that names two hosts is never coalesced, cached or
    /// keyed: share mode lets it through, reject mode answers `400`.
    pub fn host_source(mut self, source: HostSource) -> Self {
        self.identify.host = source;
        self
    }

    /// The longest request identity that is keyed, in bytes: host, path and
    /// query (and, in share mode, the caller's identity headers and
    /// cookies). Past it, share mode lets the request through uncoalesced
    /// and reject mode answers `414 URI Too Long`, so that no table or cache
    /// keeps hostile keys. Default: 8 KiB.
    pub fn max_key_bytes(mut self, bytes: usize) -> Self {
        self.identify.max_key_bytes = bytes;
        self
    }
}

impl<K, X> SingleFlightLayer<Reject<K>, X>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    /// Names the layer in its metrics (the `layer` label, feature
    /// `metrics`; see [`crate::metrics`]) and its traces. Default:
    /// `"default"`. The name is its table's
    /// ([`Flights::with_name`]): a table given with
    /// [`flights`](Self::flights) before this takes it too.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.mode.flights = self.mode.flights.with_name(name);
        self
    }
}

impl<K, X> SingleFlightLayer<Share<K>, X>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    /// Names the layer in its metrics (the `layer` label, feature
    /// `metrics`; see [`crate::metrics`]) and its traces, its response cache
    /// included. Default: `"default"`.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        let name = name.into();
        #[cfg(feature = "cache")]
        if let Some(cache) = &self.mode.cache {
            cache.set_name(Arc::clone(&name));
        }
        self.mode.flights = self.mode.flights.with_name(name);
        self
    }
}

impl<K, X> SingleFlightLayer<Reject<K>, X>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    /// Takes keys from requests with `key` instead of method, path and query.
    ///
    /// A request for which `key` returns `None` passes through untouched;
    /// one it rejects ([`or_reject`](KeyExtractor::or_reject)) is answered
    /// with its response, without calling the inner service.
    ///
    /// Call it first: the key type changes, so this starts a new, empty table,
    /// and a table given earlier with [`flights`](Self::flights) (or shared
    /// with an earlier clone of this layer) is left behind.
    pub fn key<Y: KeyExtractor>(self, key: Y) -> SingleFlightLayer<Reject<Y::Key>, Y> {
        SingleFlightLayer {
            mode: self.mode.rekey(),
            key,
            identify: self.identify,
            expose_role: self.expose_role,
            trace_keys: self.trace_keys,
        }
    }

    /// The methods that take a lease; others pass through. Default: every
    /// method but the safe ones (`GET`, `HEAD`, `OPTIONS`, `TRACE`), so that a
    /// status probe or a CORS preflight never takes the lease of a trigger.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.mode.methods = Some(methods.into_iter().collect());
        self
    }

    /// How long a request may hold its key before the key is freed anyway.
    /// Default: 5 minutes; `Duration::MAX` means never.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.mode.lease_ttl = ttl;
        self
    }

    /// The `Retry-After` of a `409`. Default: 1 second.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.mode.retry_after = after;
        self
    }

    /// How duplicates are answered; the [`Flight`](crate::extract::Flight)
    /// extractor takes the same [`ConflictResponse`]. Default:
    /// [`ConflictResponse::json`].
    pub fn conflict_response(mut self, conflict: ConflictResponse) -> Self {
        self.mode.conflict = conflict;
        self
    }

    /// Answers duplicates with RFC 9457 `application/problem+json`:
    /// [`ConflictResponse::problem_json`].
    pub fn problem_json(self) -> Self {
        self.conflict_response(ConflictResponse::problem_json())
    }

    /// Answers duplicates with your own response
    /// ([`ConflictResponse::custom`]). `Retry-After` is added unless your
    /// response sets it.
    ///
    /// ```
    /// use http::{Response, StatusCode};
    /// use tower_singleflight::{layer::AlreadyRunning, SingleFlightLayer};
    ///
    /// let layer = SingleFlightLayer::reject().on_conflict(|busy: &AlreadyRunning| {
    ///     let mut response = Response::new(format!("busy for {:?}", busy.running_for()));
    ///     *response.status_mut() = StatusCode::CONFLICT;
    ///     response
    /// });
    /// # let _ = layer;
    /// ```
    pub fn on_conflict<F, B>(self, respond: F) -> Self
    where
        F: Fn(&AlreadyRunning) -> Response<B> + Send + Sync + 'static,
        B: Into<Bytes>,
    {
        self.conflict_response(ConflictResponse::custom(respond))
    }

    /// Uses `flights` as the table, to share it with your own code (to ask
    /// who holds a key, or take leases outside the layer). Set the
    /// [`key`](Self::key) before this.
    pub fn flights(mut self, flights: Flights<K>) -> Self {
        self.mode.flights = flights;
        self
    }

    /// The layer's table.
    pub fn table(&self) -> &Flights<K> {
        &self.mode.flights
    }

    /// A snapshot of the layer's counters.
    pub fn stats(&self) -> FlightStats {
        self.mode.flights.stats()
    }
}

impl<K, X> SingleFlightLayer<Share<K>, X>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    /// Takes keys from requests with `key` instead of method, path and query.
    ///
    /// A request for which `key` returns `None` passes through untouched;
    /// one it rejects ([`or_reject`](KeyExtractor::or_reject)) is answered
    /// with its response, without calling the inner service.
    /// Callers stay apart by identity and `HEAD` stays apart from `GET`
    /// whatever the key.
    ///
    /// Call it first: the key type changes, so this starts a new, empty table
    /// that clones taken earlier do not share.
    pub fn key<Y: KeyExtractor>(self, key: Y) -> SingleFlightLayer<Share<Y::Key>, Y> {
        SingleFlightLayer {
            mode: self.mode.rekey(),
            key,
            identify: self.identify,
            expose_role: self.expose_role,
            trace_keys: self.trace_keys,
        }
    }

    /// The largest response body that is shared. A larger one goes to the
    /// leader alone, streamed, and followers run their own requests.
    /// Default: 8 MiB.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.mode.max_body = bytes;
        self
    }

    /// How long a response body may take to arrive whole to be shared. A
    /// body still coming after it (a stream, a slow report) goes to the
    /// leader as it comes, with what was read put back in front, and the
    /// followers run their own requests at once; the key then passes
    /// straight through for [`hit_for_pass`](Self::hit_for_pass).
    /// `text/event-stream` responses are never buffered at all. Default:
    /// 1 second; `Duration::MAX` means no budget.
    pub fn buffer_budget(mut self, budget: Duration) -> Self {
        self.mode.buffer_budget = budget;
        self
    }

    /// How long any one request waits for the shared response before it is
    /// answered `504`. The flight goes on for the others. Default: no limit
    /// but the flight's lease (as `Duration::MAX` gives).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.mode.max_wait = Some(wait);
        self
    }

    /// How long the shared work may run before it is aborted and its waiters
    /// get `504`. Default: 5 minutes; `Duration::MAX` means never.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.mode.options = self.mode.options.clone().lease(lease);
        self
    }

    /// How many requests may wait on one key, the leader included; past it,
    /// `503` with `Retry-After`. Default: 10,000.
    pub fn max_waiters(mut self, max: usize) -> Self {
        self.mode.options = self.mode.options.clone().max_waiters(max);
        self
    }

    /// How many keys may be in flight at once; past it, `503` with
    /// `Retry-After`. Default: 10,000.
    pub fn max_flights(mut self, max: usize) -> Self {
        self.mode.options = self.mode.options.clone().max_flights(max);
        self
    }

    /// Aborts the work once every waiting request has gone. Default: off, the
    /// work runs to completion.
    pub fn abort_when_unused(mut self, abort: bool) -> Self {
        self.mode.options = self.mode.options.clone().abort_when_unused(abort);
        self
    }

    /// The methods that are coalesced; others pass through. Default: `GET`,
    /// `HEAD`.
    ///
    /// Only safe methods (`GET`, `HEAD`, `OPTIONS`, `TRACE`) are ever
    /// coalesced, and only `GET` and `HEAD` answers are cached (RFC 9110
    /// §9.3.7-8: the others are not cacheable): an unsafe one (`POST`, `PUT`...) changes
    /// something, which one answer handed to several callers would hide,
    /// and its body is not part of the key. Unsafe methods given here are
    /// left out (with a warning); to stop duplicate triggers, use
    /// [`reject`](SingleFlightLayer::reject) mode. Whatever the method, a
    /// request with a body passes through.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        let (safe, unsafe_): (Vec<_>, Vec<_>) = methods.into_iter().partition(Method::is_safe);
        if !unsafe_.is_empty() {
            tracing::warn!(
                methods = ?unsafe_,
                "share mode never coalesces unsafe methods: left out (use reject mode)"
            );
        }
        self.mode.methods = safe.into();
        self
    }

    /// Which headers, cookies and request extension tell one caller from
    /// another; see [`CallerIdentity`] for the default and what it
    /// promises. Callers whose identities differ never share an answer.
    pub fn identity(mut self, identity: CallerIdentity) -> Self {
        self.mode.identity = Some(identity);
        self
    }

    /// Another request header that identifies the caller, besides the
    /// credential headers of [`CallerIdentity`] (an API key header of your
    /// own, say). Short for `.identity(CallerIdentity::new().header(name))`.
    pub fn identity_header(mut self, name: HeaderName) -> Self {
        let identity = self.mode.identity.take().unwrap_or_default();
        self.mode.identity = Some(identity.header(name));
        self
    }

    /// Shares responses between callers whatever their identity. Only for
    /// responses that are the same for everyone.
    pub fn share_across_identities(mut self) -> Self {
        self.mode.identity = None;
        self
    }

    /// The `Retry-After` of a `503`. Default: 1 second.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.mode.retry_after = after;
        self
    }

    /// How long a key whose last answer could not be shared (`Set-Cookie`,
    /// `no-store`, `private`, too large...) passes straight through, instead
    /// of its next burst queueing behind a leader only to run its own
    /// requests anyway. Default: 10 seconds; zero turns it off,
    /// `Duration::MAX` makes it last.
    pub fn hit_for_pass(mut self, window: Duration) -> Self {
        self.mode.passes = std::sync::Arc::new(crate::pass::PassList::new(window));
        self
    }

    /// A snapshot of the layer's counters.
    pub fn stats(&self) -> FlightStats {
        self.mode.flights.stats()
    }

    /// Keeps shareable answers in a moka cache, so that the next requests are
    /// answered without calling the service at all.
    ///
    /// A miss goes through the same single flight: one leader calls the
    /// service, everybody waiting gets its answer, and the answer is stored.
    /// When it expires, [`stale_while_revalidate`](CacheConfig::stale_while_revalidate)
    /// serves the old copy at once while exactly one request refreshes it, so
    /// expiry never lets the herd through; [`stale_if_error`](CacheConfig::stale_if_error)
    /// serves it while the refresh fails. Errors are never stored.
    ///
    /// What is stored and for how long follows RFC 9111, in one of two
    /// postures ([`CacheConfig::new`] for your own routes,
    /// [`CacheConfig::shared`] in front of an origin); stale answers with a
    /// validator are revalidated with one conditional request per herd.
    /// Cached answers carry `Age`, `Cache-Status` and the role
    /// [`CacheHit`](crate::FlightRole::CacheHit) or
    /// [`Stale`](crate::FlightRole::Stale). `CACHING.md` maps the RFC to
    /// the code and its tests.
    ///
    /// Set the [`key`](Self::key) first: a cache is made for one key type.
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    pub fn cache(mut self, config: CacheConfig) -> Self {
        let cache = crate::cache::ResponseCache::new(config);
        cache.set_name(self.mode.flights.name());
        #[cfg(feature = "redis")]
        if let Some(cluster) = &self.mode.cluster {
            cache.attach(&cluster.redis);
        }
        self.mode.cache = Some(cache);
        self
    }

    /// Spans the flight across every replica that uses the same Redis: one
    /// handler run in the cluster per key in flight, every waiter on every
    /// replica answered with its copy. See [`Cluster`](crate::redis::Cluster).
    ///
    /// With a [`cache`](Self::cache) too, the cache keeps a Redis tier
    /// behind its local one: an answer stored on one replica is found by the
    /// others before anything runs, a stale answer is refreshed once in the
    /// cluster, and invalidations (writes, `invalidate*`) reach every
    /// replica.
    ///
    /// Set the [`key`](Self::key) first; the key must serialize (its JSON,
    /// with the method, host and caller, is hashed with SHA-256 to name the
    /// flight in Redis: no credential is written there). Requests whose
    /// caller is named by a typed extension coalesce within their replica
    /// only.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn cluster(mut self, cluster: crate::redis::Cluster) -> Self
    where
        K: serde::Serialize,
    {
        let (max_body, redis) = (cluster.max_shared_body, cluster.redis.clone());
        #[cfg(feature = "cache")]
        if let Some(cache) = &self.mode.cache {
            cache.attach(&redis);
        }
        self.mode.cluster = Some(crate::redis::share::Clustered {
            tickets: std::sync::Arc::new(move |key, identity| {
                cluster
                    .ticket(key, identity)
                    .map(|ticket| (ticket, max_body))
            }),
            redis,
        });
        self
    }

    /// The layer's response cache, to invalidate answers; `None` until
    /// [`cache`](Self::cache) is set.
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    pub fn response_cache(&self) -> Option<&crate::cache::ResponseCache<K>> {
        self.mode.cache.as_ref()
    }
}

impl<S, M, X> Layer<S> for SingleFlightLayer<M, X>
where
    M: Clone,
    X: Clone,
{
    type Service = SingleFlight<S, M, X>;

    fn layer(&self, inner: S) -> Self::Service {
        SingleFlight::new(
            inner,
            Config {
                mode: self.mode.clone(),
                key: self.key.clone(),
                identify: self.identify.clone(),
                expose_role: self.expose_role,
                trace_keys: self.trace_keys,
            },
        )
    }
}
