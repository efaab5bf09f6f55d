//! The response cache under attack (issue 11's adversarial review): each
//! test was a way around a promise of RFC 9111 or of the crate, found
//! against the first version of the HTTP cache.

mod common;

use std::time::{Duration, SystemTime};

use axum::http::{header, HeaderName, StatusCode};
use common::{
    get,
    origin::{answer, cache_status, items, not_modified, on_host, targeted, total, Origin},
    send, send_all, with_headers,
};
use tokio::time::advance;
use tower_singleflight::{CacheConfig, FlightRole};

const S: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// 1. Was: a 304 bypassed the sharing policy; its Set-Cookie was shared and
// stored.

/// 200 fresh for 10 s with `ETag: "v1"`; a conditional request gets a 304
/// that (as many origins do for a visitor without a session) sets a cookie,
/// plus whatever `extra` says.
fn revalidating_origin(extra: &'static [(&'static str, &'static str)]) -> Origin {
    Origin::new(CacheConfig::new(), move |seen| {
        if seen.request.contains_key(header::IF_NONE_MATCH) {
            let mut headers = vec![
                (header::ETAG, "\"v1\"".to_owned()),
                (header::SET_COOKIE, format!("sid=visitor-{}", seen.run)),
            ];
            for (name, value) in extra {
                headers.push((HeaderName::from_static(name), (*value).to_owned()));
            }
            return not_modified(&headers);
        }
        answer(
            &seen,
            &[
                (header::CACHE_CONTROL, "max-age=10".to_owned()),
                (header::ETAG, "\"v1\"".to_owned()),
            ],
        )
    })
}

#[tokio::test(start_paused = true)]
async fn a_304s_set_cookie_is_never_stored_for_the_next_visitor() {
    let origin = revalidating_origin(&[("cache-control", "max-age=600")]);
    origin.get("/a").await;
    advance(20 * S).await;
    // Visitor 1's request revalidates; the 304 gives visitor 1 a session.
    let first = origin.get("/a").await;
    assert_eq!(first.headers[header::SET_COOKIE], "sid=visitor-2");
    // Visitor 2, a minute later, must not be handed visitor 1's session
    // (the refreshed answer is not stored: it sets a cookie).
    advance(60 * S).await;
    let second = origin.get("/a").await;
    assert_eq!(
        second.headers.get(header::SET_COOKIE),
        None,
        "visitor 1's session cookie served from the cache to visitor 2"
    );
}

#[tokio::test(start_paused = true)]
async fn a_304_that_turns_private_is_not_handed_to_the_herd() {
    let origin = revalidating_origin(&[("cache-control", "private, max-age=600")]);
    origin.get("/a").await;
    advance(20 * S).await;
    let herd = send_all(&origin.app, (0..5).map(|_| get("/a"))).await;
    // The 304 says the answer is now private (and sets one visitor's
    // cookie): a 200 saying so would not be shared, nor may this.
    let with_cookie = herd
        .iter()
        .filter(|reply| reply.headers.contains_key(header::SET_COOKIE))
        .count();
    assert!(
        with_cookie <= 1,
        "{with_cookie} callers got one private answer and its Set-Cookie ({:?})",
        herd.iter()
            .map(|reply| reply.headers.get(header::SET_COOKIE).cloned())
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------
// 2. Was: request no-store let any client switch coalescing off.

#[tokio::test(start_paused = true)]
async fn a_herd_of_no_store_requests_still_makes_one_origin_call() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        answer(&seen, &[(header::CACHE_CONTROL, "max-age=60".into())])
    });
    let herd = (0..50).map(|_| with_headers("GET", "/a", &[("cache-control", "no-store")]));
    send_all(&origin.app, herd).await;
    assert_eq!(
        origin.runs.get(),
        1,
        "a header every client may send bypasses coalescing"
    );
}

// ---------------------------------------------------------------------------
// 3. Was: a follower that entered again after a failed leader was counted
// twice.

#[tokio::test(start_paused = true)]
async fn counters_add_up_when_followers_enter_again() {
    // §4.3.4: the 304 names another representation; the leader's call
    // "fails" and its followers enter the flight again.
    let origin = Origin::new(CacheConfig::new(), |seen| {
        if seen.request.contains_key(header::IF_NONE_MATCH) {
            return not_modified(&[(header::ETAG, "\"other\"".into())]);
        }
        answer(
            &seen,
            &[
                (header::CACHE_CONTROL, "max-age=10".into()),
                (header::ETAG, "\"v1\"".into()),
            ],
        )
    });
    origin.get("/a").await;
    advance(20 * S).await;
    send_all(&origin.app, (0..5).map(|_| get("/a"))).await;
    let stats = origin.stats();
    assert_eq!(
        total(&stats),
        6,
        "hits+stale+misses+passes must be the 6 requests sent: {stats:?}"
    );
}

// ---------------------------------------------------------------------------
// 4. Was: a client's conditional request got a 304 for a stored 404.

#[tokio::test(start_paused = true)]
async fn a_stored_404_is_never_answered_304() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        let mut response = answer(
            &seen,
            &[
                (header::CACHE_CONTROL, "max-age=60".into()),
                // A static 404 page served with its file's validators.
                (header::ETAG, "\"404-page\"".into()),
                (
                    header::LAST_MODIFIED,
                    "Sun, 06 Nov 1994 08:49:37 GMT".into(),
                ),
            ],
        );
        *response.status_mut() = StatusCode::NOT_FOUND;
        response
    });
    let ims = [("if-modified-since", "Mon, 07 Nov 1994 08:49:37 GMT")];
    // On the miss, the leader's 404 stays a 404 (`finish` checks for 200)...
    let miss = origin.get_with("/gone", &ims).await;
    assert_eq!(miss.status, StatusCode::NOT_FOUND);
    // ...but the same request on a hit gets a 304 (RFC 9110 §13.2.1: a
    // precondition is evaluated only where the answer would be 2xx): a
    // browser keeps showing the page that is gone.
    let hit = origin.get_with("/gone", &ims).await;
    assert_eq!(
        hit.status,
        StatusCode::NOT_FOUND,
        "a stored 404 answered 304"
    );
    let inm = origin
        .get_with("/gone", &[("if-none-match", "\"404-page\"")])
        .await;
    assert_eq!(
        inm.status,
        StatusCode::NOT_FOUND,
        "a stored 404 answered 304"
    );
}

// ---------------------------------------------------------------------------
// 5. Was (§4.4): relative Location / Content-Location were not resolved,
// and a write naming two hosts flushed every host.

#[tokio::test(start_paused = true)]
async fn a_relative_location_invalidates_what_it_resolves_to() {
    let mut missed = Vec::new();
    for (post, location) in [
        // RFC 3986 §5.2: against /items/, "5" is /items/5; against /items,
        // "items/5" is /items/5; "./5" against /items/ too.
        ("/items/", "5"),
        ("/items", "items/5"),
        ("/items/", "./5"),
        // A network-path reference to the same host.
        ("/items", "//example.com/items/5"),
        // The same host, with userinfo.
        ("/items", "http://user@example.com/items/5"),
    ] {
        let origin = items();
        send(&origin.app, on_host(get("/items/5"))).await;
        send(
            &origin.app,
            on_host(with_headers("POST", post, &[("x-location", location)])),
        )
        .await;
        let again = send(&origin.app, on_host(get("/items/5"))).await;
        if again.text() != "run 3" {
            missed.push(format!("POST {post} + Location: {location}"));
        }
    }
    assert!(missed.is_empty(), "/items/5 left stored after: {missed:?}");
}

#[tokio::test(start_paused = true)]
async fn a_write_on_one_host_does_not_flush_another_hosts_answers() {
    let origin = items();
    let tenant_b = || {
        let mut request = get("/items");
        request
            .headers_mut()
            .insert(header::HOST, "b.example".parse().unwrap());
        request
    };
    send(&origin.app, tenant_b()).await;
    // A client of tenant A writes in absolute form naming another host than
    // its Host header (RFC 9112 §3.2.2: the target's authority wins).
    let write = axum::http::Request::builder()
        .method("POST")
        .uri("http://a.example/items")
        .header(header::HOST, "c.example")
        .body(axum::body::Body::empty())
        .unwrap();
    send(&origin.app, write).await;
    assert_eq!(
        send(&origin.app, tenant_b()).await.text(),
        "run 1",
        "a write naming a.example and c.example flushed b.example's answer"
    );
}

// ---------------------------------------------------------------------------
// 6. Was (RFC 9213): CDN-Cache-Control did not override Cache-Control where
// the sharing policy reads it.

#[tokio::test(start_paused = true)]
async fn cdn_cache_control_lets_the_cdn_store_what_cache_control_keeps_from_browsers() {
    // The usual RFC 9213 pattern: browsers must not store it, the CDN may.
    let origin = targeted(
        CacheConfig::new().cdn_cache_control(),
        "no-store",
        "max-age=600",
    );
    origin.get("/a").await;
    advance(60 * S).await;
    assert_eq!(
        origin.get("/a").await.text(),
        "run 1",
        "CDN-Cache-Control: max-age=600 read first, yet not stored"
    );
}

#[tokio::test(start_paused = true)]
async fn cdn_cache_control_no_store_is_not_shared_with_a_herd() {
    // The reverse: browsers may keep it, this cache must not: it is not to
    // be handed to anyone but the one who asked.
    let origin = targeted(
        CacheConfig::new().cdn_cache_control(),
        "max-age=60",
        "no-store",
    );
    let herd = send_all(&origin.app, (0..4).map(|_| get("/a"))).await;
    let shared = herd.iter().filter(|reply| reply.text() == "run 1").count();
    assert_eq!(
        shared, 1,
        "an answer this cache may not store went to {shared} callers"
    );
}

// ---------------------------------------------------------------------------
// 7. Was: followers of another variant each went to the origin on their own.

#[tokio::test(start_paused = true)]
async fn a_herd_of_two_variants_makes_two_origin_calls() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        answer(
            &seen,
            &[
                (header::CACHE_CONTROL, "max-age=60".into()),
                (header::VARY, "Accept-Language".into()),
            ],
        )
    });
    let herd = (0..40).map(|at| {
        let language = if at % 2 == 0 { "en" } else { "fr" };
        with_headers("GET", "/a", &[("accept-language", language)])
    });
    send_all(&origin.app, herd).await;
    assert_eq!(origin.runs.get(), 2, "one call per variant");
}

// ---------------------------------------------------------------------------
// 8. Was: Cache-Status was missing on some answers that went through the
// cache.

#[tokio::test(start_paused = true)]
async fn every_answer_through_the_cache_has_cache_status() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        answer(&seen, &[(header::CACHE_CONTROL, "max-age=60".into())])
    });
    let only = origin
        .get_with("/a", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(only.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        !cache_status(&only).is_empty(),
        "only-if-cached 504 has no Cache-Status"
    );
    let passed = origin
        .get_with("/a", &[("cache-control", "no-store")])
        .await;
    assert!(
        !cache_status(&passed).is_empty(),
        "a no-store pass has no Cache-Status"
    );
}

// ---------------------------------------------------------------------------
// 9. Was: a 304 that changed Vary was not applied to variant selection.

#[tokio::test(start_paused = true)]
async fn a_304_with_vary_star_is_never_served_from_the_cache() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        if seen.request.contains_key(header::IF_NONE_MATCH) {
            return not_modified(&[
                (header::ETAG, "\"v1\"".into()),
                (header::CACHE_CONTROL, "max-age=600".into()),
                (header::VARY, "*".into()),
            ]);
        }
        answer(
            &seen,
            &[
                (header::CACHE_CONTROL, "max-age=10".into()),
                (header::ETAG, "\"v1\"".into()),
            ],
        )
    });
    origin.get("/a").await;
    advance(20 * S).await;
    origin.get("/a").await;
    let after = origin.get("/a").await;
    // §4.1: a stored response with `Vary: *` always fails to match.
    assert_ne!(
        after.role,
        Some(FlightRole::CacheHit),
        "served from the cache with Vary: {:?}",
        after.headers.get(header::VARY)
    );
}

#[tokio::test(start_paused = true)]
async fn a_304_that_adds_vary_keeps_other_languages_off_the_stored_body() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        if seen.request.contains_key(header::IF_NONE_MATCH) {
            return not_modified(&[
                (header::ETAG, "\"v1\"".into()),
                (header::CACHE_CONTROL, "max-age=600".into()),
                (header::VARY, "Accept-Language".into()),
            ]);
        }
        let language = seen
            .request
            .get(header::ACCEPT_LANGUAGE)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let mut response = answer(
            &seen,
            &[
                (header::CACHE_CONTROL, "max-age=10".into()),
                (header::ETAG, "\"v1\"".into()),
            ],
        );
        *response.body_mut() = axum::body::Body::from(format!("lang {language}"));
        response
    });
    origin.get_with("/a", &[("accept-language", "en")]).await;
    advance(20 * S).await;
    origin.get_with("/a", &[("accept-language", "en")]).await;
    let french = origin.get_with("/a", &[("accept-language", "fr")]).await;
    assert_ne!(
        (french.role, french.text()),
        (Some(FlightRole::CacheHit), "lang en"),
        "the stored answer says Vary: Accept-Language, yet fr got the en body from the cache"
    );
}

// ---------------------------------------------------------------------------
// 10. Was: an empty field value matched an absent one under Vary.

#[tokio::test(start_paused = true)]
async fn vary_tells_an_empty_field_from_an_absent_one() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        answer(&seen, &[(header::VARY, "X-Tenant".into())])
    });
    origin.get("/a").await;
    let empty = origin.get_with("/a", &[("x-tenant", "")]).await;
    assert_eq!(
        empty.text(),
        "run 2",
        "§4.1: a field absent from one request matches only where it is absent"
    );
}

// ---------------------------------------------------------------------------
// 11. Was (§4.3.2): If-Modified-Since against a stored answer without
// Last-Modified was not read against its Date.

#[tokio::test(start_paused = true)]
async fn if_modified_since_falls_back_to_the_stored_date() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        answer(
            &seen,
            &[
                (header::CACHE_CONTROL, "max-age=60".into()),
                (header::DATE, seen.clock.date(0)),
            ],
        )
    });
    origin.get("/a").await;
    let since: &'static str = Box::leak(
        httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600)).into_boxed_str(),
    );
    let reply = origin.get_with("/a", &[("if-modified-since", since)]).await;
    assert_eq!(reply.status, StatusCode::NOT_MODIFIED);
}
