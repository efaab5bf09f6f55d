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

use crate::{
    body::ResponseBody,
    buffer::{self, Collected},
    flight::{Event, FlightError, Joined, Stats, Waiter},
    key::ShareKey,
    mode::Share,
    policy::{self, Unshareable},
    rejection,
    role::{mark, FlightRole},
    shared::{BufferedResponse, SharedOutcome},
};

/// The leader's own response, when it could not be shared.
type Private<S, ReqB, ResB> =
    Result<Response<ResponseBody<ResB>>, <S as Service<Request<ReqB>>>::Error>;

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
        },
        Private {
            receiver: oneshot::Receiver<Private<S, ReqB, ResB>>,
        },
        Fallback {
            own: Option<Own<S, ReqB>>,
        },
        Inner {
            #[pin]
            future: S::Future,
            role: FlightRole,
        },
        Respond {
            response: Option<Response<ResponseBody<ResB>>>,
            role: FlightRole,
        },
        Done,
    }
}

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
        let state = State::Inner {
            future,
            role: FlightRole::Bypass,
        };
        Self {
            state,
            expose_role,
            stats: None,
        }
    }

    /// Joins the flight for `key`, or leads it. `service` is the one
    /// `poll_ready` made ready: the leader uses it; anyone else drops it at
    /// once, so that waiting never holds the inner service's capacity.
    pub(crate) fn start<K>(
        service: S,
        request: Request<ReqB>,
        key: ShareKey<K>,
        mode: &Share<K>,
        private_ok: bool,
        expose_role: bool,
    ) -> Self
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    {
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
            },
            Ok(Joined::Leader(leader)) => {
                let (sender, receiver) = oneshot::channel();
                let work = lead(service, request, sender, mode.max_body, private_ok);
                State::Waiting {
                    waiter: leader.run(work),
                    deadline,
                    own: None,
                    private: Some(receiver),
                }
            }
            Err(_overloaded) => State::Respond {
                response: Some(owned(rejection::overloaded(mode.retry_after))),
                role: FlightRole::Rejected,
            },
        };
        Self {
            state,
            expose_role,
            stats: Some(mode.flights.recorder()),
        }
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
                } => {
                    let role = if private.is_some() {
                        FlightRole::Leader
                    } else {
                        FlightRole::Follower
                    };
                    match Pin::new(waiter).poll(cx) {
                        Poll::Ready(outcome) => settle(outcome, role, own, private),
                        Poll::Pending => {
                            let expired = deadline
                                .as_mut()
                                .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                            if !expired {
                                return Poll::Pending;
                            }
                            tracing::debug!(%role, "gave up waiting for the shared response");
                            record(this.stats, Event::TimedOut);
                            respond(rejection::timed_out(), role)
                        }
                    }
                }
                StateProj::Private { receiver } => match ready!(Pin::new(receiver).poll(cx)) {
                    Ok(Ok(response)) => State::Respond {
                        response: Some(response),
                        role: FlightRole::Leader,
                    },
                    Ok(Err(error)) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error));
                    }
                    // The work ended without sending: it was aborted.
                    Err(_closed) => respond(rejection::failed(), FlightRole::Leader),
                },
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
                    }
                }
                StateProj::Inner { future, role } => {
                    let role = *role;
                    let result = ready!(future.poll(cx));
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
) -> State<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
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
            Some(receiver) => State::Private { receiver },
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

fn owned<B: Body>(response: Response<bytes::Bytes>) -> Response<ResponseBody<B>> {
    response.map(|body| ResponseBody::owned(body, None))
}

fn record(stats: &Option<Arc<Stats>>, event: Event) {
    if let Some(stats) = stats {
        stats.record(event);
    }
}

/// The leader's work, run in its own task: call the inner service, and turn
/// its response into something every waiter can have a copy of.
///
/// When the response cannot be shared, the leader gets it whole through
/// `private` (streamed, with whatever was already read put back in front),
/// and the followers are told to run their own requests.
async fn lead<S, ReqB, ResB>(
    mut service: S,
    request: Request<ReqB>,
    private: oneshot::Sender<Private<S, ReqB, ResB>>,
    max_body: usize,
    private_ok: bool,
) -> SharedOutcome
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
{
    // Kept to compare with followers if the response names them in `Vary`.
    let leader_headers = request.headers().clone();
    let response = match service.call(request).await {
        Ok(response) => response,
        Err(error) => {
            let _ = private.send(Err(error));
            return SharedOutcome::Unshareable(Unshareable::ServiceError);
        }
    };
    let (parts, body) = response.into_parts();
    if let Err(reason) = policy::check(parts.status, &parts.headers, private_ok) {
        let _ = private.send(Ok(Response::from_parts(parts, ResponseBody::inner(body))));
        return SharedOutcome::Unshareable(reason);
    }
    let (body, reason) = match buffer::collect(body, max_body).await {
        Collected::Complete { data, trailers } => {
            let response = BufferedResponse::new(parts, data, trailers, &leader_headers);
            return SharedOutcome::Response(response);
        }
        Collected::TooLarge { prefix, rest } => {
            (ResponseBody::resumed(prefix, rest), Unshareable::TooLarge)
        }
        Collected::Failed { prefix, error } => {
            (ResponseBody::failed(prefix, error), Unshareable::BodyFailed)
        }
    };
    let _ = private.send(Ok(Response::from_parts(parts, body)));
    SharedOutcome::Unshareable(reason)
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
