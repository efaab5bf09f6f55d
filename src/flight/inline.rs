//! A flight led from the leader's own future.
//!
//! The leader polls the work itself: no task, no channel and no `Arc` of the
//! outcome unless somebody else waits. Only if the leader stops waiting before
//! the work ends (its client left, its `max_wait` passed) is the work handed
//! to a task, which finishes it for the followers.

use std::{future::Future, pin::Pin};

use tokio::{runtime::Handle, time::Instant};

use super::{
    call::LeaseWatch,
    callers::{spawn_to_finish, Completion, Peers, Waiter},
    options::FlightError,
};

/// Who a caller of [`Flights::enter_inline`](super::Flights::enter_inline) is.
pub(crate) enum Inlined<K, T> {
    Leader(InlineLeader<T>),
    /// A follower must watch the lease: a leader that is not polled cannot.
    /// Its key is given back, to enter again if the flight fails.
    Follower(Waiter<T>, LeaseWatch<T>, K),
}

/// The leader of a flight it runs in its own future.
///
/// Dropped without [`finish`](Self::finish) or [`hand_off`](Self::hand_off),
/// it frees the key and gives the followers [`FlightError::Abandoned`].
pub(crate) struct InlineLeader<T> {
    completion: Completion<T>,
    /// When the flight's lease ends.
    deadline: Instant,
    abort_when_unused: bool,
    /// Where the work goes if handed off: the leader may be dropped on a
    /// thread outside the runtime. Noted once the work did not finish at
    /// its first poll (a quick answer never needs it).
    runtime: Option<Handle>,
}

impl<T: Send + Sync + 'static> InlineLeader<T> {
    pub(super) fn new(
        completion: Completion<T>,
        deadline: Instant,
        abort_when_unused: bool,
    ) -> Self {
        Self {
            completion,
            deadline,
            abort_when_unused,
            runtime: None,
        }
    }

    /// A view of the flight, for the work.
    pub(crate) fn peers(&self) -> Peers<T> {
        self.completion.peers()
    }

    /// When the flight's lease ends: past it, the leader must stop the work
    /// and [`finish`](Self::finish) with [`FlightError::TimedOut`].
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Notes the runtime the leader runs on, for a hand-off from elsewhere.
    pub(crate) fn note_runtime(&mut self) {
        if self.runtime.is_none() {
            self.runtime = Handle::try_current().ok();
        }
    }

    /// Frees the key and hands the followers the outcome.
    pub(crate) fn finish(self, outcome: Result<T, FlightError>) {
        self.completion.finish(outcome);
    }

    /// The leader stops waiting: a task finishes `work` for the followers,
    /// within the same lease. With `abort_when_unused` and nobody else
    /// waiting, the work is dropped instead.
    pub(crate) fn hand_off(self, work: Pin<Box<dyn Future<Output = T> + Send>>) {
        let Self {
            completion,
            deadline,
            abort_when_unused,
            runtime,
        } = self;
        if abort_when_unused && completion.handle.followers() == 0 {
            tracing::debug!("leader left and nobody else waits; single-flight work dropped");
            return;
        }
        // The leader's own runtime, else this thread's, else a follower's.
        // None at all (the runtime is shutting down, or nobody waits and the
        // leader was dropped elsewhere before it ran): the work cannot go on,
        // and the completion, dropped, tells any follower so.
        let runtime = runtime
            .or_else(|| Handle::try_current().ok())
            .or_else(|| completion.handle.runtime());
        let Some(runtime) = runtime else {
            return;
        };
        let call = completion.handle.clone();
        let task = spawn_to_finish(work, completion, deadline, Some(&runtime));
        call.leader_left(abort_when_unused.then(|| task.abort_handle()));
    }
}
