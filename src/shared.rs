//! The one response a share-mode flight hands to all of its waiters.

use std::sync::Arc;

use bytes::Bytes;
use http::{response, HeaderMap, Response};
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
    /// from, which its weight does not count.
    #[cfg(feature = "cache")]
    pub(crate) fn detached(&self) -> Self {
        let mut parts = Response::new(()).into_parts().0;
        parts.status = self.parts.status;
        parts.version = self.parts.version;
        parts.headers = detached(&self.parts.headers);
        parts.extensions = self.parts.extensions.clone();
        Self {
            parts,
            data: Bytes::copy_from_slice(&self.data),
            trailers: self.trailers.as_ref().map(detached),
            vary: self.vary.clone(),
        }
    }

    /// Whether a follower that sent these request headers may have a copy.
    pub(crate) fn fits(&self, request: &HeaderMap) -> bool {
        self.vary.matches(request)
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
    map.iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 64)
        .sum()
}

/// A copy of `map` whose values own their bytes.
#[cfg(feature = "cache")]
fn detached(map: &HeaderMap) -> HeaderMap {
    // Room for what a copy served later adds (`Age`, the role header), so
    // that serving one never grows it.
    let mut copy = HeaderMap::with_capacity(map.len() + 2);
    for (name, value) in map {
        let owned =
            http::HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.append(name.clone(), owned);
    }
    copy
}
