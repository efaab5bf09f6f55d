//! An origin behind a cached share-mode layer, for the HTTP caching tests:
//! it counts its runs, keeps the headers it was sent, and dates its answers
//! off the test's (paused) clock.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use axum::{
    http::{header, HeaderMap, HeaderName, StatusCode},
    response::{IntoResponse, Response},
    routing, Router,
};
use tokio::time::Instant;
use tower_singleflight::{cache::CacheStats, layer::ShareLayer, CacheConfig, SingleFlightLayer};

use super::{get, send, with_headers, Reply, Runs};

/// The wall clock of a test: the time at its start, moved by Tokio's
/// (paused) clock, as the cache's own is.
#[derive(Clone, Copy)]
pub struct Clock {
    wall: SystemTime,
    at: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Self {
            wall: SystemTime::now(),
            at: Instant::now(),
        }
    }

    pub fn now(&self) -> SystemTime {
        self.wall + (Instant::now() - self.at)
    }

    /// An HTTP date `offset` seconds from now.
    pub fn date(&self, offset: i64) -> String {
        let now = self.now();
        let at = if offset >= 0 {
            now + Duration::from_secs(offset.unsigned_abs())
        } else {
            now - Duration::from_secs(offset.unsigned_abs())
        };
        httpdate::fmt_http_date(at)
    }
}

/// What the origin of a test saw and answers.
pub struct Seen {
    pub run: usize,
    pub request: HeaderMap,
    pub clock: Clock,
}

/// An origin behind the layer: every path answers `respond(seen)`; the
/// headers of every request it got are kept in order.
pub struct Origin {
    pub app: Router,
    pub runs: Runs,
    pub requests: Arc<Mutex<Vec<HeaderMap>>>,
    pub layer: ShareLayer,
}

impl Origin {
    pub fn new(
        config: CacheConfig,
        respond: impl Fn(Seen) -> Response + Clone + Send + Sync + 'static,
    ) -> Self {
        Self::with_layer(SingleFlightLayer::share().cache(config), respond)
    }

    pub fn with_layer(
        layer: ShareLayer,
        respond: impl Fn(Seen) -> Response + Clone + Send + Sync + 'static,
    ) -> Self {
        let clock = Clock::new();
        let runs = Runs::default();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler = {
            let (runs, requests) = (runs.clone(), requests.clone());
            move |headers: HeaderMap| async move {
                let run = runs.bump();
                requests.lock().unwrap().push(headers.clone());
                // Answers take a little while: herds coalesce on them.
                tokio::time::sleep(Duration::from_millis(100)).await;
                respond(Seen {
                    run,
                    request: headers,
                    clock,
                })
            }
        };
        let app = Router::new()
            .fallback(routing::any(handler))
            .layer(layer.clone());
        Self {
            app,
            runs,
            requests,
            layer,
        }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        send(&self.app, get(uri)).await
    }

    pub async fn get_with(&self, uri: &str, headers: &[(&str, &str)]) -> Reply {
        send(&self.app, with_headers("GET", uri, headers)).await
    }

    pub fn stats(&self) -> CacheStats {
        self.layer.response_cache().expect("a cache").stats()
    }

    pub fn last_request(&self) -> HeaderMap {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

/// `200 run N` with these headers.
pub fn answer(seen: &Seen, headers: &[(HeaderName, String)]) -> Response {
    let mut response = format!("run {}", seen.run).into_response();
    for (name, value) in headers {
        response
            .headers_mut()
            .append(name.clone(), value.parse().expect("a header value"));
    }
    response
}

pub fn age(reply: &Reply) -> u64 {
    reply.headers[header::AGE]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

pub fn cache_status(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .get_all("cache-status")
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect()
}

/// A `304` with these headers.
pub fn not_modified(headers: &[(HeaderName, String)]) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    for (name, value) in headers {
        response
            .headers_mut()
            .append(name.clone(), value.parse().expect("a header value"));
    }
    response
}

/// Every request through the cache, as its counters say.
pub fn total(stats: &CacheStats) -> u64 {
    stats.hits + stats.stale + stats.misses + stats.passes
}

/// `request` sent to `example.com`.
pub fn on_host(
    mut request: axum::http::Request<axum::body::Body>,
) -> axum::http::Request<axum::body::Body> {
    request
        .headers_mut()
        .insert(header::HOST, "example.com".parse().unwrap());
    request
}

/// An origin whose writes answer `201` with the `Location` the request's
/// `x-location` asks for and `Content-Location: /items/latest`.
pub fn items() -> Origin {
    Origin::new(CacheConfig::new(), |seen| {
        let mut response = answer(&seen, &[]);
        if let Some(location) = seen.request.get("x-location") {
            *response.status_mut() = StatusCode::CREATED;
            let headers = response.headers_mut();
            headers.insert(header::LOCATION, location.clone());
            headers.insert(header::CONTENT_LOCATION, "/items/latest".parse().unwrap());
        }
        response
    })
}

/// An origin whose answers carry this `Cache-Control` and this
/// `CDN-Cache-Control` (RFC 9213).
pub fn targeted(config: CacheConfig, cache_control: &'static str, cdn: &'static str) -> Origin {
    Origin::new(config, move |seen| {
        let headers = [
            (header::CACHE_CONTROL, cache_control.to_owned()),
            (HeaderName::from_static("cdn-cache-control"), cdn.to_owned()),
        ];
        answer(&seen, &headers)
    })
}

/// An origin whose answers carry `ETag: "v1"` and this `Cache-Control`,
/// and that answers a conditional request with a `304` carrying `on_304`.
pub fn validated(
    config: CacheConfig,
    cache_control: &'static str,
    on_304: &'static [(&'static str, &'static str)],
) -> Origin {
    Origin::new(config, move |seen| {
        if seen.request.contains_key(header::IF_NONE_MATCH) {
            let headers: Vec<_> = on_304
                .iter()
                .map(|(name, value)| (HeaderName::from_static(name), (*value).to_owned()))
                .collect();
            return not_modified(&headers);
        }
        let headers = [
            (header::CACHE_CONTROL, cache_control.to_owned()),
            (header::ETAG, "\"v1\"".to_owned()),
        ];
        answer(&seen, &headers)
    })
}
