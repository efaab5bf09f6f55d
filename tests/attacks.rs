//! Attacks on the promises of request identity, found by two reviews: each
//! test failed on the version of the code it was written against, and each
//! comment says what the hole was before it was closed.

mod common;

use std::time::Duration;

use axum::{
    http::{header, HeaderMap, StatusCode},
    routing, Router,
};
use common::{failing_backend, get, send, tenant_pages, versioned_items, with_headers, Runs};
use tokio::time::sleep;
use tower::ServiceExt;
use tower_singleflight::{identity::HostSource, key, CacheConfig, FlightRole, SingleFlightLayer};

const WORK: Duration = Duration::from_millis(300);

/// `normalize` drops everything up to the last `@` of a `Host` (or forwarded
/// host) and never looks at it: `evil.example/#@a.example` is keyed as
/// `a.example`, while the application reads the whole value. A page built
/// from it (`https://evil.example/#@a.example/...` goes to evil.example) is
/// stored for every visitor of a.example: host-header cache poisoning.
#[tokio::test(start_paused = true)]
async fn a_host_with_userinfo_cannot_poison_the_real_hosts_cache() {
    for poison in [
        with_headers("GET", "/home", &[("host", "evil.example/#@a.example")]),
        with_headers(
            "GET",
            "/home",
            &[
                ("host", "a.example"),
                ("x-forwarded-host", "evil.example/#@a.example"),
            ],
        ),
    ] {
        let runs = Runs::default();
        let app = tenant_pages(&runs);
        let attack = send(&app, poison).await;
        assert!(attack.text().contains("evil.example"), "{}", attack.text());

        let visitor = send(&app, with_headers("GET", "/home", &[("host", "a.example")])).await;
        assert_eq!(
            visitor.text(),
            "home of a.example",
            "the visitor got the page made for the attacker's host"
        );
    }
}

/// An empty (or all-commas) `X-Forwarded-Host` has no elements, so host
/// agreement never sees it and the key is `Host`'s; an application that reads
/// `X-Forwarded-Host` first (axum-extra's `Host`) reads `""` and answers for
/// no tenant, and that answer is stored for the real host.
#[tokio::test(start_paused = true)]
async fn an_empty_forwarded_host_cannot_poison_the_real_hosts_cache() {
    for empty in ["", ",", "a.example,"] {
        let runs = Runs::default();
        let app = tenant_pages(&runs);
        let poison = with_headers(
            "GET",
            "/home",
            &[("host", "a.example"), ("x-forwarded-host", empty)],
        );
        let attack = send(&app, poison).await;
        assert_eq!(attack.text(), format!("home of {empty}"));

        let visitor = send(&app, with_headers("GET", "/home", &[("host", "a.example")])).await;
        assert_eq!(
            visitor.text(),
            "home of a.example",
            "X-Forwarded-Host {empty:?}: the visitor got the page made for another host"
        );
    }
}

/// The key decodes `%6F` to `o`, but axum routes on the raw path: `/h%6Fme`
/// does not match the static route `/home` and is answered `404`. That `404`
/// (a cached status by default) is stored under `/home`'s key: one request
/// takes the page down for every visitor for the TTL.
#[tokio::test(start_paused = true)]
async fn an_encoded_spelling_of_a_static_route_cannot_poison_it() {
    let runs = Runs::default();
    let counted = runs.clone();
    let app = Router::new()
        .route(
            "/home",
            routing::get(move || async move {
                counted.bump();
                "home"
            }),
        )
        .layer(SingleFlightLayer::share().cache(CacheConfig::new()));
    let attack = send(&app, get("/h%6Fme")).await;
    assert_eq!(attack.status, StatusCode::NOT_FOUND, "axum: no such route");

    let visitor = send(&app, get("/home")).await;
    assert_eq!(
        visitor.status,
        StatusCode::OK,
        "the visitor of /home got the 404 of /h%6Fme (role {:?})",
        visitor.role
    );
    assert_eq!(visitor.text(), "home");
}

/// The same, without a cache: a visitor who joins the flight of the encoded
/// spelling gets its `404`.
#[tokio::test(start_paused = true)]
async fn an_encoded_spelling_of_a_static_route_is_not_shared_with_it() {
    let layer = SingleFlightLayer::share();
    let app = Router::new()
        .route(
            "/home",
            routing::get(|| async {
                sleep(WORK).await;
                "home"
            }),
        )
        .fallback(|| async {
            sleep(WORK).await;
            StatusCode::NOT_FOUND
        })
        .layer(layer.clone());
    let attack = common::spawn(&app, get("/h%6Fme"));
    // It was let through (not led), so the visitor cannot join it.
    common::until(|| layer.stats().unkeyed == 1).await;
    let visitor = send(&app, get("/home")).await;
    assert_eq!(attack.await.unwrap().status, StatusCode::NOT_FOUND);
    assert_eq!(
        visitor.status,
        StatusCode::OK,
        "the visitor shared the 404 (role {:?})",
        visitor.role
    );
}

/// Promise 3: entries are weighed by their key, and keys past
/// `max_key_bytes` are never kept. With a key of the crate's own
/// `key::header`, the key's bytes are neither weighed nor capped: unique
/// large header values fill the heap far past `max_bytes`.
#[tokio::test(start_paused = true)]
async fn a_header_key_is_weighed_and_capped() {
    const MAX_BYTES: u64 = 1024 * 1024;
    let layer = SingleFlightLayer::share()
        .key(key::header(http::HeaderName::from_static("x-job")))
        .cache(CacheConfig::new().max_bytes(MAX_BYTES));
    let app = Router::new()
        .route("/echo", routing::get(|| async { "small" }))
        .layer(layer.clone());
    let cache = layer.response_cache().expect("a cache").clone();
    let job = |n: usize, len: usize| {
        let mut request = get("/echo");
        let value = format!("{n:08}{}", "j".repeat(len));
        request
            .headers_mut()
            .insert("x-job", value.parse().expect("a header value"));
        request
    };
    for n in 0..400 {
        send(&app, job(n, 6000)).await;
    }
    cache.run_pending_tasks();
    assert!(
        cache.entry_count() * 6000 <= MAX_BYTES,
        "{} entries each keyed by 6 KB, weighed {} in all, for a max_bytes of {MAX_BYTES}",
        cache.entry_count(),
        cache.weighted_size()
    );
    let before = layer.stats().unkeyed;
    for n in 0..10 {
        send(&app, job(1000 + n, 60_000)).await;
    }
    assert_eq!(
        layer.stats().unkeyed - before,
        10,
        "keys of 60 KB were kept, past max_key_bytes"
    );
}

/// Promise 6 with the cache: the followers' one more call succeeds, but it
/// runs with no cache target (`Target::default()` on rejoin), so its answer
/// is never stored and the very next request calls the backend again.
#[tokio::test(start_paused = true)]
async fn the_one_more_call_after_a_failure_is_cached() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::share().cache(CacheConfig::new());
    let service = tower::Layer::layer(&layer, failing_backend(&runs, 1, WORK));
    let calls: Vec<_> = (0..4)
        .map(|_| tokio::spawn(service.clone().oneshot(get("/report"))))
        .collect();
    for call in calls {
        let _ = call.await.expect("the call ran");
    }
    assert_eq!(runs.get(), 2, "the failed call and one more");

    // Control: an answer of a call that did not follow a failure is stored.
    service.clone().oneshot(get("/control")).await.unwrap();
    let control = service.clone().oneshot(get("/control")).await.unwrap();
    assert_eq!(
        control.extensions().get::<FlightRole>(),
        Some(&FlightRole::CacheHit)
    );
    assert_eq!(runs.get(), 3);

    let next = service.clone().oneshot(get("/report")).await.unwrap();
    assert_eq!(
        next.extensions().get::<FlightRole>(),
        Some(&FlightRole::CacheHit),
        "the answer of the one more call was not stored"
    );
    assert_eq!(runs.get(), 3);
}

/// `invalidate_on_write` promises that a successful `POST` to a path drops
/// its cached answers. A bodiless `POST` in `methods` (which the docs say can
/// be coalesced) takes the coalesced path, which never invalidates.
#[tokio::test(start_paused = true)]
async fn a_coalesced_bodiless_post_still_invalidates_the_cached_read() {
    let runs = Runs::default();
    let counted = runs.clone();
    let layer = SingleFlightLayer::share()
        .methods([http::Method::GET, http::Method::HEAD, http::Method::POST])
        .cache(CacheConfig::new().invalidate_on_write(true));
    let app = Router::new()
        .route(
            "/items/{id}",
            routing::get(move || async move { format!("version {}", counted.bump()) })
                .post(|| async { StatusCode::NO_CONTENT }),
        )
        .layer(layer);
    assert_eq!(send(&app, get("/items/1")).await.text(), "version 1");
    assert_eq!(send(&app, get("/items/1")).await.text(), "version 1");
    let write = send(&app, common::request("POST", "/items/1")).await;
    assert_eq!(write.status, StatusCode::NO_CONTENT);
    assert_eq!(
        send(&app, get("/items/1")).await.text(),
        "version 2",
        "the successful POST did not invalidate the cached GET"
    );
}

/// Promise 4: no setting can panic. `retry_after(Duration::MAX)` (the
/// crate's own word for "never") makes the `503` of an overloaded flight
/// compute `u64::MAX + 1` seconds for its `Retry-After`: an overflow panic
/// in debug builds, and `Retry-After: 1` (a retry storm) in release.
#[tokio::test(start_paused = true)]
async fn a_retry_after_of_duration_max_does_not_panic() {
    let layer = SingleFlightLayer::share()
        .retry_after(Duration::MAX)
        .max_waiters(1);
    let app = Router::new()
        .route(
            "/slow",
            routing::get(|| async {
                sleep(WORK).await;
                "slow"
            }),
        )
        .layer(layer.clone());
    let leader = common::spawn(&app, get("/slow"));
    common::until(|| layer.stats().leaders == 1).await;
    let overloaded = common::spawn(&app, get("/slow"))
        .await
        .expect("the overloaded request was answered, not a panic");
    assert_eq!(overloaded.status, StatusCode::SERVICE_UNAVAILABLE);
    let retry: u64 = overloaded.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 1, "Retry-After: {retry} for a retry_after of never");
    assert_eq!(leader.await.unwrap().status, StatusCode::OK);
}

/// `methods` lets a bodiless `POST` be coalesced with identical `POST`s in
/// flight; but the cache is consulted and filled for it as for a `GET`, so a
/// later `POST` (a trigger, a vote, a "mark as read") is answered from the
/// cache for the TTL and never reaches the handler.
#[tokio::test(start_paused = true)]
async fn a_later_bodiless_post_is_not_answered_from_the_cache() {
    let runs = Runs::default();
    let counted = runs.clone();
    let layer = SingleFlightLayer::share()
        .methods([http::Method::GET, http::Method::HEAD, http::Method::POST])
        .cache(CacheConfig::new());
    let app = Router::new()
        .route(
            "/jobs/nightly/run",
            routing::post(move || async move { format!("run {}", counted.bump()) }),
        )
        .layer(layer);
    let first = send(&app, common::request("POST", "/jobs/nightly/run")).await;
    assert_eq!(first.text(), "run 1");
    sleep(Duration::from_secs(5)).await;
    let second = send(&app, common::request("POST", "/jobs/nightly/run")).await;
    assert_eq!(
        second.text(),
        "run 2",
        "the second POST, 5 s later, was answered from the cache (role {:?})",
        second.role
    );
    assert_eq!(runs.get(), 2);
}

/// A write whose identity is merely too long (a long query) is read as one
/// that named two hosts (`Target::written` maps every `Unkeyable` to
/// `AnyHost`): its success drops the path's cached answers on every host.
/// One tenant's write purges every other tenant's cache.
#[tokio::test(start_paused = true)]
async fn a_long_write_on_one_host_does_not_invalidate_another_hosts_cache() {
    let runs = Runs::default();
    let app = versioned_items(&runs);
    let read = || with_headers("GET", "/items/1", &[("host", "a.example")]);
    assert_eq!(send(&app, read()).await.text(), "version 1");
    assert_eq!(send(&app, read()).await.role, Some(FlightRole::CacheHit));

    let long = format!("/items/1?pad={}", "x".repeat(9 * 1024));
    let write = send(&app, with_headers("PUT", &long, &[("host", "b.example")])).await;
    assert_eq!(write.status, StatusCode::NO_CONTENT);
    let after = send(&app, read()).await;
    assert_eq!(
        after.role,
        Some(FlightRole::CacheHit),
        "a write to b.example dropped a.example's cached answer"
    );
    assert_eq!(runs.get(), 1);
}

// Found by the second review.

/// The host an application behind a proxy that sets `X-Forwarded-Host`
/// picks its tenant by: that header, else (a request that reached it
/// directly) `Host`, as `HostSource::XForwardedHost` documents.
fn forwarded_tenant(headers: &HeaderMap) -> String {
    headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|value| value.to_str().ok())
        .unwrap_or("?")
        .to_owned()
}

/// `POST /jobs/run`: a trigger that runs for 5 s, behind reject mode keyed
/// by the default key with `HostSource::XForwardedHost`.
fn forwarded_triggers(runs: &Runs) -> Router {
    let counted = runs.clone();
    Router::new()
        .route(
            "/jobs/run",
            routing::post(move || async move {
                counted.bump();
                sleep(Duration::from_secs(5)).await;
                "started"
            }),
        )
        .layer(SingleFlightLayer::reject().host_source(HostSource::XForwardedHost))
}

/// README: "In reject mode, forwarded headers are read only when they are
/// the `HostSource`, so a made-up one can neither move the key nor get a
/// trigger refused." With `HostSource::XForwardedHost`, a `Forwarded: host=`
/// the client added (and the proxy passed on) is read all the same: the
/// trigger is refused `400`.
#[tokio::test(start_paused = true)]
async fn reject_mode_ignores_a_made_up_forwarded_host_that_is_not_the_source() {
    let runs = Runs::default();
    let app = forwarded_triggers(&runs);
    let reply = send(
        &app,
        with_headers(
            "POST",
            "/jobs/run",
            &[
                ("host", "internal:8080"),
                ("x-forwarded-host", "a.example"),
                ("forwarded", "for=1.2.3.4;host=made-up.example"),
            ],
        ),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "a made-up Forwarded host got the trigger refused"
    );
    assert_eq!(runs.get(), 1);
}

/// The same header moves the lock: with `HostSource::XForwardedHost` and a
/// request that reached the application directly (no `X-Forwarded-Host`,
/// so the application reads `Host`), a made-up `Forwarded: host=` becomes
/// the key's host. Two triggers for `a.example`, each with another made-up
/// host, run side by side instead of the second getting `409`.
#[tokio::test(start_paused = true)]
async fn a_made_up_forwarded_host_does_not_walk_around_the_lock() {
    let runs = Runs::default();
    let app = forwarded_triggers(&runs);
    let trigger = |made_up: &'static str| {
        let request = with_headers(
            "POST",
            "/jobs/run",
            &[("host", "a.example"), ("forwarded", made_up)],
        );
        common::spawn(&app, request)
    };
    let first = trigger("host=x1.example");
    tokio::task::yield_now().await;
    let second = trigger("host=x2.example");
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        second.status,
        StatusCode::CONFLICT,
        "the second trigger for a.example ran beside the first ({} runs)",
        runs.get()
    );
}

/// Share mode, `HostSource::XForwardedHost`, a request that reached the
/// application directly: the application answers for `Host` (a.example), the
/// key says the made-up `Forwarded` host (b.example). The proxied visitor of
/// b.example is then served a.example's page from the cache.
#[tokio::test]
async fn a_forwarded_host_that_is_not_the_source_cannot_poison_another_hosts_cache() {
    let runs = Runs::default();
    let counted = runs.clone();
    let app: Router = Router::new()
        .route(
            "/home",
            routing::get(move |headers: HeaderMap| async move {
                counted.bump();
                format!("home of {}", forwarded_tenant(&headers))
            }),
        )
        .layer(
            SingleFlightLayer::share()
                .host_source(HostSource::XForwardedHost)
                .cache(CacheConfig::new()),
        );
    let poison = with_headers(
        "GET",
        "/home",
        &[("host", "a.example"), ("forwarded", "host=b.example")],
    );
    assert_eq!(send(&app, poison).await.text(), "home of a.example");

    let visitor = with_headers(
        "GET",
        "/home",
        &[("host", "internal:8080"), ("x-forwarded-host", "b.example")],
    );
    assert_eq!(send(&app, visitor).await.text(), "home of b.example");
}

/// `methods` now admits every safe method, `OPTIONS` included, but a
/// `ShareKey` tells only `HEAD` apart from the rest: with a key that does
/// not name the method (`key::path()`, or the crate docs' own
/// tenant-and-path closure), a CORS preflight's empty `204` is cached and
/// served to every `GET` of the page.
#[tokio::test]
async fn an_options_answer_is_never_served_to_a_get() {
    let app: Router = Router::new()
        .route(
            "/page",
            routing::get(|| async { "the page" })
                .options(|| async { (StatusCode::NO_CONTENT, [(header::ALLOW, "GET, OPTIONS")]) }),
        )
        .layer(
            SingleFlightLayer::share()
                .key(key::path())
                .methods([http::Method::GET, http::Method::HEAD, http::Method::OPTIONS])
                .cache(CacheConfig::new()),
        );
    let preflight = send(&app, common::request("OPTIONS", "/page")).await;
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    let page = send(&app, get("/page")).await;
    assert_eq!(
        (page.status, page.text()),
        (StatusCode::OK, "the page"),
        "a GET got the OPTIONS answer ({:?})",
        page.role
    );
}
