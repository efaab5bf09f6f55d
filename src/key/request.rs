//! The built-in keys read from the request head: method, host, path and
//! query; the path alone; a header; an extension.

use std::{
    fmt,
    hash::{Hash, Hasher},
    marker::PhantomData,
};

use http::{request::Parts, HeaderName, HeaderValue, Method};

use super::KeyExtractor;
use crate::identity::RequestIdentity;

/// The key extractor of [`method_path_query()`](super::method_path_query()).
#[derive(Debug, Clone, Copy, Default)]
pub struct MethodPathQuery;

/// A request's method, normalized host, path and query. It keeps its own
/// copy of them, never the request's buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    method: Method,
    /// The host, then the path, then `?` and the query if there is one: one
    /// allocation for the lot.
    text: Box<str>,
    /// Where the host ends in `text`; `None` when the request named none.
    host_end: Option<usize>,
}

impl RequestKey {
    /// The key of a request with this identity.
    pub fn new(identity: &RequestIdentity<'_>) -> Self {
        // A normalized host is visible ASCII.
        let host = identity.host().and_then(|host| host.to_str().ok());
        let query = identity.query();
        let (host_text, path) = (host.unwrap_or_default(), identity.path());
        let length = host_text.len() + path.len() + query.map_or(0, |query| query.len() + 1);
        let mut text = String::with_capacity(length);
        text.push_str(host_text);
        text.push_str(path);
        if let Some(query) = query {
            text.push('?');
            text.push_str(query);
        }
        Self {
            method: identity.method().clone(),
            text: text.into_boxed_str(),
            host_end: host.map(str::len),
        }
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The host the request was sent to, normalized, if it named one.
    pub fn host(&self) -> Option<&str> {
        self.host_end.map(|end| &self.text[..end])
    }

    /// The path and query, normalized.
    pub fn path_and_query(&self) -> &str {
        &self.text[self.host_end.unwrap_or(0)..]
    }
}

/// Hashed for every request, so in few writes: the bytes of each field, not
/// a write for every discriminant and length. Consistent with the derived
/// `Eq`: equal fields write equal bytes. `0xff` occurs in no method token
/// and no UTF-8 text, so the method and the text never run together; the
/// host's end is written as a number.
impl Hash for RequestKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.method.as_str().as_bytes());
        state.write_u8(0xff);
        state.write_usize(self.host_end.map_or(0, |end| end + 1));
        state.write(self.text.as_bytes());
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

/// Written as `[method, host, path_and_query]` (the host `null` when the
/// request named none): for stores and clusters that keep keys outside the
/// process.
#[cfg(feature = "serde")]
impl serde::Serialize for RequestKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (self.method.as_str(), self.host(), self.path_and_query()).serialize(serializer)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for RequestKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (method, host, rest): (String, Option<String>, String) =
            serde::Deserialize::deserialize(deserializer)?;
        let method = Method::from_bytes(method.as_bytes()).map_err(serde::de::Error::custom)?;
        let host_end = host.as_ref().map(String::len);
        Ok(Self {
            method,
            text: (host.unwrap_or_default() + &rest).into_boxed_str(),
            host_end,
        })
    }
}

impl KeyExtractor for MethodPathQuery {
    type Key = RequestKey;

    fn extract(&self, parts: &Parts) -> Option<RequestKey> {
        self.extract_with(parts, &RequestIdentity::of(parts)?)
    }

    fn extract_with(&self, _: &Parts, identity: &RequestIdentity<'_>) -> Option<RequestKey> {
        Some(RequestKey::new(identity))
    }
}

/// The key extractor of [`path()`](super::path()).
#[derive(Debug, Clone, Copy, Default)]
pub struct PathOnly;

impl KeyExtractor for PathOnly {
    type Key = String;

    fn extract(&self, parts: &Parts) -> Option<String> {
        self.extract_with(parts, &RequestIdentity::of(parts)?)
    }

    fn extract_with(&self, _: &Parts, identity: &RequestIdentity<'_>) -> Option<String> {
        Some(identity.path().to_owned())
    }
}

/// The key extractor of [`header()`](super::header()).
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    pub(super) fn new(name: HeaderName) -> Self {
        Self { name }
    }
}

impl KeyExtractor for HeaderKey {
    type Key = HeaderValue;

    fn extract(&self, parts: &Parts) -> Option<HeaderValue> {
        // Copied: a clone would keep the request's whole head buffer alive
        // for as long as the key is kept.
        let value = parts.headers.get(&self.name)?;
        HeaderValue::from_bytes(value.as_bytes()).ok()
    }

    fn key_bytes(&self, key: &HeaderValue) -> usize {
        key.len()
    }
}

/// The key extractor of [`extension()`](super::extension()).
pub struct ExtensionKey<T>(PhantomData<fn() -> T>);

impl<T> ExtensionKey<T> {
    pub(super) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Clone for ExtensionKey<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for ExtensionKey<T> {}

impl<T> fmt::Debug for ExtensionKey<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ExtensionKey")
            .field(&std::any::type_name::<T>())
            .finish()
    }
}

impl<T> KeyExtractor for ExtensionKey<T>
where
    T: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Key = T;

    fn extract(&self, parts: &Parts) -> Option<T> {
        parts.extensions.get::<T>().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::header;
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
    fn other_spellings_of_a_request_are_one_key() {
        let key = |host: &str, uri: &str| {
            let request = Request::builder().uri(uri).header("host", host);
            MethodPathQuery.extract(&parts(request.body(()).unwrap()))
        };
        let canonical = key("svc.example", "/flows/1/resume?x=%2F");
        for (host, uri) in [
            ("SVC.example", "/flows/1/resume?x=%2F"),
            ("svc.example.", "/flows/%31/resume?x=%2f"),
            ("svc.example:80", "/flows/1/resume?x=%2F"),
        ] {
            assert_eq!(key(host, uri), canonical, "{host}{uri}");
        }
        assert_ne!(key("svc.example", "/flows/1/resume?x=/"), canonical);
        assert_eq!(
            PathOnly.extract(&parts(
                Request::builder()
                    .uri("/flows/%31/resume")
                    .body(())
                    .unwrap()
            )),
            Some("/flows/1/resume".to_owned())
        );
    }

    #[test]
    fn a_request_naming_two_hosts_gets_no_default_key() {
        let request = Request::builder()
            .uri("http://a.example/home")
            .header("host", "b.example");
        assert_eq!(
            MethodPathQuery.extract(&parts(request.body(()).unwrap())),
            None
        );
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
