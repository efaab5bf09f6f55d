//! What a response's `Cache-Control` says about storing it.

use std::time::Duration;

use http::{header, response::Parts};

use super::{config::CacheConfig, freshness::Windows};
use crate::policy::elements;

/// The windows to store this answer for, or `None` when it must not be
/// stored. Called only for answers share mode found shareable.
pub(crate) fn windows(parts: &Parts, config: &CacheConfig) -> Option<Windows> {
    if !config.statuses.contains(&parts.status) {
        return None;
    }
    let mut max_age = None;
    let mut s_maxage = None;
    let mut must_revalidate = false;
    let mut windows = Windows {
        fresh: config.ttl,
        stale_while_revalidate: config.stale_while_revalidate,
        stale_if_error: config.stale_if_error,
    };
    for directive in elements(&parts.headers, &header::CACHE_CONTROL) {
        let (name, value) = split(directive);
        let seconds = || value.and_then(seconds);
        if name.eq_ignore_ascii_case(b"no-cache") {
            return None;
        } else if name.eq_ignore_ascii_case(b"must-revalidate")
            || name.eq_ignore_ascii_case(b"proxy-revalidate")
        {
            // Never served stale: not while revalidating, not on error.
            must_revalidate = true;
        } else if name.eq_ignore_ascii_case(b"max-age") {
            max_age = seconds();
        } else if name.eq_ignore_ascii_case(b"s-maxage") {
            s_maxage = seconds();
        } else if name.eq_ignore_ascii_case(b"stale-while-revalidate") {
            windows.stale_while_revalidate = seconds().unwrap_or(windows.stale_while_revalidate);
        } else if name.eq_ignore_ascii_case(b"stale-if-error") {
            windows.stale_if_error = seconds().unwrap_or(windows.stale_if_error);
        }
    }
    // A shared cache reads `s-maxage` first; either may only shorten our TTL.
    if let Some(age) = s_maxage.or(max_age) {
        windows.fresh = windows.fresh.min(age);
    }
    if must_revalidate {
        windows.stale_while_revalidate = Duration::ZERO;
        windows.stale_if_error = Duration::ZERO;
    }
    let windows = windows.jittered(config.jitter);
    (!windows.lifetime().is_zero()).then_some(windows)
}

fn split(directive: &[u8]) -> (&[u8], Option<&[u8]>) {
    match directive.iter().position(|byte| *byte == b'=') {
        Some(at) => (
            directive[..at].trim_ascii(),
            Some(directive[at + 1..].trim_ascii()),
        ),
        None => (directive, None),
    }
}

/// The largest delta-seconds: RFC 9111 §1.2.2 has caches read anything
/// larger, however many digits, as 2^31 seconds (about 68 years).
const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// Delta-seconds, quoted or not, clamped to [`MAX_DELTA_SECONDS`]; anything
/// but digits is ignored.
fn seconds(value: &[u8]) -> Option<Duration> {
    let value = value.strip_prefix(b"\"").unwrap_or(value);
    let value = value.strip_suffix(b"\"").unwrap_or(value);
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Saturating, so that digits past u64 clamp too instead of failing.
    let seconds = value.iter().fold(0u64, |seconds, digit| {
        seconds
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    });
    Some(Duration::from_secs(seconds.min(MAX_DELTA_SECONDS)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Response, StatusCode};

    fn parts(status: u16, cache_control: Option<&'static str>) -> Parts {
        let mut response = Response::builder().status(status);
        if let Some(value) = cache_control {
            response = response.header(header::CACHE_CONTROL, value);
        }
        response.body(()).unwrap().into_parts().0
    }

    fn config() -> CacheConfig {
        CacheConfig::new()
            .ttl(Duration::from_secs(60))
            .stale_if_error(Duration::from_secs(5))
    }

    #[test]
    fn only_listed_statuses_are_stored() {
        assert!(windows(&parts(200, None), &config()).is_some());
        assert!(windows(&parts(404, None), &config()).is_some());
        assert!(windows(&parts(500, None), &config()).is_none());
        assert!(windows(&parts(201, None), &config()).is_none());
        let custom = config().statuses([StatusCode::CREATED]);
        assert!(windows(&parts(201, None), &custom).is_some());
    }

    #[test]
    fn max_age_and_s_maxage_only_shorten() {
        let short = windows(&parts(200, Some("max-age=10")), &config()).unwrap();
        assert_eq!(short.fresh, Duration::from_secs(10));
        let long = windows(&parts(200, Some("max-age=600")), &config()).unwrap();
        assert_eq!(long.fresh, Duration::from_secs(60));
        let shared = windows(&parts(200, Some("max-age=30, s-maxage=\"3\"")), &config()).unwrap();
        assert_eq!(shared.fresh, Duration::from_secs(3));
    }

    #[test]
    fn the_response_sets_its_stale_windows() {
        let cc = Some("max-age=1, stale-while-revalidate=9, stale-if-error=99");
        let windows = windows(&parts(200, cc), &config()).unwrap();
        assert_eq!(windows.stale_while_revalidate, Duration::from_secs(9));
        assert_eq!(windows.stale_if_error, Duration::from_secs(99));
    }

    #[test]
    fn must_revalidate_is_never_served_stale() {
        let cc = Some("max-age=5, must-revalidate, stale-while-revalidate=60");
        let windows = windows(&parts(200, cc), &config()).unwrap();
        assert_eq!(windows.fresh, Duration::from_secs(5));
        assert_eq!(windows.lifetime(), Duration::from_secs(5));
    }

    #[test]
    fn no_cache_and_zero_lifetimes_are_not_stored() {
        assert!(windows(&parts(200, Some("no-cache")), &config()).is_none());
        let never = CacheConfig::new().ttl(Duration::ZERO);
        assert!(windows(&parts(200, None), &never).is_none());
        assert!(windows(&parts(200, Some("max-age=0")), &CacheConfig::new()).is_none());
    }

    #[test]
    fn delta_seconds_clamp_at_2_pow_31() {
        let clamped = Some(Duration::from_secs(1 << 31));
        assert_eq!(seconds(b"2147483648"), clamped);
        assert_eq!(seconds(b"2147483649"), clamped);
        assert_eq!(seconds(b"18446744073709551615"), clamped);
        assert_eq!(seconds(b"99999999999999999999999999"), clamped);
        assert_eq!(seconds(b"\"99999999999999999999\""), clamped);
        assert_eq!(
            seconds(b"2147483647"),
            Some(Duration::from_secs((1 << 31) - 1))
        );
        assert_eq!(seconds(b"+5"), None);
        assert_eq!(seconds(b"-5"), None);
        assert_eq!(seconds(b""), None);
    }

    #[test]
    fn a_huge_stale_window_in_the_header_is_kept_clamped() {
        let cc = Some("max-age=60, stale-if-error=18446744073709551615");
        let windows = windows(&parts(200, cc), &config()).unwrap();
        assert_eq!(windows.stale_if_error, Duration::from_secs(1 << 31));
        assert_eq!(windows.lifetime(), Duration::from_secs(60 + (1 << 31)));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use http::{HeaderValue, Response};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Arbitrary `Cache-Control` and `Vary` bytes: never a panic, and a
        /// stored answer's lifetime stays representable.
        #[test]
        fn arbitrary_response_headers_never_panic(
            cache_control in prop::collection::vec(any::<u8>(), 0..80),
            vary in prop::collection::vec(any::<u8>(), 0..40),
            words in "((max-age|s-maxage|stale-if-error|stale-while-revalidate|no-cache|private)(=\"?[0-9-]{0,25}\"?)?, ){0,4}",
        ) {
            for value in [&cache_control[..], words.as_bytes()] {
                let Ok(value) = HeaderValue::from_bytes(value) else { continue };
                let mut response = Response::new(());
                response.headers_mut().insert(header::CACHE_CONTROL, value);
                if let Ok(vary) = HeaderValue::from_bytes(&vary) {
                    response.headers_mut().insert(header::VARY, vary);
                }
                let parts = response.into_parts().0;
                let _ = crate::policy::check(parts.status, &parts.headers, false);
                if let Some(windows) = windows(&parts, &CacheConfig::new()) {
                    let _ = windows.lifetime();
                    let now = tokio::time::Instant::now();
                    let _ = windows.at(now, now);
                }
            }
        }
    }
}
