//! Whether one caller's response may be handed to another.

use std::fmt;

use http::{header, HeaderMap, HeaderName, HeaderValue};

/// Why a response was not shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unshareable {
    SetCookie,
    NoStore,
    /// `Cache-Control: private` for a key that is not per identity, or for an
    /// anonymous caller.
    Private,
    VaryAll,
    TooLarge,
    BodyFailed,
    ServiceError,
}

impl fmt::Display for Unshareable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SetCookie => "response sets a cookie",
            Self::NoStore => "response is no-store",
            Self::Private => "response is private",
            Self::VaryAll => "response varies on everything",
            Self::TooLarge => "response body exceeds the buffer cap",
            Self::BodyFailed => "response body failed",
            Self::ServiceError => "inner service failed",
        })
    }
}

/// Checks a response head before its body is read.
///
/// `private_ok` is true when the flight's waiters are known to be one caller:
/// the key is per identity and the identity is not anonymous.
pub(crate) fn check(headers: &HeaderMap, private_ok: bool) -> Result<(), Unshareable> {
    if headers.contains_key(header::SET_COOKIE) {
        return Err(Unshareable::SetCookie);
    }
    for directive in list(headers, &header::CACHE_CONTROL) {
        let name = directive.split('=').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("no-store") {
            return Err(Unshareable::NoStore);
        }
        if name.eq_ignore_ascii_case("private") && !private_ok {
            return Err(Unshareable::Private);
        }
    }
    if list(headers, &header::VARY).any(|name| name == "*") {
        return Err(Unshareable::VaryAll);
    }
    Ok(())
}

/// The leader's values of the request headers a response varies on. A
/// follower may take the response only if its own values are the same.
#[derive(Debug, Default)]
pub(crate) struct Vary {
    headers: Vec<(HeaderName, Vec<HeaderValue>)>,
}

impl Vary {
    pub(crate) fn new(response: &HeaderMap, leader_request: &HeaderMap) -> Self {
        let headers = list(response, &header::VARY)
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .map(|name| {
                let values = leader_request.get_all(&name).iter().cloned().collect();
                (name, values)
            })
            .collect();
        Self { headers }
    }

    pub(crate) fn matches(&self, request: &HeaderMap) -> bool {
        self.headers
            .iter()
            .all(|(name, values)| request.get_all(name).iter().eq(values.iter()))
    }
}

/// The comma-separated elements of every value of a list header.
fn list<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|element| !element.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn plain_responses_are_shareable() {
        let plain = headers(&[("cache-control", "public, max-age=60"), ("vary", "accept")]);
        assert_eq!(check(&plain, false), Ok(()));
    }

    #[test]
    fn cookies_no_store_and_vary_star_are_never_shared() {
        let set_cookie = headers(&[("set-cookie", "a=b")]);
        let no_store = headers(&[("cache-control", "max-age=0, No-Store")]);
        let vary_all = headers(&[("vary", "accept, *")]);
        assert_eq!(check(&set_cookie, true), Err(Unshareable::SetCookie));
        assert_eq!(check(&no_store, true), Err(Unshareable::NoStore));
        assert_eq!(check(&vary_all, true), Err(Unshareable::VaryAll));
    }

    #[test]
    fn private_is_shared_only_within_one_identity() {
        let private = headers(&[("cache-control", "private=\"x-user\"")]);
        assert_eq!(check(&private, false), Err(Unshareable::Private));
        assert_eq!(check(&private, true), Ok(()));
    }

    #[test]
    fn vary_compares_every_named_header() {
        let response = headers(&[("vary", "Accept-Encoding, Accept-Language")]);
        let leader = headers(&[("accept-encoding", "gzip"), ("accept-language", "fr")]);
        let vary = Vary::new(&response, &leader);
        assert!(vary.matches(&leader));
        assert!(!vary.matches(&headers(&[("accept-encoding", "gzip")])));
        assert!(!vary.matches(&headers(&[
            ("accept-encoding", "br"),
            ("accept-language", "fr")
        ])));
    }
}
