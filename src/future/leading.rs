//! The leader of share mode, running the flight's work in its own response
//! future, and handing it to a task if it stops waiting first.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::Request;
use http_body::Body;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::lead::Led;
use crate::{
    flight::{FlightError, InlineLeader},
    shared::SharedOutcome,
    time,
};

/// The leader's work, boxed so that a leader that stops waiting can hand it
/// to a task.
pub(crate) type Work<S, ReqB, ResB> = Pin<Box<dyn Future<Output = Led<S, ReqB, ResB>> + Send>>;

/// The work's answer, and the flight to finish with it.
pub(crate) type Finished<S, ReqB, ResB> = (Led<S, ReqB, ResB>, InlineLeader<SharedOutcome>);

/// The flight a leader runs, and its work until it ends. Dropped before then
/// (the leader's client left), it hands the work to a task that finishes it
/// for the followers.
pub(crate) struct Leading<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
    pub(crate) running: Option<(Work<S, ReqB, ResB>, InlineLeader<SharedOutcome>)>,
    /// [`finish_in_task`], made where its bounds are known: `Drop` cannot
    /// ask for them.
    pub(crate) finish_in_task: fn(Work<S, ReqB, ResB>, InlineLeader<SharedOutcome>),
}

/// When the leader stops waiting: at the flight's lease, or sooner at
/// `max_wait`. Armed only once the work did not finish at its first poll,
/// so that a quick answer never touches the timer wheel.
pub(crate) struct Timer {
    until: Instant,
    /// Whether `until` is the end of the lease (rather than of `max_wait`).
    pub(crate) lease_ends: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Timer {
    pub(crate) fn new(lease_end: Instant, max_wait: Option<Duration>) -> Self {
        let waits_until = max_wait
            .map(|wait| time::after(Instant::now(), wait))
            .filter(|until| *until < lease_end);
        Self {
            until: waits_until.unwrap_or(lease_end),
            lease_ends: waits_until.is_none(),
            sleep: None,
        }
    }

    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let until = self.until;
        self.sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)))
            .as_mut()
            .poll(cx)
    }
}

/// Hands the leader's work to a task that finishes the flight.
pub(crate) fn finish_in_task<S, ReqB, ResB>(
    work: Work<S, ReqB, ResB>,
    flight: InlineLeader<SharedOutcome>,
) where
    S: Service<Request<ReqB>> + 'static,
    S::Error: Send,
    ReqB: 'static,
    ResB: Body + Send + 'static,
{
    flight.hand_off(Box::pin(async move { work.await.outcome }));
}

impl<S, ReqB, ResB> Leading<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
    /// Polls the work. A panic in it ends the flight with
    /// [`FlightError::Panicked`]; its message goes no further.
    pub(crate) fn poll_work(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Finished<S, ReqB, ResB>, FlightError>> {
        let Some((work, flight)) = self.running.as_mut() else {
            unreachable!("the leader's work is polled until it ends, never after");
        };
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx)));
        let led = match polled {
            Ok(Poll::Pending) => {
                flight.note_runtime();
                return Poll::Pending;
            }
            Ok(Poll::Ready(led)) => Ok(led),
            Err(_panic) => Err(FlightError::Panicked),
        };
        let Some((_, flight)) = self.running.take() else {
            unreachable!("checked above");
        };
        Poll::Ready(match led {
            Ok(led) => Ok((led, flight)),
            Err(error) => {
                flight.finish(Err(error));
                Err(error)
            }
        })
    }

    /// The leader stops waiting: a task finishes the work for the followers.
    pub(crate) fn hand_off(&mut self) {
        if let Some((work, flight)) = self.running.take() {
            tracing::debug!("leader stopped waiting; its work goes on in a task");
            (self.finish_in_task)(work, flight);
        }
    }

    /// The lease ended: the work is dropped and everybody gets
    /// [`FlightError::TimedOut`].
    pub(crate) fn time_out(&mut self) {
        if let Some((work, flight)) = self.running.take() {
            drop(work);
            flight.finish(Err(FlightError::TimedOut));
        }
    }
}

impl<S, ReqB, ResB> Drop for Leading<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
    fn drop(&mut self) {
        self.hand_off();
    }
}
