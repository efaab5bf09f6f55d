//! The role a request played, attached to its response.

use std::fmt;

use http::{HeaderName, HeaderValue};

use crate::metrics::Meter;

/// The header that carries the [`FlightRole`] when
/// [`expose_role`](crate::SingleFlightLayer::expose_role) is on.
pub const ROLE_HEADER: HeaderName = HeaderName::from_static("x-singleflight-role");

/// What a request did in the single-flight layer.
///
/// A response the layer answered otherwise than by running the request
/// itself (a follower's copy, a cache hit, a stale copy, a `409`/`503`/`504`,
/// a fallback) carries its role in its extensions. The inner service's own
/// answer to the request (`Leader`, `Bypass`) is left as it came, with no
/// allocation, unless [`expose_role`](crate::SingleFlightLayer::expose_role)
/// is on: then every response carries its role, in its extensions and in a
/// header.
///
/// ```
/// use tower_singleflight::FlightRole;
/// # let response = http::Response::new(());
/// match response.extensions().get::<FlightRole>() {
///     Some(FlightRole::Follower) => { /* served a copy of another request's response */ }
///     _ => {}
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlightRole {
    /// Ran the inner service; in share mode its response was shared. On the
    /// inner service's own answer, only with `expose_role`; always on an
    /// answer the layer made for the leader (a `504`, a `500`).
    Leader,
    /// Waited and received a copy of the leader's response.
    Follower,
    /// Turned away: the key was held (`409`) or a bound was reached (`503`).
    Rejected,
    /// Not coalesced: no key, or a method the layer does not coalesce. Only
    /// with `expose_role`.
    Bypass,
    /// Waited, but the leader's response could not be shared with it, so it
    /// ran its own request.
    Fallback,
    /// Answered fresh from the response cache.
    CacheHit,
    /// Answered with a stale cached copy: while one refresh runs, or because
    /// the refresh failed.
    Stale,
}

impl FlightRole {
    /// The role as it appears in the role header: `leader`, `follower`, ...
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Leader => "leader",
            Self::Follower => "follower",
            Self::Rejected => "rejected",
            Self::Bypass => "bypass",
            Self::Fallback => "fallback",
            Self::CacheHit => "cache-hit",
            Self::Stale => "stale",
        }
    }

    pub(crate) fn header_value(&self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

impl fmt::Display for FlightRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a response came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The inner service's own answer to this request.
    Inner,
    /// The layer: a copy of another request's answer, or a cached one.
    Layer,
    /// The layer's own answer: a `409`, `503`, `504`, `500`...
    Generated,
}

/// How a layer's futures mark their responses, and count them.
#[derive(Debug, Clone)]
pub(crate) struct Marks {
    expose: bool,
    /// Traces show what keys are made of, not only their digest.
    pub(crate) trace_keys: bool,
    meter: Meter,
}

impl Marks {
    pub(crate) fn new(expose: bool, trace_keys: bool, meter: Meter) -> Self {
        Self {
            expose,
            trace_keys,
            meter,
        }
    }

    /// The layer's instruments.
    pub(crate) fn meter(&self) -> &Meter {
        &self.meter
    }

    /// Counts a response in its role, and marks it (see [`mark`]).
    #[inline]
    pub(crate) fn mark<B>(
        &self,
        response: &mut http::Response<B>,
        role: FlightRole,
        source: Source,
    ) {
        self.meter.responded(role, source, response.status());
        mark(response, role, source, self.expose);
    }
}

/// Marks a response with its role: every response if asked (extensions and
/// header); else every one but the inner service's own answer to a leader or
/// a bypass. (The first extension of a response costs allocations: an
/// ordinary answer does not pay them.)
fn mark<B>(response: &mut http::Response<B>, role: FlightRole, source: Source, expose: bool) {
    if expose {
        response
            .headers_mut()
            .insert(ROLE_HEADER, role.header_value());
    } else if source == Source::Inner && matches!(role, FlightRole::Leader | FlightRole::Bypass) {
        return;
    }
    response.extensions_mut().insert(role);
}
