//! Several replicas, one flight: leases kept in Redis (or Valkey).
//!
//! [`Redis`] is one connection to the server, shared by everything that
//! coordinates through it:
//!
//! - [`RedisStore`] keeps a [`Flights`](crate::Flights) table's leases
//!   there, so that reject mode, the `Flight` extractor,
//!   [`Flights::status`](crate::Flights::status) and the admin router hold
//!   across every replica that uses the same server and prefix;
//! - [`Cluster`] spans share mode's flights (and its cache) across them;
//! - [`ValueTier`] puts a Redis tier behind a [`ValueCache`](crate::ValueCache).
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_singleflight::{redis::{Redis, RedisStore}, Flights, SingleFlightLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = Redis::builder("redis://127.0.0.1:6379/")
//!     .prefix("myapp")
//!     .replica("web-1")
//!     .timeout(Duration::from_millis(300))
//!     .build()?;
//! let layer = SingleFlightLayer::reject()
//!     .key(|parts: &axum::http::request::Parts| Some(parts.uri.path().to_owned()))
//!     .flights(Flights::with_store(RedisStore::new(redis)));
//! # Ok(()) }
//! ```
//!
//! # Failure policy
//!
//! Every call to Redis ends at the [timeout](RedisBuilder::timeout) (300 ms
//! by default); the connection is re-established in the background after
//! an error, so replicas coordinate again as soon as Redis is back, with no
//! restart of their own. While Redis cannot be reached, acquisitions follow
//! [`WhenUnavailable`]: refused with `503` (the default: no second run can
//! start anywhere) or taken in this process only. Every failure is counted
//! ([`Redis::stats`]) and logged.
//!
//! # What Redis must be
//!
//! One primary (standalone, or behind Sentinel): the scripts touch several
//! keys at once, which Redis Cluster would spread over slots. Fencing tokens
//! come from one `INCR` counter: keep persistence on (RDB or AOF) so that a
//! restart does not start it again from zero.

pub(crate) mod flight;
mod hub;
mod keys;
#[cfg(feature = "cache")]
pub(crate) mod response;
mod scripts;
pub(crate) mod share;
mod store;
#[cfg(feature = "cache")]
pub(crate) mod value;

use std::{
    fmt,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use share::Cluster;
pub use store::{RedisStore, WhenUnavailable, MAX_LISTED};
#[cfg(feature = "cache")]
pub use value::ValueTier;

use keys::Prefix;

/// A connection to Redis, shared by the stores, flights and caches that
/// coordinate through it. Cheap to clone.
#[derive(Clone)]
pub struct Redis {
    shared: Arc<Shared>,
}

struct Shared {
    connection: ConnectionManager,
    /// For the pub/sub connection, which is its own.
    client: redis::Client,
    hub: Arc<hub::Hub>,
    prefix: Prefix,
    replica: Arc<str>,
    timeout: Duration,
    stats: Counters,
}

/// Settings of a [`Redis`] connection, from [`Redis::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisBuilder {
    url: String,
    prefix: String,
    replica: Option<String>,
    timeout: Duration,
}

impl Redis {
    /// Settings for a connection to `url` (`redis://host:port/db`,
    /// `rediss://` for TLS if redis-rs is built with it).
    pub fn builder(url: impl Into<String>) -> RedisBuilder {
        RedisBuilder {
            url: url.into(),
            prefix: "tsf".to_owned(),
            replica: None,
            timeout: Duration::from_millis(300),
        }
    }

    /// This replica's name, as other replicas see it in a holder.
    pub fn replica(&self) -> &str {
        &self.shared.replica
    }

    /// The longest any call to Redis may take.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// What the connection has done so far.
    pub fn stats(&self) -> RedisStats {
        self.shared.stats.snapshot()
    }

    /// Runs one call with the connection, ending it at the timeout.
    pub(crate) async fn call<T, F, Fut>(&self, what: &'static str, call: F) -> Result<T, Failure>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.shared.connection.clone();
        let stats = &self.shared.stats;
        match tokio::time::timeout(self.shared.timeout, call(connection)).await {
            Ok(Ok(value)) => {
                stats.calls.fetch_add(1, Relaxed);
                Ok(value)
            }
            Ok(Err(error)) => {
                stats.errors.fetch_add(1, Relaxed);
                tracing::warn!(call = what, %error, "redis call failed");
                Err(Failure::Error)
            }
            Err(_) => {
                stats.timeouts.fetch_add(1, Relaxed);
                tracing::warn!(
                    call = what,
                    timeout_ms = self.shared.timeout.as_millis() as u64,
                    "redis call timed out"
                );
                Err(Failure::TimedOut)
            }
        }
    }

    /// Runs `call` in the background until Redis answers it (every half
    /// second, for up to a minute): for what must reach Redis even when it
    /// is away now (undoing a lease nobody uses, an invalidation).
    pub(crate) fn until_answered<T, F, Fut>(&self, what: &'static str, call: F)
    where
        F: Fn(ConnectionManager) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = redis::RedisResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(call = what, "no runtime: not sent to redis");
            return;
        };
        let redis = self.clone();
        runtime.spawn(async move {
            for _ in 0..120 {
                if redis.call(what, &call).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            tracing::error!(call = what, "redis did not answer for a minute: given up");
        });
    }

    pub(crate) fn prefix(&self) -> &Prefix {
        &self.shared.prefix
    }

    pub(crate) fn replica_name(&self) -> Arc<str> {
        Arc::clone(&self.shared.replica)
    }

    /// Wakes the returned interest whenever another replica announces
    /// `name` on the share channel.
    pub(crate) fn interest(&self, name: &str) -> hub::Interest {
        self.shared
            .hub
            .interest(name, &self.shared.client, &self.channels())
    }

    /// Calls `listener` with every invalidation another replica publishes,
    /// for as long as it lives.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    pub(crate) fn on_invalidation(&self, listener: &Arc<hub::Listener>) {
        self.shared
            .hub
            .listen(listener, &self.shared.client, &self.channels())
    }

    fn channels(&self) -> hub::Channels {
        hub::Channels {
            flights: self.shared.prefix.flight_channel(),
            invalidations: self.shared.prefix.invalidation_channel(),
        }
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.shared.stats
    }
}

impl RedisBuilder {
    /// What every key this crate writes starts with (`tsf` by default), so
    /// that several apps, or several environments, can share one server.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// This replica's name in holders that other replicas see (the host name
    /// and process id by default).
    pub fn replica(mut self, name: impl Into<String>) -> Self {
        self.replica = Some(name.into());
        self
    }

    /// The longest any call to Redis may take, connecting included (default
    /// 300 ms). Past it the call counts as failed and the failure policy
    /// applies; no request waits longer on Redis.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The connection. It is made lazily, on the first call, and remade in
    /// the background after any error; must be called inside a Tokio
    /// runtime. Fails only on an invalid URL.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, where the connection's task cannot start.
    pub fn build(self) -> Result<Redis, redis::RedisError> {
        let client = redis::Client::open(self.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(self.timeout);
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let replica = self.replica.unwrap_or_else(default_replica);
        Ok(Redis {
            shared: Arc::new(Shared {
                connection,
                client,
                hub: Arc::default(),
                prefix: Prefix::new(&self.prefix),
                replica: replica.into(),
                timeout: self.timeout,
                stats: Counters::default(),
            }),
        })
    }
}

/// The host name (from `HOSTNAME`, as containers set it) and process id.
fn default_replica() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".to_owned());
    format!("{host}:{}", std::process::id())
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.shared.prefix)
            .field("replica", &self.shared.replica)
            .field("timeout", &self.shared.timeout)
            .finish_non_exhaustive()
    }
}

/// Why a call to Redis gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Redis answered with an error, or the connection failed.
    Error,
    /// No answer within the timeout.
    TimedOut,
}

impl Failure {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Error => "redis call failed",
            Self::TimedOut => "redis call timed out",
        }
    }
}

/// Counters of a [`Redis`] connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct RedisStats {
    /// Calls answered.
    pub calls: u64,
    /// Calls that failed: an error from Redis or a broken connection.
    pub errors: u64,
    /// Calls that got no answer within the timeout.
    pub timeouts: u64,
    /// Acquisitions refused because Redis could not be asked
    /// ([`WhenUnavailable::Refuse`]).
    pub refused: u64,
    /// Acquisitions taken in this process only because Redis could not be
    /// asked ([`WhenUnavailable::LocalLease`]).
    pub local_leases: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) local_leases: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> RedisStats {
        RedisStats {
            calls: self.calls.load(Relaxed),
            errors: self.errors.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            refused: self.refused.load(Relaxed),
            local_leases: self.local_leases.load(Relaxed),
        }
    }
}
