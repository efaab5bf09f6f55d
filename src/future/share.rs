//! The response future of share mode, and the leader's work.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::{sync::oneshot, time::Sleep};
use tower_service::Service;

use super::lead::{lead, Lead, Private, Store};
use crate::{
    body::ResponseBody,
    flight::{Event, FlightError, Joined, Stats, Waiter},
    key::ShareKey,
    mode::Share,
    rejection,
    role::{mark, FlightRole},
    shared::SharedOutcome,
};

pin_project! {
    /// Response future of [`SingleFlight`](crate::SingleFlight) in share mode.
    pub struct ResponseFuture<S: Service<Request<ReqB>>, ReqB, ResB: Body> {
        #[pin]
        state: State<S, ReqB, ResB>,
        expose_role: bool,
        stats: Option<Arc<Stats>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Request<ReqB>>, ReqB, ResB: Body> {
        // Waiting for the flight's outcome. A follower keeps its own request
        // (`own`) in case the outcome cannot be shared with it; the leader
        // keeps the channel of its own response (`private`) for that case.
        Waiting {
            waiter: Waiter<SharedOutcome>,
            deadline: Option<Pin<Box<Sleep>>>,
            own: Option<Own<S, ReqB>>,
            private: Option<oneshot::Receiver<Private<S, ReqB, ResB>>>,
            stale: Option<StaleCopy>,
        },
        Private {
            receiver: oneshot::Receiver<Private<S, ReqB, ResB>>,
            stale: Option<StaleCopy>,
        },
        Fallback {
            own: Option<Own<S, ReqB>>,
        },
        Inner {
            #[pin]
            future: S::Future,
            role: FlightRole,
            after: Option<AfterResponse>,
        },
        Respond {
            response: Option<Response<ResponseBody<ResB>>>,
            role: FlightRole,
        },
        Done,
    }
}

/// Run with the status of a passed-through request's response: drops cached
/// answers after a successful write.
pub(crate) type AfterResponse = Box<dyn FnOnce(http::StatusCode) + Send>;

/// A follower's own request, and the service to run it on.
struct Own<S, ReqB> {
    service: S,
    request: Request<ReqB>,
}

impl<S, ReqB, ResB> ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
    ResB::Error: Send,
{
    pub(crate) fn bypass(future: S::Future, expose_role: bool) -> Self {
        Self::bypass_then(future, expose_role, None)
    }

    /// Passes the request through, then runs `after` with its status.
    pub(crate) fn bypass_then(
        future: S::Future,
        expose_role: bool,
        after: Option<AfterResponse>,
    ) -> Self {
        let state = State::Inner {
            future,
            role: FlightRole::Bypass,
            after,
        };
        Self {
            state,
            expose_role,
            stats: None,
        }
    }

    /// Answers from the cache, or joins the flight for `key`, or leads it.
    /// `service` is the one `poll_ready` made ready: the leader uses it;
    /// anyone else drops it at once, so that waiting never holds the inner
    /// service's capacity.
    pub(crate) fn start<K>(
        mut service: S,
        request: Request<ReqB>,
        key: ShareKey<K>,
        mode: &Share<K>,
        private_ok: bool,
        expose_role: bool,
    ) -> Self
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    {
        let consulted = match consult_cache(mode, &key, &request) {
            Consulted::Answer(response, role) => return Self::respond(response, role, expose_role),
            Consulted::Revalidate(response, store) => {
                refresh(service, request, key, mode, private_ok, store);
                return Self::respond(response, FlightRole::Stale, expose_role);
            }
            Consulted::Ask(consulted) => consulted,
        };
        // Its last answer could not be shared: do not queue for nothing. (A
        // stale copy to fall back on keeps the request in the flight.)
        if consulted.stale.is_none() && mode.passes.passes(&key) {
            return Self::bypass(service.call(request), expose_role);
        }
        let deadline = mode.max_wait.map(|wait| Box::pin(tokio::time::sleep(wait)));
        let state = match mode.flights.join(key, &mode.options) {
            Ok(Joined::Follower(waiter)) => State::Waiting {
                waiter,
                deadline,
                // A clone carries no readiness: it is polled again if the
                // follower has to run its own request.
                own: Some(Own {
                    service: service.clone(),
                    request,
                }),
                private: None,
                stale: consulted.stale,
            },
            Ok(Joined::Leader(leader)) => {
                let (sender, receiver) = oneshot::channel();
                let waiter = leader.run_with(|peers| {
                    let work = Lead {
                        private: sender,
                        max_body: mode.max_body,
                        private_ok,
                        store: consulted.store,
                        peers: Some(peers),
                        passes: Arc::clone(&mode.passes),
                    };
                    lead(service, request, work)
                });
                State::Waiting {
                    waiter,
                    deadline,
                    own: None,
                    private: Some(receiver),
                    stale: consulted.stale,
                }
            }
            Err(_overloaded) => respond(
                rejection::overloaded(mode.retry_after),
                FlightRole::Rejected,
            ),
        };
        Self {
            state,
            expose_role,
            stats: Some(mode.flights.recorder()),
        }
    }

    fn respond(
        response: Response<ResponseBody<ResB>>,
        role: FlightRole,
        expose_role: bool,
    ) -> Self {
        let state = State::Respond {
            response: Some(response),
            role,
        };
        Self {
            state,
            expose_role,
            stats: None,
        }
    }
}

/// Starts a background refresh of a stale answer with this request, unless
/// one runs; nobody waits for it.
fn refresh<S, ReqB, ResB, K>(
    service: S,
    request: Request<ReqB>,
    key: ShareKey<K>,
    mode: &Share<K>,
    private_ok: bool,
    store: Option<Store<K>>,
) where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
    ResB::Error: Send,
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    // The refresh must survive the request that started it.
    let options = mode.options.clone().abort_when_unused(false);
    if let Some(leader) = mode.flights.try_lead(key, &options) {
        let (private, _) = oneshot::channel();
        let passes = Arc::clone(&mode.passes);
        drop(leader.run_with(|peers| {
            let work = Lead {
                private,
                max_body: mode.max_body,
                private_ok,
                store,
                // Nobody waits on a refresh: never "alone" (it must store).
                peers: Some(peers),
                passes,
            };
            lead(service, request, work)
        }));
    }
}

impl<S, ReqB, ResB> Future for ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
{
    type Output = Result<Response<ResponseBody<ResB>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Waiting {
                    waiter,
                    deadline,
                    own,
                    private,
                    stale,
                } => {
                    let role = if private.is_some() {
                        FlightRole::Leader
                    } else {
                        FlightRole::Follower
                    };
                    match Pin::new(waiter).poll(cx) {
                        Poll::Ready(outcome) => settle(outcome, role, own, private, stale),
                        Poll::Pending => {
                            let expired = deadline
                                .as_mut()
                                .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                            if !expired {
                                return Poll::Pending;
                            }
                            tracing::debug!(%role, "gave up waiting for the shared response");
                            record(this.stats, Event::TimedOut);
                            match stale.take() {
                                // Better the stale copy than a timeout.
                                Some(stale) => stale.serve(),
                                None => respond(rejection::timed_out(), role),
                            }
                        }
                    }
                }
                StateProj::Private { receiver, stale } => {
                    match (ready!(Pin::new(receiver).poll(cx)), stale.take()) {
                        // The leader's own answer failed: a stale copy is better.
                        (Ok(Err(_)) | Err(_), Some(stale)) => stale.serve(),
                        (Ok(Ok(response)), _) => State::Respond {
                            response: Some(response),
                            role: FlightRole::Leader,
                        },
                        (Ok(Err(error)), None) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                        // The work ended without sending: it was aborted.
                        (Err(_closed), None) => respond(rejection::failed(), FlightRole::Leader),
                    }
                }
                StateProj::Fallback { own } => {
                    let Some(Own { service, .. }) = own.as_mut() else {
                        unreachable!("a fallback runs once");
                    };
                    if let Err(error) = ready!(service.poll_ready(cx)) {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error));
                    }
                    let Some(Own {
                        mut service,
                        request,
                    }) = own.take()
                    else {
                        unreachable!("a fallback runs once");
                    };
                    record(this.stats, Event::FellBack);
                    State::Inner {
                        future: service.call(request),
                        role: FlightRole::Fallback,
                        after: None,
                    }
                }
                StateProj::Inner {
                    future,
                    role,
                    after,
                } => {
                    let role = *role;
                    let result = ready!(future.poll(cx));
                    if let (Some(after), Ok(response)) = (after.take(), &result) {
                        after(response.status());
                    }
                    this.state.set(State::Done);
                    let expose_role = *this.expose_role;
                    return Poll::Ready(result.map(|response| {
                        let mut response = response.map(ResponseBody::inner);
                        mark(&mut response, role, expose_role);
                        response
                    }));
                }
                StateProj::Respond { response, role } => {
                    let role = *role;
                    let Some(mut response) = response.take() else {
                        unreachable!("a response is given once");
                    };
                    this.state.set(State::Done);
                    mark(&mut response, role, *this.expose_role);
                    return Poll::Ready(Ok(response));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            };
            this.state.set(next);
        }
    }
}

/// What a waiter does with the flight's outcome.
fn settle<S, ReqB, ResB>(
    outcome: Result<Arc<SharedOutcome>, FlightError>,
    role: FlightRole,
    own: &mut Option<Own<S, ReqB>>,
    private: &mut Option<oneshot::Receiver<Private<S, ReqB, ResB>>>,
    stale: &mut Option<StaleCopy>,
) -> State<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
    // The origin failed and a stale copy may stand in (stale-if-error).
    let failed = match &outcome {
        Err(FlightError::Panicked | FlightError::TimedOut) => true,
        Ok(shared) => match &**shared {
            SharedOutcome::Response(response) => response.parts().status.is_server_error(),
            SharedOutcome::Unshareable(reason) => reason.is_failure(),
        },
        Err(_) => false,
    };
    if failed {
        if let Some(stale) = stale.take() {
            return stale.serve();
        }
    }
    let shared = match outcome {
        Ok(shared) => shared,
        Err(FlightError::Panicked) => return respond(rejection::failed(), role),
        Err(FlightError::TimedOut) => return respond(rejection::timed_out(), role),
        // The work never produced anything a follower could use: run its own.
        Err(_) if own.is_some() => return fall_back(own, "the shared work was abandoned"),
        Err(_) => return respond(rejection::failed(), role),
    };
    match (&*shared, own.as_ref()) {
        (SharedOutcome::Response(response), None) => State::Respond {
            response: Some(response.to_response()),
            role,
        },
        (SharedOutcome::Response(response), Some(follower)) => {
            if response.fits(follower.request.headers()) {
                State::Respond {
                    response: Some(response.to_response()),
                    role,
                }
            } else {
                fall_back(
                    own,
                    "the response varies on a header this request differs in",
                )
            }
        }
        (SharedOutcome::Unshareable(reason), Some(_)) => {
            tracing::debug!(%reason, "response not shared");
            fall_back(own, "the response could not be shared")
        }
        (SharedOutcome::Unshareable(_), None) => match private.take() {
            Some(receiver) => State::Private {
                receiver,
                stale: stale.take(),
            },
            None => respond(rejection::failed(), role),
        },
    }
}

fn fall_back<S, ReqB, ResB>(
    own: &mut Option<Own<S, ReqB>>,
    why: &'static str,
) -> State<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
    tracing::debug!(why, "follower runs its own request");
    State::Fallback { own: own.take() }
}

fn respond<S, ReqB, ResB>(
    response: Response<bytes::Bytes>,
    role: FlightRole,
) -> State<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
    State::Respond {
        response: Some(owned(response)),
        role,
    }
}

/// What a request learnt from the cache before joining the flight.
struct AskOrigin<K> {
    /// A stale copy to serve if the origin fails.
    stale: Option<StaleCopy>,
    /// Where the leader stores the origin's answer.
    store: Option<Store<K>>,
}

impl<K> AskOrigin<K> {
    fn nothing() -> Self {
        Self {
            stale: None,
            store: None,
        }
    }
}

// Without the cache, every request asks the origin.
#[cfg_attr(not(feature = "cache"), allow(dead_code))]
enum Consulted<B: Body, K> {
    Answer(Response<ResponseBody<B>>, FlightRole),
    Revalidate(Response<ResponseBody<B>>, Option<Store<K>>),
    Ask(AskOrigin<K>),
}

#[cfg(feature = "cache")]
fn consult_cache<B, K, ReqB>(
    mode: &Share<K>,
    key: &ShareKey<K>,
    request: &Request<ReqB>,
) -> Consulted<B, K>
where
    B: Body,
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    use crate::cache::{Freshness, Lookup, Target};

    let Some(cache) = &mode.cache else {
        return Consulted::Ask(AskOrigin::nothing());
    };
    let now = tokio::time::Instant::now();
    let epoch = cache.epoch();
    // Where the leader stores the origin's answer.
    let store = || {
        Some(Store {
            cache: cache.clone(),
            key: key.clone(),
            target: Target {
                host: key.host.clone(),
                path: request.uri().path().to_owned(),
            },
            epoch,
        })
    };
    let ask = |stale| {
        Consulted::Ask(AskOrigin {
            stale,
            store: store(),
        })
    };
    let answer = match cache.lookup(key) {
        Lookup::Miss => return ask(None),
        // Stored for a request that differs in a header the answer varies
        // on: not this request's answer.
        Lookup::Answer(answer) if !answer.fits(request.headers()) => return ask(None),
        Lookup::Answer(answer) => answer,
    };
    let counters = cache.counters();
    match answer.freshness(now) {
        Freshness::Fresh => {
            cache.count_hit();
            Consulted::Answer(answer.to_response(now), FlightRole::CacheHit)
        }
        // Backing off after a failed refresh: the stale copy, at once, and
        // the origin left alone.
        Freshness::Revalidate | Freshness::IfError if !answer.may_refresh(now) => {
            counters.count_stale();
            Consulted::Answer(answer.to_response(now), FlightRole::Stale)
        }
        Freshness::Revalidate => {
            counters.count_stale();
            Consulted::Revalidate(answer.to_response(now), store())
        }
        Freshness::IfError => ask(Some(StaleCopy { answer, counters })),
        Freshness::Expired => ask(None),
    }
}

#[cfg(not(feature = "cache"))]
fn consult_cache<B: Body, K, ReqB>(
    _: &Share<K>,
    _: &ShareKey<K>,
    _: &Request<ReqB>,
) -> Consulted<B, K> {
    Consulted::Ask(AskOrigin::nothing())
}

/// A stale cached answer, to serve if the origin fails.
#[cfg(feature = "cache")]
struct StaleCopy {
    answer: Arc<crate::cache::CachedResponse>,
    counters: Arc<crate::cache::Counters>,
}

#[cfg(not(feature = "cache"))]
struct StaleCopy(std::convert::Infallible);

impl StaleCopy {
    fn serve<S, ReqB, ResB>(self) -> State<S, ReqB, ResB>
    where
        S: Service<Request<ReqB>>,
        ResB: Body,
    {
        #[cfg(feature = "cache")]
        {
            self.counters.count_stale();
            State::Respond {
                response: Some(self.answer.to_response(tokio::time::Instant::now())),
                role: FlightRole::Stale,
            }
        }
        #[cfg(not(feature = "cache"))]
        match self.0 {}
    }
}

fn owned<B: Body>(response: Response<bytes::Bytes>) -> Response<ResponseBody<B>> {
    response.map(|body| ResponseBody::owned(body, None))
}

fn record(stats: &Option<Arc<Stats>>, event: Event) {
    if let Some(stats) = stats {
        stats.record(event);
    }
}

impl<S: Service<Request<ReqB>>, ReqB, ResB: Body> fmt::Debug for ResponseFuture<S, ReqB, ResB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { own: Some(_), .. } => "Following",
            State::Waiting { own: None, .. } => "Leading",
            State::Private { .. } => "Private",
            State::Fallback { .. } => "Fallback",
            State::Inner { .. } => "Inner",
            State::Respond { .. } => "Respond",
            State::Done => "Done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
