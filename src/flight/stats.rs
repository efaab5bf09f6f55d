//! Counters of what the table did, readable as a snapshot.

use std::sync::atomic::Ordering::SeqCst;

use tokio::time::Instant;

use super::{shards::Striped, shutdown::Shutdown};
use crate::metrics::{Handles, Name};

/// A snapshot of a [`Flights`](super::Flights) table's counters.
///
/// Counters only grow; `in_flight` and `leases_held` are gauges of the
/// moment the snapshot was taken. A follower that fell back to running its
/// own request counts in both `followers` and `fell_back`.
///
/// With the `serde` feature (on by default) it serializes to a JSON object
/// with these field names, ready for a stats endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
#[non_exhaustive]
pub struct FlightStats {
    /// Callers that ran the work: lease holders and flight leaders.
    pub leaders: u64,
    /// Callers that waited for a leader's outcome instead of running the work.
    pub followers: u64,
    /// Callers turned away because the key was held.
    pub rejected: u64,
    /// Waiters that gave up after their maximum wait, and flights aborted at
    /// the end of their lease.
    pub timed_out: u64,
    /// Flights whose work panicked, and spawned jobs holding a lease
    /// ([`Flights::spawn`](super::Flights::spawn)) that panicked.
    pub panicked: u64,
    /// Followers that ran their own request because the leader's outcome
    /// could not be shared with them.
    pub fell_back: u64,
    /// Callers turned away because a bound (waiters per key, concurrent
    /// flights) was reached.
    pub overloaded: u64,
    /// Requests the layer could not key: they named two different hosts, or
    /// their identity was longer than the layer keeps. Share mode lets them
    /// through uncoalesced; reject mode answers `400` or `414`.
    pub unkeyed: u64,
    /// Acquisitions refused because the lease store could not be asked in
    /// time (a remote store that is down or slow, failing closed).
    pub unavailable: u64,
    /// Requests for which the key extractor returned `None`: they passed
    /// through, uncoalesced and without a lease.
    pub keyless: u64,
    /// Shared flights running now.
    pub in_flight: usize,
    /// Lease guards alive now, current or stale (a hung guard whose lease
    /// expired counts until it is dropped).
    pub leases_held: usize,
}

/// The live counters behind [`FlightStats`], striped: each thread counts
/// on its own stripe (its own cache line) and a snapshot sums the stripes,
/// so that cores counting every request do not fight over one line.
///
/// The table's [`Shutdown`] lives here too, beside the `leases_held` gauge
/// its wait reads: every guard, call table and clone of the table already
/// points here, so a lease reaches it without one more reference count.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    counters: Striped<COUNTERS>,
    /// The table's name, in metrics and traces.
    pub(crate) name: Name,
    /// Its instruments (feature `metrics`; nothing without it).
    pub(crate) handles: Handles,
    pub(crate) shutdown: Shutdown,
}

/// The events, then the `leases_held` gauge.
const COUNTERS: usize = 11;
const LEASES_HELD: usize = 10;

/// One thing worth counting; its value is its counter's index in a stripe.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    Led = 0,
    Followed,
    Rejected,
    TimedOut,
    Panicked,
    FellBack,
    Overloaded,
    Unkeyed,
    Unavailable,
    Keyless,
}

impl Stats {
    #[inline]
    pub(crate) fn record(&self, event: Event) {
        self.counters.add(event as usize);
        self.handles.event(&self.name, event);
    }

    // The gauge is sequentially consistent with the shutdown flag, so that
    // a shutdown's wait sees every guard (see `shutdown.rs`); on x86 it is
    // the same instruction as a relaxed one.
    #[inline]
    pub(crate) fn lease_taken(&self) {
        self.counters.mine()[LEASES_HELD].fetch_add(1, SeqCst);
        self.handles.leases(&self.name, 1.0);
    }

    /// A lease taken at `acquired` released.
    #[inline]
    pub(crate) fn lease_dropped(&self, acquired: Instant) {
        self.counters.mine()[LEASES_HELD].fetch_sub(1, SeqCst);
        self.handles.leases(&self.name, -1.0);
        self.handles.ran(&self.name, acquired);
    }

    /// A shared flight started at `started` ended.
    #[inline]
    pub(crate) fn flight_ended(&self, started: Instant) {
        self.handles.ran(&self.name, started);
    }

    /// The lease guards alive now, read after the shutdown flag was set:
    /// never fewer than there are (see `shutdown.rs`).
    pub(crate) fn leases_alive(&self) -> usize {
        let sum = self.counters.sum(LEASES_HELD, SeqCst);
        usize::try_from(sum as i64).unwrap_or(0)
    }

    pub(crate) fn snapshot(&self, in_flight: usize) -> FlightStats {
        let sums = self.counters.sums();
        let count = |event: Event| sums[event as usize];
        FlightStats {
            leaders: count(Event::Led),
            followers: count(Event::Followed),
            rejected: count(Event::Rejected),
            timed_out: count(Event::TimedOut),
            panicked: count(Event::Panicked),
            fell_back: count(Event::FellBack),
            overloaded: count(Event::Overloaded),
            unkeyed: count(Event::Unkeyed),
            unavailable: count(Event::Unavailable),
            keyless: count(Event::Keyless),
            in_flight,
            // A snapshot racing a take and a drop on two stripes may see
            // the drop alone: never report that as billions.
            leases_held: usize::try_from(sums[LEASES_HELD] as i64).unwrap_or(0),
        }
    }
}
