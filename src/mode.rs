//! The configuration of each mode of the layer.

use std::{fmt, sync::Arc, time::Duration};

use http::Method;

use crate::{
    flight::{CallOptions, Flights, Holder},
    identity::CallerIdentity,
    key::ShareKey,
    pass::PassList,
    rejection::{AlreadyRunning, ConflictResponse},
    shared::SharedOutcome,
};

/// Reject mode: the first request for a key runs, duplicates get `409`.
///
/// Built by [`SingleFlightLayer::reject`](crate::SingleFlightLayer::reject);
/// see there for its settings.
pub struct Reject<K> {
    pub(crate) flights: Flights<K>,
    /// `None`: every method that is not safe (`GET`, `HEAD`, `OPTIONS` and
    /// `TRACE` pass through: a probe or a CORS preflight must never take the
    /// lease of the work it asks about).
    pub(crate) methods: Option<Arc<[Method]>>,
    pub(crate) lease_ttl: Duration,
    pub(crate) retry_after: Duration,
    pub(crate) conflict: ConflictResponse,
}

impl<K> Reject<K>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    pub(crate) fn new() -> Self {
        Self {
            flights: Flights::new(),
            methods: None,
            lease_ttl: Duration::from_secs(5 * 60),
            retry_after: Duration::from_secs(1),
            conflict: ConflictResponse::default(),
        }
    }

    /// The same settings over a fresh table for another key type.
    pub(crate) fn rekey<L>(self) -> Reject<L>
    where
        L: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    {
        Reject {
            flights: Flights::new().with_name(self.flights.name()),
            methods: self.methods,
            lease_ttl: self.lease_ttl,
            retry_after: self.retry_after,
            conflict: self.conflict,
        }
    }
}

impl<K> Clone for Reject<K> {
    fn clone(&self) -> Self {
        Self {
            flights: self.flights.clone(),
            methods: self.methods.clone(),
            lease_ttl: self.lease_ttl,
            retry_after: self.retry_after,
            conflict: self.conflict.clone(),
        }
    }
}

impl<K> fmt::Debug for Reject<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reject")
            .field("methods", &self.methods)
            .field("lease_ttl", &self.lease_ttl)
            .field("retry_after", &self.retry_after)
            .field("conflict", &self.conflict)
            .finish_non_exhaustive()
    }
}

impl<K> Reject<K>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    /// The rejection for a duplicate of `key`, which `holder` holds.
    pub(crate) fn already_running(&self, key: &K, holder: &Holder) -> AlreadyRunning {
        let retry_after = self.flights.retry_after(key, holder, self.retry_after);
        AlreadyRunning::new(holder, retry_after)
    }
}

impl<K> Reject<K> {
    /// Whether requests with this method take a lease.
    pub(crate) fn guards(&self, method: &Method) -> bool {
        match &self.methods {
            Some(methods) => methods.contains(method),
            None => !method.is_safe(),
        }
    }
}

/// Share mode: the first request for a key runs, identical requests that
/// arrive meanwhile receive a copy of its response.
///
/// Built by [`SingleFlightLayer::share`](crate::SingleFlightLayer::share); see
/// there for its settings.
pub struct Share<K> {
    pub(crate) flights: Flights<ShareKey<K>, SharedOutcome>,
    pub(crate) options: CallOptions,
    pub(crate) max_body: usize,
    pub(crate) buffer_budget: Duration,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) methods: Arc<[Method]>,
    /// `None` when responses are shared across identities.
    pub(crate) identity: Option<CallerIdentity>,
    pub(crate) retry_after: Duration,
    /// Keys whose last answer could not be shared (hit-for-pass).
    pub(crate) passes: std::sync::Arc<PassList>,
    #[cfg(feature = "cache")]
    pub(crate) cache: Option<crate::cache::ResponseCache<K>>,
    /// Names each key for the cluster, when share mode spans replicas.
    #[cfg(feature = "redis")]
    pub(crate) cluster: Option<crate::redis::share::Clustered<K>>,
}

impl<K> Share<K>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    pub(crate) fn new() -> Self {
        Self {
            flights: Flights::new().hashed_by(ShareKey::digest),
            options: CallOptions::default(),
            max_body: 8 * 1024 * 1024,
            buffer_budget: Duration::from_secs(1),
            max_wait: None,
            methods: Arc::new([Method::GET, Method::HEAD]),
            identity: Some(CallerIdentity::default()),
            retry_after: Duration::from_secs(1),
            passes: std::sync::Arc::new(PassList::new(Duration::from_secs(10))),
            #[cfg(feature = "cache")]
            cache: None,
            #[cfg(feature = "redis")]
            cluster: None,
        }
    }

    /// The same settings over a fresh table for another key type.
    pub(crate) fn rekey<L>(self) -> Share<L>
    where
        L: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    {
        let name = self.flights.name();
        Share {
            flights: Flights::new()
                .hashed_by(ShareKey::digest)
                .with_name(Arc::clone(&name)),
            options: self.options,
            max_body: self.max_body,
            buffer_budget: self.buffer_budget,
            max_wait: self.max_wait,
            methods: self.methods,
            identity: self.identity,
            retry_after: self.retry_after,
            passes: std::sync::Arc::new(PassList::new(self.passes.window())),
            // A cache is keyed by the old key type: set it after the key.
            #[cfg(feature = "cache")]
            cache: self.cache.map(|cache| {
                let cache = crate::cache::ResponseCache::new(cache.config().clone());
                cache.set_name(name);
                cache
            }),
            // Set it after the key, like the cache.
            #[cfg(feature = "redis")]
            cluster: None,
        }
    }
}

impl<K> Clone for Share<K> {
    fn clone(&self) -> Self {
        Self {
            flights: self.flights.clone(),
            options: self.options.clone(),
            max_body: self.max_body,
            buffer_budget: self.buffer_budget,
            max_wait: self.max_wait,
            methods: self.methods.clone(),
            identity: self.identity.clone(),
            retry_after: self.retry_after,
            passes: std::sync::Arc::clone(&self.passes),
            #[cfg(feature = "cache")]
            cache: self.cache.clone(),
            #[cfg(feature = "redis")]
            cluster: self.cluster.clone(),
        }
    }
}

impl<K> fmt::Debug for Share<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share")
            .field("options", &self.options)
            .field("max_body", &self.max_body)
            .field("buffer_budget", &self.buffer_budget)
            .field("max_wait", &self.max_wait)
            .field("methods", &self.methods)
            .field("per_identity", &self.identity.is_some())
            .field("retry_after", &self.retry_after)
            .field("cached", &self.has_cache())
            .finish_non_exhaustive()
    }
}

impl<K> Share<K> {
    /// The targeted `Cache-Control` field (RFC 9213) its cache reads first.
    pub(crate) fn targeted(&self) -> Option<http::HeaderName> {
        #[cfg(feature = "cache")]
        return self.cache.as_ref()?.config().targeted.clone();
        #[cfg(not(feature = "cache"))]
        None
    }

    /// Whether share mode keeps a response cache.
    pub(crate) fn has_cache(&self) -> bool {
        #[cfg(feature = "cache")]
        return self.cache.is_some();
        #[cfg(not(feature = "cache"))]
        false
    }
}
