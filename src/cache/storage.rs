//! Whether a response may be stored, and for how long it is fresh: RFC 9111
//! §3 (storing), §3.5 (`Authorization`), §4.2.1 (freshness lifetime),
//! §4.2.2 (heuristics) and §5.2.2 (response directives), in one place.

use std::time::{Duration, SystemTime};

use http::{header, response::Parts, StatusCode};

use super::{
    age,
    config::{CacheConfig, Posture},
    directives::{ResponseDirectives, Seconds},
    freshness::Windows,
};

/// What a response may be stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// Freshness lifetime (`fresh`) and stale windows.
    pub(crate) windows: Windows,
    /// Never served stale at a client's `max-stale` either (§4.2.4).
    pub(crate) forbids_stale: bool,
    /// It has an `ETag` or a `Last-Modified` to revalidate it with.
    pub(crate) validator: bool,
}

/// The statuses whose caching semantics this cache implements, for
/// `must-understand` (§5.2.2.3).
const UNDERSTOOD: [u16; 15] = [
    200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 451, 501,
];

/// Whether (and how) a shareable response may be stored. `authorized`: the
/// request carried `Authorization`. `received`: the wall time it arrived,
/// standing in for a missing `Date`.
pub(crate) fn admit(
    parts: &Parts,
    authorized: bool,
    received: SystemTime,
    config: &CacheConfig,
) -> Option<Admitted> {
    let status = parts.status;
    // Never stored, whatever they say: answers to one request (1xx, 206,
    // 304), and server errors (a stale copy stands in for those, and the
    // crate promises that errors are never cached).
    if status.is_informational()
        || status.is_server_error()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return None;
    }
    let directives = ResponseDirectives::of(&parts.headers, config.targeted.as_ref());
    if directives.no_store || directives.private {
        return None;
    }
    // §3.5: an answer to an authenticated request is stored only if it says
    // a shared cache may.
    let allows_authorized =
        directives.public || directives.must_revalidate || directives.s_maxage != Seconds::Absent;
    if authorized && !allows_authorized {
        return None;
    }
    if directives.must_understand && !UNDERSTOOD.contains(&status.as_u16()) {
        return None;
    }
    let date = age::date(&parts.headers, &header::DATE).unwrap_or(received);
    let explicit = explicit_lifetime(&directives, parts, date);
    let listed = config.statuses.contains(&status);
    let fresh = match explicit {
        Some(lifetime) => {
            let stored = match config.posture {
                // Errors outside the list stay unstored on an app's route.
                Posture::Route => listed || status.is_redirection(),
                Posture::Shared => true,
            };
            if !stored {
                return None;
            }
            lifetime
        }
        None => {
            let heuristic = listed || (config.posture == Posture::Shared && directives.public);
            if !heuristic {
                return None;
            }
            heuristic_lifetime(parts, date, config)
        }
    };
    let fresh = if directives.no_cache {
        Duration::ZERO
    } else {
        fresh.min(config.max_ttl)
    };
    let forbids_stale = directives.forbids_stale();
    let window = |said: Seconds, configured: Duration| {
        if forbids_stale {
            Duration::ZERO
        } else {
            said.valid().unwrap_or(configured)
        }
    };
    let windows = Windows {
        fresh,
        stale_while_revalidate: window(
            directives.stale_while_revalidate,
            config.stale_while_revalidate,
        ),
        stale_if_error: window(directives.stale_if_error, config.stale_if_error),
    }
    .jittered(config.jitter);
    let validator = parts.headers.contains_key(header::ETAG)
        || parts.headers.contains_key(header::LAST_MODIFIED);
    // Useless to keep: never fresh, never served stale, never validated.
    if windows.lifetime().is_zero() && !validator {
        return None;
    }
    Some(Admitted {
        windows,
        forbids_stale,
        validator,
    })
}

/// §4.2.1: `s-maxage`, then `max-age`, then `Expires - Date`; an invalid
/// value of the first one present makes the response stale (zero).
fn explicit_lifetime(
    directives: &ResponseDirectives,
    parts: &Parts,
    date: SystemTime,
) -> Option<Duration> {
    for said in [directives.s_maxage, directives.max_age] {
        match said {
            Seconds::Valid(lifetime) => return Some(lifetime),
            Seconds::Invalid => return Some(Duration::ZERO),
            Seconds::Absent => {}
        }
    }
    // A targeted field replaces `Expires` as well (RFC 9213 §2.2).
    if directives.targeted || !parts.headers.contains_key(header::EXPIRES) {
        return None;
    }
    // An invalid `Expires` (`0`, say) is in the past (§5.3).
    let expires = age::date(&parts.headers, &header::EXPIRES);
    Some(expires.map_or(Duration::ZERO, |expires| age::between(date, expires)))
}

/// §4.2.2: a tenth of the time since `Last-Modified`, capped, where the
/// configuration asks for heuristics; else the configured TTL; else none
/// (stored only to be revalidated).
fn heuristic_lifetime(parts: &Parts, date: SystemTime, config: &CacheConfig) -> Duration {
    let last_modified = age::date(&parts.headers, &header::LAST_MODIFIED);
    match (config.heuristic, last_modified) {
        (Some(cap), Some(modified)) => (age::between(modified, date) / 10).min(cap),
        _ => config.ttl.unwrap_or(Duration::ZERO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Response;

    const S: Duration = Duration::from_secs(1);

    fn parts(status: u16, headers: &[(&'static str, String)]) -> Parts {
        let mut response = Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(*name, value);
        }
        response.body(()).unwrap().into_parts().0
    }

    fn date(at: SystemTime) -> String {
        httpdate::fmt_http_date(at)
    }

    fn admit(parts: &Parts, config: &CacheConfig) -> Option<Admitted> {
        super::admit(parts, false, SystemTime::now(), config)
    }

    fn fresh(parts: &Parts, config: &CacheConfig) -> Option<Duration> {
        admit(parts, config).map(|admitted| admitted.windows.fresh)
    }

    #[test]
    fn max_age_wins_over_the_ttl_both_ways_up_to_the_cap() {
        let config = CacheConfig::new().ttl(60 * S);
        let cc = |value: &str| parts(200, &[("cache-control", value.into())]);
        assert_eq!(fresh(&cc("max-age=10"), &config), Some(10 * S));
        assert_eq!(fresh(&cc("max-age=600"), &config), Some(600 * S));
        assert_eq!(fresh(&cc("max-age=30, s-maxage=3"), &config), Some(3 * S));
        let capped = config.max_ttl(100 * S);
        assert_eq!(fresh(&cc("max-age=600"), &capped), Some(100 * S));
    }

    #[test]
    fn expires_minus_date_is_the_lifetime() {
        let now = SystemTime::now();
        let config = CacheConfig::new();
        let later = parts(
            200,
            &[("date", date(now)), ("expires", date(now + 120 * S))],
        );
        assert_eq!(fresh(&later, &config), Some(120 * S));
        for expires in [date(now - 3600 * S), "0".into(), "garbage".into()] {
            let past = parts(
                200,
                &[
                    ("date", date(now)),
                    ("expires", expires),
                    ("etag", "\"v\"".into()),
                ],
            );
            assert_eq!(fresh(&past, &config), Some(Duration::ZERO));
        }
    }

    #[test]
    fn only_what_the_posture_allows_is_stored() {
        let route = CacheConfig::new();
        let shared = CacheConfig::shared();
        let with = |status| parts(status, &[("cache-control", "max-age=60".into())]);
        let without = |status| parts(status, &[]);
        assert!(admit(&with(302), &route).is_some());
        assert!(admit(&with(403), &route).is_none());
        assert!(admit(&with(403), &shared).is_some());
        assert!(admit(&with(500), &shared).is_none());
        assert!(admit(&without(200), &route).is_some());
        assert!(admit(&without(200), &shared).is_none());
        assert!(admit(&without(302), &route).is_none());
    }

    #[test]
    fn private_no_store_authorization_and_must_understand() {
        let config = CacheConfig::new();
        let cc = |value: &str| parts(200, &[("cache-control", value.into())]);
        assert!(admit(&cc("private, max-age=60"), &config).is_none());
        assert!(admit(&cc("no-store"), &config).is_none());
        let now = SystemTime::now();
        assert!(super::admit(&cc("max-age=60"), true, now, &config).is_none());
        for allowed in [
            "public, max-age=60",
            "s-maxage=60",
            "must-revalidate, max-age=60",
        ] {
            assert!(super::admit(&cc(allowed), true, now, &config).is_some());
        }
        let odd = parts(
            299,
            &[("cache-control", "must-understand, max-age=60".into())],
        );
        assert!(admit(&odd, &CacheConfig::shared()).is_none());
        assert!(admit(&cc("must-understand, max-age=60"), &config).is_some());
    }

    #[test]
    fn heuristics_are_a_tenth_of_the_last_modified_age_capped() {
        let now = SystemTime::now();
        let modified = parts(
            200,
            &[("date", date(now)), ("last-modified", date(now - 1000 * S))],
        );
        assert_eq!(fresh(&modified, &CacheConfig::shared()), Some(100 * S));
        let capped = CacheConfig::shared().heuristic(10 * S);
        assert_eq!(fresh(&modified, &capped), Some(10 * S));
        // The route posture uses its TTL, not heuristics.
        assert_eq!(fresh(&modified, &CacheConfig::new()), Some(60 * S));
    }

    #[test]
    fn no_cache_is_stored_stale_only_with_a_validator() {
        let config = CacheConfig::new().stale_while_revalidate(60 * S);
        let with = parts(
            200,
            &[
                ("cache-control", "no-cache".into()),
                ("etag", "\"1\"".into()),
            ],
        );
        let admitted = admit(&with, &config).unwrap();
        assert_eq!(admitted.windows.lifetime(), Duration::ZERO);
        assert!(admitted.forbids_stale && admitted.validator);
        let without = parts(200, &[("cache-control", "no-cache".into())]);
        assert!(admit(&without, &config).is_none());
    }
}
