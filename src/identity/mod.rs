//! What makes two requests "the same": the one place that reads a request's
//! host, path, query and caller.
//!
//! Every key the crate builds (share keys, the default reject key, cache
//! keys, invalidation targets) and every byte a cached entry is weighed by
//! comes from [`RequestIdentity`], read once per request. Nothing else in
//! the crate compares raw request bytes to decide sharing.
//!
//! - **Host**: lower-cased, without a trailing dot or a default port. A
//!   request that names two hosts (URI authority and `Host`, or a forwarded
//!   host that disagrees) is never keyed. Where the host is read from is a
//!   [`HostSource`].
//! - **Path and query**: percent-escapes of unreserved characters decoded,
//!   hex digits of the others upper-cased (RFC 3986 §6.2.2), so that
//!   `/flows/%31` is `/flows/1`.
//! - **Caller** (share mode): the headers, cookies and extension a
//!   [`CallerIdentity`] names.

mod caller;
mod host;
mod path;

use std::borrow::Cow;

use http::{request::Parts, HeaderMap, HeaderValue, Method, Uri};

pub use caller::CallerIdentity;
pub use host::HostSource;

pub(crate) use caller::Caller;
use host::{Ambiguous, HostRead, HostScan};

/// A host as keys hold it (lower case, no trailing dot, no default port),
/// or `None` when `raw` is no host.
#[cfg(feature = "cache")]
pub(crate) use host::hosts_named;

#[cfg(feature = "cache")]
pub(crate) fn normal_host(raw: &str, scheme: Option<&str>) -> Option<HeaderValue> {
    host::normalize(raw.as_bytes(), scheme)
}

/// A request as the crate tells requests apart: its method, normalized host,
/// path and query. Built once per request by the layer and handed to the
/// [`KeyExtractor`](crate::key::KeyExtractor).
#[derive(Debug, Clone)]
pub struct RequestIdentity<'a> {
    method: &'a Method,
    host: Option<HeaderValue>,
    path: Cow<'a, str>,
    query: Option<Cow<'a, str>>,
    /// Whether the request spelled its host, path and query in normal form.
    canonical: bool,
}

impl<'a> RequestIdentity<'a> {
    /// Reads the request's identity with the default [`HostSource`]; `None`
    /// when the request names two hosts.
    pub fn of(parts: &'a Parts) -> Option<Self> {
        Self::read(parts, HostSource::default(), Reading::Sharing).ok()
    }

    pub(crate) fn read(
        parts: &'a Parts,
        source: HostSource,
        reading: Reading,
    ) -> Result<Self, Unkeyable> {
        Self::read_head(&parts.method, &parts.uri, &parts.headers, source, reading)
    }

    /// The identity of a request head, given by its pieces.
    pub(crate) fn read_head(
        method: &'a Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        source: HostSource,
        reading: Reading,
    ) -> Result<Self, Unkeyable> {
        let strict = reading == Reading::Sharing;
        let host = host::host_of(uri, headers, source, strict)
            .map_err(|Ambiguous| Unkeyable::AmbiguousHost)?;
        Ok(Self::with_host(method, uri, host))
    }

    /// The identity of a request whose host was read.
    fn with_host(method: &'a Method, uri: &'a Uri, host: HostRead) -> Self {
        let path = path::normalize(uri.path());
        let query = uri.query().map(path::normalize);
        let canonical = host.canonical
            && matches!(path, Cow::Borrowed(_))
            && !matches!(query, Some(Cow::Owned(_)));
        Self {
            method,
            host: host.host,
            path,
            query,
            canonical,
        }
    }

    /// Whether the request spelled its host, path and query in normal form.
    /// Share mode coalesces only such requests: an application (or its
    /// router) may answer `/h%6Fme` or `Host: A.example` otherwise than
    /// `/home` and `a.example`, say with a `404`, and that answer must not
    /// reach those who asked for the page.
    pub fn is_canonical(&self) -> bool {
        self.canonical
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        self.method
    }

    /// The host, normalized: lower case, no trailing dot, no default port.
    /// `None` when the request names none (an HTTP/1.0 request, say).
    pub fn host(&self) -> Option<&HeaderValue> {
        self.host.as_ref()
    }

    /// The path, percent-normalized.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query, percent-normalized, if the request has one.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The normalized path of `uri`.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    pub(crate) fn path_of(uri: &Uri) -> Cow<'_, str> {
        path::normalize(uri.path())
    }

    /// How many bytes of the request tell it apart: host, path and query.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.host.as_ref().map_or(0, HeaderValue::len)
            + self.path.len()
            + self.query.as_ref().map_or(0, |query| query.len())
    }
}

/// How strictly a request's host is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// For answers handed to others: every place that names a host must
    /// agree, forwarded hosts included.
    Sharing,
    /// For a lock: the source alone, so that a made-up forwarded host can
    /// neither change the key nor refuse the request.
    Locking,
}

/// Why a request gets no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unkeyable {
    /// It names two different hosts.
    AmbiguousHost,
    /// Its identity is longer than the layer keeps.
    TooLong,
    /// Share mode: it spells its host, path or query otherwise than in
    /// normal form.
    NotCanonical,
    /// Share mode: it asks for an answer of its own (conditional, range,
    /// upgrade requests).
    OwnAnswer,
}

/// What a request asks of a cache, noted while its headers are read for
/// its identity, so that a cache hit reads none of them again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Asks {
    /// `If-None-Match` or `If-Modified-Since`.
    pub(crate) conditional: bool,
    /// `Cache-Control` or `Pragma`.
    pub(crate) directives: bool,
    /// `Authorization` (RFC 9111 §3.5).
    pub(crate) authorized: bool,
}

/// The identity settings of one layer.
#[derive(Debug, Clone)]
pub(crate) struct Identify {
    pub(crate) host: HostSource,
    pub(crate) max_key_bytes: usize,
}

impl Default for Identify {
    fn default() -> Self {
        Self {
            host: HostSource::default(),
            max_key_bytes: 8 * 1024,
        }
    }
}

impl Identify {
    /// The identity of a request, if it may be keyed at all.
    pub(crate) fn read<'a>(
        &self,
        parts: &'a Parts,
        reading: Reading,
    ) -> Result<RequestIdentity<'a>, Unkeyable> {
        self.read_head(&parts.method, &parts.uri, &parts.headers, reading)
    }

    /// Reads a request for share mode: its identity (in one pass over its
    /// headers), with `caller` its caller, and what it asks of a cache; or
    /// why it is not keyed. `cached`: a cache answers conditional requests.
    pub(crate) fn read_shared<'a>(
        &self,
        parts: &'a Parts,
        caller: Option<&CallerIdentity>,
        cached: bool,
    ) -> Result<(RequestIdentity<'a>, Option<Caller>, Asks), Unkeyable> {
        let mut hosts = HostScan::new(self.host, true);
        let mut asks = Asks::default();
        for (name, value) in &parts.headers {
            if crate::policy::asks_own_answer(name) {
                return Err(Unkeyable::OwnAnswer);
            }
            if crate::policy::is_validation(name) {
                if !cached {
                    return Err(Unkeyable::OwnAnswer);
                }
                asks.conditional = true;
            } else if name == http::header::CACHE_CONTROL || name == http::header::PRAGMA {
                asks.directives = true;
            } else if name == http::header::AUTHORIZATION {
                asks.authorized = true;
            }
            hosts
                .header(name, value)
                .map_err(|Ambiguous| Unkeyable::AmbiguousHost)?;
        }
        let host = hosts
            .finish(&parts.uri)
            .map_err(|Ambiguous| Unkeyable::AmbiguousHost)?;
        let identity = RequestIdentity::with_host(&parts.method, &parts.uri, host);
        if !identity.is_canonical() {
            return Err(Unkeyable::NotCanonical);
        }
        Ok((identity, caller.map(|caller| caller.of(parts)), asks))
    }

    /// [`read`](Self::read), given the head by its pieces.
    pub(crate) fn read_head<'a>(
        &self,
        method: &'a Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        reading: Reading,
    ) -> Result<RequestIdentity<'a>, Unkeyable> {
        let identity = RequestIdentity::read_head(method, uri, headers, self.host, reading)?;
        if identity.len() > self.max_key_bytes {
            return Err(Unkeyable::TooLong);
        }
        Ok(identity)
    }
}

#[cfg(test)]
mod properties;
