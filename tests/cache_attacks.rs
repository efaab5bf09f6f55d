//! The response cache under attack (issue 11's adversarial review): each
//! test was a way around a promise of RFC 9111 or of the crate, found
//! against the first version of the HTTP cache.

mod common;

use std::time::{Duration, SystemTime};

use axum::http::{header, HeaderName, Method, StatusCode};
use common::{
    get,
    origin::{
        age, answer, cache_status, items, not_modified, on_host, targeted, total, validated, Origin,
    },
    send, send_all, with_headers, Reply,
};
use tokio::time::advance;
use tower_singleflight::{CacheConfig, FlightRole, SingleFlightLayer};

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
    let origin = validated(CacheConfig::new(), "max-age=10", &[("etag", "\"other\"")]);
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
    // Made here from nothing stored: RFC 9211 §2 says to add no member
    // (the third review; the first had asked for one).
    assert!(cache_status(&only).is_empty(), "{:?}", cache_status(&only));
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
    let origin = validated(
        CacheConfig::new(),
        "max-age=10",
        &[
            ("etag", "\"v1\""),
            ("cache-control", "max-age=600"),
            ("vary", "*"),
        ],
    );
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

// ===========================================================================
// Found by the second review.

// // RFC 8941 / RFC 9211: a minimal sf-list checker for Cache-Status.

/// Whether `field` is a valid RFC 8941 List whose members are Items
/// (token or string) with parameters, as RFC 9211 requires.
fn valid_sf_list(field: &str) -> Result<(), String> {
    let bytes = field.as_bytes();
    let mut at = 0;
    let ows = |at: &mut usize| {
        while *at < bytes.len() && (bytes[*at] == b' ' || bytes[*at] == b'\t') {
            *at += 1;
        }
    };
    let sp = |at: &mut usize| {
        while *at < bytes.len() && bytes[*at] == b' ' {
            *at += 1;
        }
    };
    fn bare_item(bytes: &[u8], at: &mut usize) -> Result<(), String> {
        let start = *at;
        match bytes.get(*at) {
            Some(b'"') => {
                *at += 1;
                loop {
                    match bytes.get(*at) {
                        Some(b'\\') => *at += 2,
                        Some(b'"') => {
                            *at += 1;
                            return Ok(());
                        }
                        Some(c) if (0x20..0x7f).contains(c) => *at += 1,
                        _ => return Err(format!("bad string at {start}")),
                    }
                }
            }
            Some(c) if *c == b'-' || c.is_ascii_digit() => {
                if *c == b'-' {
                    *at += 1;
                }
                let digits = *at;
                while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
                    *at += 1;
                }
                let n = *at - digits;
                if n == 0 || n > 15 {
                    return Err(format!(
                        "sf-integer of {n} digits at {start} (at most 15 allowed)"
                    ));
                }
                Ok(())
            }
            Some(c) if c.is_ascii_alphabetic() || *c == b'*' => {
                *at += 1;
                while bytes
                    .get(*at)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || b":/!#$%&'*+-.^_`|~".contains(c))
                {
                    *at += 1;
                }
                Ok(())
            }
            Some(b'?') => {
                *at += 2;
                Ok(())
            }
            _ => Err(format!("no bare item at {start}")),
        }
    }
    fn key(bytes: &[u8], at: &mut usize) -> Result<(), String> {
        match bytes.get(*at) {
            Some(c) if c.is_ascii_lowercase() || *c == b'*' => *at += 1,
            _ => return Err(format!("bad key at {at}")),
        }
        while bytes
            .get(*at)
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.*".contains(c))
        {
            *at += 1;
        }
        Ok(())
    }
    sp(&mut at);
    loop {
        // A member: an item (String or Token for RFC 9211) and parameters.
        if !matches!(bytes.get(at), Some(b'"'))
            && !bytes.get(at).is_some_and(u8::is_ascii_alphabetic)
        {
            return Err(format!("member is not a token or string at {at}"));
        }
        bare_item(bytes, &mut at)?;
        while bytes.get(at) == Some(&b';') {
            at += 1;
            sp(&mut at);
            key(bytes, &mut at)?;
            if bytes.get(at) == Some(&b'=') {
                at += 1;
                bare_item(bytes, &mut at)?;
            }
        }
        ows(&mut at);
        if at == bytes.len() {
            return Ok(());
        }
        if bytes[at] != b',' {
            return Err(format!("expected ',' at {at} in {field:?}"));
        }
        at += 1;
        ows(&mut at);
        if at == bytes.len() {
            return Err("trailing comma".into());
        }
    }
}

fn assert_valid_cache_status(reply: &Reply, what: &str) {
    let members = cache_status(reply);
    assert!(!members.is_empty(), "{what}: no Cache-Status");
    let joined = members.join(", ");
    if let Err(error) = valid_sf_list(&joined) {
        panic!("{what}: Cache-Status {joined:?} is not an RFC 8941 list: {error}");
    }
}

// ---------------------------------------------------------------------------
// 12. Was: a 304 the cache made from the origin's fresh 200 for a client's
// own conditional request dropped the origin's Set-Cookie.

#[tokio::test(start_paused = true)]
async fn a_304_made_from_the_origins_200_keeps_its_set_cookie() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        answer(
            &seen,
            &[
                (header::ETAG, "\"v1\"".into()),
                // Session rotation: every answer renews the session.
                (header::SET_COOKIE, format!("sid=renewed-{}", seen.run)),
            ],
        )
    });
    let reply = origin
        .get_with(
            "/account",
            &[("if-none-match", "\"v1\""), ("cookie", "sid=old")],
        )
        .await;
    // The origin answered (it never saw the precondition): whatever the
    // status, its Set-Cookie is the client's.
    assert_eq!(origin.runs.get(), 1);
    assert!(
        reply.headers.contains_key(header::SET_COOKIE),
        "{} without the origin's Set-Cookie: {:?}",
        reply.status,
        reply.headers
    );
}

// ---------------------------------------------------------------------------
// 13. Was: stale-if-error served the very body a 304 said was no longer
// current.

#[tokio::test(start_paused = true)]
async fn a_304_for_another_representation_never_serves_the_old_body_even_with_stale_if_error() {
    let config = CacheConfig::new().stale_if_error(Duration::from_secs(600));
    let origin = validated(config, "max-age=10", &[("etag", "\"v2\"")]);
    origin.get("/a").await;
    advance(20 * S).await;
    let reply = origin.get("/a").await;
    // The origin is up and says the current representation is "v2": the
    // cache dropped "v1" as not matching (§4.3.4), yet serves it.
    assert_ne!(
        (reply.text(), reply.role),
        ("run 1", Some(FlightRole::Stale)),
        "the dropped v1 was served as stale-if-error, though the origin did not fail"
    );
}

// ---------------------------------------------------------------------------
// 14. Was: one failed refresh kept the origin from being asked again for a
// whole freshness lifetime, however long.

#[tokio::test(start_paused = true)]
async fn one_failed_refresh_does_not_silence_the_origin_for_a_whole_ttl() {
    let config = CacheConfig::new().stale_if_error(Duration::from_secs(86_400));
    let origin = Origin::new(config, |seen| {
        let mut response = answer(&seen, &[(header::CACHE_CONTROL, "max-age=3600".into())]);
        if seen.run == 2 {
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        response
    });
    origin.get("/a").await;
    advance(3601 * S).await;
    // One 503 blip: the stale copy stands in, as it should.
    let blip = origin.get("/a").await;
    assert_eq!(blip.text(), "run 1");
    // The origin is back. Five minutes later the stale copy, now over an
    // hour stale, is still all anyone gets: nothing is tried until another
    // full hour has passed.
    advance(300 * S).await;
    let later = origin.get("/a").await;
    assert_eq!(
        (origin.runs.get(), later.text()),
        (3, "run 3"),
        "the origin was not asked for 5 minutes after one failure (role {:?}, Cache-Status {:?})",
        later.role,
        cache_status(&later)
    );
}

// ---------------------------------------------------------------------------
// 15. Was: Cache-Status with an integer past RFC 8941's 15 digits.

#[tokio::test(start_paused = true)]
async fn cache_status_ttl_is_a_valid_sf_integer_for_a_never_stale_ttl() {
    // "`Duration::MAX` means never stale" (CacheConfig::ttl).
    let origin = Origin::new(CacheConfig::new().ttl(Duration::MAX), |seen| {
        answer(&seen, &[])
    });
    let miss = origin.get("/a").await;
    assert_valid_cache_status(&miss, "the storing miss");
}

#[tokio::test(start_paused = true)]
async fn cache_status_is_valid_on_every_path() {
    let origin = validated(
        CacheConfig::new()
            .stale_while_revalidate(Duration::from_secs(30))
            .stale_if_error(Duration::from_secs(600)),
        "max-age=10",
        &[("etag", "\"v1\"")],
    );
    let herd = send_all(&origin.app, (0..3).map(|_| get("/a"))).await;
    for reply in &herd {
        assert_valid_cache_status(reply, "miss/collapsed");
    }
    assert_valid_cache_status(&origin.get("/a").await, "fresh hit");
    let inm = origin.get_with("/a", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(inm.status, StatusCode::NOT_MODIFIED);
    assert_valid_cache_status(&inm, "304 from the cache");
    advance(15 * S).await;
    assert_valid_cache_status(&origin.get("/a").await, "stale while revalidate");
    advance(S).await;
    advance(60 * S).await;
    let stale = origin
        .get_with("/a", &[("cache-control", "no-cache")])
        .await;
    assert_valid_cache_status(&stale, "no-cache revalidated");
    let only = origin
        .get_with("/b", &[("cache-control", "only-if-cached")])
        .await;
    assert!(cache_status(&only).is_empty(), "made here: no Cache-Status");
}

// ---------------------------------------------------------------------------
// 16. Was: Cache-Status said `fwd` on a 503 the layer made itself; and a
// cache nearer the origin with the same name lost its member.

#[tokio::test(start_paused = true)]
async fn an_overloaded_503_does_not_claim_it_was_forwarded() {
    let layer = SingleFlightLayer::share()
        .max_waiters(1)
        .cache(CacheConfig::new());
    let origin = Origin::with_layer(layer, |seen| answer(&seen, &[]));
    let replies = send_all(&origin.app, (0..3).map(|_| get("/a"))).await;
    let overloaded: Vec<_> = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(
        !overloaded.is_empty(),
        "no 503: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for reply in overloaded {
        let status = cache_status(reply).join(", ");
        assert!(
            !status.contains("fwd="),
            "a 503 the layer made itself says {status:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn counters_add_up_across_max_wait_timeouts_and_the_pass_list() {
    let layer = SingleFlightLayer::share()
        .max_wait(Duration::from_millis(10))
        .cache(CacheConfig::new());
    let origin = Origin::with_layer(layer, |seen| {
        answer(&seen, &[(header::SET_COOKIE, "a=b".into())])
    });
    // Timed-out waiters; then an unshareable answer puts the key on the
    // pass list and the next ones bypass the flight table.
    send_all(&origin.app, (0..3).map(|_| get("/a"))).await;
    advance(S).await;
    send_all(&origin.app, (0..3).map(|_| get("/a"))).await;
    let stats = origin.stats();
    assert_eq!(total(&stats), 6, "{stats:?}");
}

/// Two tiers of this crate, both with the default name (the upstream one
/// nearer the origin): the downstream's bookkeeping takes the upstream's
/// member for its own reserved placeholder.
#[tokio::test(start_paused = true)]
async fn an_upstream_tiers_member_is_kept_and_not_taken_for_ours() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        answer(
            &seen,
            &[
                (header::CACHE_CONTROL, "max-age=60".into()),
                (
                    HeaderName::from_static("cache-status"),
                    "tower-singleflight; hit".into(),
                ),
            ],
        )
    });
    let miss = origin.get("/a").await;
    let hit = origin.get("/a").await;
    assert_eq!(
        (cache_status(&miss).len(), cache_status(&hit).len()),
        (2, 2),
        "upstream member lost: miss {:?}, hit {:?}",
        cache_status(&miss),
        cache_status(&hit)
    );
}

// ---------------------------------------------------------------------------
// 17. Was: one client evicted every other client's variant of a key (the
// oldest stored went first, however often it was hit).

#[tokio::test(start_paused = true)]
async fn one_client_cannot_evict_the_variant_everyone_uses() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        answer(
            &seen,
            &[
                (header::CACHE_CONTROL, "max-age=600".into()),
                (header::VARY, "Accept-Language".into()),
            ],
        )
    });
    for _ in 0..100 {
        origin.get_with("/home", &[("accept-language", "en")]).await;
    }
    assert_eq!(origin.runs.get(), 1);
    // Eight requests with made-up languages.
    for junk in 0..8 {
        let language: &'static str = Box::leak(format!("x-{junk}").into_boxed_str());
        origin
            .get_with("/home", &[("accept-language", language)])
            .await;
    }
    let before = origin.runs.get();
    origin.get_with("/home", &[("accept-language", "en")]).await;
    assert_eq!(
        origin.runs.get(),
        before,
        "the variant hit 100 times was evicted by 8 requests of one client"
    );
}

// ---------------------------------------------------------------------------
// Herds with request directives: one origin call each (held already).

#[tokio::test(start_paused = true)]
async fn a_max_age_zero_herd_makes_one_origin_call() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        answer(&seen, &[(header::CACHE_CONTROL, "max-age=60".into())])
    });
    origin.get("/a").await;
    let herd = (0..20).map(|_| with_headers("GET", "/a", &[("cache-control", "max-age=0")]));
    send_all(&origin.app, herd).await;
    assert_eq!(origin.runs.get(), 2);
    let stats = origin.stats();
    assert_eq!(total(&stats), 21, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn a_no_cache_herd_sends_one_conditional_request() {
    let origin = validated(CacheConfig::new(), "max-age=60", &[("etag", "\"v1\"")]);
    origin.get("/a").await;
    let herd = (0..20).map(|_| with_headers("GET", "/a", &[("cache-control", "no-cache")]));
    let replies = send_all(&origin.app, herd).await;
    assert_eq!(origin.runs.get(), 2);
    assert!(origin.last_request().contains_key(header::IF_NONE_MATCH));
    assert!(replies.iter().all(|reply| reply.text() == "run 1"));
}

// ---------------------------------------------------------------------------
// The answers a 304 refreshes carry the age they have (held already).

#[tokio::test(start_paused = true)]
async fn a_revalidated_answer_carries_the_304s_age() {
    // The 304 comes from a cache nearer the origin: already 30 s old.
    let origin = validated(
        CacheConfig::new(),
        "max-age=60",
        &[("etag", "\"v1\""), ("age", "30")],
    );
    origin.get("/a").await;
    advance(61 * S).await;
    let refreshed = origin.get("/a").await;
    let hit = origin.get("/a").await;
    assert!(
        age(&hit) >= age(&refreshed),
        "Age went from {} to {} on the same stored answer",
        age(&refreshed),
        age(&hit)
    );
}

// ===========================================================================
// Found by the third review (conformance, as cache-tests.fyi checks it).

// ---------------------------------------------------------------------------
// RFC 9213 §2.1: "If a targeted field in a given response is empty, or a
// parsing error is encountered, that field MUST be ignored by the cache
// (i.e., it behaves as if the field were not present, likely falling back
// to other cache-control mechanisms present)." Targeted fields are
// Structured Field Dictionaries (RFC 8941 §3.2); a trailing comma is a
// parse failure (RFC 8941 §4.2.2).

#[tokio::test(start_paused = true)]
async fn an_invalid_or_empty_cdn_cache_control_falls_back_to_cache_control() {
    // A trailing comma (RFC 8941 §4.2.2), a key not in lower case
    // (§4.2.3.3), nothing at all.
    for cdn in ["max-age=3600,", "MAX-AGE=3600", ""] {
        for config in [CacheConfig::new(), CacheConfig::shared()] {
            let origin = targeted(config.cdn_cache_control(), "no-store", cdn);
            assert_eq!(origin.get("/a").await.text(), "run 1");
            assert_eq!(
                origin.get("/a").await.text(),
                "run 2",
                "CDN-Cache-Control: {cdn:?} overrode Cache-Control: no-store"
            );
        }
    }
}

// RFC 9213 §2.2: the cache "MUST select the first (in target list order)
// field with a valid, non-empty value and use its value to determine the
// caching policy for the response, and it MUST ignore the Cache-Control and
// Expires header fields in that response".

#[tokio::test(start_paused = true)]
async fn a_cdn_cache_control_makes_the_cache_ignore_expires() {
    let origin = Origin::new(CacheConfig::shared().cdn_cache_control(), |seen| {
        let headers = [
            (
                HeaderName::from_static("cdn-cache-control"),
                "public".into(),
            ),
            (header::DATE, seen.clock.date(0)),
            (header::EXPIRES, seen.clock.date(3600)),
        ];
        answer(&seen, &headers)
    });
    origin.get("/a").await;
    advance(10 * S).await;
    assert_eq!(
        origin.get("/a").await.text(),
        "run 2",
        "Expires gave freshness although CDN-Cache-Control was selected"
    );
}

// ---------------------------------------------------------------------------
// RFC 9111 §5.1: "a cache encountering a message with a list-based Age
// field value SHOULD use the first member of the field value, discarding
// subsequent ones."

#[tokio::test(start_paused = true)]
async fn a_list_based_age_is_read_by_its_first_member() {
    let origin = Origin::new(CacheConfig::shared(), |seen| {
        let headers = [
            (header::CACHE_CONTROL, "max-age=3600".into()),
            (header::DATE, seen.clock.date(0)),
            (header::AGE, "7200, 0".into()),
        ];
        answer(&seen, &headers)
    });
    origin.get("/a").await;
    assert_eq!(
        origin.get("/a").await.text(),
        "run 2",
        "an answer 7200 s old with max-age=3600 was served as fresh"
    );
}

// ---------------------------------------------------------------------------
// RFC 9111 §4: a cache MUST NOT reuse a stored response unless "the
// presented target URI (Section 7.1 of [HTTP]) and that of the stored
// response match". The target URI holds the scheme (RFC 9110 §7.1), and
// `http` and `https` are different origins (RFC 9110 §4.3.1).

#[tokio::test(start_paused = true)]
async fn an_http_answer_is_never_served_for_the_https_uri() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        let mut response = answer(&seen, &[(header::CACHE_CONTROL, "max-age=3600".into())]);
        // An origin that sends plain-HTTP visitors to HTTPS.
        if seen.run == 1 {
            *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
            response
                .headers_mut()
                .insert(header::LOCATION, "https://example.com/a".parse().unwrap());
        }
        response
    });
    let plain = send(
        &origin.app,
        with_headers("GET", "http://example.com/a", &[]),
    )
    .await;
    assert_eq!(plain.status, StatusCode::MOVED_PERMANENTLY);
    let secure = send(
        &origin.app,
        with_headers("GET", "https://example.com/a", &[]),
    )
    .await;
    assert_eq!(
        (secure.status, secure.text()),
        (StatusCode::OK, "run 2"),
        "the https request got the stored http redirect (a redirect loop)"
    );
}

// ---------------------------------------------------------------------------
// RFC 9110 §9.3.7: "Responses to the OPTIONS method are not cacheable."
// §9.3.8: "Responses to the TRACE method are not cacheable." The layer's
// own docs say OPTIONS and TRACE may be given to `methods` and are then
// "coalesced or cached".

#[tokio::test(start_paused = true)]
async fn options_answers_are_never_stored() {
    let layer = SingleFlightLayer::share()
        .methods([Method::GET, Method::HEAD, Method::OPTIONS])
        .cache(CacheConfig::shared());
    let origin = Origin::with_layer(layer, |seen| {
        answer(&seen, &[(header::CACHE_CONTROL, "max-age=3600".into())])
    });
    let first = send(&origin.app, with_headers("OPTIONS", "/a", &[])).await;
    assert_eq!(first.text(), "run 1");
    let second = send(&origin.app, with_headers("OPTIONS", "/a", &[])).await;
    assert_eq!(
        second.text(),
        "run 2",
        "an OPTIONS answer was served from the cache"
    );
}

// ---------------------------------------------------------------------------
// RFC 9111 §5.2: `cache-directive = token [ "=" ( token / quoted-string ) ]`;
// a comma inside a quoted-string does not end the directive (RFC 9110
// §5.6.4). The lifetime is then max-age's (§4.2.1), not that of an
// `s-maxage` spelled inside an extension's quoted value.

#[tokio::test(start_paused = true)]
async fn a_quoted_extension_value_is_not_read_as_directives() {
    let origin = Origin::new(CacheConfig::shared(), |seen| {
        let cache_control = r#"max-age=1, community="x, s-maxage=3600, y""#;
        answer(&seen, &[(header::CACHE_CONTROL, cache_control.into())])
    });
    origin.get("/a").await;
    advance(5 * S).await;
    assert_eq!(
        origin.get("/a").await.text(),
        "run 2",
        "an s-maxage inside a quoted-string gave an hour of freshness"
    );
}

// ---------------------------------------------------------------------------
// RFC 9110 §13.1.2: "If the field value is "*", the condition is false if
// the origin server has a current representation for the target resource."
// The cache answers a client's If-None-Match itself (CACHING.md §4.3.2), so
// for a stored 200 without ETag the condition is false: a 304 (§13.2.2).

#[tokio::test(start_paused = true)]
async fn if_none_match_star_is_false_for_a_stored_answer_without_etag() {
    let origin = Origin::new(CacheConfig::new(), |seen| answer(&seen, &[]));
    origin.get("/a").await;
    let star = origin.get_with("/a", &[("if-none-match", "*")]).await;
    assert_eq!(star.status, StatusCode::NOT_MODIFIED);
}

// ===========================================================================
// Found by the fourth review.

// Was: the hit counter stopped at 64 and ties went to the oldest variant: a
// client that hit each of its made-up variants 64 times tied with the one
// everyone uses, which, stored first, was evicted.
#[tokio::test(start_paused = true)]
async fn a_client_that_hits_its_own_variants_cannot_evict_the_popular_one() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        answer(
            &seen,
            &[
                (header::CACHE_CONTROL, "max-age=600".into()),
                (header::VARY, "Accept-Language".into()),
            ],
        )
    });
    for _ in 0..1000 {
        origin.get_with("/home", &[("accept-language", "en")]).await;
    }
    assert_eq!(origin.runs.get(), 1);
    // Eight made-up languages (the default max_variants), each hit 65 times.
    let languages: Vec<&'static str> = (0..8)
        .map(|junk| &*Box::leak(format!("x-{junk}").into_boxed_str()))
        .collect();
    for language in &languages {
        for _ in 0..65 {
            origin
                .get_with("/home", &[("accept-language", language)])
                .await;
        }
    }
    let before = origin.runs.get();
    origin.get_with("/home", &[("accept-language", "en")]).await;
    assert_eq!(
        origin.runs.get(),
        before,
        "the variant hit 1000 times was evicted by one client's 520 requests"
    );
}
