//! The leader's work in share mode: its request, and what becomes of the
//! response.

use std::{
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Duration,
};

use http::{response::Parts, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use tokio::time::{sleep_until, Instant, Sleep};

use crate::{
    body::ResponseBody,
    buffer::{self, Collect, Collected},
    flight::Peers,
    pass::PassList,
    policy::{self, LeaderHeaders, Unshareable},
    shared::{BufferedResponse, SharedOutcome},
};

/// The leader's own response, when it could not be shared.
pub(crate) type Private<S, ReqB, ResB> =
    Result<Response<ResponseBody<ResB>>, <S as Service<Request<ReqB>>>::Error>;

/// What came of the leader's request: what the followers get, and the
/// leader's own response when it could not be shared.
pub(crate) struct Led<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
    pub(crate) outcome: SharedOutcome,
    pub(crate) private: Option<Private<S, ReqB, ResB>>,
}

impl<S, ReqB, ResB> Led<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
    pub(crate) fn shared(outcome: SharedOutcome) -> Self {
        Self {
            outcome,
            private: None,
        }
    }

    fn private(reason: Unshareable, private: Private<S, ReqB, ResB>) -> Self {
        Self {
            outcome: SharedOutcome::Unshareable(reason),
            private: Some(private),
        }
    }
}

/// What the leader needs besides the request.
pub(crate) struct Lead<K> {
    pub(crate) max_body: usize,
    pub(crate) private_ok: bool,
    pub(crate) store: Option<Box<Store<K>>>,
    /// Who else waits, and the flight's key.
    pub(crate) peers: Option<Peers<SharedOutcome>>,
    /// Where to remember that this key's answers cannot be shared.
    pub(crate) passes: Arc<PassList>,
    /// How long the body may take to arrive whole before it goes to the
    /// leader as it comes instead.
    pub(crate) budget: Duration,
    /// The targeted `Cache-Control` field (RFC 9213) the cache reads first.
    pub(crate) targeted: Option<http::HeaderName>,
    /// Other replicas wait for the answer: never "alone".
    pub(crate) for_cluster: bool,
}

impl<K> Lead<K> {
    /// The leader's settings from its layer's.
    #[inline]
    pub(crate) fn new(
        mode: &crate::mode::Share<K>,
        private_ok: bool,
        store: Option<Box<Store<K>>>,
        peers: Peers<SharedOutcome>,
    ) -> Self {
        Self {
            max_body: mode.max_body,
            private_ok,
            store,
            peers: Some(peers),
            passes: Arc::clone(&mode.passes),
            budget: mode.buffer_budget,
            targeted: mode.targeted(),
            for_cluster: false,
        }
    }

    /// Remembers the flight's key as unshareable, for a while.
    fn pass(&self) {
        if let Some(peers) = &self.peers {
            self.passes.mark(peers.key_hash());
        }
    }
}

/// Awaits the inner service's `answer`, and turns its response into
/// something every waiter can have a copy of. `leader_headers` are the
/// request's, for the followers a `Vary` may name.
///
/// When the response cannot be shared, the leader gets it whole as its
/// `private` response (streamed, with whatever was already read put back in
/// front), and the followers are told to run their own requests.
pub(crate) fn lead<S, ReqB, ResB, K, F>(
    answer: F,
    leader_headers: LeaderHeaders,
    lead: Lead<K>,
) -> LeadFuture<S, ReqB, ResB, K, F> {
    LeadFuture {
        step: Step::Answer { answer },
        leader_headers,
        lead,
        service: PhantomData,
    }
}

pin_project! {
    /// The future of [`lead`]. Written out rather than `async`: an `async`
    /// block would hold the answer twice, and the leader's work is moved into
    /// its box whole.
    pub(crate) struct LeadFuture<S, ReqB, ResB, K, F> {
        #[pin]
        step: Step<F, ResB>,
        leader_headers: LeaderHeaders,
        lead: Lead<K>,
        service: PhantomData<fn() -> (S, ReqB)>,
    }
}

pin_project! {
    #[project = StepProj]
    enum Step<F, B> {
        Answer {
            #[pin]
            answer: F,
        },
        // Reading the body, to share it, within the buffering budget: the
        // timer is armed only if the body is not complete at once.
        Read {
            parts: Option<Parts>,
            failed: bool,
            read: Collect<B>,
            budget: Option<Pin<Box<Sleep>>>,
        },
        Done,
    }
}

impl<S, ReqB, ResB, K, F> Future for LeadFuture<S, ReqB, ResB, K, F>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<ResB>, S::Error>>,
{
    type Output = Led<S, ReqB, ResB>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.step.as_mut().project() {
                StepProj::Answer { answer } => match this
                    .lead
                    .answered(ready!(answer.poll(cx)), this.leader_headers)
                {
                    Answered::Done(led) => {
                        this.step.set(Step::Done);
                        return Poll::Ready(led);
                    }
                    Answered::Read {
                        parts,
                        body,
                        failed,
                    } => {
                        let read = buffer::collect(body, this.lead.max_body);
                        this.step.set(Step::Read {
                            parts: Some(parts),
                            failed,
                            read,
                            budget: None,
                        });
                    }
                },
                StepProj::Read {
                    parts,
                    failed,
                    read,
                    budget,
                } => {
                    let collected = match Pin::new(&mut *read).poll(cx) {
                        Poll::Ready(collected) => Ok(collected),
                        Poll::Pending => {
                            let until = crate::time::after(Instant::now(), this.lead.budget);
                            let budget = budget.get_or_insert_with(|| Box::pin(sleep_until(until)));
                            ready!(budget.as_mut().poll(cx));
                            // Out of time: a stream, or a slow body. The
                            // leader gets it as it comes; nobody waits.
                            Err(read.give_back())
                        }
                    };
                    let Some(parts) = parts.take() else {
                        unreachable!("a body is read once");
                    };
                    let led = match collected {
                        Ok(collected) => {
                            this.lead
                                .read(parts, *failed, collected, this.leader_headers)
                        }
                        Err((prefix, rest)) => {
                            this.lead.pass();
                            let body = ResponseBody::resumed(prefix, rest);
                            Led::private(Unshareable::Slow, Ok(Response::from_parts(parts, body)))
                        }
                    };
                    this.step.set(Step::Done);
                    return Poll::Ready(led);
                }
                StepProj::Done => panic!("the leader's work polled after completion"),
            }
        }
    }
}

/// What the leader does once the inner service answered.
enum Answered<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
    Done(Led<S, ReqB, ResB>),
    /// The answer may be shared: its body is read first.
    Read {
        parts: Parts,
        body: ResB,
        failed: bool,
    },
}

impl<K> Lead<K>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    fn answered<S, ReqB, ResB>(
        &self,
        answered: Result<Response<ResB>, S::Error>,
        leader_headers: &LeaderHeaders,
    ) -> Answered<S, ReqB, ResB>
    where
        S: Service<Request<ReqB>>,
        ResB: Body,
    {
        let response = match answered {
            Ok(response) => response,
            Err(error) => {
                back_off(&self.store);
                return Answered::Done(Led::private(Unshareable::ServiceError, Err(error)));
            }
        };
        let (parts, body) = response.into_parts();
        if parts.status == http::StatusCode::NOT_MODIFIED {
            if let Some(revalidated) = revalidated(&self.store, &parts, leader_headers) {
                return Answered::Done(self.not_modified(revalidated));
            }
        }
        // A server error is never stored nor remembered as unshareable: a
        // stale copy, if any, stands in for it.
        let failed = parts.status.is_server_error();
        if failed {
            back_off(&self.store);
        }
        let targeted = self.targeted.as_ref();
        let unshared = match policy::check(parts.status, &parts.headers, self.private_ok, targeted)
        {
            Err(_) if failed => Some(Unshareable::ServerError),
            Err(reason) => {
                self.pass();
                Some(reason)
            }
            // Nobody to share with and nothing to store: the leader takes its
            // own response, streamed, instead of a buffered copy. (A follower
            // joining this very moment runs its own request, as for any
            // unshared answer.)
            Ok(()) if self.alone() => Some(Unshareable::Alone),
            Ok(()) => None,
        };
        match unshared {
            Some(reason) => {
                let response = Response::from_parts(parts, ResponseBody::inner(body));
                Answered::Done(Led::private(reason, Ok(response)))
            }
            None => Answered::Read {
                parts,
                body,
                failed,
            },
        }
    }

    /// The origin's `304` to the leader's conditional request: the stored
    /// answer it refreshed, for everyone; or, when it was about another
    /// representation, a failed call (the followers try again, without the
    /// dropped variant).
    fn not_modified<S, ReqB, ResB>(
        &self,
        revalidated: Result<BufferedResponse, ()>,
    ) -> Led<S, ReqB, ResB>
    where
        S: Service<Request<ReqB>>,
        ResB: Body,
    {
        match revalidated {
            Ok(mut response) => {
                // A `304` may say what a `200` could (`Set-Cookie`,
                // `private`, `no-store`, `Vary: *`): checked as one. The
                // leader alone gets such an answer, and it is not stored.
                let headers = &response.parts().headers;
                let checked = policy::check(
                    http::StatusCode::OK,
                    headers,
                    self.private_ok,
                    self.targeted.as_ref(),
                );
                if let Err(reason) = checked {
                    drop_stale(&self.store);
                    return Led::private(reason, Ok(response.to_response()));
                }
                keep(&self.store, &mut response, Some(304));
                Led::shared(SharedOutcome::Response(Arc::new(response)))
            }
            Err(()) => {
                let failed =
                    crate::rejection::bad_gateway().map(|body| ResponseBody::owned(body, None));
                Led::private(Unshareable::OtherRepresentation, Ok(failed))
            }
        }
    }

    /// Whether nobody waits for the answer and nothing is to store it.
    fn alone(&self) -> bool {
        !self.for_cluster
            && self.store.is_none()
            && self
                .peers
                .as_ref()
                .is_some_and(|peers| peers.followers() == 0)
    }

    /// The body of a shareable answer, read as far as it could be.
    fn read<S, ReqB, ResB>(
        &self,
        parts: Parts,
        failed: bool,
        collected: Collected<ResB>,
        leader_headers: &LeaderHeaders,
    ) -> Led<S, ReqB, ResB>
    where
        S: Service<Request<ReqB>>,
        ResB: Body,
    {
        let (body, reason) = match collected {
            Collected::Complete { data, trailers } => {
                // Trailers are checked as headers are: a cookie set there is
                // the leader's alone.
                let trailing = trailers.as_ref().map(|trailers| {
                    policy::check_trailers(trailers, self.private_ok, self.targeted.as_ref())
                });
                if let Some(Err(reason)) = trailing {
                    self.pass();
                    let body = ResponseBody::owned(data, trailers);
                    return Led::private(reason, Ok(Response::from_parts(parts, body)));
                }
                let mut response = BufferedResponse::new(parts, data, trailers, leader_headers);
                if !failed {
                    keep(&self.store, &mut response, None);
                }
                return Led::shared(SharedOutcome::Response(Arc::new(response)));
            }
            Collected::TooLarge { prefix, rest } => {
                if !failed {
                    self.pass();
                }
                (ResponseBody::resumed(prefix, rest), Unshareable::TooLarge)
            }
            Collected::Failed { prefix, error } => {
                back_off(&self.store);
                (ResponseBody::failed(prefix, error), Unshareable::BodyFailed)
            }
        };
        Led::private(reason, Ok(Response::from_parts(parts, body)))
    }
}

#[cfg(feature = "cache")]
pub(crate) use cached_store::Store;

#[cfg(feature = "cache")]
mod cached_store {
    use std::sync::Arc;

    use http::{header, response::Parts, HeaderMap};
    use tokio::time::Instant;

    use crate::{
        cache::{CachedResponse, ResponseCache, Storing, Target},
        key::ShareKey,
        policy::LeaderHeaders,
        shared::BufferedResponse,
    };

    /// Where the leader stores what it got.
    pub(crate) struct Store<K> {
        pub(crate) cache: ResponseCache<K>,
        pub(crate) key: ShareKey<K>,
        pub(crate) target: Target,
        /// The cache's invalidation counts when the request looked it up.
        pub(crate) epoch: crate::cache::Epoch,
        /// When the request looked the cache up, on its way to the origin.
        pub(crate) requested: Instant,
        /// The request carried `Authorization`.
        pub(crate) authorized: bool,
        /// The stale variant the request found: revalidated with the
        /// origin, and backed off if the refresh fails.
        pub(crate) stale: Option<Arc<CachedResponse>>,
        /// The request's own directives sent it to the origin: an answer
        /// stored meanwhile does not do for it.
        pub(crate) forced: bool,
    }

    impl<K: std::hash::Hash + Eq + Clone + Send + Sync + 'static> Store<K> {
        pub(crate) fn fresh(&self, request: &HeaderMap) -> Option<Arc<CachedResponse>> {
            if self.forced {
                return None;
            }
            self.cache.fresh(&self.key, request)
        }

        /// Stores `response` if it may be; its freshness if so.
        pub(crate) fn keep(&self, response: &BufferedResponse) -> Option<i64> {
            let storing = Storing {
                response,
                target: self.target.clone(),
                epoch: self.epoch,
                requested: self.requested,
                authorized: self.authorized,
                replacing: self.stale.clone(),
            };
            self.cache.store(self.key.detached(), storing)
        }

        pub(crate) fn back_off(&self) {
            if let Some(stale) = &self.stale {
                stale.back_off(Instant::now());
            }
        }

        /// Makes the leader's request conditional on the stale variant's
        /// validators, if it has any (RFC 9111 §4.3.1).
        pub(crate) fn validate(&self, request: &mut HeaderMap) {
            if let Some(stale) = self.stale.as_ref().filter(|stale| stale.has_validator()) {
                crate::cache::validate(request, &stale.response.parts().headers);
            }
        }

        /// For a `304`: the stale variant with the `304`'s headers (§3.2,
        /// §4.3.4), or `Err` when the `304` is about another representation
        /// (the variant is dropped); `None` when no validation was asked.
        pub(crate) fn revalidated(
            &self,
            parts: &Parts,
            leader: &LeaderHeaders,
        ) -> Option<Result<BufferedResponse, ()>> {
            let stale = self.stale.as_ref().filter(|stale| stale.has_validator())?;
            let stored = &stale.response.parts().headers;
            if !crate::cache::refreshes(&parts.headers, stored) {
                self.cache.drop_variant(&self.key, stale);
                return Some(Err(()));
            }
            let mut headers = crate::cache::updated(stored, &parts.headers);
            // Without a `Date` of its own, the `304` is dated when it came.
            if !parts.headers.contains_key(header::DATE) {
                headers.remove(header::DATE);
            }
            // The stored copy's own `Cache-Status` member (unless the `304`
            // replaced them all) is not the waiters': each gets its own.
            let replaced = parts.headers.contains_key(crate::cache::CACHE_STATUS);
            if self.cache.config().cache_status.is_some() && !replaced {
                crate::cache::StatusName::unreserve(&mut headers);
            }
            self.cache.count_revalidated();
            Some(Ok(stale.response.with_headers(headers, Some(leader))))
        }

        /// Drops the stale variant: a `304` made it unusable.
        pub(crate) fn drop_stale(&self) {
            if let Some(stale) = &self.stale {
                self.cache.drop_variant(&self.key, stale);
            }
        }
    }
}

/// Without the cache, there is nothing to store.
#[cfg(not(feature = "cache"))]
pub(crate) type Store<K> = std::marker::PhantomData<K>;

/// An answer stored since the request looked, if any: the leader's copy
/// (a hit) and the copy its waiters share.
#[cfg(feature = "cache")]
#[inline]
pub(crate) fn fresh<K, B: Body>(
    store: &Option<Box<Store<K>>>,
    request: &http::HeaderMap,
) -> Option<(Response<ResponseBody<B>>, Arc<BufferedResponse>)>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    // Without a cache there is no store: one check, inlined.
    fresh_stored(store.as_deref()?, request)
}

#[cfg(feature = "cache")]
fn fresh_stored<K, B: Body>(
    store: &Store<K>,
    request: &http::HeaderMap,
) -> Option<(Response<ResponseBody<B>>, Arc<BufferedResponse>)>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    let answer = store.fresh(request)?;
    let status = store.cache.config().cache_status.as_ref();
    let now = Instant::now();
    Some((
        answer.to_response(now, status),
        answer.for_waiters(now, status.is_some()),
    ))
}

/// Stores the answer if it may be; what `Cache-Status` reports of it.
#[cfg(feature = "cache")]
pub(crate) fn keep<K>(
    store: &Option<Box<Store<K>>>,
    response: &mut BufferedResponse,
    origin_status: Option<u16>,
) where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    if let Some(store) = store {
        let ttl = store.keep(response);
        let report = crate::cache::StoreReport { ttl, origin_status };
        response.extensions_mut().insert(report);
    }
}

#[cfg(feature = "cache")]
fn back_off<K>(store: &Option<Box<Store<K>>>)
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    if let Some(store) = store {
        store.back_off();
    }
}

/// Makes the leader's request conditional, to revalidate a stale answer.
#[cfg(feature = "cache")]
pub(crate) fn validate<K>(store: &Option<Box<Store<K>>>, request: &mut http::HeaderMap)
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    if let Some(store) = store {
        store.validate(request);
    }
}

#[cfg(feature = "cache")]
fn revalidated<K>(
    store: &Option<Box<Store<K>>>,
    parts: &Parts,
    leader: &LeaderHeaders,
) -> Option<Result<BufferedResponse, ()>>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    store.as_ref()?.revalidated(parts, leader)
}

#[cfg(feature = "cache")]
fn drop_stale<K>(store: &Option<Box<Store<K>>>)
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    if let Some(store) = store {
        store.drop_stale();
    }
}

#[cfg(not(feature = "cache"))]
pub(crate) fn fresh<K, B: Body>(
    _: &Option<Box<Store<K>>>,
    _: &http::HeaderMap,
) -> Option<(Response<ResponseBody<B>>, Arc<BufferedResponse>)> {
    None
}

#[cfg(not(feature = "cache"))]
pub(crate) fn keep<K>(_: &Option<Box<Store<K>>>, _: &mut BufferedResponse, _: Option<u16>) {}

#[cfg(not(feature = "cache"))]
fn back_off<K>(_: &Option<Box<Store<K>>>) {}

#[cfg(not(feature = "cache"))]
pub(crate) fn validate<K>(_: &Option<Box<Store<K>>>, _: &mut http::HeaderMap) {}

#[cfg(not(feature = "cache"))]
fn revalidated<K>(
    _: &Option<Box<Store<K>>>,
    _: &Parts,
    _: &LeaderHeaders,
) -> Option<Result<BufferedResponse, ()>> {
    None
}

#[cfg(not(feature = "cache"))]
fn drop_stale<K>(_: &Option<Box<Store<K>>>) {}
