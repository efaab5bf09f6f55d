//! Counters of what the table did, readable as a snapshot.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

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
    /// Shared flights running now.
    pub in_flight: usize,
    /// Lease guards alive now, current or stale (a hung guard whose lease
    /// expired counts until it is dropped).
    pub leases_held: usize,
}

/// The live counters behind [`FlightStats`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    leaders: AtomicU64,
    followers: AtomicU64,
    rejected: AtomicU64,
    timed_out: AtomicU64,
    panicked: AtomicU64,
    fell_back: AtomicU64,
    overloaded: AtomicU64,
    unkeyed: AtomicU64,
    unavailable: AtomicU64,
    leases_held: AtomicUsize,
}

/// One thing worth counting.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    Led,
    Followed,
    Rejected,
    TimedOut,
    Panicked,
    FellBack,
    Overloaded,
    Unkeyed,
    Unavailable,
}

impl Stats {
    pub(crate) fn record(&self, event: Event) {
        let counter = match event {
            Event::Led => &self.leaders,
            Event::Followed => &self.followers,
            Event::Rejected => &self.rejected,
            Event::TimedOut => &self.timed_out,
            Event::Panicked => &self.panicked,
            Event::FellBack => &self.fell_back,
            Event::Overloaded => &self.overloaded,
            Event::Unkeyed => &self.unkeyed,
            Event::Unavailable => &self.unavailable,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn lease_taken(&self) {
        self.leases_held.fetch_add(1, Relaxed);
    }

    pub(crate) fn lease_dropped(&self) {
        self.leases_held.fetch_sub(1, Relaxed);
    }

    pub(crate) fn snapshot(&self, in_flight: usize) -> FlightStats {
        FlightStats {
            leaders: self.leaders.load(Relaxed),
            followers: self.followers.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            timed_out: self.timed_out.load(Relaxed),
            panicked: self.panicked.load(Relaxed),
            fell_back: self.fell_back.load(Relaxed),
            overloaded: self.overloaded.load(Relaxed),
            unkeyed: self.unkeyed.load(Relaxed),
            unavailable: self.unavailable.load(Relaxed),
            in_flight,
            leases_held: self.leases_held.load(Relaxed),
        }
    }
}
