//! The key share mode coalesces on: the user's key, kept apart by method,
//! scheme, host and caller.

#[cfg(feature = "cache")]
use std::hash::BuildHasher;
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
    /// The fields below hashed once, with the process's keyed hasher (keys
    /// come from clients: they must not be able to aim collisions). The
    /// flight table, the cache and its front each hash these eight bytes,
    /// not the fields again. First, so that unequal keys mostly differ at
    /// the first comparison.
    digest: u64,
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

impl<K: Hash> ShareKey<K> {
    pub(crate) fn new(
        key: K,
        method: Method,
        scheme: Scheme,
        host: Option<HeaderValue>,
        caller: Option<Caller>,
        key_bytes: usize,
    ) -> Self {
        let mut key = Self {
            digest: 0,
            key,
            method,
            scheme,
            host,
            caller,
            key_bytes,
        };
        key.digest = crate::flight::digest(&Fields(&key));
        key
    }
}

impl<K> ShareKey<K> {
    /// Its fields' keyed hash: what every table hashes it by.
    #[inline]
    pub(crate) fn digest(&self) -> u64 {
        self.digest
    }
}

impl<K: Clone> ShareKey<K> {
    /// A copy that shares no buffer with the request, to keep in the cache.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    pub(crate) fn detached(&self) -> Self {
        let copy = |host: &HeaderValue| {
            HeaderValue::from_bytes(host.as_bytes()).unwrap_or_else(|_| host.clone())
        };
        Self {
            digest: self.digest,
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

impl<K> Hash for ShareKey<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest);
    }
}

/// What a share key's digest is made of.
struct Fields<'a, K>(&'a ShareKey<K>);

impl<K: Hash> Hash for Fields<'_, K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let Fields(this) = self;
        this.key.hash(state);
        state.write(this.method.as_str().as_bytes());
        // Most requests name no scheme: nothing more to hash for them (keys
        // equal by `Eq` still hash alike).
        if this.scheme != Scheme::Unnamed {
            state.write_u8(this.scheme as u8);
        }
        state.write(this.host.as_ref().map_or(&[][..], HeaderValue::as_bytes));
        if let Some(caller) = &this.caller {
            caller.hash(state);
        }
    }
}

/// Hashes share keys by their digest as it is: keyed already, it needs no
/// second keyed hash (which a map's default hasher, SipHash, would spend
/// about seventy instructions on). For maps of share keys only.
///
/// Hand-written: `nohash-hasher` does the same for integer keys, but a
/// share key is not one, and the crate asks its keys to opt in.
#[cfg(feature = "cache")]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ByDigest;

#[cfg(feature = "cache")]
impl BuildHasher for ByDigest {
    type Hasher = DigestHasher;

    fn build_hasher(&self) -> DigestHasher {
        DigestHasher(0)
    }
}

/// See [`ByDigest`].
#[cfg(feature = "cache")]
#[derive(Debug)]
pub(crate) struct DigestHasher(u64);

#[cfg(feature = "cache")]
impl Hasher for DigestHasher {
    fn write_u64(&mut self, digest: u64) {
        self.0 = self.0.rotate_left(5) ^ digest;
    }

    // Not reached by a share key, whose hash is its digest alone; anything
    // else is still hashed, poorly.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
