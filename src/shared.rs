//! The one response a share-mode flight hands to all of its waiters.

use std::sync::Arc;

use bytes::Bytes;
#[cfg(feature = "cache")]
use bytes::BytesMut;
use http::{response, HeaderMap, Response};
#[cfg(feature = "cache")]
use http::{HeaderName, HeaderValue};
use http_body::Body;

use crate::{
    body::ResponseBody,
    policy::{LeaderHeaders, Unshareable, Vary},
};

/// What a leader's work publishes to every waiter.
#[derive(Debug)]
pub(crate) enum SharedOutcome {
    /// In an `Arc` so that the cache can keep it too.
    Response(Arc<BufferedResponse>),
    /// The leader got its own response; each follower must run its own.
    Unshareable(Unshareable),
}

/// A response read whole, that any number of copies can be made of.
#[derive(Debug)]
pub(crate) struct BufferedResponse {
    parts: response::Parts,
    data: Bytes,
    trailers: Option<HeaderMap>,
    vary: Vary,
}

impl BufferedResponse {
    pub(crate) fn new(
        parts: response::Parts,
        data: Bytes,
        trailers: Option<HeaderMap>,
        leader_request: &LeaderHeaders,
    ) -> Self {
        let vary = Vary::new(&parts.headers, leader_request);
        Self {
            parts,
            data,
            trailers,
            vary,
        }
    }

    pub(crate) fn parts(&self) -> &response::Parts {
        &self.parts
    }

    /// The body, whole.
    #[cfg(feature = "redis")]
    pub(crate) fn data(&self) -> &Bytes {
        &self.data
    }

    /// Whether trailers came after the body.
    #[cfg(feature = "redis")]
    pub(crate) fn has_trailers(&self) -> bool {
        self.trailers.is_some()
    }

    /// Its extensions, to tell every waiter what the cache did with it.
    #[cfg(feature = "cache")]
    pub(crate) fn extensions_mut(&mut self) -> &mut http::Extensions {
        &mut self.parts.extensions
    }

    /// What it keeps on the heap, or a little more: body, headers,
    /// trailers, and the request header values its `Vary` names.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.data.len()
            + header_bytes(&self.parts.headers)
            + self.trailers.as_ref().map_or(0, header_bytes)
            + self.vary.heap_bytes()
    }

    /// A copy that shares no buffer with anything else: a cached answer must
    /// not keep alive the (larger) buffers its body and headers were read
    /// from, which its weight does not count. `amend` sets the headers the
    /// stored copy adds to the answer's. Body and header values are copied
    /// into one buffer: one allocation, and copies served later share it by
    /// reference count (a value of its own would be promoted to shared, an
    /// allocation, every time a copy is made).
    #[cfg(feature = "cache")]
    pub(crate) fn detached(&self, amend: impl FnOnce(&mut HeaderMap, usize)) -> Self {
        let mut amended = self.parts.headers.clone();
        amend(&mut amended, self.data.len());
        let values = |map: &HeaderMap| map.values().map(HeaderValue::len).sum::<usize>();
        let trailers = self.trailers.as_ref().map_or(0, values);
        let mut buffer = BytesMut::with_capacity(self.data.len() + values(&amended) + trailers);
        buffer.extend_from_slice(&self.data);
        let mut parts = Response::new(()).into_parts().0;
        parts.status = self.parts.status;
        parts.version = self.parts.version;
        parts.extensions = self.parts.extensions.clone();
        // No room beyond what it holds: every header a served copy changes
        // (`Age`, the `Cache-Status` member) has its place already, and a
        // copy's entries are cloned at their length anyway. Each spare slot
        // of a header map costs about 100 bytes per stored answer.
        let room = amended.len();
        let headers = copy_values(&amended, &mut buffer);
        let trailers = self
            .trailers
            .as_ref()
            .map(|map| copy_values(map, &mut buffer));
        let buffer = buffer.freeze();
        let data = buffer.slice(..self.data.len());
        parts.headers = rebuild(headers, &buffer, room);
        Self {
            parts,
            data,
            trailers: trailers.map(|trailers| rebuild(trailers, &buffer, 0)),
            vary: self.vary.clone(),
        }
    }

    /// Whether a follower that sent these request headers may have a copy.
    pub(crate) fn fits(&self, request: &HeaderMap) -> bool {
        self.vary.matches(request)
    }

    /// Whether it is the same variant as `other`: it varies on the same
    /// headers, with the same values.
    #[cfg(feature = "cache")]
    pub(crate) fn same_variant(&self, other: &Self) -> bool {
        self.vary.same_as(&other.vary)
    }

    /// A copy with other headers, its body and trailers shared with it.
    /// With `leader` (a `304`'s update), its `Vary` is read again from them,
    /// with the values of the request that validated it.
    #[cfg(feature = "cache")]
    pub(crate) fn with_headers(&self, headers: HeaderMap, leader: Option<&LeaderHeaders>) -> Self {
        let mut parts = Response::new(()).into_parts().0;
        parts.status = self.parts.status;
        parts.version = self.parts.version;
        parts.headers = headers;
        Self {
            vary: leader.map_or_else(
                || self.vary.clone(),
                |leader| Vary::new(&parts.headers, leader),
            ),
            parts,
            data: self.data.clone(),
            trailers: self.trailers.clone(),
        }
    }

    /// A fresh copy: same status, headers, extensions, body and trailers.
    /// The body is reference-counted, never copied.
    pub(crate) fn to_response<B: Body>(&self) -> Response<ResponseBody<B>> {
        let body = ResponseBody::owned(self.data.clone(), self.trailers.clone());
        Response::from_parts(self.parts.clone(), body)
    }
}

/// The bytes a header map keeps: names, values, and its index per entry.
fn header_bytes(map: &HeaderMap) -> usize {
    // A slot of a header map (entry, index, links) takes a little over a
    // hundred bytes, used or not.
    const SLOT: usize = 128;
    let named: usize = map
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    named + map.capacity().max(map.len()) * SLOT
}

/// The names of `map`, with where each value went in `buffer`.
#[cfg(feature = "cache")]
type Copied = Vec<(HeaderName, std::ops::Range<usize>, HeaderValue)>;

/// Appends the values of `map` to `buffer`; where each went, to
/// [`rebuild`] the map once the buffer is frozen.
#[cfg(feature = "cache")]
fn copy_values(map: &HeaderMap, buffer: &mut BytesMut) -> Copied {
    map.iter()
        .map(|(name, value)| {
            let start = buffer.len();
            buffer.extend_from_slice(value.as_bytes());
            (name.clone(), start..buffer.len(), value.clone())
        })
        .collect()
}

/// The map of `copied`, its values slices of `buffer`.
#[cfg(feature = "cache")]
fn rebuild(copied: Copied, buffer: &Bytes, room: usize) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(room.max(copied.len()));
    for (name, range, original) in copied {
        let value = HeaderValue::from_maybe_shared(buffer.slice(range)).unwrap_or(original);
        map.append(name, value);
    }
    map
}

#[cfg(all(test, feature = "cache"))]
mod tests {
    use http::header;

    use super::*;

    /// A stored copy keeps the slots its headers need, however many its
    /// origin's map had: each spare slot is about 100 bytes per cache entry.
    #[test]
    fn a_detached_copy_keeps_no_spare_header_slots() {
        let mut headers = HeaderMap::with_capacity(64);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let mut response = Response::new(());
        *response.headers_mut() = headers;
        let (parts, ()) = response.into_parts();
        let answer = BufferedResponse::new(
            parts,
            Bytes::from_static(b"hello"),
            None,
            &LeaderHeaders::default(),
        );
        let stored = answer.detached(|headers, _| {
            headers.insert(header::AGE, HeaderValue::from_static("0"));
        });
        let kept = &stored.parts().headers;
        assert_eq!(kept.len(), 2);
        // What a map made for exactly two holds: far from the origin's 64.
        assert_eq!(
            kept.capacity(),
            HeaderMap::<HeaderValue>::with_capacity(2).capacity()
        );
    }
}
