//! The lease guard: holding a key is owning this value.

use std::{fmt, sync::Arc, time::Duration};

use super::{
    lease::{LeaseId, LeaseStore, StoreFuture},
    stats::Stats,
};

/// Proof that the caller holds a key; dropping it frees the key.
///
/// Release happens in `Drop`, so completion, an error, a panic and the owning
/// task being cancelled all free the key. The guard is `Send + 'static` when
/// `K` is: move it into a spawned task to hold the key for as long as that
/// task runs.
///
/// A guard whose lease has expired (or was renewed by nobody) is stale: its
/// drop does nothing to whoever holds the key now.
pub struct LeaseGuard<K: 'static> {
    store: Arc<dyn LeaseStore<K>>,
    stats: Arc<Stats>,
    key: K,
    lease: LeaseId,
}

impl<K: 'static> LeaseGuard<K> {
    pub(crate) fn new(
        store: Arc<dyn LeaseStore<K>>,
        stats: Arc<Stats>,
        key: K,
        lease: LeaseId,
    ) -> Self {
        stats.lease_taken();
        tracing::debug!(generation = lease.generation(), "lease acquired");
        Self {
            store,
            stats,
            key,
            lease,
        }
    }

    /// The key this guard holds.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// This holding's id.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// Extends the lease to `ttl` from now. Resolves to `false` when this
    /// guard no longer holds the key (expired, force-released, taken over).
    pub fn renew(&self, ttl: Duration) -> StoreFuture<bool> {
        self.store.renew(&self.key, self.lease, ttl)
    }

    /// Resolves to whether this guard is still the key's current holder.
    pub async fn is_current(&self) -> bool {
        self.store
            .holder(&self.key)
            .await
            .is_some_and(|holder| holder.lease() == self.lease)
    }
}

impl<K: 'static> Drop for LeaseGuard<K> {
    fn drop(&mut self) {
        self.store.release(&self.key, self.lease);
        self.stats.lease_dropped();
        tracing::debug!(generation = self.lease.generation(), "lease released");
    }
}

impl<K: 'static> fmt::Debug for LeaseGuard<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}
