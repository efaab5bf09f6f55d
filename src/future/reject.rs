//! The response future of reject mode.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::{
    body::ResponseBody,
    flight::{Acquire, LeaseGuard, Settled},
    mode::Reject,
    role::{FlightRole, Marks, Source},
};

pin_project! {
    /// Response future of [`SingleFlight`](crate::layer::SingleFlight) in reject mode.
    pub struct ResponseFuture<S: Service<Request<ReqB>>, ReqB, K: 'static> {
        #[pin]
        state: State<S, ReqB, K>,
        marks: Marks,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Request<ReqB>>, ReqB, K: 'static> {
        // Only with a lease store that answers later.
        Acquiring {
            acquire: Acquire<K>,
            // Boxed: this rare state would otherwise double the future's size.
            waiting: Option<Box<Waiting<S, ReqB, K>>>,
        },
        Running {
            #[pin]
            future: S::Future,
            // Boxed now, as the response body will keep it: the future stays
            // small, and the box is made once.
            guard: Option<Box<LeaseGuard<K>>>,
        },
        Rejected {
            response: Option<Response<Bytes>>,
        },
        Done,
    }
}

/// What the request needs once the store has answered.
struct Waiting<S, ReqB, K> {
    service: S,
    request: Request<ReqB>,
    mode: Reject<K>,
}

impl<S: Service<Request<ReqB>>, ReqB, K: 'static> ResponseFuture<S, ReqB, K> {
    pub(crate) fn bypass(future: S::Future, marks: Marks) -> Self {
        Self::new(
            State::Running {
                future,
                guard: None,
            },
            marks,
        )
    }

    pub(crate) fn running(future: S::Future, guard: LeaseGuard<K>, marks: Marks) -> Self {
        let guard = Some(Box::new(guard));
        Self::new(State::Running { future, guard }, marks)
    }

    pub(crate) fn rejected(response: Response<Bytes>, marks: Marks) -> Self {
        let response = Some(response);
        Self::new(State::Rejected { response }, marks)
    }

    pub(crate) fn acquiring(
        acquire: Acquire<K>,
        service: S,
        request: Request<ReqB>,
        mode: &Reject<K>,
        marks: Marks,
    ) -> Self {
        let waiting = Some(Box::new(Waiting {
            service,
            request,
            mode: mode.clone(),
        }));
        Self::new(State::Acquiring { acquire, waiting }, marks)
    }

    fn new(state: State<S, ReqB, K>, marks: Marks) -> Self {
        Self { state, marks }
    }
}

impl<S, ReqB, ResB, K> Future for ResponseFuture<S, ReqB, K>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    type Output = Result<Response<ResponseBody<ResB>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Acquiring { acquire, waiting } => {
                    let settled = ready!(acquire.poll_settled(cx));
                    let Some(waiting) = waiting.take() else {
                        unreachable!("the store answers once");
                    };
                    let Waiting {
                        mut service,
                        request,
                        mode,
                    } = *waiting;
                    let next = match settled {
                        Settled::Acquired(guard) => State::Running {
                            future: service.call(request),
                            guard: Some(Box::new(guard)),
                        },
                        Settled::Held(holder, key) => {
                            let busy = mode.already_running(&key, &holder);
                            State::Rejected {
                                response: Some(mode.conflict.respond(&busy)),
                            }
                        }
                        Settled::Unavailable(_) => State::Rejected {
                            response: Some(crate::rejection::store_unavailable(mode.retry_after)),
                        },
                    };
                    this.state.set(next);
                }
                StateProj::Running { future, guard } => {
                    let result = ready!(future.poll(cx));
                    // On an error the guard drops here and frees the key.
                    let guard = guard.take();
                    this.state.set(State::Done);
                    let role = if guard.is_some() {
                        FlightRole::Leader
                    } else {
                        FlightRole::Bypass
                    };
                    let marks = &*this.marks;
                    return Poll::Ready(result.map(|response| {
                        let mut response = response.map(|body| match guard {
                            // The lease lasts until the body has been sent.
                            Some(guard) => ResponseBody::holding(body, guard),
                            None => ResponseBody::inner(body),
                        });
                        marks.mark(&mut response, role, Source::Inner);
                        response
                    }));
                }
                StateProj::Rejected { response } => {
                    let Some(response) = response.take() else {
                        unreachable!("a rejection is answered once");
                    };
                    this.state.set(State::Done);
                    let mut response = response.map(|body| ResponseBody::owned(body, None));
                    this.marks
                        .mark(&mut response, FlightRole::Rejected, Source::Generated);
                    return Poll::Ready(Ok(response));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

impl<S: Service<Request<ReqB>>, ReqB, K: 'static> fmt::Debug for ResponseFuture<S, ReqB, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Acquiring { .. } => "Acquiring",
            State::Running { guard: Some(_), .. } => "Running",
            State::Running { guard: None, .. } => "Bypass",
            State::Rejected { .. } => "Rejected",
            State::Done => "Done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
