//! What a shared call gives its waiters, and the options it runs with.

use std::{fmt, sync::Arc, time::Duration};

/// What every waiter of a flight receives: the leader's value, shared, or why
/// there is none.
pub type Outcome<T> = Result<Arc<T>, FlightError>;

/// Why a flight gave its waiters no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlightError {
    /// The work panicked. The panic's message is not passed on.
    Panicked,
    /// The work outlived the flight's lease and was aborted.
    TimedOut,
    /// The work was dropped before it finished: the leader never ran it, or
    /// every waiter left and [`CallOptions::abort_when_unused`] was set.
    Abandoned,
    /// A bound was reached; the work was not started.
    Overloaded(Overloaded),
}

impl fmt::Display for FlightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked => f.write_str("the shared work panicked"),
            Self::TimedOut => f.write_str("the shared work outlived its lease"),
            Self::Abandoned => f.write_str("the shared work was dropped before it finished"),
            Self::Overloaded(overloaded) => overloaded.fmt(f),
        }
    }
}

impl std::error::Error for FlightError {}

/// A bound of [`CallOptions`] was reached, or the table takes no new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overloaded {
    /// The key already has `max_waiters` callers waiting.
    TooManyWaiters,
    /// The table already runs `max_flights` flights.
    TooManyFlights,
    /// The table is shutting down
    /// ([`Flights::shutdown`](super::Flights::shutdown)): no new flight
    /// starts; flights that run still take followers.
    ShuttingDown,
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyWaiters => f.write_str("too many callers wait for this key"),
            Self::TooManyFlights => f.write_str("too many flights are running"),
            Self::ShuttingDown => f.write_str("the table is shutting down"),
        }
    }
}

impl std::error::Error for Overloaded {}

/// How a flight runs, and its bounds.
///
/// ```
/// use std::time::Duration;
/// use tower_singleflight::flight::CallOptions;
///
/// // Defaults: a 5 minute lease, 10,000 waiters per key, 10,000 flights,
/// // and the work runs to completion even when every waiter left.
/// let defaults = CallOptions::default();
///
/// let tight = CallOptions::default()
///     .lease(Duration::from_secs(30))
///     .max_waiters(100)
///     .abort_when_unused(true);
/// # let _ = (defaults, tight);
/// ```
#[derive(Debug, Clone)]
pub struct CallOptions {
    pub(super) lease: Duration,
    pub(super) max_waiters: usize,
    pub(super) max_flights: usize,
    pub(super) abort_when_unused: bool,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(5 * 60),
            max_waiters: 10_000,
            max_flights: 10_000,
            abort_when_unused: false,
        }
    }
}

impl CallOptions {
    /// How long the work may run; past it, it is aborted, its waiters get
    /// [`FlightError::TimedOut`] and the key is free. `Duration::MAX` means
    /// never.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How many callers may wait on one key, the leader included.
    #[must_use]
    pub fn max_waiters(mut self, max: usize) -> Self {
        self.max_waiters = max;
        self
    }

    /// How many flights may run at once in one table.
    ///
    /// The table is sharded by key hash (four shards per core). Up to 64
    /// flights per shard the bound is exact: never passed, even by callers
    /// entering several shards at once (two such callers competing for the
    /// last place may both be refused). Above that, a shard holding less than
    /// its share of `max` admits a flight without counting the others, so
    /// that admitting one reads no other core's line. Keys spread evenly (the
    /// hash is keyed per table), so the bound holds to within a few flights
    /// per shard; crowding can never take the table past twice `max`.
    #[must_use]
    pub fn max_flights(mut self, max: usize) -> Self {
        self.max_flights = max;
        self
    }

    /// Abort the work as soon as every waiter has gone. Off by default: the
    /// work runs to completion, so a leader's client disconnecting never
    /// wastes what was already spent. The leader's options decide for the
    /// whole flight.
    #[must_use]
    pub fn abort_when_unused(mut self, abort: bool) -> Self {
        self.abort_when_unused = abort;
        self
    }
}
