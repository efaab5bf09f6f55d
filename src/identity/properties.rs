//! Property tests of request identity: equivalent spellings are one key,
//! different requests never are, and no input makes a parser panic.

use http::{request::Parts, HeaderValue, Request};
use proptest::prelude::*;

use super::{host, path, CallerIdentity, HostSource, Reading, RequestIdentity};
use crate::key::{KeyExtractor, MethodPathQuery, RequestKey};

fn parts(method: &str, uri: &str, headers: &[(&str, &[u8])]) -> Option<Parts> {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, HeaderValue::from_bytes(value).ok()?);
    }
    Some(request.body(()).ok()?.into_parts().0)
}

fn key(method: &str, host: &str, target: &str) -> Option<RequestKey> {
    MethodPathQuery.extract(&parts(method, target, &[("host", host.as_bytes())])?)
}

/// A request in canonical spelling: lower-case host, unreserved path and
/// query characters.
fn canonical() -> impl Strategy<Value = (String, String, String, String)> {
    (
        prop::sample::select(vec!["GET", "HEAD", "POST", "DELETE"]),
        "[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){0,2}(:[1-9][0-9]{3})?",
        "(/[a-zA-Z0-9._~-]{0,6}){1,4}",
        "([a-z0-9=&._~-]{0,12})?",
    )
        .prop_map(|(method, host, path, query)| (method.to_owned(), host, path, query))
}

/// Another spelling of `text`: some characters percent-encoded, in either
/// case of hex digits.
fn respelled(text: &str, picks: &[bool]) -> String {
    text.chars()
        .zip(picks.iter().cycle())
        .map(|(c, encode)| match (encode, c) {
            (true, '/' | '?' | '=' | '&' | ':') | (false, _) => c.to_string(),
            (true, c) if c.is_ascii_digit() => format!("%{:x}", c as u8),
            (true, c) => format!("%{:X}", c as u8),
        })
        .collect()
}

fn target(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn equivalent_spellings_are_one_key(
        (method, host, path, query) in canonical(),
        picks in prop::collection::vec(any::<bool>(), 1..16),
        upper in any::<bool>(),
        dot in any::<bool>(),
    ) {
        let plain = key(&method, &host, &target(&path, &query));
        prop_assert!(plain.is_some());
        let mut other_host = if upper { host.to_ascii_uppercase() } else { host.clone() };
        if !other_host.contains(':') {
            if dot { other_host.push('.'); }
            other_host.push_str(":80");
        }
        let other = target(&respelled(&path, &picks), &respelled(&query, &picks));
        prop_assert_eq!(key(&method, &other_host, &other), plain);
    }

    #[test]
    fn different_requests_never_share_a_key(a in canonical(), b in canonical()) {
        prop_assume!(a != b);
        let key_a = key(&a.0, &a.1, &target(&a.2, &a.3));
        let key_b = key(&b.0, &b.1, &target(&b.2, &b.3));
        prop_assert!(key_a.is_some());
        prop_assert_ne!(key_a, key_b);
    }

    #[test]
    fn different_callers_never_share(
        a in prop::collection::vec(any::<u8>(), 1..32),
        b in prop::collection::vec(any::<u8>(), 1..32),
        header in prop::sample::select(vec!["authorization", "x-api-key", "cookie"]),
    ) {
        let identity = CallerIdentity::new();
        let (Some(one), Some(two)) = (parts("GET", "/", &[(header, &a)]), parts("GET", "/", &[(header, &b)])) else {
            return Ok(());
        };
        let (one, two) = (identity.of(&one), identity.of(&two));
        prop_assert_eq!(one == two, a.trim_ascii() == b.trim_ascii());
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(
        raw in prop::collection::vec(any::<u8>(), 0..64),
        text in "\\PC{0,64}",
        source in prop::sample::select(vec![HostSource::Request, HostSource::XForwardedHost, HostSource::Forwarded]),
    ) {
        let _ = host::normalize(&raw, None);
        let _ = path::normalize(&text);
        for name in ["host", "x-forwarded-host", "forwarded", "cookie"] {
            if let Some(parts) = parts("GET", "/", &[(name, &raw), ("host", b"a.example")]) {
                let _ = RequestIdentity::read(&parts, source, Reading::Sharing);
                let _ = RequestIdentity::read(&parts, source, Reading::Locking);
                let _ = CallerIdentity::new().cookie("session").of(&parts);
            }
        }
    }
}
