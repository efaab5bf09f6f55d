//! Which requests are "the same": keys taken from the request head.

use std::{
    fmt,
    hash::{Hash, Hasher},
    sync::Arc,
};

use http::{header, request::Parts, uri::PathAndQuery, HeaderName, HeaderValue, Method};

/// Turns a request head into the key that identifies identical requests.
///
/// Returning `None` lets the request through uncoalesced. Any closure
/// `Fn(&http::request::Parts) -> Option<K>` is a key extractor:
///
/// ```
/// use tower_singleflight::SingleFlightLayer;
///
/// // One flight per tenant and path, whatever the query string.
/// let layer = SingleFlightLayer::share().key(|parts: &http::request::Parts| {
///     let tenant = parts.headers.get("x-tenant")?.to_str().ok()?.to_owned();
///     Some((tenant, parts.uri.path().to_owned()))
/// });
/// # let _ = layer;
/// ```
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key; two requests with equal keys are the same request.
    type Key: Hash + Eq + Clone + Send + Sync + 'static;

    /// The key of this request, or `None` to let it through uncoalesced.
    fn extract(&self, parts: &Parts) -> Option<Self::Key>;
}

impl<F, K> KeyExtractor for F
where
    F: Fn(&Parts) -> Option<K> + Send + Sync + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Key = K;

    fn extract(&self, parts: &Parts) -> Option<K> {
        self(parts)
    }
}

/// Method, host, path and query: the default key.
///
/// The host (from the URI's authority, else the `Host` header) is part of
/// the key so that virtual hosts never answer for each other.
pub fn method_path_query() -> MethodPathQuery {
    MethodPathQuery
}

/// The path alone: `GET /a?x=1` and `GET /a?x=2` are the same request.
pub fn path() -> PathOnly {
    PathOnly
}

/// The value of one header; requests without it pass through uncoalesced.
pub fn header(name: HeaderName) -> HeaderKey {
    HeaderKey { name }
}

/// The key extractor of [`method_path_query()`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MethodPathQuery;

/// A request's method, host, path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    method: Method,
    host: Option<HeaderValue>,
    path_and_query: Option<PathAndQuery>,
}

impl RequestKey {
    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The host the request was sent to, if it named one.
    pub fn host(&self) -> Option<&str> {
        self.host.as_ref().and_then(|host| host.to_str().ok())
    }

    /// The path and query, as the request sent them.
    pub fn path_and_query(&self) -> &str {
        self.path_and_query
            .as_ref()
            .map_or("/", PathAndQuery::as_str)
    }
}

/// Hashed for every request, so in few writes: the bytes of each field, not
/// a write for every discriminant and length. Consistent with the derived
/// `Eq`: equal fields write equal bytes. `0xff` occurs in no method token
/// and no UTF-8 path, so fields never run together.
impl Hash for RequestKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.method.as_str().as_bytes());
        state.write_u8(0xff);
        state.write(self.host.as_ref().map_or(&[][..], HeaderValue::as_bytes));
        state.write_u8(0xff);
        state.write(self.path_and_query().as_bytes());
    }
}

impl fmt::Display for RequestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.method)?;
        if let Some(host) = self.host() {
            f.write_str(host)?;
        }
        f.write_str(self.path_and_query())
    }
}

impl KeyExtractor for MethodPathQuery {
    type Key = RequestKey;

    fn extract(&self, parts: &Parts) -> Option<RequestKey> {
        Some(RequestKey {
            method: parts.method.clone(),
            host: host(parts),
            path_and_query: parts.uri.path_and_query().cloned(),
        })
    }
}

/// The key extractor of [`path()`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PathOnly;

impl KeyExtractor for PathOnly {
    type Key = String;

    fn extract(&self, parts: &Parts) -> Option<String> {
        Some(parts.uri.path().to_owned())
    }
}

/// The key extractor of [`header()`].
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: HeaderName,
}

impl KeyExtractor for HeaderKey {
    type Key = HeaderValue;

    fn extract(&self, parts: &Parts) -> Option<HeaderValue> {
        parts.headers.get(&self.name).cloned()
    }
}

/// The host a request was sent to: the URI's authority (HTTP/2, absolute
/// form), else the `Host` header.
pub(crate) fn host(parts: &Parts) -> Option<HeaderValue> {
    host_of(&parts.uri, &parts.headers)
}

pub(crate) fn host_of(uri: &http::Uri, headers: &http::HeaderMap) -> Option<HeaderValue> {
    match uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => headers.get(header::HOST).cloned(),
    }
}

/// The request headers that tell one caller from another.
#[derive(Debug, Clone)]
pub(crate) struct IdentityHeaders {
    names: Arc<[HeaderName]>,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        Self {
            names: Arc::new([header::AUTHORIZATION, header::COOKIE]),
        }
    }
}

impl IdentityHeaders {
    pub(crate) fn with(&self, name: HeaderName) -> Self {
        let mut names = self.names.to_vec();
        if !names.contains(&name) {
            names.push(name);
        }
        Self {
            names: names.into(),
        }
    }

    /// Every value of every identity header, tagged with which header it is
    /// so that values cannot be confused across headers.
    pub(crate) fn of(&self, parts: &Parts) -> Identity {
        let values = self
            .names
            .iter()
            .enumerate()
            .flat_map(|(index, name)| {
                parts
                    .headers
                    .get_all(name)
                    .iter()
                    .map(move |value| (index, value.clone()))
            })
            .collect();
        Identity { values }
    }
}

/// The caller, as its identity headers name it; empty for an anonymous one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct Identity {
    values: Vec<(usize, HeaderValue)>,
}

impl Identity {
    pub(crate) fn is_anonymous(&self) -> bool {
        self.values.is_empty()
    }

    /// The bytes of its header values.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.values.iter().map(|(_, value)| value.len()).sum()
    }
}

/// The key share mode coalesces on: the user's key, kept apart by method kind
/// (a `HEAD` never shares with a `GET`), by host and by caller, whatever the
/// user's key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShareKey<K> {
    pub(crate) key: K,
    pub(crate) head: bool,
    pub(crate) host: Option<HeaderValue>,
    /// `None` when the layer shares across identities.
    pub(crate) identity: Option<Identity>,
}

impl<K: Hash> Hash for ShareKey<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
        state.write_u8(u8::from(self.head));
        state.write(self.host.as_ref().map_or(&[][..], HeaderValue::as_bytes));
        if let Some(identity) = &self.identity {
            identity.hash(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(request: Request<()>) -> Parts {
        request.into_parts().0
    }

    #[test]
    fn the_default_key_tells_methods_paths_and_queries_apart() {
        let key = |method: &str, uri: &str| {
            MethodPathQuery.extract(&parts(
                Request::builder().method(method).uri(uri).body(()).unwrap(),
            ))
        };
        assert_ne!(key("GET", "/a?x=1"), key("GET", "/a?x=2"));
        assert_ne!(key("GET", "/a"), key("HEAD", "/a"));
        assert_eq!(key("GET", "/a?x=1").unwrap().to_string(), "GET /a?x=1");
    }

    #[test]
    fn the_default_key_tells_hosts_apart() {
        let key = |request: Request<()>| MethodPathQuery.extract(&parts(request));
        let with_host = |host: &str| {
            Request::builder()
                .uri("/a")
                .header("host", host)
                .body(())
                .unwrap()
        };
        assert_ne!(key(with_host("a.example")), key(with_host("b.example")));
        assert_eq!(
            key(with_host("a.example")),
            key(Request::builder()
                .uri("http://a.example/a")
                .body(())
                .unwrap()),
            "the authority and the Host header name the same host"
        );
        assert_eq!(
            key(with_host("a.example")).unwrap().to_string(),
            "GET a.example/a"
        );
    }

    #[test]
    fn identity_tags_values_with_their_header() {
        let identity = IdentityHeaders::default();
        let of = |name: HeaderName| {
            identity.of(&parts(
                Request::builder().header(name, "secret").body(()).unwrap(),
            ))
        };
        assert_ne!(of(header::AUTHORIZATION), of(header::COOKIE));
        assert!(identity.of(&parts(Request::new(()))).is_anonymous());
    }

    #[test]
    fn a_header_key_passes_through_requests_without_the_header() {
        let extractor = header(HeaderName::from_static("x-job"));
        assert_eq!(extractor.extract(&parts(Request::new(()))), None);
        let with = parts(Request::builder().header("x-job", "7").body(()).unwrap());
        assert_eq!(
            extractor.extract(&with),
            Some(HeaderValue::from_static("7"))
        );
    }
}
