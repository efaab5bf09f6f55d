//! The response future of share mode.

use std::{
    fmt,
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;
use tracing::Instrument;

use super::{
    cached::{consult_cache, finish, owned, CacheNote, Consulted, StaleCopy},
    lead::{fresh, lead, validate, Lead, Led, Private, Store},
    leading::{finish_in_task, Leading, Timer, Work},
    release, span, take_ready,
};
use crate::{
    body::ResponseBody,
    flight::{Event, FlightError, Inlined, LeaseWatch, Outcome, Stats, Waiter},
    identity::Asks,
    key::ShareKey,
    metrics::Since,
    mode::Share,
    policy::{LeaderHeaders, Unshareable},
    rejection,
    role::{FlightRole, Marks, Source},
    shared::SharedOutcome,
};

pin_project! {
    /// Response future of [`SingleFlight`](crate::layer::SingleFlight) in share mode.
    pub struct ResponseFuture<S: Service<Request<ReqB>>, ReqB, ResB: Body> {
        #[pin]
        state: State<S, ReqB, ResB>,
        marks: Marks,
        stats: Option<Arc<Stats>>,
        // For a request the cache sent on: what its answer tells the client.
        note: Option<Box<CacheNote>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Request<ReqB>>, ReqB, ResB: Body> {
        // The leader, running the flight's work in this future. The timer
        // ends its wait: at the flight's lease, or sooner at `max_wait`.
        Leading {
            lead: Leading<S, ReqB, ResB>,
            timer: Timer,
            stale: Option<StaleCopy>,
        },
        // A follower, waiting for the flight's outcome. It keeps its own
        // request in case the outcome cannot be shared with it. Its timer
        // ends its wait at `max_wait`, or ends the flight at its lease.
        Following {
            waiter: Waiter<SharedOutcome>,
            timer: Timer,
            watch: LeaseWatch<SharedOutcome>,
            own: Option<Box<Own<S, ReqB, ResB>>>,
            stale: Option<StaleCopy>,
            // When it began to wait (for its metrics; nothing without them).
            since: Since,
        },
        // A follower runs its own request (`rejoin`: enters the table again,
        // with the other followers of a failed leader).
        Fallback {
            own: Option<Box<Own<S, ReqB, ResB>>>,
            rejoin: bool,
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
            source: Source,
        },
        Failed {
            error: Option<S::Error>,
        },
        Done,
    }
}

/// Run with the status and headers of a passed-through request's response:
/// drops cached answers after a successful write.
pub(crate) type AfterResponse = Box<dyn FnOnce(http::StatusCode, &http::HeaderMap) + Send>;

/// What a request coalesces on: its key, and whether it may share a
/// `private` answer.
pub(crate) struct Entry<K> {
    pub(crate) key: ShareKey<K>,
    pub(crate) private_ok: bool,
    /// Entering again after the flight it followed failed: it will not
    /// enter a third time.
    pub(crate) retry: bool,
    /// What it asks of the cache.
    pub(crate) asks: Asks,
}

/// A follower's own request, and the service to run it on.
struct Own<S: Service<Request<ReqB>>, ReqB, ResB: Body> {
    service: S,
    request: Request<ReqB>,
    /// Enters the flight table again, after a failed leader; `None` for a
    /// follower that already did.
    rejoin: Option<Rejoin<S, ReqB, ResB>>,
}

/// Enters the flight table again with a ready service and the request.
type Rejoin<S, ReqB, ResB> = Box<dyn FnOnce(&mut S, Request<ReqB>) -> State<S, ReqB, ResB> + Send>;

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
    pub(crate) fn bypass(future: S::Future, marks: Marks) -> Self {
        Self::bypass_then(future, marks, None)
    }

    /// Passes the request through, then runs `after` with its status.
    pub(crate) fn bypass_then(
        future: S::Future,
        marks: Marks,
        after: Option<AfterResponse>,
    ) -> Self {
        let state = State::Inner {
            future,
            role: FlightRole::Bypass,
            after,
        };
        Self::with_state(state, marks)
    }

    /// Answers from the cache, or joins the flight for `key`, or leads it.
    /// `service` is the one `poll_ready` made ready: the leader calls it at
    /// once; anyone else gives up its readiness at once (a follower keeps a
    /// clone, which carries none), so that waiting never holds the inner
    /// service's capacity.
    pub(crate) fn start<K>(
        service: &mut S,
        mut request: Request<ReqB>,
        entry: Entry<K>,
        mode: &Share<K>,
        marks: Marks,
    ) -> Self
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    {
        let Entry {
            key,
            private_ok,
            retry,
            asks,
        } = entry;
        let digest = span::digest(&key);
        let name = &mode.flights.counters().name;
        let consulted = match consult_cache(mode, &key, &mut request, asks, !retry) {
            Consulted::Answer(response, role) => {
                release(service);
                span::answered(&request, digest, name, role, marks.trace_keys);
                return Self::respond(response, role, marks);
            }
            Consulted::Revalidate(response, store) => {
                span::answered(&request, digest, name, FlightRole::Stale, marks.trace_keys);
                Self::refresh(take_ready(service), request, key, mode, private_ok, store);
                return Self::respond(response, FlightRole::Stale, marks);
            }
            Consulted::Ask(consulted) => consulted,
        };
        let note = consulted.note;
        // The one hash of the key, for the pass list and the flights table.
        let hash = mode.flights.key_hash(&key);
        // Its last answer could not be shared: do not queue for nothing. (A
        // stale copy to fall back on keeps the request in the flight.)
        if consulted.stale.is_none() && mode.passes.passes(hash) {
            let mut bypass = Self::bypass(service.call(request), marks);
            bypass.note = note;
            return bypass;
        }
        // Named for the cluster before the key goes into the table.
        #[cfg(feature = "redis")]
        let ticket = mode
            .cluster
            .as_ref()
            .and_then(|cluster| (cluster.tickets)(&key, mode.identity.as_ref()));
        let state = match mode.flights.enter_inline(key, hash, &mode.options) {
            Ok(Inlined::Follower(waiter, watch, key)) => {
                release(service);
                span::answered(
                    &request,
                    digest,
                    name,
                    FlightRole::Follower,
                    marks.trace_keys,
                );
                // If the leader's call fails, the followers enter once more,
                // together: one more call between them, not one each.
                let rejoin = (!retry).then(|| {
                    let mode = mode.clone();
                    let marks = marks.clone();
                    Box::new(move |service: &mut S, request| {
                        let entry = Entry {
                            key,
                            private_ok,
                            retry: true,
                            asks,
                        };
                        Self::start(service, request, entry, &mode, marks).state
                    }) as Rejoin<S, ReqB, ResB>
                });
                State::Following {
                    waiter,
                    timer: Timer::new(watch.deadline(), mode.max_wait),
                    watch,
                    // A clone carries no readiness: it is polled again if
                    // the follower has to run its own request.
                    own: Some(Box::new(Own {
                        service: service.clone(),
                        request,
                        rejoin,
                    })),
                    stale: consulted.stale,
                    since: Since::now(),
                }
            }
            Ok(Inlined::Leader(flight)) => {
                // Another flight may have stored an answer since this request
                // looked.
                if let Some((response, shared)) = fresh(&consulted.store, request.headers()) {
                    release(service);
                    flight.finish(Ok(SharedOutcome::Response(shared)));
                    return Self::respond(response, FlightRole::CacheHit, marks);
                }
                // The leader's work runs in the flight's span, even once
                // handed to a task.
                let span = span::flight(&request, digest, name, marks.trace_keys);
                // Kept to compare with followers if the response names them
                // in `Vary`.
                let leader_headers = LeaderHeaders::of(request.headers());
                // Revalidates the stale answer it found, if it has validators.
                validate(&consulted.store, request.headers_mut());
                #[cfg(feature = "redis")]
                if let Some(ticket) = ticket {
                    let work = Lead::new(mode, private_ok, consulted.store, flight.peers());
                    let service = take_ready(service);
                    // A request with directives of its own (`no-cache`,
                    // `max-age`...) is not answered from the Redis tier.
                    let headers = request.headers();
                    let consult_tier = !headers.contains_key(http::header::CACHE_CONTROL)
                        && !headers.contains_key(http::header::PRAGMA);
                    let led = super::clustered::lead_across::<S, ReqB, ResB, K>(
                        ticket,
                        service,
                        request,
                        leader_headers,
                        work,
                        consult_tier,
                    );
                    let timer = Timer::new(flight.deadline(), mode.max_wait);
                    return Self {
                        state: State::Leading {
                            lead: Leading {
                                running: Some((Box::pin(led.instrument(span)), flight)),
                                finish_in_task: finish_in_task::<S, ReqB, ResB>,
                            },
                            timer,
                            stale: consulted.stale,
                        },
                        marks,
                        stats: Some(mode.flights.recorder()),
                        note,
                    };
                }
                // A panic here ends the flight as a panic in the work would
                // (and a stale copy, if any, stands in for the answer).
                let called = catch_unwind(AssertUnwindSafe(|| service.call(request)));
                let Ok(answer) = called else {
                    flight.finish(Err(FlightError::Panicked));
                    let mut stale = consulted.stale;
                    let panicked = Err(FlightError::Panicked);
                    let state = settle(panicked, FlightRole::Leader, &mut None, None, &mut stale);
                    return Self::with_state(state, marks);
                };
                let work = Lead::new(mode, private_ok, consulted.store, flight.peers());
                let led = lead::<S, ReqB, ResB, K, _>(answer, leader_headers, work);
                let work: Work<S, ReqB, ResB> = Box::pin(led.instrument(span));
                let timer = Timer::new(flight.deadline(), mode.max_wait);
                State::Leading {
                    lead: Leading {
                        running: Some((work, flight)),
                        finish_in_task: finish_in_task::<S, ReqB, ResB>,
                    },
                    timer,
                    stale: consulted.stale,
                }
            }
            Err(_overloaded) => {
                release(service);
                span::answered(
                    &request,
                    digest,
                    name,
                    FlightRole::Rejected,
                    marks.trace_keys,
                );
                // Made here, never forwarded: no `Cache-Status` to give.
                let state = respond(
                    rejection::overloaded(mode.retry_after),
                    FlightRole::Rejected,
                );
                return Self {
                    stats: Some(mode.flights.recorder()),
                    ..Self::with_state(state, marks)
                };
            }
        };
        Self {
            state,
            marks,
            stats: Some(mode.flights.recorder()),
            note,
        }
    }

    /// A response of the key extractor's, at once: the service is not
    /// called.
    pub(crate) fn rejected(response: Response<bytes::Bytes>, marks: Marks) -> Self {
        Self::with_state(respond(response, FlightRole::Rejected), marks)
    }

    /// The layer's answer (from the cache), at once.
    fn respond(response: Response<ResponseBody<ResB>>, role: FlightRole, marks: Marks) -> Self {
        let state = State::Respond {
            response: Some(response),
            role,
            source: Source::Layer,
        };
        Self::with_state(state, marks)
    }

    fn with_state(state: State<S, ReqB, ResB>, marks: Marks) -> Self {
        Self {
            state,
            marks,
            stats: None,
            note: None,
        }
    }

    /// Starts a background refresh of a stale answer with this request, unless
    /// one runs; nobody waits for it.
    fn refresh<K>(
        mut service: S,
        request: Request<ReqB>,
        key: ShareKey<K>,
        mode: &Share<K>,
        private_ok: bool,
        store: Option<Box<Store<K>>>,
    ) where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    {
        // The refresh must survive the request that started it.
        let options = mode.options.clone().abort_when_unused(false);
        // Across replicas, one refresh in the cluster.
        #[cfg(feature = "redis")]
        let ticket = mode
            .cluster
            .as_ref()
            .and_then(|cluster| (cluster.tickets)(&key, mode.identity.as_ref()));
        let Some(leader) = mode.flights.try_lead(key, &options) else {
            return;
        };
        // Another flight may have stored an answer since this request looked.
        if let Some((_, shared)) = fresh::<K, ResB>(&store, request.headers()) {
            drop(leader.run(async move { SharedOutcome::Response(shared) }));
            return;
        }
        let mut request = request;
        drop(leader.run_with(|peers| {
            let leader_headers = LeaderHeaders::of(request.headers());
            validate(&store, request.headers_mut());
            // Nobody waits on a refresh: never "alone" (it must store).
            let work = Lead::new(mode, private_ok, store, peers);
            #[cfg(feature = "redis")]
            if let Some(ticket) = ticket {
                let led = super::clustered::lead_across::<S, ReqB, ResB, K>(
                    ticket,
                    service,
                    request,
                    leader_headers,
                    work,
                    true,
                );
                return futures_util::future::Either::Left(async move { led.await.outcome });
            }
            // Called in the task: a panic there ends the refresh, not the
            // request that started it.
            let answer = async move { service.call(request).await };
            let led = lead::<S, ReqB, ResB, K, _>(answer, leader_headers, work);
            let led = async move { led.await.outcome };
            #[cfg(feature = "redis")]
            let led = futures_util::future::Either::Right(led);
            led
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
                StateProj::Leading { lead, timer, stale } => match lead.poll_work(cx) {
                    Poll::Ready(Ok((led, flight))) => {
                        let Led { outcome, private } = led;
                        // Nobody else waited: the leader's own response, as
                        // it came, at once.
                        let private = match (&outcome, private) {
                            (SharedOutcome::Unshareable(Unshareable::Alone), Some(Ok(mut own))) => {
                                flight.finish(Ok(outcome));
                                this.state.set(State::Done);
                                this.marks.mark(&mut own, FlightRole::Leader, Source::Inner);
                                finish(this.note, &mut own, FlightRole::Leader);
                                return Poll::Ready(Ok(own));
                            }
                            (_, private) => private,
                        };
                        let next =
                            settle(Ok(&outcome), FlightRole::Leader, &mut None, private, stale);
                        flight.finish(Ok(outcome));
                        next
                    }
                    Poll::Ready(Err(error)) => {
                        settle(Err(error), FlightRole::Leader, &mut None, None, stale)
                    }
                    Poll::Pending => {
                        ready!(timer.poll(cx));
                        if timer.lease_ends {
                            lead.time_out();
                        } else {
                            tracing::debug!("leader gave up waiting; its work goes on");
                            record(this.stats, Event::TimedOut);
                            lead.hand_off();
                        }
                        give_up(FlightRole::Leader, stale)
                    }
                },
                StateProj::Following {
                    waiter,
                    timer,
                    watch,
                    own,
                    stale,
                    since,
                } => match Pin::new(&mut *waiter).poll(cx) {
                    Poll::Ready(outcome) => {
                        this.marks.meter().waited(*since);
                        settle(shared(&outcome), FlightRole::Follower, own, None, stale)
                    }
                    Poll::Pending => {
                        ready!(timer.poll(cx));
                        this.marks.meter().waited(*since);
                        if timer.lease_ends {
                            // Whatever the leader does (it may not even be
                            // polled), the flight ends here: every waiter,
                            // this one included, is told it timed out.
                            watch.expire();
                            if let Poll::Ready(outcome) = Pin::new(waiter).poll(cx) {
                                let outcome = shared(&outcome);
                                settle(outcome, FlightRole::Follower, own, None, stale)
                            } else {
                                give_up(FlightRole::Follower, stale)
                            }
                        } else {
                            tracing::debug!("follower gave up waiting for the shared response");
                            record(this.stats, Event::TimedOut);
                            give_up(FlightRole::Follower, stale)
                        }
                    }
                },
                StateProj::Fallback { own, rejoin } => {
                    let Some(follower) = own.as_mut() else {
                        unreachable!("a fallback runs once");
                    };
                    if let Err(error) = ready!(follower.service.poll_ready(cx)) {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error));
                    }
                    let Some(follower) = own.take() else {
                        unreachable!("a fallback runs once");
                    };
                    let Own {
                        mut service,
                        request,
                        rejoin: enter,
                    } = *follower;
                    record(this.stats, Event::FellBack);
                    match enter.filter(|_| *rejoin) {
                        Some(enter) => enter(&mut service, request),
                        None => State::Inner {
                            future: service.call(request),
                            role: FlightRole::Fallback,
                            after: None,
                        },
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
                        after(response.status(), response.headers());
                    }
                    this.state.set(State::Done);
                    let marks = &*this.marks;
                    return Poll::Ready(result.map(|response| {
                        let mut response = response.map(ResponseBody::inner);
                        marks.mark(&mut response, role, Source::Inner);
                        finish(this.note, &mut response, role);
                        response
                    }));
                }
                StateProj::Respond {
                    response,
                    role,
                    source,
                } => {
                    let (role, source) = (*role, *source);
                    let Some(mut response) = response.take() else {
                        unreachable!("a response is given once");
                    };
                    this.state.set(State::Done);
                    this.marks.mark(&mut response, role, source);
                    finish(this.note, &mut response, role);
                    return Poll::Ready(Ok(response));
                }
                StateProj::Failed { error } => {
                    let Some(error) = error.take() else {
                        unreachable!("an error is given once");
                    };
                    this.state.set(State::Done);
                    return Poll::Ready(Err(error));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            };
            this.state.set(next);
        }
    }
}

/// A follower's view of the flight's outcome, as [`settle`] takes it.
fn shared(outcome: &Outcome<SharedOutcome>) -> Result<&SharedOutcome, FlightError> {
    outcome.as_deref().map_err(|error| *error)
}

/// A waiter out of time: the stale copy if there is one, else `504`.
fn give_up<S, ReqB, ResB>(role: FlightRole, stale: &mut Option<StaleCopy>) -> State<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
    match stale.take() {
        // Better the stale copy than a timeout.
        Some(stale) => serve_stale(stale),
        None => respond(rejection::timed_out(), role),
    }
}

/// What a waiter does with the flight's outcome. A follower has its `own`
/// request to run instead; the leader may have its `private` response.
fn settle<S, ReqB, ResB>(
    outcome: Result<&SharedOutcome, FlightError>,
    role: FlightRole,
    own: &mut Option<Box<Own<S, ReqB, ResB>>>,
    private: Option<Private<S, ReqB, ResB>>,
    stale: &mut Option<StaleCopy>,
) -> State<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
    // The origin failed and a stale copy may stand in (stale-if-error).
    let failed = match outcome {
        Err(FlightError::Panicked | FlightError::TimedOut) => true,
        Ok(SharedOutcome::Response(response)) => response.parts().status.is_server_error(),
        Ok(SharedOutcome::Unshareable(reason)) => reason.is_failure(),
        Err(_) => false,
    };
    if failed {
        if let Some(stale) = stale.take() {
            return serve_stale(stale);
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
    match (shared, own.as_ref()) {
        // The leader: its own answer, rebuilt from the shared copy.
        (SharedOutcome::Response(response), None) => State::Respond {
            response: Some(response.to_response()),
            role,
            source: Source::Inner,
        },
        (SharedOutcome::Response(response), Some(follower)) => {
            if response.fits(follower.request.headers()) {
                State::Respond {
                    response: Some(response.to_response()),
                    role,
                    source: Source::Layer,
                }
            } else if follower.rejoin.is_some() {
                // Another variant: the followers that want it enter again,
                // together, for one more call between them.
                tracing::debug!("the response varies on a header this request differs in");
                State::Fallback {
                    own: own.take(),
                    rejoin: true,
                }
            } else {
                fall_back(
                    own,
                    "the response varies on a header this request differs in",
                )
            }
        }
        // The leader's call failed: the followers try once more, together;
        // those who already did are told it failed.
        (SharedOutcome::Unshareable(reason), Some(follower)) if reason.is_call_failure() => {
            if follower.rejoin.is_none() {
                return respond(rejection::bad_gateway(), role);
            }
            tracing::debug!(%reason, "the followers of a failed call enter again");
            State::Fallback {
                own: own.take(),
                rejoin: true,
            }
        }
        (SharedOutcome::Unshareable(reason), Some(_)) => {
            tracing::debug!(%reason, "response not shared");
            fall_back(own, "the response could not be shared")
        }
        (SharedOutcome::Unshareable(_), None) => match private {
            Some(Ok(response)) => State::Respond {
                response: Some(response),
                role,
                source: Source::Inner,
            },
            Some(Err(error)) => State::Failed { error: Some(error) },
            None => respond(rejection::failed(), role),
        },
    }
}

fn fall_back<S, ReqB, ResB>(
    own: &mut Option<Box<Own<S, ReqB, ResB>>>,
    why: &'static str,
) -> State<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
    tracing::debug!(why, "follower runs its own request");
    State::Fallback {
        own: own.take(),
        rejoin: false,
    }
}

/// An answer the layer made itself (a `502`, `503`, `504`...).
#[cfg_attr(not(feature = "cache"), allow(unused_mut))]
fn respond<S, ReqB, ResB>(
    mut response: Response<bytes::Bytes>,
    role: FlightRole,
) -> State<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
    // Marked, for `Cache-Status`: RFC 9211 §2 has it left off such answers.
    #[cfg(feature = "cache")]
    response.extensions_mut().insert(rejection::Generated);
    State::Respond {
        response: Some(owned(response)),
        role,
        source: Source::Generated,
    }
}

fn record(stats: &Option<Arc<Stats>>, event: Event) {
    if let Some(stats) = stats {
        stats.record(event);
    }
}

impl<S: Service<Request<ReqB>>, ReqB, ResB: Body> fmt::Debug for ResponseFuture<S, ReqB, ResB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Leading { .. } => "Leading",
            State::Following { .. } => "Following",
            State::Failed { .. } => "Failed",
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

/// A stale copy, served in place of a failure or a timeout.
fn serve_stale<S, ReqB, ResB>(stale: StaleCopy) -> State<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
    State::Respond {
        response: Some(stale.response()),
        role: FlightRole::Stale,
        source: Source::Layer,
    }
}
