//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::{
    atomic::{AtomicUsize, Ordering::SeqCst},
    Arc,
};

use axum::{body::Body, routing, Router};
use bytes::Bytes;
use http::{header, HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_singleflight::FlightRole;

#[cfg(feature = "cache")]
pub mod origin;
#[cfg(feature = "redis")]
pub mod redis_server;

/// Counts how many times a handler body ran.
#[derive(Clone, Default)]
pub struct Runs(Arc<AtomicUsize>);

impl Runs {
    /// Counts one run and returns its number, starting at 1.
    pub fn bump(&self) -> usize {
        self.0.fetch_add(1, SeqCst) + 1
    }

    pub fn get(&self) -> usize {
        self.0.load(SeqCst)
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub role: Option<FlightRole>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }
}

pub fn get(uri: &str) -> Request<Body> {
    request("GET", uri)
}

/// `GET uri` with one header set.
pub fn get_with(uri: &str, name: http::header::HeaderName, value: &'static str) -> Request<Body> {
    let mut request = get(uri);
    request
        .headers_mut()
        .insert(name, http::HeaderValue::from_static(value));
    request
}

pub fn request(method: &str, uri: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .expect("a valid request")
}

/// Sends one request through the router and reads the whole response.
pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        role: parts.extensions.get::<FlightRole>().copied(),
        headers: parts.headers,
        body: body.collect().await.expect("a readable body").to_bytes(),
    }
}

/// Sends one request from its own task, so the test can go on (or abort it).
pub fn spawn(app: &Router, request: Request<Body>) -> tokio::task::JoinHandle<Reply> {
    let app = app.clone();
    tokio::spawn(async move { send(&app, request).await })
}

/// Sends every request at once, each in its own task, and returns the
/// replies in order.
pub async fn send_all(
    app: &Router,
    requests: impl IntoIterator<Item = Request<Body>>,
) -> Vec<Reply> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| spawn(app, request))
        .collect();
    let mut replies = Vec::with_capacity(tasks.len());
    for task in tasks {
        replies.push(task.await.expect("the request task ran"));
    }
    replies
}

/// How many replies have this status.
pub fn count(replies: &[Reply], status: StatusCode) -> usize {
    replies
        .iter()
        .filter(|reply| reply.status == status)
        .count()
}

/// How many replies played this role.
pub fn played(replies: &[Reply], role: FlightRole) -> usize {
    replies
        .iter()
        .filter(|reply| reply.role == Some(role))
        .count()
}

/// Yields until `condition` holds; fails loudly instead of hanging.
pub async fn until(condition: impl Fn() -> bool) {
    for _ in 0..100_000 {
        if condition() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition never became true");
}

/// Lets paused time run, a millisecond at a time, until `condition` holds:
/// for waits that span the work's own (virtual) time.
pub async fn eventually(condition: impl Fn() -> bool) {
    for _ in 0..1_000_000 {
        if condition() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("condition never became true");
}

/// Calls `service` once `poll_ready` says it may, keeping the service (as a
/// connection keeps its own across requests).
pub async fn call_kept<S>(service: &mut S, request: Request<Body>) -> S::Future
where
    S: tower::Service<Request<Body>>,
    S::Error: std::fmt::Debug,
{
    ServiceExt::<Request<Body>>::ready(service)
        .await
        .expect("a ready service")
        .call(request)
}

/// Whether a fresh clone of `service` gets ready within 5 s (of paused
/// time): whether the capacity of a limited inner service is free.
pub async fn gets_ready<S>(service: &S) -> bool
where
    S: tower::Service<Request<Body>> + Clone,
{
    let mut next = service.clone();
    let ready = ServiceExt::<Request<Body>>::ready(&mut next);
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(5), ready).await,
        Ok(Ok(_))
    )
}

pub fn with_headers(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).expect("a valid request")
}

/// The host a handler picks its tenant by, as axum-extra's `Host` reads it
///: `Forwarded`, then
/// `X-Forwarded-Host`, then `Host`, then the authority.
pub fn tenant(headers: &HeaderMap, uri: &http::Uri) -> String {
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').find_map(|pair| pair.strip_prefix("host=")));
    forwarded
        .or_else(|| headers.get("x-forwarded-host")?.to_str().ok())
        .or_else(|| headers.get(header::HOST)?.to_str().ok())
        .or_else(|| uri.host())
        .unwrap_or("?")
        .to_owned()
}

/// `GET /home`, cached: a page that names (reflects) the host the request
/// names, as pages with absolute links, redirects or reset mails do.
pub fn tenant_pages(runs: &Runs) -> Router {
    let runs = runs.clone();
    Router::new()
        .route(
            "/home",
            routing::get(move |headers: HeaderMap, uri: http::Uri| async move {
                runs.bump();
                format!("home of {}", tenant(&headers, &uri))
            }),
        )
        .layer(
            tower_singleflight::SingleFlightLayer::share()
                .cache(tower_singleflight::CacheConfig::new()),
        )
}

/// A plain tower service that fails its first `failures` calls, each after
/// `work`, answers `call N` after that, and counts its calls.
pub fn failing_backend(
    runs: &Runs,
    failures: usize,
    work: std::time::Duration,
) -> impl tower::Service<
    http::Request<axum::body::Body>,
    Response = http::Response<axum::body::Body>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    let runs = runs.clone();
    tower::service_fn(move |_: http::Request<axum::body::Body>| {
        let call = runs.bump();
        async move {
            tokio::time::sleep(work).await;
            if call <= failures {
                Err(std::io::Error::other(format!("call {call} failed")))
            } else {
                Ok(http::Response::new(axum::body::Body::from(format!(
                    "call {call}"
                ))))
            }
        }
    })
}

/// `GET /items/{id}` answers `version N` (N counting its runs), cached with
/// `invalidate_on_write`; `PUT /items/{id}` succeeds.
pub fn versioned_items(runs: &Runs) -> Router {
    let counted = runs.clone();
    let layer = tower_singleflight::SingleFlightLayer::share()
        .cache(tower_singleflight::CacheConfig::new().invalidate_on_write(true));
    Router::new()
        .route(
            "/items/{id}",
            routing::get(move || async move { format!("version {}", counted.bump()) })
                .put(|| async { StatusCode::NO_CONTENT }),
        )
        .layer(layer)
}

/// `GET` and `POST /work`, each taking `takes` and counting its runs, behind
/// `layer`.
pub fn work_app<L>(layer: L, runs: &Runs, takes: std::time::Duration) -> Router
where
    L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    L::Service: tower::Service<Request<Body>, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as tower::Service<Request<Body>>>::Response: axum::response::IntoResponse + 'static,
    <L::Service as tower::Service<Request<Body>>>::Future: Send + 'static,
{
    let runs = runs.clone();
    let handler = move || {
        let runs = runs.clone();
        async move {
            let run = runs.bump();
            tokio::time::sleep(takes).await;
            format!("run {run}")
        }
    };
    Router::new()
        .route("/work", routing::get(handler.clone()).post(handler))
        .layer(layer)
}
