//! Properties of the HTTP caching rules, over arbitrary header bytes: no
//! panic anywhere, and the storage rules hold however a response spells
//! its directives.

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, HeaderName, HeaderValue, Response};
use proptest::prelude::*;
use tokio::time::Instant;

use super::{
    age::{self, Clock},
    conditional::{self, Conditions},
    config::CacheConfig,
    directives::{RequestDirectives, ResponseDirectives},
    resolve, status, storage,
};

/// A header map with each of these values that is a valid header value.
fn headers(pairs: &[(HeaderName, &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append(name.clone(), value);
        }
    }
    map
}

/// Directive words with odd spellings, signs, quotes and huge numbers.
fn directives() -> impl Strategy<Value = String> {
    "((max-age|MAX-AGE|s-maxage|stale-if-error|stale-while-revalidate|no-cache|No-Store|PRIVATE|public|must-revalidate|must-understand|min-fresh|max-stale|only-if-cached)(=\"?[0-9.-]{0,25}\"?)?, ){0,5}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary response and request headers go through every rule
    /// without a panic, and what is admitted has a representable lifetime.
    #[test]
    fn arbitrary_headers_never_panic(
        cache_control in prop::collection::vec(any::<u8>(), 0..80),
        words in directives(),
        dates in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 4),
        vary in prop::collection::vec(any::<u8>(), 0..40),
        tags in prop::collection::vec(any::<u8>(), 0..40),
        location in prop::collection::vec(any::<u8>(), 0..60),
        status in 100u16..600,
    ) {
        for cc in [&cache_control[..], words.as_bytes()] {
            let map = headers(&[
                (header::CACHE_CONTROL, cc),
                (header::EXPIRES, &dates[0]),
                (header::DATE, &dates[1]),
                (header::AGE, &dates[2]),
                (header::LAST_MODIFIED, &dates[3]),
                (header::VARY, &vary),
                (header::ETAG, &tags),
                (header::PRAGMA, cc),
            ]);
            let mut response = Response::new(());
            *response.headers_mut() = map.clone();
            if let Ok(code) = http::StatusCode::from_u16(status) {
                *response.status_mut() = code;
            }
            let parts = response.into_parts().0;
            let _ = ResponseDirectives::of(&map, Some(&header::PRAGMA));
            let _ = crate::policy::check(parts.status, &map, false, Some(&header::PRAGMA));
            let _ = RequestDirectives::of(&map);
            for config in [CacheConfig::new(), CacheConfig::shared().jitter(0.5)] {
                if let Some(admitted) = storage::admit(&parts, false, SystemTime::now(), &config) {
                    let _ = admitted.windows.lifetime();
                    let _ = admitted.windows.at_age(Duration::MAX);
                }
            }
            let clock = Clock::new();
            let now = Instant::now();
            let _ = age::initial_age(&map, now, now, &clock);
            let mut request = map.clone();
            request.insert(header::IF_NONE_MATCH, HeaderValue::from_bytes(&tags).unwrap_or(HeaderValue::from_static("*")));
            if let Some(conditions) = Conditions::take(&http::Method::GET, &mut request) {
                let _ = conditions.not_modified(&map);
            }
            let _ = conditional::refreshes(&map, &map);
            let _ = conditional::updated(&map, &map);
            let _ = conditional::not_modified_headers(&map);
        }
        if let Ok(location) = std::str::from_utf8(&location) {
            let _ = resolve::reference("/a/b", location);
        }
        let name = status::identifier(&String::from_utf8_lossy(&vary));
        let mut out = HeaderMap::new();
        status::append(&mut out, &name, status::Status::Hit { ttl: i64::MIN });
        prop_assert!(out.contains_key(status::CACHE_STATUS));
    }

    /// `no-store` and `private`, however spelled and wherever in the list,
    /// are never stored; nor is anything at a status the cache never
    /// stores.
    #[test]
    fn no_store_and_private_are_never_admitted(
        before in directives(),
        forbidden in "(no-store|NO-STORE|No-Store|private|Private|PRIVATE=\"x\")",
        after in directives(),
    ) {
        let value = format!("{before}{forbidden}, {after}");
        let mut response = Response::new(());
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(header::CACHE_CONTROL, value);
        }
        let parts = response.into_parts().0;
        for config in [CacheConfig::new(), CacheConfig::shared()] {
            prop_assert!(storage::admit(&parts, false, SystemTime::now(), &config).is_none());
        }
    }

    /// An explicit lifetime is never longer than `max_ttl`.
    #[test]
    fn the_cap_holds(words in directives(), cap in 0u64..1_000_000) {
        let mut response = Response::new(());
        if let Ok(value) = HeaderValue::from_str(&words) {
            response.headers_mut().insert(header::CACHE_CONTROL, value);
        }
        let parts = response.into_parts().0;
        let config = CacheConfig::new().max_ttl(Duration::from_secs(cap));
        if let Some(admitted) = storage::admit(&parts, false, SystemTime::now(), &config) {
            prop_assert!(admitted.windows.fresh <= Duration::from_secs(cap));
        }
    }
}
