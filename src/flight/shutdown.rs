//! Shutting a table down: no new work, a signal to the jobs that run, and a
//! wait for them to let go of their keys.
//!
//! # How the wait cannot miss a release
//!
//! Lease guards are counted in the striped `leases_held` gauge of
//! [`Stats`]; a guard's `+1` is on the stripe of the thread that took it,
//! its `-1` on the stripe of the thread that dropped it. Shutdown sets its
//! flag, then sums the stripes; the gauge's updates and the flag are
//! sequentially consistent, as in Dekker's lock:
//!
//! - an acquisition counts its guard, then reads the flag, and gives the
//!   guard back at once (on the same thread, so the same stripe) when it is
//!   set: every guard counted after the flag was set is taken back, and
//!   every guard counted before is in the sum;
//! - a guard's drop counts down, then reads the flag, and wakes the waiters
//!   when it is set: either the wait's sum sees the drop, or the drop sees
//!   the flag and wakes the wait, which sums again.
//!
//! So the sum is never below the guards alive (a drop on one stripe is only
//! seen with its take on another), and it reaches zero once they are gone.

use std::{pin::pin, sync::atomic::Ordering::SeqCst};

use futures_util::future::{select, Either};
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{stats::Stats, sync::AtomicBool};

/// One table's shutdown, shared by every clone of the table, its guards and
/// its calls (it lives in their [`Stats`]). One token for the table: a lease
/// reaches it through the table it already points to, so taking a lease
/// clones no token.
#[derive(Debug, Default)]
pub(crate) struct Shutdown {
    started: AtomicBool,
    token: CancellationToken,
    released: Notify,
}

impl Shutdown {
    /// Whether the table is shutting down.
    #[inline]
    pub(crate) fn is_started(&self) -> bool {
        self.started.load(SeqCst)
    }

    /// Refuses new work from now on and signals the jobs.
    pub(crate) fn start(&self) {
        if !self.started.swap(true, SeqCst) {
            tracing::info!("flight table shutting down: new work refused, jobs signalled");
        }
        self.token.cancel();
    }

    /// Resolves once the table starts shutting down.
    pub(crate) async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// Called after a guard's drop counted down: wakes a waiting shutdown.
    #[inline]
    pub(crate) fn released(&self) {
        if self.is_started() {
            self.released.notify_waiters();
        }
    }

    /// Waits until no lease guard of the table is alive, or until
    /// `deadline`; [`start`](Self::start) must have been called, and
    /// `alive_before` read just before it.
    pub(crate) async fn drain(
        &self,
        stats: &Stats,
        deadline: Instant,
        alive_before: usize,
    ) -> Drained {
        // A job on another worker may stop at the signal, before the first
        // count after it: counted from the one before. An acquisition racing
        // the start shows in the one after.
        let at_start = alive_before.max(stats.leases_alive());
        let mut timer = pin!(tokio::time::sleep_until(deadline));
        loop {
            // Registered before the sum, so that a drop the sum misses
            // wakes this wait.
            let mut released = pin!(self.released.notified());
            released.as_mut().enable();
            let alive = stats.leases_alive();
            if alive == 0 || timer.is_elapsed() {
                return Drained::of(at_start, alive);
            }
            if let Either::Right(_) = select(released, timer.as_mut()).await {
                return Drained::of(at_start, stats.leases_alive());
            }
        }
    }
}

/// What [`Flights::shutdown`](super::Flights::shutdown) found: how many of
/// the table's lease guards alive in this process when it started were
/// dropped in time, and how many were still alive when it returned.
///
/// Counts every [`LeaseGuard`](super::LeaseGuard) of the table in this
/// process: spawned jobs, guards of the `Flight` extractor, and reject
/// mode's requests whose response is still being sent. A guard whose lease
/// expired counts until it is dropped: its job still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drained {
    /// Guards alive when the shutdown started and dropped before it returned.
    pub finished: usize,
    /// Guards still alive when it returned (at its deadline): jobs that did
    /// not stop in time, which end with the runtime.
    pub still_running: usize,
}

impl Drained {
    fn of(at_start: usize, alive: usize) -> Self {
        Self {
            finished: at_start.saturating_sub(alive),
            still_running: alive,
        }
    }

    /// Whether every job let go of its key in time.
    pub fn is_complete(&self) -> bool {
        self.still_running == 0
    }
}
