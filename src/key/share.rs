//! The key share mode coalesces on: the user's key, kept apart by method,
//! scheme, host and caller.

use std::hash::{Hash, Hasher};

use http::{HeaderValue, Method};

use crate::identity::Caller;

/// The scheme a request names, as share keys keep it apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// Not in the request (origin form over HTTP/1): the connection's.
    Unnamed,
    Http,
    Https,
    Other,
}

impl Scheme {
    #[inline]
    pub(crate) fn of(uri: &http::Uri) -> Self {
        match uri.scheme_str() {
            None => Self::Unnamed,
            Some(scheme) if scheme.eq_ignore_ascii_case("http") => Self::Http,
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => Self::Https,
            Some(_) => Self::Other,
        }
    }
}

/// The key share mode coalesces on: the user's key, kept apart by method,
/// by scheme, by host and by caller, whatever the user's key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShareKey<K> {
    pub(crate) key: K,
    /// The method, whatever the user's key says: a `HEAD`, an `OPTIONS`
    /// and a `GET` never share an answer.
    pub(crate) method: Method,
    /// The scheme when the request names one (absolute form, HTTP/2): an
    /// `http` and an `https` URI are two origins (RFC 9110 §4.3.1).
    pub(crate) scheme: Scheme,
    pub(crate) host: Option<HeaderValue>,
    /// `None` when the layer shares across identities.
    pub(crate) caller: Option<Caller>,
    /// What the user's key keeps besides host, path and query
    /// ([`KeyExtractor::key_bytes`]): weighed, never hashed.
    pub(crate) key_bytes: usize,
}

impl<K: Clone> ShareKey<K> {
    /// A copy that shares no buffer with the request, to keep in the cache.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    pub(crate) fn detached(&self) -> Self {
        let copy = |host: &HeaderValue| {
            HeaderValue::from_bytes(host.as_bytes()).unwrap_or_else(|_| host.clone())
        };
        Self {
            key: self.key.clone(),
            method: self.method.clone(),
            scheme: self.scheme,
            host: self.host.as_ref().map(copy),
            caller: self.caller.clone(),
            key_bytes: self.key_bytes,
        }
    }
}

impl<K> ShareKey<K> {
    /// The bytes it keeps beyond the request's host, path and query: the
    /// caller's identity and what the user's key adds.
    pub(crate) fn extra_len(&self) -> usize {
        // `key_bytes` is the user's count: saturate rather than overflow.
        self.caller
            .as_ref()
            .map_or(0, Caller::len)
            .saturating_add(self.key_bytes)
    }

    /// The bytes it keeps besides the user's key.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.host
            .as_ref()
            .map_or(0, HeaderValue::len)
            .saturating_add(self.extra_len())
    }
}

impl<K: Hash> Hash for ShareKey<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
        state.write(self.method.as_str().as_bytes());
        // Most requests name no scheme: nothing more to hash for them (keys
        // equal by `Eq` still hash alike).
        if self.scheme != Scheme::Unnamed {
            state.write_u8(self.scheme as u8);
        }
        state.write(self.host.as_ref().map_or(&[][..], HeaderValue::as_bytes));
        if let Some(caller) = &self.caller {
            caller.hash(state);
        }
    }
}
