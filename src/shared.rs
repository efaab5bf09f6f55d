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

    /// Roughly what it keeps on the heap: body, headers, trailers.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    pub(crate) fn heap_bytes(&self) -> usize {
        let headers = |map: &HeaderMap| -> usize {
            map.iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 32)
                .sum()
        };
        self.data.len() + headers(&self.parts.headers) + self.trailers.as_ref().map_or(0, headers)
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
