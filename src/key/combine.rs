//! Extractors made of others: [`And`] keys by two at once, [`OrReject`]
//! answers what its extractor cannot key.

use std::fmt;

use bytes::Bytes;
use http::{request::Parts, Response};

use super::{Extracted, KeyExtractor};
use crate::identity::RequestIdentity;

/// The key extractor of [`KeyExtractor::and`]: the pair of two keys.
#[derive(Debug, Clone, Copy, Default)]
pub struct And<A, B> {
    first: A,
    second: B,
}

impl<A, B> And<A, B> {
    pub(super) fn new(first: A, second: B) -> Self {
        Self { first, second }
    }
}

impl<A: KeyExtractor, B: KeyExtractor> KeyExtractor for And<A, B> {
    type Key = (A::Key, B::Key);

    fn extract(&self, parts: &Parts) -> Option<Self::Key> {
        Some((self.first.extract(parts)?, self.second.extract(parts)?))
    }

    fn extract_with(&self, parts: &Parts, identity: &RequestIdentity<'_>) -> Option<Self::Key> {
        let first = self.first.extract_with(parts, identity)?;
        Some((first, self.second.extract_with(parts, identity)?))
    }

    /// Either one's rejection wins over a pass: a request that must be
    /// answered is answered, whatever the other key.
    fn extract_or_reject(
        &self,
        parts: &Parts,
        identity: &RequestIdentity<'_>,
    ) -> Extracted<Self::Key> {
        let first = match self.first.extract_or_reject(parts, identity) {
            Extracted::Reject(response) => return Extracted::Reject(response),
            first => first,
        };
        match (first, self.second.extract_or_reject(parts, identity)) {
            (_, Extracted::Reject(response)) => Extracted::Reject(response),
            (Extracted::Key(first), Extracted::Key(second)) => Extracted::Key((first, second)),
            _ => Extracted::Pass,
        }
    }

    fn key_bytes(&self, (first, second): &Self::Key) -> usize {
        self.first
            .key_bytes(first)
            .saturating_add(self.second.key_bytes(second))
    }
}

/// The key extractor of [`KeyExtractor::or_reject`]: its extractor's key,
/// or your response when it has none.
#[derive(Clone, Copy)]
pub struct OrReject<X, F> {
    inner: X,
    respond: F,
}

impl<X, F> OrReject<X, F> {
    pub(super) fn new(inner: X, respond: F) -> Self {
        Self { inner, respond }
    }
}

impl<X: fmt::Debug, F> fmt::Debug for OrReject<X, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrReject")
            .field("inner", &self.inner)
            .field("respond", &std::any::type_name::<F>())
            .finish()
    }
}

impl<X, F, B> KeyExtractor for OrReject<X, F>
where
    X: KeyExtractor,
    F: Fn(&Parts) -> Response<B> + Send + Sync + 'static,
    B: Into<Bytes>,
{
    type Key = X::Key;

    fn extract(&self, parts: &Parts) -> Option<Self::Key> {
        self.inner.extract(parts)
    }

    fn extract_with(&self, parts: &Parts, identity: &RequestIdentity<'_>) -> Option<Self::Key> {
        self.inner.extract_with(parts, identity)
    }

    fn extract_or_reject(
        &self,
        parts: &Parts,
        identity: &RequestIdentity<'_>,
    ) -> Extracted<Self::Key> {
        match self.inner.extract_or_reject(parts, identity) {
            Extracted::Pass => Extracted::Reject((self.respond)(parts).map(Into::into)),
            decided => decided,
        }
    }

    fn key_bytes(&self, key: &Self::Key) -> usize {
        self.inner.key_bytes(key)
    }
}
