//! End to end: `examples/proxy.rs`, the caching reverse proxy, over real
//! HTTP in front of an origin the test controls: freshness, validation (one
//! conditional request per stale herd, a `304` that refreshes), variants
//! and invalidation.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/proxy.rs"]
mod proxy;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering::SeqCst},
        Arc,
    },
    time::Duration,
};

use axum::{
    http::{header, HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::any,
    Router,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio::sync::Notify;
use tower_singleflight::layer::ShareLayer;

/// What the origin counted, and the gate its conditional answers wait at.
#[derive(Clone, Default)]
struct Counts {
    gets: Arc<AtomicUsize>,
    conditional: Arc<AtomicUsize>,
    writes: Arc<AtomicUsize>,
    gate: Arc<GateCell>,
}

/// A conditional request waits to be let through while the gate is closed.
#[derive(Default)]
struct GateCell {
    closed: std::sync::atomic::AtomicBool,
    open: Notify,
}

/// The origin: `/doc` (stale on arrival, with a validator), `/fresh`
/// (fresh for a minute), `/lang` (varies on `Accept-Language`), and writes.
async fn origin(
    counts: Counts,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        counts.writes.fetch_add(1, SeqCst);
        return (StatusCode::NO_CONTENT, "").into_response();
    }
    counts.gets.fetch_add(1, SeqCst);
    match uri.path() {
        "/doc" => {
            if headers
                .get(header::IF_NONE_MATCH)
                .is_some_and(|tag| tag == "\"v1\"")
            {
                counts.conditional.fetch_add(1, SeqCst);
                if counts.gate.closed.load(SeqCst) {
                    counts.gate.open.notified().await;
                }
                return (
                    StatusCode::NOT_MODIFIED,
                    [
                        (header::CACHE_CONTROL, "max-age=60"),
                        (header::ETAG, "\"v1\""),
                    ],
                )
                    .into_response();
            }
            // Already as old as its lifetime: stored only to be revalidated.
            let headers = [
                (header::CACHE_CONTROL, "max-age=60"),
                (header::AGE, "60"),
                (header::ETAG, "\"v1\""),
            ];
            (headers, "the document").into_response()
        }
        "/lang" => {
            let language = headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            let headers = [
                (header::CACHE_CONTROL, "max-age=60"),
                (header::VARY, "Accept-Language"),
            ];
            (headers, language).into_response()
        }
        // A multi-tenant page: the tenant is the host the proxy forwards.
        "/tenant" => {
            let tenant = headers
                .get("x-forwarded-host")
                .and_then(|value| value.to_str().ok())
                .unwrap_or("none");
            let body = format!("tenant {tenant}");
            ([(header::CACHE_CONTROL, "max-age=60")], body).into_response()
        }
        _ => ([(header::CACHE_CONTROL, "max-age=60")], "fresh").into_response(),
    }
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

/// An origin, the proxy in front of it (and its layer), and a client.
struct Setup {
    counts: Counts,
    layer: ShareLayer,
    proxy: SocketAddr,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Setup {
    async fn new() -> Self {
        let counts = Counts::default();
        let origin_app = {
            let counts = counts.clone();
            Router::new().fallback(any(move |method, uri, headers| {
                origin(counts.clone(), method, uri, headers)
            }))
        };
        let upstream = serve(origin_app).await;
        let layer = proxy::layer();
        let upstream = format!("http://{upstream}").parse().unwrap();
        let proxy = serve(proxy::app(upstream, layer.clone())).await;
        Self {
            counts,
            layer,
            proxy,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.proxy));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .client
            .request(request.body(Empty::new()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, HeaderMap, String) {
        self.send(Method::GET, path, &[]).await
    }
}

/// Waits, checking every millisecond, until `condition` holds (at most 10 s).
async fn until(condition: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition never became true");
}

#[tokio::test]
async fn fresh_answers_are_served_from_the_cache() {
    let setup = Setup::new().await;
    let (_, _, first) = setup.get("/fresh").await;
    let (status, headers, again) = setup.get("/fresh").await;
    assert_eq!(
        (status, first.as_str(), again.as_str()),
        (StatusCode::OK, "fresh", "fresh")
    );
    assert_eq!(setup.counts.gets.load(SeqCst), 1);
    assert!(headers.contains_key(header::AGE));
    assert_eq!(headers["cache-status"], "tower-singleflight; hit");
}

#[tokio::test]
async fn a_stale_herd_makes_one_conditional_request_and_a_304_refreshes_it() {
    let setup = Setup::new().await;
    let (_, _, body) = setup.get("/doc").await;
    assert_eq!(body, "the document");
    setup.counts.gate.closed.store(true, SeqCst);
    let followers_before = setup.layer.stats().followers;
    let setup = Arc::new(setup);
    let herd: Vec<_> = (0..20)
        .map(|_| {
            let setup = setup.clone();
            tokio::spawn(async move { setup.get("/doc").await })
        })
        .collect();
    // Everyone is waiting on the one conditional request before it answers.
    until(|| setup.counts.conditional.load(SeqCst) == 1).await;
    until(|| setup.layer.stats().followers - followers_before == 19).await;
    setup.counts.gate.open.notify_one();
    for reply in herd {
        let (status, headers, body) = reply.await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "the document"));
        assert!(headers["cache-status"]
            .to_str()
            .unwrap()
            .contains("fwd-status=304"));
    }
    assert_eq!(setup.counts.conditional.load(SeqCst), 1);
    // The 304 made it fresh: the next request never reaches the origin.
    let gets = setup.counts.gets.load(SeqCst);
    let (_, headers, body) = setup.get("/doc").await;
    assert_eq!(body, "the document");
    assert_eq!(setup.counts.gets.load(SeqCst), gets);
    assert!(headers["cache-status"].to_str().unwrap().contains("hit"));
    let stats = setup.layer.response_cache().unwrap().stats();
    assert_eq!(stats.revalidated, 1);
}

#[tokio::test]
async fn variants_are_served_side_by_side() {
    let setup = Setup::new().await;
    for _ in 0..3 {
        for language in ["en", "fr"] {
            let (_, _, body) = setup
                .send(Method::GET, "/lang", &[("accept-language", language)])
                .await;
            assert_eq!(body, language);
        }
    }
    assert_eq!(setup.counts.gets.load(SeqCst), 2);
}

#[tokio::test]
async fn a_write_drops_what_it_changed() {
    let setup = Setup::new().await;
    setup.get("/items/1").await;
    setup.get("/items/1").await;
    assert_eq!(setup.counts.gets.load(SeqCst), 1);
    let (status, _, _) = setup.send(Method::PUT, "/items/1", &[]).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    setup.get("/items/1").await;
    assert_eq!(setup.counts.gets.load(SeqCst), 2);
    assert_eq!(setup.counts.writes.load(SeqCst), 1);
}

// Found by the second review: a client's `Connection` header named the
// headers the cache keys or varies on, which the proxy then stripped from
// the request the upstream answered, not from the one the cache stored
// the answer for.

#[tokio::test]
async fn a_connection_header_cannot_store_another_tenants_page() {
    let setup = Setup::new().await;
    let attack = [
        ("host", "victim.example"),
        ("connection", "x-forwarded-host"),
    ];
    setup.send(Method::GET, "/tenant", &attack).await;
    let (_, _, page) = setup
        .send(Method::GET, "/tenant", &[("host", "victim.example")])
        .await;
    assert_eq!(page, "tenant victim.example");
}

#[tokio::test]
async fn a_connection_header_cannot_store_another_variant() {
    let setup = Setup::new().await;
    let attack = [("accept-language", "fr"), ("connection", "accept-language")];
    setup.send(Method::GET, "/lang", &attack).await;
    let (_, _, french) = setup
        .send(Method::GET, "/lang", &[("accept-language", "fr")])
        .await;
    assert_eq!(french, "fr");
}

#[tokio::test]
async fn a_head_hit_keeps_the_get_content_length() {
    let setup = Setup::new().await;
    let (_, got, body) = setup.get("/fresh").await;
    let length = body.len().to_string();
    assert_eq!(got[header::CONTENT_LENGTH], length.as_str());
    for _ in 0..2 {
        let (_, head, _) = setup.send(Method::HEAD, "/fresh", &[]).await;
        assert_eq!(head[header::CONTENT_LENGTH], length.as_str(), "{head:?}");
    }
}
