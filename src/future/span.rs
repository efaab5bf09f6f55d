//! What spans and events say about a request, after OpenTelemetry's HTTP
//! conventions (`http.request.method`, `http.route`, `url.path`), and keys
//! named by a digest, as keys can hold what must not reach a log.

use http::Request;

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
