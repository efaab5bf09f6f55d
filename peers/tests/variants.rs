//! Every variant serves the same answer, and does what it is measured for:
//! the caches answer a second request without running the handler, the
//! coalescers run it once for a herd.

use axum::{body::Body, extract::Request, http::header};
use http_body_util::BodyExt;
use tower_singleflight_peers::{Work, VARIANTS};

const CACHES: &[&str] = &[
    "share_cache",
    "moka_get_with",
    "axum_response_cache",
    "hitbox",
];
const UNCOALESCED: &[&str] = &["bare", "identity_layer", "axum_response_cache"];

fn get(path: &str) -> Request {
    Request::get(path)
        .body(Body::empty())
        .expect("a valid request")
}

#[tokio::test]
async fn every_variant_answers_hello_and_the_caches_keep_it() {
    for (name, app) in VARIANTS {
        let work = Work::new();
        let app = app(work.clone());
        for _ in 0..2 {
            let response = app.send(get("/item/a")).await;
            assert_eq!(response.status(), 200, "{name}");
            assert_eq!(
                response
                    .headers()
                    .get(header::CACHE_CONTROL)
                    .map(|v| v.as_bytes()),
                Some(&b"max-age=60"[..]),
                "{name}"
            );
            let body = response.into_body().collect().await.expect("a body");
            assert_eq!(body.to_bytes(), "hello a", "{name}");
        }
        let other = app.send(get("/item/b")).await;
        let body = other.into_body().collect().await.expect("a body");
        assert_eq!(body.to_bytes(), "hello b", "{name}");
        let expected = if CACHES.contains(name) { 2 } else { 3 };
        assert_eq!(work.runs(), expected, "{name}");
    }
}

#[tokio::test]
async fn a_gated_herd_runs_the_handler_once_where_it_is_coalesced() {
    const HERD: usize = 20;
    for (name, app) in VARIANTS {
        let (work, gate) = Work::gated();
        let app = app(work.clone());
        let herd: Vec<_> = (0..HERD)
            .map(|_| {
                let app = app.clone();
                tokio::spawn(async move { app.send(get("/item/herd")).await.status() })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        gate.open();
        for answer in herd {
            assert_eq!(answer.await.expect("no panic"), 200, "{name}");
        }
        let expected = if UNCOALESCED.contains(name) { HERD } else { 1 };
        assert_eq!(work.runs(), expected, "{name}");
    }
}
