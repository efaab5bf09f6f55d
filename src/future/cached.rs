//! What share mode asks of its cache before a request joins a flight, and
//! what the cache adds to the answer after: `Cache-Status`, and a `304`
//! for a client that has the answer already.

#[cfg(feature = "cache")]
use std::sync::Arc;

use http::{Request, Response};
use http_body::Body;

use super::lead::Store;
#[cfg(feature = "cache")]
use crate::rejection;
use crate::{body::ResponseBody, identity::Asks, key::ShareKey, mode::Share, role::FlightRole};

/// What a request learnt from the cache before joining the flight.
pub(super) struct AskOrigin<K> {
    /// A stale copy to serve if the origin fails.
    pub(super) stale: Option<StaleCopy>,
    /// Where the leader stores the origin's answer.
    pub(super) store: Option<Box<Store<K>>>,
    /// What the answer tells the client of the cache.
    pub(super) note: Option<Box<CacheNote>>,
}

impl<K> AskOrigin<K> {
    pub(super) fn nothing() -> Self {
        Self {
            stale: None,
            store: None,
            note: None,
        }
    }
}

// Without the cache, every request asks the origin.
#[cfg_attr(not(feature = "cache"), allow(dead_code))]
pub(super) enum Consulted<B: Body, K> {
    Answer(Response<ResponseBody<B>>, FlightRole),
    Revalidate(Response<ResponseBody<B>>, Option<Box<Store<K>>>),
    Ask(AskOrigin<K>),
}

/// For a request the cache sent on: the `Cache-Status` its answer gets, and
/// the client's conditional headers, answered from that answer.
#[cfg(feature = "cache")]
pub(super) struct CacheNote {
    status: Option<crate::cache::StatusName>,
    why: crate::cache::Forward,
    conditions: Option<crate::cache::Conditions>,
}

#[cfg(not(feature = "cache"))]
pub(super) struct CacheNote(std::convert::Infallible);

/// Gives an answer to a request the cache sent on its `Cache-Status`, and a
/// `304` if the client's conditions say it has it already.
#[cfg(feature = "cache")]
#[inline]
pub(super) fn finish<B: Body>(
    note: &mut Option<Box<CacheNote>>,
    response: &mut Response<ResponseBody<B>>,
    role: FlightRole,
) {
    // Most answers have no note: one check, inlined, before the work.
    if let Some(note) = note.take() {
        finish_noted(&note, response, role);
    }
}

#[cfg(feature = "cache")]
fn finish_noted<B: Body>(
    note: &CacheNote,
    response: &mut Response<ResponseBody<B>>,
    role: FlightRole,
) {
    use crate::cache::{Status, StoreReport};

    let report = response.extensions_mut().remove::<StoreReport>();
    // A stale copy standing in for a failure has its own (a hit); an answer
    // the layer made itself gets none (RFC 9211 §2).
    let generated = response
        .extensions()
        .get::<rejection::Generated>()
        .is_some();
    let status = note
        .status
        .as_ref()
        .filter(|_| role != FlightRole::Stale && !generated);
    if let Some(status) = status {
        let name = &status.name;
        let status = Status::Forwarded {
            why: note.why,
            origin_status: report.and_then(|report| report.origin_status),
            stored: report.and_then(|report| report.ttl),
            collapsed: role == FlightRole::Follower,
        };
        crate::cache::append_status(response.headers_mut(), name, status);
    }
    if let Some(conditions) = &note.conditions {
        if response.status() == http::StatusCode::OK && conditions.not_modified(response.headers())
        {
            *response = not_modified(response);
        }
    }
}

#[cfg(not(feature = "cache"))]
pub(super) fn finish<B: Body>(
    _: &mut Option<Box<CacheNote>>,
    _: &mut Response<ResponseBody<B>>,
    _: FlightRole,
) {
}

/// A `304` for a client that has `answer` already.
#[cfg(feature = "cache")]
fn not_modified<B: Body>(answer: &Response<ResponseBody<B>>) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::owned(bytes::Bytes::new(), None));
    *response.status_mut() = http::StatusCode::NOT_MODIFIED;
    *response.headers_mut() = crate::cache::not_modified_headers(answer.headers());
    *response.extensions_mut() = answer.extensions().clone();
    response
}

#[cfg(feature = "cache")]
#[inline]
pub(super) fn consult_cache<B, K, ReqB>(
    mode: &Share<K>,
    key: &ShareKey<K>,
    request: &mut Request<ReqB>,
    asks: Asks,
    counted: bool,
) -> Consulted<B, K>
where
    B: Body,
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    match &mode.cache {
        // No cache: one check, inlined.
        None => Consulted::Ask(AskOrigin::nothing()),
        Some(cache) => consult(cache, key, request, asks, counted),
    }
}

#[cfg(feature = "cache")]
fn consult<B, K, ReqB>(
    cache: &crate::cache::ResponseCache<K>,
    key: &ShareKey<K>,
    request: &mut Request<ReqB>,
    asks: Asks,
    counted: bool,
) -> Consulted<B, K>
where
    B: Body,
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    use crate::cache::{Conditions, Decision, Forward, Target};

    let now = tokio::time::Instant::now();
    // The client's validators are the cache's to answer: the origin sees
    // only the cache's own.
    let conditions = if asks.conditional {
        let method = request.method().clone();
        Conditions::take(&method, request.headers_mut())
    } else {
        None
    };
    let status = cache.config().cache_status.as_ref();
    // A stored answer for the client: a `304` if it has it already.
    let serve = |answer: &crate::cache::CachedResponse| {
        let response = answer.to_response(now, status);
        match &conditions {
            Some(conditions) if conditions.apply_to(&response) => not_modified(&response),
            _ => response,
        }
    };
    // Where the leader stores the origin's answer, and which invalidations
    // of it it must not cross: made on a miss only, at lookup.
    let store = |stale, why| {
        let target = Target::stored(key.host.as_ref(), request.uri());
        // Boxed: the leader's work moves it around, and most requests have
        // none.
        Some(Box::new(Store {
            cache: cache.clone(),
            key: key.clone(),
            epoch: cache.epoch(&target),
            target,
            requested: now,
            authorized: asks.authorized,
            stale,
            forced: why == Forward::Request,
        }))
    };
    let note = |why| {
        Some(Box::new(CacheNote {
            status: status.cloned(),
            why,
            conditions: conditions.clone(),
        }))
    };
    match cache.consult(key, request.headers(), asks.directives, now, counted) {
        Decision::Serve { answer, stale } => {
            let role = if stale {
                FlightRole::Stale
            } else {
                FlightRole::CacheHit
            };
            Consulted::Answer(serve(&answer), role)
        }
        Decision::Refresh(answer) => {
            Consulted::Revalidate(serve(&answer), store(Some(answer), Forward::Stale))
        }
        Decision::Forward {
            why,
            stale,
            if_error,
        } => Consulted::Ask(AskOrigin {
            stale: stale.as_ref().filter(|_| if_error).map(|answer| StaleCopy {
                answer: Arc::clone(answer),
                status: status.cloned(),
            }),
            store: store(stale, why),
            note: note(why),
        }),
        // Coalesced all the same (a header any client may send must not
        // turn coalescing off), but nothing is stored.
        Decision::Pass => Consulted::Ask(AskOrigin {
            stale: None,
            store: None,
            note: note(Forward::Request),
        }),
        // Made here, from nothing stored: no `Cache-Status` (RFC 9211 §2).
        Decision::NotCached => {
            Consulted::Answer(owned(rejection::not_cached()), FlightRole::CacheHit)
        }
    }
}

#[cfg(not(feature = "cache"))]
pub(super) fn consult_cache<B: Body, K, ReqB>(
    _: &Share<K>,
    _: &ShareKey<K>,
    _: &mut Request<ReqB>,
    _: Asks,
    _: bool,
) -> Consulted<B, K> {
    Consulted::Ask(AskOrigin::nothing())
}

/// A stale cached answer, to serve if the origin fails.
#[cfg(feature = "cache")]
pub(super) struct StaleCopy {
    answer: Arc<crate::cache::CachedResponse>,
    status: Option<crate::cache::StatusName>,
}

#[cfg(not(feature = "cache"))]
pub(super) struct StaleCopy(std::convert::Infallible);

impl StaleCopy {
    /// The stale copy, to serve now.
    pub(super) fn response<B: Body>(self) -> Response<ResponseBody<B>> {
        #[cfg(feature = "cache")]
        {
            let now = tokio::time::Instant::now();
            self.answer.to_response(now, self.status.as_ref())
        }
        #[cfg(not(feature = "cache"))]
        match self.0 {}
    }
}

pub(super) fn owned<B: Body>(response: Response<bytes::Bytes>) -> Response<ResponseBody<B>> {
    response.map(|body| ResponseBody::owned(body, None))
}
