//! The response cache against RFC 9111 (HTTP caching), RFC 9211
//! (`Cache-Status`) and RFC 9213 (`CDN-Cache-Control`): one test per rule,
//! named after its section, on paused time, with `Date` and `Expires` read
//! off the same clock the cache reads.

mod common;

use std::time::Duration;

use axum::{
    http::{header, HeaderName, StatusCode},
    response::IntoResponse,
};
use common::{
    get,
    origin::{age, answer, cache_status, items, on_host, targeted, validated, Origin},
    send, send_all, with_headers,
};
use tokio::time::advance;
use tower_singleflight::{CacheConfig, FlightRole};

const S: Duration = Duration::from_secs(1);

// §4.2.1: freshness lifetime.

#[tokio::test(start_paused = true)]
async fn s4_2_1_expires_in_the_past_is_never_fresh() {
    let origin = Origin::new(CacheConfig::new().ttl(60 * S), |seen| {
        let date = seen.clock.date(0);
        let expires = seen.clock.date(-3600);
        answer(&seen, &[(header::DATE, date), (header::EXPIRES, expires)])
    });
    assert_eq!(origin.get("/a").await.text(), "run 1");
    assert_eq!(origin.get("/a").await.text(), "run 2");
}

#[tokio::test(start_paused = true)]
async fn s5_3_an_invalid_expires_is_already_expired() {
    for expires in ["0", "yesterday", "-1"] {
        let origin = Origin::new(CacheConfig::new().ttl(60 * S), move |seen| {
            answer(&seen, &[(header::EXPIRES, expires.to_owned())])
        });
        origin.get("/a").await;
        assert_eq!(origin.get("/a").await.text(), "run 2", "Expires: {expires}");
    }
}

#[tokio::test(start_paused = true)]
async fn s4_2_1_expires_minus_date_is_the_lifetime() {
    let origin = Origin::new(CacheConfig::new().ttl(10 * S), |seen| {
        let (date, expires) = (seen.clock.date(0), seen.clock.date(120));
        answer(&seen, &[(header::DATE, date), (header::EXPIRES, expires)])
    });
    origin.get("/a").await;
    advance(100 * S).await;
    let hit = origin.get("/a").await;
    assert_eq!(
        (hit.text(), hit.role),
        ("run 1", Some(FlightRole::CacheHit))
    );
    advance(25 * S).await;
    assert_eq!(origin.get("/a").await.text(), "run 2");
}

#[tokio::test(start_paused = true)]
async fn s4_2_1_an_invalid_max_age_is_stale() {
    for max_age in [
        "max-age=-3600",
        "max-age=1.5",
        "max-age=",
        "max-age=60, max-age=120",
    ] {
        let origin = Origin::new(CacheConfig::new().ttl(60 * S), move |seen| {
            answer(&seen, &[(header::CACHE_CONTROL, max_age.to_owned())])
        });
        origin.get("/a").await;
        assert_eq!(origin.get("/a").await.text(), "run 2", "{max_age}");
    }
    // §5.2: the quoted form is read all the same.
    let quoted = Origin::new(CacheConfig::new().ttl(S), |seen| {
        answer(&seen, &[(header::CACHE_CONTROL, "max-age=\"3600\"".into())])
    });
    quoted.get("/a").await;
    advance(600 * S).await;
    assert_eq!(quoted.get("/a").await.text(), "run 1");
}

#[tokio::test(start_paused = true)]
async fn s4_2_1_s_maxage_then_max_age_win_over_the_ttl_both_ways() {
    let origin = Origin::new(CacheConfig::new().ttl(10 * S), |seen| {
        let cc = if seen.request.contains_key("x-short") {
            "max-age=600, s-maxage=5"
        } else {
            "max-age=600"
        };
        answer(&seen, &[(header::CACHE_CONTROL, cc.into())])
    });
    origin.get("/long").await;
    origin.get_with("/short", &[("x-short", "1")]).await;
    advance(300 * S).await;
    assert_eq!(origin.get("/long").await.text(), "run 1");
    assert_eq!(
        origin.get_with("/short", &[("x-short", "1")]).await.text(),
        "run 3"
    );
    // A cap, stated apart from the default.
    let capped = Origin::new(CacheConfig::new().max_ttl(60 * S), |seen| {
        answer(&seen, &[(header::CACHE_CONTROL, "max-age=600".into())])
    });
    capped.get("/a").await;
    advance(61 * S).await;
    assert_eq!(capped.get("/a").await.text(), "run 2");
}

// §4.2.3: age.

#[tokio::test(start_paused = true)]
async fn s4_2_3_the_origins_age_makes_an_answer_stale() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        let headers = [
            (header::CACHE_CONTROL, "max-age=3600".to_owned()),
            (header::AGE, "7200".to_owned()),
        ];
        answer(&seen, &headers)
    });
    origin.get("/a").await;
    assert_eq!(origin.get("/a").await.text(), "run 2");
}

#[tokio::test(start_paused = true)]
async fn s4_2_3_the_age_sent_is_the_current_age() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        let headers = [
            (header::CACHE_CONTROL, "max-age=60".to_owned()),
            (header::AGE, "50".to_owned()),
            (header::DATE, seen.clock.date(0)),
        ];
        answer(&seen, &headers)
    });
    origin.get("/a").await;
    advance(5 * S).await;
    let hit = origin.get("/a").await;
    assert_eq!(hit.role, Some(FlightRole::CacheHit));
    // The origin's 50 s, the 0.1 s the answer took, and 5 s in the cache.
    assert_eq!(age(&hit), 55);
    advance(6 * S).await;
    assert_eq!(
        origin.get("/a").await.text(),
        "run 2",
        "fresh for 10 s only"
    );
}

#[tokio::test(start_paused = true)]
async fn s4_2_3_an_old_date_counts_as_age() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        let headers = [
            (header::CACHE_CONTROL, "max-age=60".to_owned()),
            (header::DATE, seen.clock.date(-3600)),
        ];
        answer(&seen, &headers)
    });
    origin.get("/a").await;
    assert_eq!(origin.get("/a").await.text(), "run 2");
}

// §4.2.2: heuristic freshness, only where the configuration asks.

#[tokio::test(start_paused = true)]
async fn s4_2_2_heuristics_only_where_configured() {
    // The shared posture: no freshness information, no `Last-Modified`:
    // nothing to store.
    let bare = Origin::new(CacheConfig::shared(), |seen| answer(&seen, &[]));
    bare.get("/a").await;
    assert_eq!(bare.get("/a").await.text(), "run 2");
    // With `Last-Modified` 1000 s before `Date`: fresh for 100 s.
    let modified = Origin::new(CacheConfig::shared(), |seen| {
        let headers = [
            (header::DATE, seen.clock.date(0)),
            (header::LAST_MODIFIED, seen.clock.date(-1000)),
        ];
        answer(&seen, &headers)
    });
    modified.get("/a").await;
    advance(90 * S).await;
    assert_eq!(modified.get("/a").await.role, Some(FlightRole::CacheHit));
    advance(15 * S).await;
    assert_ne!(modified.get("/a").await.role, Some(FlightRole::CacheHit));
    // The app's route: its TTL for answers that say nothing.
    let route = Origin::new(CacheConfig::new().ttl(30 * S), |seen| answer(&seen, &[]));
    route.get("/a").await;
    advance(29 * S).await;
    assert_eq!(route.get("/a").await.text(), "run 1");
}

// §3: which statuses are stored.

#[tokio::test(start_paused = true)]
async fn s3_statuses_with_explicit_freshness_are_stored_in_the_rfc_posture() {
    for (status, posture, stored) in [
        (302, CacheConfig::shared(), true),
        (307, CacheConfig::shared(), true),
        (403, CacheConfig::shared(), true),
        (302, CacheConfig::new(), true),
        (403, CacheConfig::new(), false),
        (500, CacheConfig::shared(), false),
        (503, CacheConfig::new(), false),
    ] {
        let origin = Origin::new(posture, move |seen| {
            let mut response = answer(&seen, &[(header::CACHE_CONTROL, "max-age=60".into())]);
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            response
        });
        origin.get("/a").await;
        let again = origin.get("/a").await;
        assert_eq!(again.text() == "run 1", stored, "{status}");
    }
}

#[tokio::test(start_paused = true)]
async fn s5_2_2_3_must_understand_stores_only_statuses_understood() {
    let unknown = Origin::new(CacheConfig::shared(), |seen| {
        let mut response = answer(
            &seen,
            &[(header::CACHE_CONTROL, "must-understand, max-age=60".into())],
        );
        *response.status_mut() = StatusCode::from_u16(299).unwrap();
        response
    });
    unknown.get("/a").await;
    assert_eq!(unknown.get("/a").await.text(), "run 2");
    let known = Origin::new(CacheConfig::shared(), |seen| {
        answer(
            &seen,
            &[(header::CACHE_CONTROL, "must-understand, max-age=60".into())],
        )
    });
    known.get("/a").await;
    assert_eq!(known.get("/a").await.text(), "run 1");
}

// §5.2.2.7 and §3.5: private answers and authenticated requests.

#[tokio::test(start_paused = true)]
async fn s5_2_2_7_private_is_never_stored_but_one_caller_still_coalesces() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        answer(
            &seen,
            &[(header::CACHE_CONTROL, "private, max-age=60".into())],
        )
    });
    let alice = || with_headers("GET", "/me", &[("authorization", "Bearer alice")]);
    let herd = send_all(&origin.app, (0..5).map(|_| alice())).await;
    assert!(herd.iter().all(|reply| reply.text() == "run 1"));
    assert_eq!(origin.runs.get(), 1, "one identity, one flight");
    assert_eq!(
        send(&origin.app, alice()).await.text(),
        "run 2",
        "never stored"
    );
    // Spelled otherwise, it is still private.
    let shouting = Origin::new(CacheConfig::new(), |seen| {
        answer(
            &seen,
            &[(header::CACHE_CONTROL, "PRIVATE=\"x\", max-age=60".into())],
        )
    });
    send(&shouting.app, alice()).await;
    assert_eq!(send(&shouting.app, alice()).await.text(), "run 2");
}

#[tokio::test(start_paused = true)]
async fn s3_5_answers_to_authorization_are_stored_only_when_marked() {
    let alice = || with_headers("GET", "/doc", &[("authorization", "Bearer alice")]);
    for (cc, stored) in [
        ("max-age=60", false),
        ("max-age=60, max-age=61", false),
        ("public, max-age=60", true),
        ("s-maxage=60", true),
        ("must-revalidate, max-age=60", true),
    ] {
        let origin = Origin::new(CacheConfig::new(), move |seen| {
            answer(&seen, &[(header::CACHE_CONTROL, cc.into())])
        });
        send(&origin.app, alice()).await;
        let again = send(&origin.app, alice()).await;
        assert_eq!(again.text() == "run 1", stored, "{cc}");
    }
}

// §5.2.1: request directives.

/// An origin whose answers are fresh for 60 s, with a validator.
fn sixty_seconds() -> Origin {
    Origin::new(CacheConfig::new(), |seen| {
        let headers = [
            (header::CACHE_CONTROL, "max-age=60".to_owned()),
            (header::ETAG, format!("\"v{}\"", seen.run)),
        ];
        answer(&seen, &headers)
    })
}

#[tokio::test(start_paused = true)]
async fn s5_2_1_4_no_cache_and_pragma_go_to_the_origin() {
    let origin = sixty_seconds();
    origin.get("/a").await;
    let fetched = origin
        .get_with("/a", &[("cache-control", "no-cache")])
        .await;
    assert_eq!(fetched.text(), "run 2");
    // Validated with what the cache holds.
    assert_eq!(origin.last_request()[header::IF_NONE_MATCH], "\"v1\"");
    assert_eq!(
        origin
            .get_with("/a", &[("pragma", "no-cache")])
            .await
            .text(),
        "run 3"
    );
    // Stored again: the next plain request is a hit.
    assert_eq!(origin.get("/a").await.text(), "run 3");
}

#[tokio::test(start_paused = true)]
async fn s5_2_1_1_max_age_and_s5_2_1_3_min_fresh_refuse_older_copies() {
    let origin = sixty_seconds();
    origin.get("/a").await;
    advance(30 * S).await;
    let young = origin
        .get_with("/a", &[("cache-control", "max-age=40")])
        .await;
    assert_eq!(young.text(), "run 1");
    let old = origin
        .get_with("/a", &[("cache-control", "max-age=10")])
        .await;
    assert_eq!(old.text(), "run 2");
    advance(30 * S).await;
    let fresh_enough = origin
        .get_with("/a", &[("cache-control", "min-fresh=20")])
        .await;
    assert_eq!(fresh_enough.text(), "run 2");
    let not_enough = origin
        .get_with("/a", &[("cache-control", "min-fresh=40")])
        .await;
    assert_eq!(not_enough.text(), "run 3");
}

#[tokio::test(start_paused = true)]
async fn s5_2_1_2_max_stale_takes_a_stale_copy_unless_it_must_revalidate() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        let cc = if seen.request.contains_key("x-strict") {
            "max-age=10, must-revalidate"
        } else {
            "max-age=10"
        };
        answer(&seen, &[(header::CACHE_CONTROL, cc.into())])
    });
    origin.get("/lax").await;
    origin.get_with("/strict", &[("x-strict", "1")]).await;
    advance(30 * S).await;
    let lax = origin
        .get_with("/lax", &[("cache-control", "max-stale=60")])
        .await;
    assert_eq!((lax.text(), lax.role), ("run 1", Some(FlightRole::Stale)));
    let too_stale = origin
        .get_with("/lax", &[("cache-control", "max-stale=5")])
        .await;
    assert_eq!(too_stale.text(), "run 3");
    let strict = origin
        .get_with(
            "/strict",
            &[("x-strict", "1"), ("cache-control", "max-stale")],
        )
        .await;
    assert_eq!(strict.text(), "run 4");
}

#[tokio::test(start_paused = true)]
async fn s5_2_1_5_no_store_requests_pass_and_store_nothing() {
    let origin = sixty_seconds();
    let passed = origin
        .get_with("/a", &[("cache-control", "no-store")])
        .await;
    assert_eq!(passed.text(), "run 1");
    assert_eq!(origin.get("/a").await.text(), "run 2", "nothing was stored");
    let stats = origin.stats();
    assert_eq!((stats.passes, stats.misses, stats.stored), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn s5_2_1_7_only_if_cached_gets_504_when_nothing_is_stored() {
    let origin = sixty_seconds();
    let nothing = origin
        .get_with("/a", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(nothing.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(origin.runs.get(), 0);
    origin.get("/a").await;
    let stored = origin
        .get_with("/a", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!((stored.status, stored.text()), (StatusCode::OK, "run 1"));
}

#[tokio::test(start_paused = true)]
async fn s5_2_1_request_directives_can_be_turned_off() {
    let origin = Origin::new(CacheConfig::new().request_directives(false), |seen| {
        answer(&seen, &[(header::CACHE_CONTROL, "max-age=60".into())])
    });
    origin.get("/a").await;
    for directive in ["no-cache", "max-age=0", "no-store"] {
        let reply = origin.get_with("/a", &[("cache-control", directive)]).await;
        assert_eq!(reply.text(), "run 1", "{directive}");
    }
}

// §4.3: validation.

#[tokio::test(start_paused = true)]
async fn s4_3_a_stale_herd_sends_one_conditional_request_and_a_304_refreshes() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        if seen
            .request
            .get(header::IF_NONE_MATCH)
            .is_some_and(|tag| tag == "\"v1\"")
        {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, "max-age=100".parse().unwrap());
            headers.insert(header::ETAG, "\"v1\"".parse().unwrap());
            headers.insert("x-refreshed", "yes".parse().unwrap());
            return response;
        }
        let headers = [
            (header::CACHE_CONTROL, "max-age=10".to_owned()),
            (header::ETAG, "\"v1\"".to_owned()),
            (HeaderName::from_static("x-kind"), "greeting".to_owned()),
        ];
        answer(&seen, &headers)
    });
    origin.get("/a").await;
    advance(20 * S).await;
    let herd = send_all(&origin.app, (0..50).map(|_| get("/a"))).await;
    assert_eq!(origin.runs.get(), 2, "one conditional request for the herd");
    assert_eq!(origin.last_request()[header::IF_NONE_MATCH], "\"v1\"");
    for reply in &herd {
        assert_eq!((reply.status, reply.text()), (StatusCode::OK, "run 1"));
        // §3.2: the stored headers updated, the body kept.
        assert_eq!(reply.headers["x-refreshed"], "yes");
        assert_eq!(reply.headers["x-kind"], "greeting");
    }
    assert!(cache_status(&herd[0])[0].contains("fwd=stale; fwd-status=304; stored"));
    // Fresh again for the 304's 100 s.
    advance(90 * S).await;
    let hit = origin.get("/a").await;
    assert_eq!(
        (hit.role, hit.text()),
        (Some(FlightRole::CacheHit), "run 1")
    );
    assert_eq!(origin.stats().revalidated, 1);
}

#[tokio::test(start_paused = true)]
async fn s4_3_4_a_304_for_another_representation_does_not_refresh() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        if seen.request.contains_key(header::IF_NONE_MATCH) {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            response
                .headers_mut()
                .insert(header::ETAG, "\"other\"".parse().unwrap());
            return response;
        }
        let headers = [
            (header::CACHE_CONTROL, "max-age=10".to_owned()),
            (header::ETAG, "\"v1\"".to_owned()),
        ];
        answer(&seen, &headers)
    });
    origin.get("/a").await;
    advance(20 * S).await;
    let refused = origin.get("/a").await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_GATEWAY,
        "never the old body"
    );
    // The variant is gone: the next request fetches it whole.
    let fetched = origin.get("/a").await;
    assert_eq!((fetched.status, fetched.text()), (StatusCode::OK, "run 3"));
    assert!(!origin.last_request().contains_key(header::IF_NONE_MATCH));
}

#[tokio::test(start_paused = true)]
async fn s5_2_2_4_no_cache_answers_are_revalidated_every_time() {
    let origin = validated(CacheConfig::new(), "no-cache", &[("etag", "\"v1\"")]);
    for expected_runs in 1..=3 {
        let reply = origin.get("/a").await;
        assert_eq!((reply.status, reply.text()), (StatusCode::OK, "run 1"));
        assert_eq!(origin.runs.get(), expected_runs);
    }
}

#[tokio::test(start_paused = true)]
async fn s4_3_2_a_clients_conditional_request_gets_a_304_from_the_cache() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        let headers = [
            (header::CACHE_CONTROL, "max-age=60".to_owned()),
            (header::ETAG, "W/\"v1\"".to_owned()),
            (
                header::LAST_MODIFIED,
                "Sun, 06 Nov 1994 08:49:37 GMT".to_owned(),
            ),
        ];
        answer(&seen, &headers)
    });
    // On a miss the origin gets no client validators and the client still
    // gets its 304.
    let first = origin.get_with("/a", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(first.status, StatusCode::NOT_MODIFIED);
    assert!(first.body.is_empty());
    assert!(!origin.last_request().contains_key(header::IF_NONE_MATCH));
    let hit = origin
        .get_with("/a", &[("if-none-match", "\"x\", \"v1\"")])
        .await;
    assert_eq!(hit.status, StatusCode::NOT_MODIFIED);
    assert_eq!(hit.headers[header::ETAG], "W/\"v1\"");
    let changed = origin.get_with("/a", &[("if-none-match", "\"v0\"")]).await;
    assert_eq!((changed.status, changed.text()), (StatusCode::OK, "run 1"));
    let since = [("if-modified-since", "Mon, 07 Nov 1994 08:49:37 GMT")];
    assert_eq!(
        origin.get_with("/a", &since).await.status,
        StatusCode::NOT_MODIFIED
    );
    let before = [("if-modified-since", "Sat, 05 Nov 1994 08:49:37 GMT")];
    assert_eq!(origin.get_with("/a", &before).await.status, StatusCode::OK);
    assert_eq!(origin.runs.get(), 1);
}

// §4.1: variants.

#[tokio::test(start_paused = true)]
async fn s4_1_variants_are_kept_side_by_side() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        let language = seen.request.get(header::ACCEPT_LANGUAGE).cloned();
        let mut response = answer(&seen, &[(header::VARY, "Accept-Language".into())]);
        if let Some(language) = language {
            response.headers_mut().insert("x-language", language);
        }
        response
    });
    for _ in 0..5 {
        for language in ["en", "fr"] {
            let reply = origin
                .get_with("/a", &[("accept-language", language)])
                .await;
            assert_eq!(reply.headers["x-language"], language);
        }
    }
    assert_eq!(origin.runs.get(), 2, "one run per variant");
    // §4.1: compared once normalized.
    let spelled = origin
        .get_with("/b", &[("accept-language", "en, fr")])
        .await;
    let again = origin.get_with("/b", &[("accept-language", "EN,fr")]).await;
    assert_eq!(spelled.text(), again.text());
    let miss = origin.get_with("/a", &[("accept-language", "de")]).await;
    assert!(cache_status(&miss)[0].contains("fwd=vary-miss"));
}

#[tokio::test(start_paused = true)]
async fn s4_1_variants_per_key_are_bounded() {
    let origin = Origin::new(CacheConfig::new().max_variants(2), |seen| {
        answer(&seen, &[(header::VARY, "X-V".into())])
    });
    for value in ["1", "2", "3"] {
        origin.get_with("/a", &[("x-v", value)]).await;
    }
    assert_eq!(origin.get_with("/a", &[("x-v", "3")]).await.text(), "run 3");
    assert_eq!(origin.get_with("/a", &[("x-v", "2")]).await.text(), "run 2");
    assert_eq!(
        origin.get_with("/a", &[("x-v", "1")]).await.text(),
        "run 4",
        "evicted"
    );
}

// §4.4: invalidation.

#[tokio::test(start_paused = true)]
async fn s4_4_a_write_invalidates_its_target_and_the_locations_it_names() {
    let origin = items();
    let paths = ["/items", "/items/5", "/items/latest", "/items/6"];
    for path in paths {
        send(&origin.app, on_host(get(path))).await;
    }
    let location = [("x-location", "http://EXAMPLE.com:80/items/5")];
    send(
        &origin.app,
        on_host(with_headers("POST", "/items", &location)),
    )
    .await;
    let runs = origin.runs.get();
    for path in paths {
        send(&origin.app, on_host(get(path))).await;
    }
    assert_eq!(
        origin.runs.get(),
        runs + 3,
        "the target and both locations, not /items/6"
    );
}

#[tokio::test(start_paused = true)]
async fn s4_4_a_location_on_another_host_is_left_alone() {
    let origin = items();
    send(&origin.app, on_host(get("/items/5"))).await;
    let elsewhere = [("x-location", "http://other.example/items/5")];
    send(
        &origin.app,
        on_host(with_headers("POST", "/items", &elsewhere)),
    )
    .await;
    let again = send(&origin.app, on_host(get("/items/5"))).await;
    assert_eq!(again.text(), "run 1");
    // A failed write invalidates nothing either.
    let failed = Origin::new(CacheConfig::new(), |seen| {
        let mut response = answer(&seen, &[]);
        if seen.request.contains_key("x-write") {
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        response
    });
    send(&failed.app, on_host(get("/items"))).await;
    send(
        &failed.app,
        on_host(with_headers("POST", "/items", &[("x-write", "1")])),
    )
    .await;
    assert_eq!(
        send(&failed.app, on_host(get("/items"))).await.text(),
        "run 1"
    );
}

// RFC 9211: Cache-Status; and counters that add up.

#[tokio::test(start_paused = true)]
async fn rfc9211_every_answer_through_the_cache_says_what_the_cache_did() {
    let origin = Origin::new(CacheConfig::new().cache_status("edge"), |seen| {
        let mut response = answer(&seen, &[(header::CACHE_CONTROL, "max-age=60".into())]);
        response
            .headers_mut()
            .insert("cache-status", "origin-cache; hit".parse().unwrap());
        response
    });
    let herd = send_all(&origin.app, (0..3).map(|_| get("/a"))).await;
    let leader = herd
        .iter()
        .find(|reply| reply.role != Some(FlightRole::Follower))
        .unwrap();
    // The answer took 0.1 s: 59.9 s of its 60 are left, in whole seconds.
    assert_eq!(
        cache_status(leader),
        ["origin-cache; hit", "edge; fwd=uri-miss; stored; ttl=59"]
    );
    let follower = herd
        .iter()
        .find(|reply| reply.role == Some(FlightRole::Follower))
        .unwrap();
    assert_eq!(
        cache_status(follower)[1],
        "edge; fwd=uri-miss; stored; ttl=59; collapsed"
    );
    advance(10 * S).await;
    // A fresh hit: its `Age` says how fresh.
    assert_eq!(cache_status(&origin.get("/a").await)[1], "edge; hit");
    let forced = origin
        .get_with("/a", &[("cache-control", "no-cache")])
        .await;
    assert!(cache_status(&forced)[1].starts_with("edge; fwd=request; stored"));
    advance(70 * S).await;
    let stale = origin
        .get_with("/a", &[("cache-control", "max-stale")])
        .await;
    assert_eq!(cache_status(&stale)[1], "edge; hit; ttl=-10");
    let quiet = Origin::new(CacheConfig::new().no_cache_status(), |seen| {
        answer(&seen, &[])
    });
    quiet.get("/a").await;
    assert!(cache_status(&quiet.get("/a").await).is_empty());
}

#[tokio::test(start_paused = true)]
async fn counters_add_up_and_every_expired_fetch_is_a_miss() {
    let origin = Origin::new(CacheConfig::new().ttl(S), |seen| {
        answer(&seen, &[(header::VARY, "Accept".into())])
    });
    for round in 0..3 {
        if round > 0 {
            advance(2 * S).await;
        }
        origin.get("/a").await;
    }
    let stats = origin.stats();
    assert_eq!((stats.misses, stats.stored), (3, 3));
    origin.get("/a").await;
    origin.get("/a").await;
    origin
        .get_with("/a", &[("cache-control", "no-store")])
        .await;
    origin.get_with("/a", &[("accept", "text/x")]).await;
    let stats = origin.stats();
    assert_eq!((stats.hits, stats.misses, stats.passes), (2, 4, 1));
    assert_eq!(stats.hits + stats.stale + stats.misses + stats.passes, 7);
}

// RFC 9213: CDN-Cache-Control.

#[tokio::test(start_paused = true)]
async fn rfc9213_cdn_cache_control_is_read_first_when_targeted() {
    let cdn = CacheConfig::new().cdn_cache_control();
    let targeted = targeted(cdn, "max-age=5", "max-age=600");
    let plain = common::origin::targeted(CacheConfig::new(), "max-age=5", "max-age=600");
    targeted.get("/a").await;
    plain.get("/a").await;
    advance(300 * S).await;
    assert_eq!(targeted.get("/a").await.text(), "run 1");
    assert_eq!(plain.get("/a").await.text(), "run 2");
}
