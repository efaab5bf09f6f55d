//! Which requests are "the same": keys taken from the request head.

mod request;
mod share;

use std::hash::Hash;

use http::{request::Parts, HeaderName};

use crate::identity::RequestIdentity;

pub use request::{ExtensionKey, HeaderKey, MethodPathQuery, PathOnly, RequestKey};
pub(crate) use share::{Scheme, ShareKey};

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
///
/// Whatever the key, share mode keeps requests for different hosts and
/// callers apart, and `HEAD` apart from `GET`. A key built from raw request
/// bytes may tell two spellings of one request apart (`/a%62` and `/ab`);
/// implement [`extract_with`](Self::extract_with) to build it from the
/// normalized [`RequestIdentity`] instead, as the built-in extractors do.
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key; two requests with equal keys are the same request.
    type Key: Hash + Eq + Clone + Send + Sync + 'static;

    /// The key of this request, or `None` to let it through uncoalesced.
    fn extract(&self, parts: &Parts) -> Option<Self::Key>;

    /// The key of this request, given its identity as the layer read it
    /// (normalized host, path and query). The layer calls this one; by
    /// default it calls [`extract`](Self::extract).
    fn extract_with(&self, parts: &Parts, identity: &RequestIdentity<'_>) -> Option<Self::Key> {
        let _ = identity;
        self.extract(parts)
    }

    /// The bytes `key` keeps besides the request's host, path and query
    /// (which the layer counts already): for a key made of other parts of
    /// the request, such as a header's value. They count towards
    /// [`max_key_bytes`](crate::SingleFlightLayer::max_key_bytes) and towards
    /// the weight of a cached answer. Default: none.
    fn key_bytes(&self, key: &Self::Key) -> usize {
        let _ = key;
        0
    }
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
/// The host is part of the key so that virtual hosts never answer for each
/// other; host, path and query are normalized (see
/// [`RequestIdentity`]), so that `SVC.example:80/%61` and `svc.example/a`
/// are one key.
pub fn method_path_query() -> MethodPathQuery {
    MethodPathQuery
}

/// The path alone, percent-normalized: `POST /a?x=1` and `PUT /%61?x=2` are
/// the same request.
pub fn path() -> PathOnly {
    PathOnly
}

/// The value of one header; requests without it pass through uncoalesced.
pub fn header(name: HeaderName) -> HeaderKey {
    HeaderKey::new(name)
}

/// A value of type `T` from the request's extensions (put there by a
/// middleware before this layer: a tenant, a user, a job id); requests
/// without one pass through uncoalesced.
pub fn extension<T>() -> ExtensionKey<T>
where
    T: Hash + Eq + Clone + Send + Sync + 'static,
{
    ExtensionKey::new()
}
