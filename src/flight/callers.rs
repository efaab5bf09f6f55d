//! The callers of a flight: the leader that runs its work, the view the
//! work has of it, and the waiters of its outcome.

use std::{
    fmt,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::FutureExt;
use tokio::{sync::oneshot, time::Instant};

use super::{
    call::CallHandle,
    options::{FlightError, Outcome},
};
use crate::time;

/// The caller that runs a flight's work.
///
/// Dropping it without calling [`run`](Leader::run) frees the key and gives
/// waiters that already joined [`FlightError::Abandoned`].
pub struct Leader<T> {
    completion: Option<Completion<T>>,
    waiter: Option<Waiter<T>>,
    lease: Duration,
}

impl<T> Leader<T> {
    pub(super) fn new(
        completion: Completion<T>,
        waiter: Option<Waiter<T>>,
        lease: Duration,
    ) -> Self {
        Self {
            completion: Some(completion),
            waiter,
            lease,
        }
    }
}

impl<T> Leader<T>
where
    T: Send + Sync + 'static,
{
    /// Runs `work` in a spawned task and returns the leader's own waiter.
    ///
    /// The task is detached: dropping the returned waiter does not cancel the
    /// work (unless [`abort_when_unused`] is set and nobody else waits). A
    /// panic becomes [`FlightError::Panicked`] for every waiter; the lease
    /// elapsing becomes [`FlightError::TimedOut`].
    ///
    /// [`abort_when_unused`]: super::CallOptions::abort_when_unused
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, like [`tokio::spawn`].
    pub fn run<F>(self, work: F) -> Waiter<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        self.run_with(|_| work)
    }

    /// Like [`run`](Self::run), with a view of the flight for the work: to
    /// ask whether anybody but the leader waits for its outcome.
    pub fn run_with<F, Fut>(mut self, make: F) -> Waiter<T>
    where
        F: FnOnce(Peers<T>) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let completion = self.completion.take().expect("a leader runs once");
        let work = make(completion.peers());
        let deadline = time::after(Instant::now(), self.lease);
        let task = spawn_to_finish(Box::pin(work), completion, deadline, None);
        let waiter = self.waiter.take().expect("a leader runs once");
        if let Some(membership) = &waiter.membership {
            membership.set_abort(task.abort_handle());
        }
        waiter
    }
}

/// Runs `work` in a task until `deadline`, then publishes what came of it.
///
/// Boxed before it gets here, so that spawning moves a pointer, not the whole
/// (often kilobytes large) future, several times over.
///
/// On `runtime`, or on the current one.
pub(super) fn spawn_to_finish<T: Send + 'static>(
    work: Pin<Box<dyn Future<Output = T> + Send>>,
    completion: Completion<T>,
    deadline: Instant,
    runtime: Option<&tokio::runtime::Handle>,
) -> tokio::task::JoinHandle<()> {
    let task = async move {
        let caught = AssertUnwindSafe(work).catch_unwind();
        let outcome = match tokio::time::timeout_at(deadline, caught).await {
            Ok(Ok(value)) => Ok(value),
            // The panic payload is dropped here: it never reaches a waiter.
            Ok(Err(_panic)) => Err(FlightError::Panicked),
            Err(_elapsed) => Err(FlightError::TimedOut),
        };
        completion.finish(outcome);
    };
    match runtime {
        Some(runtime) => runtime.spawn(task),
        None => tokio::spawn(task),
    }
}

impl<T> fmt::Debug for Leader<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leader")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// A view of a running flight, for its work.
pub struct Peers<T> {
    call: CallHandle<T>,
}

impl<T> Peers<T> {
    /// How many callers besides the leader wait for the outcome now.
    pub fn followers(&self) -> usize {
        self.call.followers()
    }

    /// The flight's key as its table hashed it: to remember the key
    /// without a copy of it.
    pub(crate) fn key_hash(&self) -> u64 {
        self.call.hash
    }
}

impl<T> fmt::Debug for Peers<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peers").finish_non_exhaustive()
    }
}

/// Publishes the outcome exactly once; if the work is dropped before it
/// finishes (aborted, never run, runtime shut down), publishes `Abandoned`.
pub(super) struct Completion<T> {
    pub(super) handle: CallHandle<T>,
    finished: bool,
}

impl<T> Completion<T> {
    pub(super) fn new(handle: CallHandle<T>) -> Self {
        Self {
            handle,
            finished: false,
        }
    }

    pub(super) fn finish(mut self, outcome: Result<T, FlightError>) {
        self.finished = true;
        self.handle.finish(outcome);
    }

    pub(super) fn peers(&self) -> Peers<T> {
        Peers {
            call: self.handle.clone(),
        }
    }
}

impl<T> Drop for Completion<T> {
    fn drop(&mut self) {
        if !self.finished {
            self.handle.finish(Err(FlightError::Abandoned));
        }
    }
}

/// Waits for a flight's [`Outcome`].
///
/// Dropping a waiter never disturbs the flight or the other waiters.
pub struct Waiter<T> {
    receiver: Option<oneshot::Receiver<Outcome<T>>>,
    /// Set with `abort_when_unused`, to stop the work when the last one leaves.
    membership: Option<CallHandle<T>>,
}

impl<T> Waiter<T> {
    pub(super) fn new(
        receiver: oneshot::Receiver<Outcome<T>>,
        membership: Option<CallHandle<T>>,
    ) -> Self {
        Self {
            receiver: Some(receiver),
            membership,
        }
    }
}

impl<T> Future for Waiter<T> {
    type Output = Outcome<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<T>> {
        let Some(receiver) = self.receiver.as_mut() else {
            return Poll::Ready(Err(FlightError::Abandoned));
        };
        // A sender dropped unsent means the call's entry went without an
        // outcome: treat it as abandoned rather than hanging.
        Pin::new(receiver)
            .poll(cx)
            .map(|received| received.unwrap_or(Err(FlightError::Abandoned)))
    }
}

impl<T> Drop for Waiter<T> {
    fn drop(&mut self) {
        // Close our receiver first, so the check below sees this waiter gone.
        drop(self.receiver.take());
        if let Some(membership) = self.membership.take() {
            membership.waiter_left();
        }
    }
}

impl<T> fmt::Debug for Waiter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter").finish_non_exhaustive()
    }
}
