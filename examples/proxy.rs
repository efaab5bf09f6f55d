//! A small caching reverse proxy: every request is forwarded to an upstream
//! with hyper-util's client, through share mode with an RFC 9111 shared
//! cache in front (`CacheConfig::shared()`).
//!
//! Run with: cargo run --example proxy -- UPSTREAM_URL [LISTEN_ADDR]
//! e.g.      cargo run --example proxy -- http://127.0.0.1:8080 127.0.0.1:3000
//!
//! - Identical requests in flight make one upstream request; answers the
//!   upstream marks cacheable are stored and served with `Age` and
//!   `Cache-Status`.
//! - Stale answers with a validator are revalidated with one conditional
//!   request for the whole herd; a `304` refreshes them.
//! - `Vary` keeps variants side by side; a successful `POST`, `PUT`,
//!   `PATCH` or `DELETE` drops what it changed (and its `Location`).
//! - Requests with `Authorization` or `Cookie` are kept apart per caller;
//!   `private`, `no-store` and `Set-Cookie` answers are never stored.

use std::{error::Error, net::SocketAddr, process::ExitCode};

use axum::{
    body::Body,
    extract::State,
    http::{header, uri::PathAndQuery, HeaderMap, HeaderName, Request, Response, StatusCode, Uri},
    Router,
};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tower::util::MapRequestLayer;
use tower_singleflight::{layer::ShareLayer, CacheConfig, SingleFlightLayer};

type BoxError = Box<dyn Error + Send + Sync>;

/// The upstream, and the client that reaches it.
#[derive(Clone)]
struct Upstream {
    client: Client<HttpConnector, Body>,
    base: Uri,
}

/// The layer of the proxy: share mode, with an RFC 9111 shared cache of
/// 256 MiB in front of the upstream.
pub fn layer() -> ShareLayer {
    SingleFlightLayer::share().cache(CacheConfig::shared().max_bytes(256 * 1024 * 1024))
}

/// The proxy: every method and path, forwarded to `upstream` through
/// `layer`. The connection's own headers are dropped before the layer
/// reads the request: a client must not be able to name a header the cache
/// keys or varies on as hop-by-hop, and so strip it from the request the
/// upstream answers (but not from the one the cache stores the answer for).
pub fn app(upstream: Uri, layer: ShareLayer) -> Router {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let upstream = Upstream {
        client,
        base: upstream,
    };
    let connection_headers = MapRequestLayer::new(|mut request: Request<Body>| {
        strip_hop_by_hop(request.headers_mut());
        request
    });
    Router::new()
        .fallback(forward)
        .with_state(upstream)
        .layer(layer)
        .layer(connection_headers)
}

/// Forwards one request; `502` if the upstream cannot be reached.
async fn forward(
    State(upstream): State<Upstream>,
    request: Request<Body>,
) -> Result<Response<Body>, StatusCode> {
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut target = upstream.base.clone().into_parts();
    target.path_and_query = Some(path);
    parts.uri = Uri::from_parts(target).map_err(|_| StatusCode::BAD_GATEWAY)?;
    // The client's host goes on as `X-Forwarded-Host` (the connection's own
    // headers are gone already); the upstream is asked under its own name.
    if let Some(host) = parts.headers.remove(header::HOST) {
        parts.headers.insert("x-forwarded-host", host);
    }
    let response = upstream
        .client
        .request(Request::from_parts(parts, body))
        .await
        .map_err(|error| {
            eprintln!("upstream failed: {error}");
            StatusCode::BAD_GATEWAY
        })?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // The upstream's HTTP version is its connection's, not the client's.
    parts.version = axum::http::Version::default();
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// Removes the fields that belong to one connection (RFC 9110 §7.6.1):
/// those `Connection` lists, and the usual ones.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("proxy: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: cargo run --example proxy -- UPSTREAM_URL [LISTEN_ADDR]";
    let upstream: Uri = args.next().ok_or(usage)?.parse()?;
    if upstream.scheme_str() != Some("http") || upstream.authority().is_none() {
        return Err(format!("{usage}\n(an http:// URL with a host; got {upstream})").into());
    }
    let listen: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:3000").parse()?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("caching {upstream} on http://{}", listener.local_addr()?);
    axum::serve(listener, app(upstream, layer())).await?;
    Ok(())
}
