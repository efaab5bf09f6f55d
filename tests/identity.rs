//! Request identity, attacked: other hosts, other spellings, other callers,
//! bodies. Each test is one way a response could reach the wrong caller, or
//! a lock be walked around, and shows that it cannot.

mod common;

use std::time::Duration;

use axum::{
    body::Body,
    http::{header, HeaderMap, Request, StatusCode},
    routing, Router,
};
use common::{count, get, send, send_all, tenant_pages, versioned_items, with_headers, Runs};
use tokio::time::sleep;
use tower_singleflight::{key, CacheConfig, FlightRole, SingleFlightLayer};

const WORK: Duration = Duration::from_millis(300);

/// Observation 1: an answer made for one host is never stored under another.
#[tokio::test(start_paused = true)]
async fn a_request_naming_two_hosts_cannot_poison_another_tenants_cache() {
    let poisons = [
        // HTTP/1.1 absolute form, or HTTP/2 `:authority`, against `Host`.
        with_headers("GET", "http://a.example/home", &[("host", "b.example")]),
        // Forwarded hosts a client made up, on an app no proxy fronts.
        with_headers(
            "GET",
            "/home",
            &[("host", "a.example"), ("x-forwarded-host", "b.example")],
        ),
        with_headers(
            "GET",
            "/home",
            &[("host", "a.example"), ("forwarded", "host=b.example")],
        ),
        // Two `Host` headers.
        {
            let mut request = with_headers("GET", "/home", &[("host", "a.example")]);
            request
                .headers_mut()
                .append("host", "b.example".parse().unwrap());
            request
        },
    ];
    for poison in poisons {
        let runs = Runs::default();
        let app = tenant_pages(&runs);
        let attack = send(&app, poison).await;
        assert_eq!(attack.status, StatusCode::OK, "let through, answered");
        assert_eq!(attack.role, None, "neither coalesced nor cached");

        let visitor = send(&app, with_headers("GET", "/home", &[("host", "a.example")])).await;
        assert_eq!(visitor.text(), "home of a.example");
        assert_eq!(runs.get(), 2, "the visitor's page was not a cache hit");
    }
}

/// Share mode hands an answer only to requests spelled as in normal form:
/// the application may answer another spelling differently (an unknown
/// tenant for `SVC.example`, a `404` for `/h%6Fme`), so such requests are
/// answered by it, neither from the cache nor into it.
#[tokio::test(start_paused = true)]
async fn other_spellings_are_answered_by_the_app_not_from_the_cache() {
    let runs = Runs::default();
    let app = tenant_pages(&runs);
    send(
        &app,
        with_headers("GET", "/home", &[("host", "svc.example")]),
    )
    .await;
    for (host, uri) in [
        ("SVC.example", "/home"),
        ("svc.example.", "/home"),
        ("svc.example:80", "/home"),
        ("svc.example", "/%68ome"),
    ] {
        let reply = send(&app, with_headers("GET", uri, &[("host", host)])).await;
        assert_ne!(reply.role, Some(FlightRole::CacheHit), "{host}{uri}");
        if uri == "/home" {
            assert_eq!(reply.text(), format!("home of {host}"));
        } else {
            assert_eq!(
                reply.status,
                StatusCode::NOT_FOUND,
                "the router's own answer"
            );
        }
    }
    assert_eq!(runs.get(), 4, "the handler ran for every host spelling");
    let again = send(
        &app,
        with_headers("GET", "/home", &[("host", "svc.example")]),
    )
    .await;
    assert_eq!(
        again.role,
        Some(FlightRole::CacheHit),
        "nothing else was stored"
    );
    assert_eq!(again.text(), "home of svc.example");
}

/// `POST` triggers that hold for `WORK` and count their runs.
fn triggers(runs: &Runs, layer: tower_singleflight::layer::RejectLayer<key::PathOnly>) -> Router {
    let runs = runs.clone();
    let run = move || async move {
        runs.bump();
        sleep(WORK).await;
        "started"
    };
    Router::new()
        .route("/flows/{id}/resume", routing::post(run))
        .layer(layer)
}

/// Observation 4: another spelling of the path does not walk around the lock.
#[tokio::test(start_paused = true)]
async fn another_spelling_of_the_path_is_the_same_trigger() {
    let runs = Runs::default();
    let app = triggers(&runs, SingleFlightLayer::reject().key(key::path()));
    let replies = send_all(
        &app,
        [
            "/flows/1/resume",
            "/flows/%31/resume",
            "/flows/%31/%72esume",
        ]
        .map(|uri| common::request("POST", uri)),
    )
    .await;
    assert_eq!(runs.get(), 1);
    assert_eq!(count(&replies, StatusCode::CONFLICT), 2);
}

/// Observation 4, with the default key: hosts spelled three other ways.
#[tokio::test(start_paused = true)]
async fn another_spelling_of_the_host_is_the_same_trigger() {
    let runs = Runs::default();
    let counted = runs.clone();
    let app = Router::new()
        .route(
            "/jobs/nightly",
            routing::post(move || async move {
                counted.bump();
                sleep(WORK).await;
            }),
        )
        .layer(SingleFlightLayer::reject());
    let replies = send_all(
        &app,
        [
            "svc.example",
            "SVC.example",
            "svc.example.",
            "svc.example:80",
        ]
        .map(|host| with_headers("POST", "/jobs/nightly", &[("host", host)])),
    )
    .await;
    assert_eq!(runs.get(), 1);
    assert_eq!(count(&replies, StatusCode::CONFLICT), 3);
}

#[tokio::test(start_paused = true)]
async fn a_trigger_naming_two_hosts_is_refused_not_run_beside_the_holder() {
    let runs = Runs::default();
    let counted = runs.clone();
    let layer = SingleFlightLayer::reject();
    let app = Router::new()
        .route(
            "/jobs/nightly",
            routing::post(move || async move {
                counted.bump();
            }),
        )
        .layer(layer.clone());
    let reply = send(
        &app,
        with_headers(
            "POST",
            "http://a.example/jobs/nightly",
            &[("host", "b.example")],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["status"], "ambiguous_host");
    assert_eq!(runs.get(), 0);
    assert_eq!(layer.stats().unkeyed, 1);
}

/// Observation 4: a write spelled another way invalidates the cached read.
#[tokio::test(start_paused = true)]
async fn a_write_spelled_another_way_invalidates_the_cached_read() {
    let runs = Runs::default();
    let app = versioned_items(&runs);
    assert_eq!(send(&app, get("/items/1")).await.text(), "version 1");
    assert_eq!(send(&app, get("/items/1")).await.text(), "version 1");
    send(&app, common::request("PUT", "/items/%31")).await;
    assert_eq!(send(&app, get("/items/1")).await.text(), "version 2");
}

/// `GET /dashboard`: the caller's own page, cached.
fn dashboards(runs: &Runs, layer: tower_singleflight::layer::ShareLayer) -> Router {
    let runs = runs.clone();
    Router::new()
        .route(
            "/dashboard",
            routing::get(move |headers: HeaderMap| async move {
                runs.bump();
                let key = headers.get("x-api-key").or(headers.get("x-tenant-key"));
                let caller = key.and_then(|key| key.to_str().ok()).unwrap_or("nobody");
                format!("dashboard of {caller}")
            }),
        )
        .layer(layer)
}

/// Observation 5: an API key identifies its caller, by default.
#[tokio::test(start_paused = true)]
async fn bob_never_gets_alices_cached_dashboard() {
    let runs = Runs::default();
    let app = dashboards(&runs, SingleFlightLayer::share().cache(CacheConfig::new()));
    let alice = send(
        &app,
        with_headers("GET", "/dashboard", &[("x-api-key", "alice")]),
    )
    .await;
    let bob = send(
        &app,
        with_headers("GET", "/dashboard", &[("x-api-key", "bob")]),
    )
    .await;
    assert_eq!(alice.text(), "dashboard of alice");
    assert_eq!(bob.text(), "dashboard of bob");
    assert_eq!(runs.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_declared_identity_header_keeps_callers_apart() {
    let runs = Runs::default();
    let identity = tower_singleflight::identity::CallerIdentity::new()
        .header(http::HeaderName::from_static("x-tenant-key"));
    let layer = SingleFlightLayer::share()
        .identity(identity)
        .cache(CacheConfig::new());
    let app = dashboards(&runs, layer);
    let alice = send(
        &app,
        with_headers("GET", "/dashboard", &[("x-tenant-key", "alice")]),
    )
    .await;
    let bob = send(
        &app,
        with_headers("GET", "/dashboard", &[("x-tenant-key", "bob")]),
    )
    .await;
    assert_eq!(alice.text(), "dashboard of alice");
    assert_eq!(bob.text(), "dashboard of bob");
}

/// `GET /form`: a private page with a fresh CSRF token per run.
fn forms(runs: &Runs, layer: tower_singleflight::layer::ShareLayer) -> Router {
    let runs = runs.clone();
    Router::new()
        .route(
            "/form",
            routing::get(move || async move {
                let token = runs.bump();
                sleep(WORK).await;
                (
                    [(header::CACHE_CONTROL, "private")],
                    format!("csrf {token}"),
                )
            }),
        )
        .layer(layer)
}

/// Observation 5: a cookie that is no credential does not make visitors one
/// caller.
#[tokio::test(start_paused = true)]
async fn visitors_sharing_only_a_consent_cookie_never_share_a_private_page() {
    let runs = Runs::default();
    let app = forms(&runs, SingleFlightLayer::share());
    let visitor = || with_headers("GET", "/form", &[("cookie", "consent=yes")]);
    let replies = send_all(&app, [visitor(), visitor()]).await;
    assert_eq!(runs.get(), 2);
    assert_ne!(replies[0].body, replies[1].body);
}

#[tokio::test(start_paused = true)]
async fn a_named_session_cookie_shares_a_private_page_within_one_session() {
    let runs = Runs::default();
    let identity = tower_singleflight::identity::CallerIdentity::new().cookie("session");
    let app = forms(&runs, SingleFlightLayer::share().identity(identity));
    let replies = send_all(
        &app,
        [
            with_headers("GET", "/form", &[("cookie", "consent=yes; session=s1")]),
            with_headers("GET", "/form", &[("cookie", "session=s1; consent=no")]),
            with_headers("GET", "/form", &[("cookie", "session=s2")]),
        ],
    )
    .await;
    assert_eq!(runs.get(), 2);
    assert_eq!(replies[0].body, replies[1].body);
    assert_ne!(replies[0].body, replies[2].body);
}

#[tokio::test(start_paused = true)]
async fn an_extension_set_by_auth_middleware_is_the_caller() {
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    struct UserId(u32);
    let runs = Runs::default();
    let identity = tower_singleflight::identity::CallerIdentity::none().extension::<UserId>();
    let app = forms(&runs, SingleFlightLayer::share().identity(identity));
    let as_user = |user| {
        let mut request = get("/form");
        request.extensions_mut().insert(UserId(user));
        request
    };
    let replies = send_all(&app, [as_user(1), as_user(1), as_user(2)]).await;
    assert_eq!(runs.get(), 2);
    assert_eq!(replies[0].body, replies[1].body);
    assert_ne!(replies[0].body, replies[2].body);
}

/// Observation 7: a body is not part of the key, so requests with one never
/// share; unsafe methods are never coalesced, whatever `methods` lists.
#[tokio::test(start_paused = true)]
async fn requests_with_different_bodies_never_share() {
    let runs = Runs::default();
    let counted = runs.clone();
    let echo = move |body: String| async move {
        counted.bump();
        sleep(WORK).await;
        format!("answer to {body}")
    };
    let layer = SingleFlightLayer::share().methods([http::Method::GET, http::Method::POST]);
    let app = Router::new()
        .route("/search", routing::get(echo.clone()).post(echo))
        .layer(layer);
    let with_body = |method: &str, body: String| {
        Request::builder()
            .method(method)
            .uri("/search")
            .body(Body::from(body))
            .expect("a valid request")
    };
    let posts = (0..5).map(|n| with_body("POST", format!("query {n}")));
    let gets = (0..2).map(|n| with_body("GET", format!("filter {n}")));
    let replies = send_all(&app, posts.chain(gets)).await;
    assert_eq!(runs.get(), 7);
    for (reply, expected) in replies.iter().zip([
        "query 0", "query 1", "query 2", "query 3", "query 4", "filter 0", "filter 1",
    ]) {
        assert_eq!(reply.text(), format!("answer to {expected}"));
    }
    // Unsafe methods are left out of share mode altogether, bodiless or not;
    // a bodiless GET is coalesced.
    let bodiless = send_all(&app, (0..3).map(|_| common::request("POST", "/search"))).await;
    assert_eq!(runs.get(), 10);
    assert_eq!(count(&bodiless, StatusCode::OK), 3);
    send_all(&app, (0..3).map(|_| get("/search"))).await;
    assert_eq!(runs.get(), 11);
}

#[tokio::test(start_paused = true)]
async fn a_request_identity_over_the_cap_passes_through() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::share()
        .cache(CacheConfig::new())
        .max_key_bytes(1024);
    let counted = runs.clone();
    let app = Router::new()
        .route(
            "/home",
            routing::get(move || async move {
                counted.bump();
                "home"
            }),
        )
        .layer(layer.clone());
    let long = format!("/home?pad={}", "x".repeat(2048));
    for _ in 0..3 {
        let reply = send(&app, get(&long)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.role, None);
    }
    assert_eq!(runs.get(), 3, "never cached");
    assert_eq!(layer.stats().unkeyed, 3);
    assert_eq!(
        layer.response_cache().map(|cache| cache.entry_count()),
        Some(0)
    );
}
