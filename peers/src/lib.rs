//! The crates users would pick instead of tower-singleflight, each wired
//! onto the same route and the same handler, so that every harness (the
//! instruction counts, the load server, the cold stampede) measures the same
//! routers. See `bench/peers.py` at the root of the repository.
//!
//! Every variant serves `GET /item/{key}` with [`hello`]: it counts its run,
//! waits at the [`Gate`] when one is set (the stampede), and answers
//! `hello {key}` with `Cache-Control: max-age=60`. Where a peer is a layer,
//! it goes on the router with `Router::layer`; where it is used inside a
//! handler (moka's `get_with`, `async_singleflight`), the handler calls it
//! around the same work. The caches are all given a TTL of 60 s and room for
//! about 100,000 answers.

#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use async_singleflight::UnaryGroup;
use axum::{
    body::Body,
    extract::{Path, Request, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use bytes::Bytes;
use futures_util::future::{BoxFuture, Either, FutureExt};
use http_body_util::BodyExt;
use tokio::sync::watch;
use tower::{util::BoxCloneService, Service, ServiceBuilder, ServiceExt};
use tower_resilience_coalesce::CoalesceError;
use tower_singleflight::{CacheConfig, SingleFlightLayer};

/// How long every cache keeps an answer.
pub const TTL: Duration = Duration::from_secs(60);

/// How many answers the caches counted in entries keep (tower-singleflight's
/// cache is bounded in bytes instead: its default, 64 MiB, holds about as
/// many of these answers).
pub const CAPACITY: u64 = 100_000;

/// The route every variant serves.
pub const ROUTE: &str = "/item/{key}";

/// Builds a variant's application around the handler's [`Work`].
pub type MakeApp = fn(Work) -> App;

/// The variants, by name, in the order of the table: the bare route first,
/// then the crate's rows, then the peers.
pub const VARIANTS: &[(&str, MakeApp)] = &[
    ("bare", bare),
    ("identity_layer", identity_layer),
    ("share", share),
    ("share_across_callers", share_across_callers),
    ("share_cache", share_cache),
    ("async_singleflight", async_singleflight),
    ("tower_resilience_coalesce", tower_resilience_coalesce),
    ("moka_get_with", moka_get_with),
    ("axum_response_cache", axum_response_cache),
    ("hitbox", hitbox),
];

/// The variant of that name.
pub fn variant(name: &str) -> Option<MakeApp> {
    VARIANTS
        .iter()
        .find(|(variant, _)| *variant == name)
        .map(|(_, app)| *app)
}

/// What the handler does: count its run, wait at the gate if there is one.
#[derive(Clone, Debug, Default)]
pub struct Work {
    runs: Arc<AtomicUsize>,
    gate: Option<watch::Receiver<bool>>,
}

impl Work {
    /// Work that answers at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// Work that waits until [`Gate::open`].
    pub fn gated() -> (Self, Gate) {
        let (open, gate) = watch::channel(false);
        let work = Self {
            runs: Arc::default(),
            gate: Some(gate),
        };
        (work, Gate(open))
    }

    /// How many times the handler's body ran.
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::Relaxed)
    }

    /// The handler's body: what a peer that sits in the handler runs once
    /// per key.
    async fn run(&self, key: String) -> String {
        self.runs.fetch_add(1, Ordering::Relaxed);
        if let Some(gate) = &self.gate {
            let mut gate = gate.clone();
            // The sender lives as long as the stampede does.
            let _ = gate.wait_for(|open| *open).await;
        }
        format!("hello {key}")
    }
}

/// Holds every gated handler until opened.
#[derive(Debug)]
pub struct Gate(watch::Sender<bool>);

impl Gate {
    /// Lets every handler waiting at the gate, and every later one, through.
    pub fn open(&self) {
        self.0.send_replace(true);
    }
}

/// The answer: the same for every variant.
#[derive(Clone, Debug)]
pub struct Hello(String);

impl IntoResponse for Hello {
    fn into_response(self) -> Response {
        (
            [(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=60"),
            )],
            self.0,
        )
            .into_response()
    }
}

/// The handler of every variant whose peer is a layer (or none).
pub async fn hello(State(work): State<Work>, Path(key): Path<String>) -> Hello {
    Hello(work.run(key).await)
}

fn route(work: Work) -> Router {
    Router::new().route(ROUTE, get(hello)).with_state(work)
}

/// No layer: the baseline.
pub fn bare(work: Work) -> App {
    App::Router(route(work))
}

/// A layer that does nothing, through `Router::layer`: what any layer costs
/// there (a boxed service, future and body per request).
pub fn identity_layer(work: Work) -> App {
    App::Router(route(work).layer(tower::layer::layer_fn(|service| service)))
}

/// tower-singleflight, share mode: concurrent identical `GET`s share one
/// run; nothing is kept once it ends.
pub fn share(work: Work) -> App {
    App::Router(route(work).layer(SingleFlightLayer::share()))
}

/// tower-singleflight, share mode keyed as the peers key: one answer for
/// every caller (`share_across_identities`), so that no caller's
/// credentials are read.
pub fn share_across_callers(work: Work) -> App {
    App::Router(route(work).layer(SingleFlightLayer::share().share_across_identities()))
}

/// tower-singleflight, share mode with its response cache (TTL 60 s, the
/// default bound of 64 MiB).
pub fn share_cache(work: Work) -> App {
    App::Router(route(work).layer(SingleFlightLayer::share().cache(CacheConfig::new().ttl(TTL))))
}

/// `async_singleflight::UnaryGroup::work` around the handler's body, keyed
/// by the path's key: shares a run, keeps nothing.
pub fn async_singleflight(work: Work) -> App {
    #[derive(Clone)]
    struct Shared {
        work: Work,
        group: Arc<UnaryGroup<String, String>>,
    }
    async fn handler(State(shared): State<Shared>, Path(key): Path<String>) -> Hello {
        let run = shared.work.run(key.clone());
        Hello(shared.group.work(&key, run).await)
    }
    let shared = Shared {
        work,
        group: Arc::new(UnaryGroup::new()),
    };
    App::Router(Router::new().route(ROUTE, get(handler)).with_state(shared))
}

/// `tower_resilience_coalesce::CoalesceLayer`, keyed by method and URI. It
/// needs a `Clone` response and error and its service is not `Sync` for
/// axum's `Request` (whose body is not), so it cannot go through
/// `Router::layer`: it wraps the router, with the body buffered into `Bytes`
/// below it (so that the answer can be cloned) and its error (the leader
/// cancelled) turned into a `500` above it.
pub fn tower_resilience_coalesce(work: Work) -> App {
    use tower_resilience_coalesce::CoalesceLayer;

    let coalesce =
        CoalesceLayer::new(|request: &Request| (request.method().clone(), request.uri().clone()));
    let service = ServiceBuilder::new()
        .layer_fn(Recover)
        .layer(coalesce)
        .map_future(|answer| async move {
            let response: Response = match answer.await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let (parts, body) = response.into_parts();
            Ok::<_, Infallible>(match body.collect().await {
                Ok(body) => http::Response::from_parts(parts, body.to_bytes()),
                Err(_) => http::Response::builder()
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .body(Bytes::new())
                    .expect("a valid response"),
            })
        })
        .service(route(work));
    App::Service(BoxCloneService::new(service))
}

/// Above `CoalesceLayer`: its answers back into axum's body, its error (the
/// leader cancelled, or the channel closed) answered `500`.
#[derive(Clone)]
struct Recover<S>(S);

type Coalesced = Result<http::Response<Bytes>, CoalesceError<Infallible>>;

impl<S> Service<Request> for Recover<S>
where
    S: Service<Request, Response = http::Response<Bytes>, Error = CoalesceError<Infallible>>,
{
    type Response = Response;
    type Error = Infallible;
    type Future =
        futures_util::future::Map<S::Future, fn(Coalesced) -> Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match self.0.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(CoalesceError::Service(never))) => match never {},
            // `CoalesceService::poll_ready` only passes on the router's.
            Poll::Ready(Err(error)) => unreachable!("not from poll_ready: {error}"),
        }
    }

    fn call(&mut self, request: Request) -> Self::Future {
        fn recover(answer: Coalesced) -> Result<Response, Infallible> {
            Ok(match answer {
                Ok(response) => response.map(Body::from),
                Err(error) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
                }
            })
        }
        self.0.call(request).map(recover as fn(Coalesced) -> _)
    }
}

/// A `moka::future::Cache` (TTL 60 s, 100,000 entries) in the handler:
/// `get_with` runs the handler's body once per key and keeps the answer.
pub fn moka_get_with(work: Work) -> App {
    #[derive(Clone)]
    struct Shared {
        work: Work,
        cache: moka::future::Cache<String, String>,
    }
    async fn handler(State(shared): State<Shared>, Path(key): Path<String>) -> Hello {
        let run = shared.work.run(key.clone());
        Hello(shared.cache.get_with(key, run).await)
    }
    let shared = Shared {
        work,
        cache: moka::future::Cache::builder()
            .max_capacity(CAPACITY)
            .time_to_live(TTL)
            .build(),
    };
    App::Router(Router::new().route(ROUTE, get(handler)).with_state(shared))
}

/// `axum_response_cache::CacheLayer` over an `LruTtlCache` (TTL 60 s,
/// 100,000 entries), keyed by method and URI: keeps answers, does not
/// coalesce a miss.
pub fn axum_response_cache(work: Work) -> App {
    let cache = cached::stores::LruTtlCache::with_size_and_ttl(CAPACITY as usize, TTL);
    App::Router(route(work).layer(axum_response_cache::CacheLayer::with(cache)))
}

/// `hitbox_tower::Cache` over `hitbox_moka::MokaBackend` (100,000 entries,
/// bincode, the format its docs recommend), keyed by method and the path's
/// key, `GET`s and `200`s only, TTL 60 s, with its dogpile prevention on
/// (`BroadcastConcurrencyManager`, concurrency 1).
pub fn hitbox(work: Work) -> App {
    use hitbox::{concurrency::BroadcastConcurrencyManager, policy::PolicyConfig, Config};
    use hitbox_http::{
        extractors::{path::PathExtractor, Method},
        predicates::{request, response},
    };

    let backend = hitbox_moka::MokaBackend::builder()
        .max_entries(CAPACITY)
        .value_format(hitbox_backend::format::BincodeFormat)
        .build();
    let config = Config::builder()
        .request_predicate(request::Method::new(http::Method::GET).expect("a method"))
        .response_predicate(response::StatusCode::new(http::StatusCode::OK))
        .extractor(Method::new().path(ROUTE))
        .policy(
            PolicyConfig::builder()
                .ttl(TTL)
                .concurrency(1.try_into().expect("1 is in range"))
                .build(),
        )
        .build();
    let cache = hitbox_tower::Cache::builder()
        .backend(backend)
        .config(config)
        .concurrency_manager(BroadcastConcurrencyManager::new())
        .build();
    App::Router(route(work).layer(cache))
}

/// A variant's application: a router, or a service around one where the
/// peer cannot go through `Router::layer`.
#[derive(Clone)]
pub enum App {
    /// A router, its layers through `Router::layer`.
    Router(Router),
    /// A service wrapping a router.
    Service(BoxCloneService<Request, Response, Infallible>),
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Router(router) => f.debug_tuple("Router").field(router).finish(),
            Self::Service(_) => f.debug_tuple("Service").finish(),
        }
    }
}

impl Service<Request> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        <Router as Service<Request>>::Future,
        BoxFuture<'static, Result<Response, Infallible>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match self {
            Self::Router(router) => <Router as Service<Request>>::poll_ready(router, cx),
            Self::Service(service) => service.poll_ready(cx),
        }
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self {
            Self::Router(router) => Either::Left(router.call(request)),
            Self::Service(service) => Either::Right(service.call(request)),
        }
    }
}

impl App {
    /// Sends one request through a clone of the application, as a
    /// connection does.
    pub fn send(&self, request: Request) -> impl Future<Output = Response> + Send + 'static {
        let app = self.clone();
        async move {
            match app.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    }
}
