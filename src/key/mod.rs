//! Which requests are "the same": keys taken from the request head.
//!
//! A [`KeyExtractor`] turns a request into its key, lets it through
//! uncoalesced, or answers it itself ([`Extracted`]). The built-ins:
//!
//! | extractor | key | `None` (passes through) when |
//! |---|---|---|
//! | [`method_path_query()`] (the default) | method, host, path and query, normalized | never |
//! | [`path()`] | the path, normalized | never |
//! | [`header(name)`](header()) | the header's value | the header is missing |
//! | [`extension::<T>()`](extension()) | a `T` an earlier middleware put in the extensions | there is none |
//! | [`peer_ip()`] | the address of whoever connected | the server recorded none |
//! | [`forwarded_ip(n)`](forwarded_ip()) | the client's address, as the `n` proxies in front recorded it | the header has no address at that place |
//!
//! An address alone makes every request of one client the same request:
//! combine it with what the request asks for, as in
//! `key::method_path_query().and(key::peer_ip())`.
//!
//! Combinators, on every extractor: [`and`](KeyExtractor::and) keys by two
//! at once, [`or_reject`](KeyExtractor::or_reject) answers the requests it
//! cannot key with your response instead of letting them through.

mod combine;
mod forwarded;
mod ip;
mod request;
mod share;

use std::hash::Hash;

use bytes::Bytes;
use http::{request::Parts, HeaderName, Response};

use crate::identity::RequestIdentity;

pub use combine::{And, OrReject};
pub use forwarded::{ForwardedHeader, ForwardedIp};
pub use ip::PeerIp;
pub use request::{ExtensionKey, HeaderKey, MethodPathQuery, PathOnly, RequestKey};
#[cfg(feature = "cache")]
pub(crate) use share::ByDigest;
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
///
/// To answer a request instead of keying it (`401` for a missing API key,
/// `400` when a client address cannot be read), wrap the extractor in
/// [`or_reject`](Self::or_reject), or implement
/// [`extract_or_reject`](Self::extract_or_reject).
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key; two requests with equal keys are the same request.
    type Key: Hash + Eq + Clone + Send + Sync + 'static;

    /// The key of this request, or `None` to let it through uncoalesced.
    fn extract(&self, parts: &Parts) -> Option<Self::Key>;

    /// The key of this request, given its identity as the layer read it
    /// (normalized host, path and query). By default it calls
    /// [`extract`](Self::extract).
    fn extract_with(&self, parts: &Parts, identity: &RequestIdentity<'_>) -> Option<Self::Key> {
        let _ = identity;
        self.extract(parts)
    }

    /// What the layer does with this request: key it, let it through, or
    /// answer it with a response of yours. The layer calls this one; by
    /// default it calls [`extract_with`](Self::extract_with) and lets a
    /// request without a key through.
    ///
    /// The layer asks only about the requests it would key: those with a
    /// method it guards (reject mode) or coalesces (share mode), that it
    /// could read an identity for, and (share mode) that have no body and
    /// ask for no answer of their own. Others reach your service without
    /// this being called, so a rejecting extractor is no authentication
    /// layer.
    fn extract_or_reject(
        &self,
        parts: &Parts,
        identity: &RequestIdentity<'_>,
    ) -> Extracted<Self::Key> {
        match self.extract_with(parts, identity) {
            Some(key) => Extracted::Key(key),
            None => Extracted::Pass,
        }
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

    /// Keys by this extractor and `other` at once: the key is the pair of
    /// both keys, `None` when either is `None`; what both keep counts
    /// ([`key_bytes`](Self::key_bytes) is the sum). A request either one
    /// rejects is rejected (this one's response first).
    ///
    /// ```
    /// use http::HeaderName;
    /// use tower_singleflight::{key, key::KeyExtractor, SingleFlightLayer};
    ///
    /// // One running job per path and tenant.
    /// let layer = SingleFlightLayer::reject()
    ///     .key(key::path().and(key::header(HeaderName::from_static("x-tenant"))));
    /// # let _ = layer;
    /// ```
    fn and<Y>(self, other: Y) -> And<Self, Y>
    where
        Self: Sized,
        Y: KeyExtractor,
    {
        And::new(self, other)
    }

    /// Answers a request this extractor has no key for with `respond`'s
    /// response instead of letting it through: to fail closed. The inner
    /// service is not called for it; the response carries the role
    /// [`Rejected`](crate::FlightRole::Rejected).
    ///
    /// ```
    /// use http::{HeaderName, Response, StatusCode};
    /// use tower_singleflight::{key, key::KeyExtractor, SingleFlightLayer};
    ///
    /// let api_key = HeaderName::from_static("x-api-key");
    /// let layer = SingleFlightLayer::reject().key(key::header(api_key).or_reject(|_| {
    ///     let mut response = Response::new("missing API key");
    ///     *response.status_mut() = StatusCode::UNAUTHORIZED;
    ///     response
    /// }));
    /// # let _ = layer;
    /// ```
    ///
    /// Only the requests the layer asks about are answered so (see
    /// [`extract_or_reject`](Self::extract_or_reject)).
    fn or_reject<F, B>(self, respond: F) -> OrReject<Self, F>
    where
        Self: Sized,
        F: Fn(&Parts) -> Response<B> + Send + Sync + 'static,
        B: Into<Bytes>,
    {
        OrReject::new(self, respond)
    }
}

/// What a [`KeyExtractor`] makes of a request.
#[derive(Debug)]
#[non_exhaustive]
pub enum Extracted<K> {
    /// Its key: requests with equal keys are the same request.
    Key(K),
    /// No key: it passes through to the inner service, uncoalesced.
    Pass,
    /// Answered with this response; the inner service is not called.
    Reject(Response<Bytes>),
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

/// The address of whoever connected, IPv4 addresses mapped into IPv6
/// (`::ffff:192.0.2.7`) read as the IPv4 addresses they are, so that one
/// client is one key.
///
/// It reads the first of these request extensions: axum's
/// `ConnectInfo<SocketAddr>` (feature `axum`; serve the router with
/// `into_make_service_with_connect_info::<SocketAddr>()`), a
/// `std::net::SocketAddr`, a `std::net::IpAddr` (for servers of your own,
/// which insert the connection's address). A request with none passes
/// through uncoalesced, or is answered by [`or_reject`](KeyExtractor::or_reject).
///
/// Behind a reverse proxy every request comes from the proxy: use
/// [`forwarded_ip`] there.
///
/// ```
/// use tower_singleflight::{key, key::KeyExtractor, SingleFlightLayer};
///
/// // One running trigger per client and path.
/// let layer = SingleFlightLayer::reject().key(key::path().and(key::peer_ip()));
/// # let _ = layer;
/// ```
pub fn peer_ip() -> PeerIp {
    PeerIp
}

/// The client's address as the `trusted_proxies` reverse proxies in front of
/// the application recorded it, in `X-Forwarded-For` (or the header
/// [`source`](ForwardedIp::source) names: `Forwarded`, or one of your own).
///
/// Each proxy appends the address it was connected from, so the client is
/// the entry `trusted_proxies` places from the right, counting the peer (the
/// last proxy) as place 0:
///
/// 1. The header's field lines are taken in order, joined by commas (as
///    RFC 9110 §5.3 joins them), and split into entries; empty entries are
///    none. In `Forwarded`, a comma inside a quoted string separates
///    nothing.
/// 2. The client is the `trusted_proxies`-th non-empty entry from the right
///    end (the last one for one proxy). Nothing to the left of it is read:
///    that part came from the client, who can write anything there.
/// 3. That entry must be an address: `192.0.2.7`, `192.0.2.7:443`,
///    `[2001:db8::1]` or `[2001:db8::1]:443` (and a bare `2001:db8::1` in
///    `X-Forwarded-For`); in `Forwarded`, the value of the element's one
///    `for=` parameter, quoted or not. `unknown`, an obfuscated `_name`, a
///    hostname, garbage, or fewer entries than `trusted_proxies` give no
///    address: the request passes through uncoalesced, or is answered by
///    [`or_reject`](KeyExtractor::or_reject) (to fail closed).
/// 4. An IPv4 address mapped into IPv6 is the IPv4 address.
///
/// With `trusted_proxies` 0 the header is not read at all: the key is the
/// peer's address, as with [`peer_ip`].
///
/// **Count the proxies exactly**, and let clients reach the application
/// only through them: one too many and the client chooses its key, one too
/// few and every client of a proxy is one key. It costs no allocation, and
/// reads the header from its end no further than the entry it needs,
/// however long the header. Every other forwarding header is ignored: no
/// silent mixing of `Forwarded` with `X-Forwarded-For`.
///
/// ```
/// use http::{Response, StatusCode};
/// use tower_singleflight::{key, key::{ForwardedHeader, KeyExtractor}, SingleFlightLayer};
///
/// // Behind one proxy that writes `Forwarded`: per client and request, and
/// // `400` for a request whose client cannot be told.
/// let client = key::forwarded_ip(1).source(ForwardedHeader::Forwarded);
/// let layer = SingleFlightLayer::share().key(
///     key::method_path_query().and(client).or_reject(|_| {
///         let mut response = Response::new("no client address");
///         *response.status_mut() = StatusCode::BAD_REQUEST;
///         response
///     }),
/// );
/// # let _ = layer;
/// ```
pub fn forwarded_ip(trusted_proxies: usize) -> ForwardedIp {
    ForwardedIp::new(trusted_proxies)
}
