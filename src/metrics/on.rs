//! The instruments, with the `metrics` feature: registered once per
//! layer, table or cache, at its first count, then an atomic add each.

use std::sync::{Arc, Mutex, Once, OnceLock, PoisonError};

use http::StatusCode;
use metrics::{Counter, Gauge, Histogram, Unit};

use super::{Name, *};
use crate::{
    flight::{Event, Stats},
    role::{FlightRole, Source},
};

/// A table's instruments, registered under its name at its first count.
#[derive(Debug, Default)]
pub(crate) struct Handles(OnceLock<Instruments>);

struct Instruments {
    name: Arc<str>,
    roles: [Counter; ROLES.len()],
    generated: [(StatusCode, Counter); 4],
    /// The other statuses the layer or a key extractor answered with (400,
    /// 401, 414, 429, 502...), each registered at its first answer and kept:
    /// a rejecting extractor may answer every request of a flood. At most
    /// one per status code, so bounded.
    other: Mutex<Vec<(StatusCode, Counter)>>,
    unkeyed: [Counter; 2],
    wait: Histogram,
    duration: Histogram,
    leases: Gauge,
    panics: Counter,
}

impl std::fmt::Debug for Instruments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instruments")
            .field("name", &self.name)
            .finish()
    }
}

/// Every role, in the order of [`role_index`].
const ROLES: [FlightRole; 7] = [
    FlightRole::Leader,
    FlightRole::Follower,
    FlightRole::Rejected,
    FlightRole::Bypass,
    FlightRole::Fallback,
    FlightRole::CacheHit,
    FlightRole::Stale,
];

fn role_index(role: FlightRole) -> usize {
    match role {
        FlightRole::Leader => 0,
        FlightRole::Follower => 1,
        FlightRole::Rejected => 2,
        FlightRole::Bypass => 3,
        FlightRole::Fallback => 4,
        FlightRole::CacheHit => 5,
        FlightRole::Stale => 6,
    }
}

impl Instruments {
    fn register(name: Arc<str>) -> Self {
        describe();
        let layer = || ("layer", Arc::clone(&name));
        let counter = |metric: &'static str, key: &'static str, value: &'static str| {
            let (label, name) = layer();
            metrics::counter!(metric, label => name, key => value)
        };
        let generated = |status: StatusCode| {
            let value = status.as_str().to_owned();
            let (label, name) = layer();
            let counter = metrics::counter!(GENERATED_RESPONSES, label => name, "status" => value);
            (status, counter)
        };
        let (label, value) = layer();
        Self {
            roles: ROLES.map(|role| counter(REQUESTS, "role", role.as_str())),
            generated: [
                StatusCode::CONFLICT,
                StatusCode::INTERNAL_SERVER_ERROR,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::GATEWAY_TIMEOUT,
            ]
            .map(generated),
            other: Mutex::default(),
            unkeyed: [
                counter(UNKEYED_REQUESTS, "reason", "no_key"),
                counter(UNKEYED_REQUESTS, "reason", "unkeyable"),
            ],
            wait: metrics::histogram!(FOLLOWER_WAIT, label => Arc::clone(&value)),
            duration: metrics::histogram!(FLIGHT_DURATION, label => Arc::clone(&value)),
            leases: metrics::gauge!(LEASES_HELD, label => Arc::clone(&value)),
            panics: metrics::counter!(PANICS, label => value),
            name,
        }
    }
}

impl Instruments {
    /// The counter of a status not registered up front.
    fn other_status(&self, status: StatusCode) -> Counter {
        let mut other = self.other.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, counter)) = other.iter().find(|(s, _)| *s == status) {
            return counter.clone();
        }
        let counter = metrics::counter!(
            GENERATED_RESPONSES,
            "layer" => Arc::clone(&self.name),
            "status" => status.as_str().to_owned()
        );
        other.push((status, counter.clone()));
        counter
    }
}

impl Handles {
    fn get(&self, name: &Name) -> &Instruments {
        self.0.get_or_init(|| Instruments::register(name.get()))
    }

    #[inline]
    pub(crate) fn event(&self, name: &Name, event: Event) {
        if let Event::Panicked = event {
            self.get(name).panics.increment(1);
        }
    }

    #[inline]
    pub(crate) fn leases(&self, name: &Name, delta: f64) {
        self.get(name).leases.increment(delta);
    }

    /// A flight that ended, or a lease that was released, begun at `started`.
    #[inline]
    pub(crate) fn ran(&self, name: &Name, started: tokio::time::Instant) {
        self.get(name).duration.record(started.elapsed());
    }
}

/// The layer's view of its table's instruments, held by its futures.
#[derive(Debug, Clone)]
pub(crate) struct Meter(Arc<Stats>);

impl Meter {
    pub(crate) fn of(stats: &Arc<Stats>) -> Self {
        Self(Arc::clone(stats))
    }

    fn get(&self) -> &Instruments {
        self.0.handles.get(&self.0.name)
    }

    /// A response returned in `role`; `status` counts if the layer wrote it.
    #[inline]
    pub(crate) fn responded(&self, role: FlightRole, source: Source, status: StatusCode) {
        let instruments = self.get();
        instruments.roles[role_index(role)].increment(1);
        if source == Source::Generated {
            match instruments.generated.iter().find(|(s, _)| *s == status) {
                Some((_, counter)) => counter.increment(1),
                None => instruments.other_status(status).increment(1),
            }
        }
    }

    #[inline]
    pub(crate) fn unkeyed(&self, why: Unkeyed) {
        self.get().unkeyed[why as usize].increment(1);
    }

    /// A follower that stopped waiting.
    #[inline]
    pub(crate) fn waited(&self, since: Since) {
        self.get().wait.record(since.0.elapsed());
    }
}

/// When a wait began.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Since(tokio::time::Instant);

impl Since {
    #[inline]
    pub(crate) fn now() -> Self {
        Self(tokio::time::Instant::now())
    }
}

/// A cache's instruments, registered under its name at its first count.
#[cfg(feature = "cache")]
#[derive(Debug, Default)]
pub(crate) struct CacheMeter {
    name: Name,
    cell: OnceLock<CacheInstruments>,
}

#[cfg(feature = "cache")]
#[derive(Debug)]
struct CacheInstruments {
    results: [Counter; 4],
    stores: Counter,
    evictions: Counter,
    bytes: Gauge,
}

#[cfg(feature = "cache")]
impl CacheMeter {
    pub(crate) fn set_name(&self, name: Arc<str>) {
        self.name.set(name);
    }

    fn get(&self) -> &CacheInstruments {
        self.cell.get_or_init(|| {
            describe();
            let name = self.name.get();
            let result = |value: &'static str| {
                metrics::counter!(CACHE_REQUESTS, "layer" => Arc::clone(&name), "result" => value)
            };
            CacheInstruments {
                results: ["hit", "stale", "miss", "pass"].map(result),
                stores: metrics::counter!(CACHE_STORES, "layer" => Arc::clone(&name)),
                evictions: metrics::counter!(CACHE_EVICTIONS, "layer" => Arc::clone(&name)),
                bytes: metrics::gauge!(CACHE_BYTES, "layer" => name),
            }
        })
    }

    #[inline]
    pub(crate) fn result(&self, result: CacheResult) {
        self.get().results[result as usize].increment(1);
    }

    /// An answer stored.
    pub(crate) fn stored(&self) {
        self.get().stores.increment(1);
    }

    /// An entry of `bytes` put in the cache, new or in place of one (whose
    /// bytes [`removed`](Self::removed) takes off).
    pub(crate) fn put(&self, bytes: u32) {
        self.get().bytes.increment(f64::from(bytes));
    }

    /// An entry of `bytes` that left the cache; `evicted` if for room or
    /// at the end of its lifetime.
    pub(crate) fn removed(&self, bytes: u32, evicted: bool) {
        let instruments = self.get();
        if evicted {
            instruments.evictions.increment(1);
        }
        instruments.bytes.decrement(f64::from(bytes));
    }
}

/// Tells the recorder what each name means, once per process.
fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use metrics::{describe_counter, describe_gauge, describe_histogram};
        describe_counter!(REQUESTS, "Responses the layer returned, by role");
        describe_counter!(
            GENERATED_RESPONSES,
            "Answers the layer wrote itself, by status"
        );
        describe_counter!(UNKEYED_REQUESTS, "Requests that were not keyed, by reason");
        describe_histogram!(FOLLOWER_WAIT, Unit::Seconds, "How long followers waited");
        describe_histogram!(
            FLIGHT_DURATION,
            Unit::Seconds,
            "How long flights ran and leases were held"
        );
        describe_gauge!(LEASES_HELD, "Lease guards alive");
        describe_counter!(PANICS, "Shared work and jobs holding a lease that panicked");
        describe_counter!(CACHE_REQUESTS, "Requests that consulted a cache, by result");
        describe_counter!(CACHE_STORES, "Answers stored in the response cache");
        describe_counter!(
            CACHE_EVICTIONS,
            "Cached entries evicted for room or at the end of their lifetime"
        );
        describe_gauge!(
            CACHE_BYTES,
            Unit::Bytes,
            "Bytes the response cache's entries weigh"
        );
    });
}
