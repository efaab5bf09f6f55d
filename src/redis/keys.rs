//! The names of the keys this crate writes in Redis: one place for them.
//!
//! A flight key `K` is written as its JSON (`"reindex"`, `["flow",3]`), so
//! that `redis-cli` shows what is held and the admin list can read it back.

// The caches' tiers use some of these only with the `cache` feature.
#![cfg_attr(not(feature = "cache"), allow(dead_code))]

use std::fmt;

use serde::{de::DeserializeOwned, Serialize};

/// The prefix every key starts with, and the names built on it.
#[derive(Clone)]
pub(crate) struct Prefix {
    text: Box<str>,
}

impl Prefix {
    pub(crate) fn new(text: &str) -> Self {
        Self { text: text.into() }
    }

    /// `P:lease:K`: the lease itself, `SET NX PX`, holding the holder's
    /// random token.
    pub(crate) fn lease(&self, key: &[u8]) -> Vec<u8> {
        self.name("lease", key)
    }

    /// `P:holder:K`: who holds (or last held) the key, its progress and the
    /// key's generation count, kept a while after the lease ends.
    pub(crate) fn holder(&self, key: &[u8]) -> Vec<u8> {
        self.name("holder", key)
    }

    /// `P:fence`: the counter fencing tokens are drawn from.
    pub(crate) fn fence(&self) -> Vec<u8> {
        self.name("fence", b"")
    }

    /// `P:flight:DIGEST:what`: a cluster flight's lease and answers.
    pub(crate) fn flight(&self, digest: &str, what: &str) -> Vec<u8> {
        let mut name = self.name("flight", digest.as_bytes());
        name.push(b':');
        name.extend_from_slice(what.as_bytes());
        name
    }

    /// `P:flights`: the channel cluster leaders announce their answers on.
    pub(crate) fn flight_channel(&self) -> Vec<u8> {
        self.name("flights", b"")
    }

    /// `P:invalidations`: the channel caches announce dropped keys on.
    pub(crate) fn invalidation_channel(&self) -> Vec<u8> {
        self.name("invalidations", b"")
    }

    /// `P:value:NAME:K`: a `ValueCache` value, by the cache's name and the
    /// key's JSON.
    pub(crate) fn value(&self, cache: &str, key: &[u8]) -> Vec<u8> {
        let mut name = self.name("value", cache.as_bytes());
        name.push(b':');
        name.extend_from_slice(key);
        name
    }

    /// `P:response:WHAT[:PATH]`: the response tier's entries (by digest)
    /// and invalidation counts.
    pub(crate) fn response(&self, what: &str, path: &str) -> Vec<u8> {
        let mut name = self.name("response", what.as_bytes());
        if !path.is_empty() {
            name.push(b':');
            name.extend_from_slice(path.as_bytes());
        }
        name
    }

    /// `P:value-epoch:NAME:K`: how many times a `ValueCache` key was
    /// invalidated (lately).
    pub(crate) fn value_epoch(&self, cache: &str, key: &[u8]) -> Vec<u8> {
        let mut name = self.name("value-epoch", cache.as_bytes());
        name.push(b':');
        name.extend_from_slice(key);
        name
    }

    /// A `SCAN MATCH` pattern for every lease, the prefix's own glob
    /// characters escaped.
    pub(crate) fn lease_pattern(&self) -> Vec<u8> {
        let mut pattern = Vec::with_capacity(self.text.len() + 8);
        for byte in self.text.bytes() {
            if matches!(byte, b'*' | b'?' | b'[' | b']' | b'\\') {
                pattern.push(b'\\');
            }
            pattern.push(byte);
        }
        pattern.extend_from_slice(b":lease:*");
        pattern
    }

    /// The encoded flight key of a lease's name, if it is one of ours.
    pub(crate) fn key_of_lease<'a>(&self, name: &'a [u8]) -> Option<&'a [u8]> {
        name.strip_prefix(self.text.as_bytes())?
            .strip_prefix(b":lease:")
    }

    fn name(&self, kind: &str, key: &[u8]) -> Vec<u8> {
        let mut name = Vec::with_capacity(self.text.len() + kind.len() + key.len() + 2);
        name.extend_from_slice(self.text.as_bytes());
        name.push(b':');
        name.extend_from_slice(kind.as_bytes());
        if !key.is_empty() {
            name.push(b':');
            name.extend_from_slice(key);
        }
        name
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

/// A flight key as it is written in Redis.
pub(crate) fn encode<K: Serialize>(key: &K) -> Option<Vec<u8>> {
    serde_json::to_vec(key).ok()
}

/// A flight key read back from Redis.
pub(crate) fn decode<K: DeserializeOwned>(bytes: &[u8]) -> Option<K> {
    serde_json::from_slice(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_and_patterns_escape_the_prefix() {
        let prefix = Prefix::new("app*[1]");
        let key = encode(&("flow", 3)).unwrap();
        let lease = prefix.lease(&key);
        assert_eq!(lease, b"app*[1]:lease:[\"flow\",3]");
        assert_eq!(prefix.key_of_lease(&lease), Some(&key[..]));
        assert_eq!(prefix.key_of_lease(&prefix.holder(&key)), None);
        assert_eq!(prefix.lease_pattern(), b"app\\*\\[1\\]:lease:*");
        assert_eq!(prefix.fence(), b"app*[1]:fence");
        assert_eq!(decode::<(String, u32)>(&key), Some(("flow".to_owned(), 3)));
    }
}
