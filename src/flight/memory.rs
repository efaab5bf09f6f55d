//! The in-process lease store.

use std::{
    fmt,
    hash::{BuildHasher, Hash, RandomState},
    time::Duration,
};

use hashbrown::{hash_table, HashTable};
use tokio::time::Instant;

use super::{
    lease::{Holder, LeaseId, LeaseStore, Refused, StoreFuture},
    lock,
    progress::Progress,
    shards::{self, Sharded},
    sync::{Mutex, MutexGuard},
};
use crate::time;

/// Leases kept in this process, in a table sharded by the key's hash (four
/// mutex-guarded shards per core: leases on different keys rarely contend).
///
/// Expiry is lazy: an expired holding is treated as free by every call and
/// replaced by the next `acquire`, so a hung holder costs one entry, no timer.
/// A forced release is an expiry now. An expired entry stays as a tombstone
/// (so that the next holder's generation follows on) until the key is taken
/// again or, ten minutes after its expiry, a periodic sweep of its shard
/// removes it; past 4096 tombstones in all (an equal share per shard) a sweep
/// removes them all, whatever their age, so that a flood of unique keys that
/// hang or are force-released cannot grow the table. (Tokens are unique
/// store-wide: a key whose tombstone went starts again at generation 1 and no
/// old holder can touch it.)
///
/// Every call hashes its key once (SipHash, keyed per store: clients cannot
/// aim collisions at it); entries keep their hash for the table to grow.
pub struct MemoryStore<K> {
    shards: Sharded<Mutex<Shard<K>>>,
    hasher: RandomState,
    /// Each shard's share of [`SWEEP_EVERY`] and of [`MAX_TOMBSTONES`].
    sweep_every: u64,
    max_tombstones: usize,
}

struct Shard<K> {
    entries: HashTable<Entry<K>>,
    /// Its tokens are `n << TOKEN_SHARD_BITS | index`: unique store-wide
    /// without a counter every core writes.
    next: u64,
    index: u64,
}

/// Room for a shard's index in a token (at most 64 shards).
const TOKEN_SHARD_BITS: u32 = 6;

struct Entry<K> {
    key: K,
    hash: u64,
    holder: Holder,
}

/// How long an expired entry keeps the key's generation count.
const TOMBSTONE: Duration = Duration::from_secs(600);

/// Every this many acquisitions in all (each shard sweeps after its share),
/// old tombstones are swept.
const SWEEP_EVERY: u64 = 1024;

/// The most tombstones the table keeps: a shard's sweep that finds more than
/// its share of this less one sweep period's worth (each acquisition adds at
/// most one entry) removes every tombstone, young or not.
const MAX_TOMBSTONES: usize = 4096;

impl<K> MemoryStore<K> {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            shards: Sharded::new(|index| {
                Mutex::new(Shard {
                    entries: HashTable::new(),
                    next: 1,
                    index,
                })
            }),
            hasher: RandomState::new(),
            sweep_every: SWEEP_EVERY / shards::count() as u64,
            max_tombstones: MAX_TOMBSTONES / shards::count(),
        }
    }

    /// How many keys have an entry, expired or not.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).entries.len())
            .sum()
    }

    /// Whether no key has an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq> MemoryStore<K> {
    /// The key's hash and its shard, locked.
    fn shard_of(&self, key: &K) -> (u64, MutexGuard<'_, Shard<K>>) {
        let hash = self.hasher.hash_one(key);
        (hash, lock(self.shards.of(hash)))
    }

    /// Runs `f` on the key's holder (expired or not), if it has an entry.
    fn with_holder<R>(&self, key: &K, f: impl FnOnce(&mut Holder) -> R) -> Option<R> {
        let (hash, mut shard) = self.shard_of(key);
        shard
            .entries
            .find_mut(hash, |entry| entry.key == *key)
            .map(|entry| f(&mut entry.holder))
    }

    /// Replaces the key's holder by `update(holder)` if `lease` still holds
    /// it at `now`; whether it did.
    fn update_current(
        &self,
        key: &K,
        lease: LeaseId,
        now: Instant,
        update: impl FnOnce(Holder) -> Holder,
    ) -> bool {
        self.with_holder(key, |holder| {
            let current = is_current(holder, lease, now);
            if current {
                *holder = update(holder.clone());
            }
            current
        })
        .unwrap_or(false)
    }
}

/// Removes a shard's tombstones older than [`TOMBSTONE`], or all of them
/// when there are so many that another sweep period could take them past the
/// shard's share of [`MAX_TOMBSTONES`].
fn sweep<K>(entries: &mut HashTable<Entry<K>>, now: Instant, period: u64, max_tombstones: usize) {
    let expired = |entry: &Entry<K>| entry.holder.expires_at() <= now;
    let tombstones = entries.iter().filter(|entry| expired(entry)).count();
    let keep_young = tombstones + period as usize <= max_tombstones;
    entries.retain(|entry| {
        !expired(entry) || keep_young && time::after(entry.holder.expires_at(), TOMBSTONE) > now
    });
}

/// Whether `holder` is `lease`'s holding, and not expired at `now`.
fn is_current(holder: &Holder, lease: LeaseId, now: Instant) -> bool {
    holder.lease() == lease && holder.expires_at() > now
}

impl<K> Default for MemoryStore<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> fmt::Debug for MemoryStore<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.len())
            .finish()
    }
}

impl<K> LeaseStore<K> for MemoryStore<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    fn acquire(&self, key: &K, ttl: Duration) -> StoreFuture<Result<LeaseId, Refused>> {
        let now = Instant::now();
        let (hash, mut shard) = self.shard_of(key);
        let shard = &mut *shard;
        let token = shard.next << TOKEN_SHARD_BITS | shard.index;
        if shard.next % self.sweep_every == 0 {
            sweep(
                &mut shard.entries,
                now,
                self.sweep_every,
                self.max_tombstones,
            );
        }
        shard.next += 1;
        let entries = &mut shard.entries;
        let taken = |generation| {
            let lease = LeaseId::new(generation, token);
            (lease, Holder::new(lease, now, time::after(now, ttl)))
        };
        let lease = match entries.entry(hash, |entry| entry.key == *key, |entry| entry.hash) {
            hash_table::Entry::Occupied(mut occupied) => {
                let holder = &mut occupied.get_mut().holder;
                if holder.expires_at() > now {
                    if !holder.was_contended() {
                        *holder = holder.clone().contended();
                    }
                    return StoreFuture::ready(Err(Refused::Held(holder.clone())));
                }
                let (lease, next) = taken(holder.generation() + 1);
                *holder = next;
                lease
            }
            hash_table::Entry::Vacant(vacant) => {
                let (lease, holder) = taken(1);
                vacant.insert(Entry {
                    key: key.clone(),
                    hash,
                    holder,
                });
                lease
            }
        };
        StoreFuture::ready(Ok(lease))
    }

    fn renew(&self, key: &K, lease: LeaseId, ttl: Duration) -> StoreFuture<bool> {
        let now = Instant::now();
        let renewed = self.update_current(key, lease, now, |holder| {
            holder.expiring_at(time::after(now, ttl))
        });
        StoreFuture::ready(renewed)
    }

    fn release(&self, key: &K, lease: LeaseId) -> Option<Holder> {
        let now = Instant::now();
        let (hash, mut shard) = self.shard_of(key);
        let entry = shard
            .entries
            .find_entry(hash, |entry| entry.key == *key)
            .ok()?;
        let holder = &entry.get().holder;
        if is_current(holder, lease, now) {
            Some(entry.remove().0.holder)
        } else {
            None
        }
    }

    fn holder(&self, key: &K) -> StoreFuture<Option<Holder>> {
        let now = Instant::now();
        let holder = self
            .with_holder(key, |holder| {
                (holder.expires_at() > now).then(|| holder.clone())
            })
            .flatten();
        StoreFuture::ready(holder)
    }

    fn set_progress(&self, key: &K, lease: LeaseId, progress: Progress) -> StoreFuture<bool> {
        let recorded = self.update_current(key, lease, Instant::now(), |holder| {
            holder.with_progress(progress)
        });
        StoreFuture::ready(recorded)
    }

    fn list(&self) -> StoreFuture<Vec<(K, Holder)>> {
        let now = Instant::now();
        let mut held = Vec::new();
        for shard in self.shards.iter() {
            held.extend(
                lock(shard)
                    .entries
                    .iter()
                    .filter(|entry| entry.holder.expires_at() > now)
                    .map(|entry| (entry.key.clone(), entry.holder.clone())),
            );
        }
        StoreFuture::ready(held)
    }

    fn force_release(&self, key: &K, only: Option<LeaseId>) -> StoreFuture<Option<Holder>> {
        let now = Instant::now();
        let released = self.with_holder(key, |holder| {
            let named = only.is_none_or(|lease| holder.lease() == lease);
            if holder.expires_at() <= now || !named {
                return None;
            }
            // Kept, expired, so that the next holder's generation follows
            // on; the entry goes when the old guard drops or the key is
            // taken again.
            let released = holder.clone();
            *holder = holder.clone().expiring_at(now);
            Some(released)
        });
        StoreFuture::ready(released.flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    async fn acquire(
        store: &MemoryStore<&'static str>,
        key: &'static str,
    ) -> Result<LeaseId, Holder> {
        store.acquire(&key, TTL).await.map_err(|refused| {
            refused
                .into_holder()
                .expect("a memory store is always available")
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_key_reports_its_holder() {
        let store = MemoryStore::new();
        let lease = acquire(&store, "k").await.unwrap();
        let holder = acquire(&store, "k").await.unwrap_err();
        assert_eq!(holder.lease(), lease);
        assert_eq!(lease.generation(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_is_exact_to_the_millisecond() {
        let store = MemoryStore::new();
        acquire(&store, "k").await.unwrap();

        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert!(store.holder(&"k").await.is_some());
        assert!(acquire(&store, "k").await.is_err());

        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(store.holder(&"k").await.is_none());
        let taken_over = acquire(&store, "k").await.unwrap();
        assert_eq!(taken_over.generation(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_holder_cannot_release_or_renew_the_new_one() {
        let store = MemoryStore::new();
        let old = acquire(&store, "k").await.unwrap();
        tokio::time::advance(TTL + Duration::from_millis(1)).await;
        let new = acquire(&store, "k").await.unwrap();

        assert!(!store.renew(&"k", old, TTL).await);
        assert!(store.release(&"k", old).is_none());
        assert_eq!(store.holder(&"k").await.map(|h| h.lease()), Some(new));
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_never_reused_after_the_key_is_freed() {
        let store = MemoryStore::new();
        let first = acquire(&store, "k").await.unwrap();
        assert!(store.release(&"k", first).is_some());
        let second = acquire(&store, "k").await.unwrap();
        assert_eq!(second.generation(), first.generation());
        assert_ne!(second, first);

        // The first holder's late release must not free the second holding.
        assert!(store.release(&"k", first).is_none());
        assert!(store.holder(&"k").await.is_some());
        assert!(store.release(&"k", second).is_some());
        assert!(store.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_ttl_too_long_to_represent_means_no_ttl() {
        let store = MemoryStore::new();
        let lease = store.acquire(&"k", Duration::MAX).await.unwrap();
        assert!(store.renew(&"k", lease, Duration::MAX).await);
        tokio::time::advance(Duration::from_secs(86_400 * 365)).await;
        assert!(store.holder(&"k").await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_forced_release_locks_the_old_holder_out() {
        let store = MemoryStore::new();
        let old = acquire(&store, "k").await.unwrap();
        let someone_else = LeaseId::new(1, u64::MAX);
        let refused = store.force_release(&"k", Some(someone_else)).await;
        assert!(refused.is_none(), "only the holding the caller named");
        let released = store.force_release(&"k", Some(old)).await.unwrap();
        assert_eq!(released.lease(), old);
        assert!(store.holder(&"k").await.is_none());
        assert!(
            store.force_release(&"k", None).await.is_none(),
            "nothing left to release"
        );

        let new = acquire(&store, "k").await.unwrap();
        assert_eq!(new.generation(), 2, "the generation follows on");
        assert!(!store.renew(&"k", old, TTL).await);
        assert!(!store.set_progress(&"k", old, Progress::steps(1, 2)).await);
        assert!(store.release(&"k", old).is_none());
        assert_eq!(store.holder(&"k").await.map(|h| h.lease()), Some(new));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_holder_leaving_first_keeps_the_generation_count() {
        let store = MemoryStore::new();
        let forced = acquire(&store, "forced").await.unwrap();
        store.force_release(&"forced", None).await;
        assert!(
            store.release(&"forced", forced).is_none(),
            "it no longer held the key"
        );
        assert_eq!(acquire(&store, "forced").await.unwrap().generation(), 2);

        let hung = acquire(&store, "hung").await.unwrap();
        tokio::time::advance(TTL).await;
        assert!(store.release(&"hung", hung).is_none());
        assert_eq!(acquire(&store, "hung").await.unwrap().generation(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn old_tombstones_are_swept() {
        let store = MemoryStore::new();
        // Keys 1 to SWEEP_EVERY - 1 leave tombstones, young ones: kept.
        for key in 1..SWEEP_EVERY {
            let lease = store.acquire(&key, TTL).await.unwrap();
            store.force_release(&key, None).await;
            assert!(store.release(&key, lease).is_none());
        }
        tokio::time::advance(TOMBSTONE + Duration::from_secs(1)).await;
        // Each shard sweeps after its share of SWEEP_EVERY acquisitions:
        // eight rounds' worth reach every shard's turn (keys spread evenly
        // by the keyed hash; a shard missing it is beyond unlikely).
        for key in SWEEP_EVERY..SWEEP_EVERY * 9 {
            let lease = store.acquire(&key, TTL).await.unwrap();
            assert!(store.release(&key, lease).is_some());
        }
        store.acquire(&u64::MAX, TTL).await.unwrap();
        assert_eq!(store.len(), 1, "only the live holding is left");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_forced_releases_keeps_at_most_max_tombstones() {
        let store = MemoryStore::new();
        let mut live = Vec::new();
        for key in 0..10u64 {
            live.push(store.acquire(&key, TTL).await.unwrap());
        }
        for key in 10..10_010u64 {
            let lease = store.acquire(&key, TTL).await.unwrap();
            store.force_release(&key, None).await;
            // Its guard's release comes too late to free anything.
            assert!(store.release(&key, lease).is_none());
            assert!(
                store.len() <= MAX_TOMBSTONES + live.len(),
                "{}",
                store.len()
            );
        }
        assert_eq!(store.list().await.len(), live.len(), "live holders stay");
    }

    #[tokio::test(start_paused = true)]
    async fn progress_and_listing_show_only_live_holders() {
        let store = MemoryStore::new();
        let lease = acquire(&store, "k").await.unwrap();
        assert!(store.set_progress(&"k", lease, Progress::steps(3, 9)).await);
        let listed = store.list().await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].1.progress(), Some(&Progress::steps(3, 9)));

        tokio::time::advance(TTL).await;
        assert!(store.list().await.is_empty());
        assert!(!store.set_progress(&"k", lease, Progress::steps(4, 9)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn renew_extends_only_a_live_lease() {
        let store = MemoryStore::new();
        let lease = acquire(&store, "k").await.unwrap();
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert!(store.renew(&"k", lease, TTL).await);
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert!(store.holder(&"k").await.is_some());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(!store.renew(&"k", lease, TTL).await);
    }
}
