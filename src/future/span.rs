//! What spans and events say about a request, after OpenTelemetry's HTTP
//! conventions (`http.request.method`, `http.route`, `url.path`), and keys
//! named by a digest, as keys can hold what must not reach a log.

use std::fmt;

use http::Request;

/// A key's digest where traces are on (`debug`), computed once per request;
/// `None` where they are off, at the cost of a level check.
pub(crate) fn digest<K: std::hash::Hash>(key: &K) -> Option<u64> {
    tracing::enabled!(tracing::Level::DEBUG).then(|| crate::flight::digest(key))
}

/// A digest in hex, as traces show it.
struct Hex(u64);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The route the request matched, as axum's router declared it
/// (`/users/{id}`), when axum routed it.
pub(crate) fn route<B>(request: &Request<B>) -> Option<&str> {
    #[cfg(feature = "axum")]
    return request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str);
    #[cfg(not(feature = "axum"))]
    {
        let _ = request;
        None
    }
}

/// The span a flight's work runs in: the leader's, with the layer's name,
/// the key's digest, and the request as OpenTelemetry names it. Fields are
/// computed only when the span is enabled (`debug`).
pub(crate) fn flight<B>(
    request: &Request<B>,
    digest: Option<u64>,
    name: &crate::metrics::Name,
    trace_keys: bool,
) -> tracing::Span {
    tracing::debug_span!(
        "singleflight",
        "singleflight.role" = "leader",
        "singleflight.layer" = %name.get(),
        "singleflight.key_digest" = digest.map(|digest| tracing::field::display(Hex(digest))),
        "http.request.method" = %request.method(),
        "http.route" = route(request),
        "url.path" = request.uri().path(),
        "url.query" = query(request, trace_keys),
        "server.address" = host(request, trace_keys),
    )
}

/// A request answered in `role` without leading (a follower, a cache hit,
/// a duplicate...): an event, at `debug`, with what its flight's span has.
pub(crate) fn answered<B>(
    request: &Request<B>,
    digest: Option<u64>,
    name: &crate::metrics::Name,
    role: crate::FlightRole,
    trace_keys: bool,
) {
    tracing::debug!(
        "singleflight.role" = role.as_str(),
        "singleflight.layer" = %name.get(),
        "singleflight.key_digest" = digest.map(|digest| tracing::field::display(Hex(digest))),
        "http.request.method" = %request.method(),
        "http.route" = route(request),
        "url.path" = request.uri().path(),
        "url.query" = query(request, trace_keys),
        "server.address" = host(request, trace_keys),
        "single-flight role"
    );
}

/// What keys are made of and may be secret: only when asked for.
fn query<B>(request: &Request<B>, trace_keys: bool) -> Option<&str> {
    request.uri().query().filter(|_| trace_keys)
}

fn host<B>(request: &Request<B>, trace_keys: bool) -> Option<&str> {
    let host = request.uri().host().or_else(|| {
        let host = request.headers().get(http::header::HOST)?;
        host.to_str().ok()
    });
    host.filter(|_| trace_keys)
}
