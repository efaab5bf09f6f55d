//! `RedisStore`: a [`LeaseStore`] every replica shares.

use std::{
    fmt,
    hash::Hash,
    marker::PhantomData,
    pin::pin,
    sync::{
        atomic::{
            AtomicUsize,
            Ordering::{Relaxed, SeqCst},
        },
        Arc,
    },
    time::Duration,
};

use serde::{de::DeserializeOwned, Serialize};
use tokio::{sync::Notify, time::Instant};

use super::{keys, scripts, Failure, Redis};
use crate::{
    flight::{
        Holder, LeaseId, LeaseStore, MemoryStore, Progress, Refused, StoreFuture, Unavailable,
    },
    time,
};

/// Leases kept in Redis, shared by every replica using the same server and
/// prefix.
///
/// - **Acquire** is one script: `SET lease token NX PX ttl` with a 128-bit
///   random token, then a fencing token from one `INCR` counter (strictly
///   increasing across replicas, see
///   [`LeaseHandle::fencing_token`](crate::flight::LeaseHandle::fencing_token)),
///   and the holder's details (since when, which replica, its progress)
///   beside the lease, so a `409` on any replica shows what the holder
///   reported on its own.
/// - **Release, renew and progress** compare the token first, in one script:
///   a holder whose lease expired can never touch its successor's.
/// - **Expiry** is Redis's own (`PX`); a crashed or hung holder's key is
///   free at its TTL. Durations are read from Redis's clock only.
/// - **The admin list** walks the prefix's leases with `SCAN` (at most
///   [`MAX_LISTED`] of them); a forced release can be made conditional on
///   the holding that was listed.
///
/// Keys are written as their JSON (`K: Serialize + DeserializeOwned`), so
/// `redis-cli --scan --pattern 'tsf:lease:*'` shows what is held.
///
/// Release runs from the guard's `Drop`, so it is sent from a spawned task;
/// a guard dropped outside a Tokio runtime leaves the key to its TTL.
/// [`Flights::shutdown`](crate::Flights::shutdown) waits for those tasks
/// ([`LeaseStore::flush`]), so that a process that exits after it leaves no
/// key held behind it.
pub struct RedisStore<K> {
    redis: Redis,
    when_unavailable: WhenUnavailable,
    /// Where leases go while Redis cannot be asked, under
    /// [`WhenUnavailable::LocalLease`].
    local: Arc<MemoryStore<K>>,
    /// The random token of every Redis lease this process holds, by fencing
    /// token: a `LeaseId` carries no token (it stays two words for the
    /// in-process store), and a lease not found here is a local one.
    tokens: Arc<Tokens>,
    /// The releases being sent in the background.
    releases: Arc<Releases>,
    key: PhantomData<fn() -> K>,
}

/// How many releases are being sent in the background, for `flush`.
#[derive(Default)]
struct Releases {
    sending: AtomicUsize,
    done: Notify,
}

/// One release being sent: counted until dropped (answered, given up, or
/// its task stopped).
struct Sending(Arc<Releases>);

impl Releases {
    fn start(self: &Arc<Self>) -> Sending {
        self.sending.fetch_add(1, SeqCst);
        Sending(Arc::clone(self))
    }

    fn is_idle(&self) -> bool {
        self.sending.load(SeqCst) == 0
    }

    async fn flushed(&self) {
        loop {
            let mut done = pin!(self.done.notified());
            done.as_mut().enable();
            if self.is_idle() {
                return;
            }
            done.await;
        }
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        if self.0.sending.fetch_sub(1, SeqCst) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

/// The random tokens of the Redis leases held in this process.
#[derive(Default)]
struct Tokens {
    by_fence: std::sync::Mutex<std::collections::HashMap<u64, Taken>>,
}

/// One Redis lease held here: its random token, and its key as written.
struct Taken {
    nonce: u128,
    key: Vec<u8>,
}

impl Tokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Taken>> {
        self.by_fence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn insert(&self, fence: u64, nonce: u128, key: Vec<u8>) {
        self.lock().insert(fence, Taken { nonce, key });
    }

    /// The token of the Redis lease `lease` on `key`, if this process holds
    /// it; `take` forgets it.
    fn nonce(&self, key: &[u8], lease: LeaseId, take: bool) -> Option<u128> {
        let mut tokens = self.lock();
        let taken = tokens
            .get(&lease.token())
            .filter(|taken| taken.key == key)?;
        let nonce = taken.nonce;
        if take {
            tokens.remove(&lease.token());
        }
        Some(nonce)
    }

    /// Whether this process holds a Redis lease on `key`.
    fn holds(&self, key: &[u8]) -> bool {
        self.lock().values().any(|taken| taken.key == key)
    }
}

/// What a [`RedisStore`] does with an acquisition when Redis cannot be asked
/// within its timeout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenUnavailable {
    /// Refuse: reject mode answers `503` with `Retry-After`, the `Flight`
    /// extractor too, and `try_acquire` gives [`Refused::Unavailable`]. No
    /// second run can start anywhere while Redis is away (fail closed).
    #[default]
    Refuse,
    /// Take a lease in this process only: the work is single-flight within
    /// the replica, not across replicas, until Redis is back (fail open).
    /// Such a lease's fencing token is this process's own.
    LocalLease,
}

/// The most leases [`RedisStore`]'s admin list returns.
pub const MAX_LISTED: usize = 1000;

/// How long a key's holder details outlive its lease, so that the next
/// holder's generation follows on.
const TOMBSTONE_MS: u64 = 600_000;

/// The longest lease Redis is asked for (about 34 years): `Duration::MAX`
/// means "never" to a table, and `PX` takes a bounded number.
const MAX_TTL_MS: u64 = 1 << 40;

impl<K> RedisStore<K> {
    /// Leases in `redis`, refusing acquisitions while it cannot be asked.
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            when_unavailable: WhenUnavailable::default(),
            local: Arc::new(MemoryStore::new()),
            tokens: Arc::default(),
            releases: Arc::default(),
            key: PhantomData,
        }
    }

    /// What to do with an acquisition when Redis cannot be asked.
    #[must_use]
    pub fn when_unavailable(mut self, policy: WhenUnavailable) -> Self {
        self.when_unavailable = policy;
        self
    }

    /// The connection.
    pub fn redis(&self) -> &Redis {
        &self.redis
    }
}

impl<K> fmt::Debug for RedisStore<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("redis", &self.redis)
            .field("when_unavailable", &self.when_unavailable)
            .finish_non_exhaustive()
    }
}

/// The names of one key's lease and holder, and the key as written.
struct Names {
    lease: Vec<u8>,
    holder: Vec<u8>,
    key: Vec<u8>,
}

impl<K: Serialize> RedisStore<K> {
    fn names(&self, key: &K) -> Option<Names> {
        let encoded = keys::encode(key)?;
        let prefix = self.redis.prefix();
        Some(Names {
            lease: prefix.lease(&encoded),
            holder: prefix.holder(&encoded),
            key: encoded,
        })
    }
}

impl<K> LeaseStore<K> for RedisStore<K>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + Send + Sync + 'static,
{
    fn acquire(&self, key: &K, ttl: Duration) -> StoreFuture<Result<LeaseId, Refused>> {
        let (Some(names), Some(nonce)) = (self.names(key), random_nonce()) else {
            return StoreFuture::ready(Err(Refused::Unavailable(Unavailable::new(
                "the key does not serialize, or no random token could be drawn",
            ))));
        };
        let redis = self.redis.clone();
        let fence = redis.prefix().fence();
        let policy = self.when_unavailable;
        let local = Arc::clone(&self.local);
        let tokens = Arc::clone(&self.tokens);
        let releases = Arc::clone(&self.releases);
        let key = key.clone();
        let replica = redis.replica_name();
        StoreFuture::pending(async move {
            let (lease, holder) = (&names.lease, &names.holder);
            let answer = redis
                .call("acquire", |mut connection| async move {
                    scripts::ACQUIRE
                        .key(lease)
                        .key(holder)
                        .key(&fence)
                        .arg(format!("{nonce:032x}"))
                        .arg(millis(ttl))
                        .arg(&*replica)
                        .arg(TOMBSTONE_MS)
                        .invoke_async::<Vec<String>>(&mut connection)
                        .await
                })
                .await;
            match answer {
                Ok(fields) => {
                    let taken = taken(&fields).ok_or_else(|| {
                        Refused::Unavailable(Unavailable::new(
                            "redis answered an unreadable holder",
                        ))
                    })?;
                    if let Ok(lease) = &taken {
                        tokens.insert(lease.token(), nonce, names.key);
                    }
                    taken
                }
                Err(failure) => {
                    // A Redis lease on the key held here stays in force:
                    // no local one beside it.
                    let held_here = tokens.holds(&names.key);
                    // The script may still run once Redis answers: undo it
                    // then, so a lease nobody uses does not sit to its TTL.
                    release_later(redis.clone(), names, nonce, releases.start());
                    if held_here {
                        return Err(Refused::Unavailable(Unavailable::new(failure.reason())));
                    }
                    unavailable(failure, policy, &redis, &local, &key, ttl).await
                }
            }
        })
    }

    fn renew(&self, key: &K, lease: LeaseId, ttl: Duration) -> StoreFuture<bool> {
        let Some(names) = self.names(key) else {
            return StoreFuture::ready(false);
        };
        let Some(nonce) = self.tokens.nonce(&names.key, lease, false) else {
            return self.local.renew(key, lease, ttl);
        };
        let redis = self.redis.clone();
        StoreFuture::pending(async move {
            redis
                .call("renew", |mut connection| async move {
                    scripts::RENEW
                        .key(&names.lease)
                        .key(&names.holder)
                        .arg(format!("{nonce:032x}"))
                        .arg(millis(ttl))
                        .arg(TOMBSTONE_MS)
                        .invoke_async::<bool>(&mut connection)
                        .await
                })
                .await
                .unwrap_or(false)
        })
    }

    fn release(&self, key: &K, lease: LeaseId) -> Option<Holder> {
        let names = self.names(key)?;
        let Some(nonce) = self.tokens.nonce(&names.key, lease, true) else {
            return self.local.release(key, lease);
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("a redis lease dropped outside a runtime is left to its TTL");
            return None;
        };
        let redis = self.redis.clone();
        let sending = self.releases.start();
        runtime.spawn(async move {
            let _sending = sending;
            let names = &names;
            let _ = redis
                .call("release", |mut connection| async move {
                    release(&mut connection, names, nonce).await
                })
                .await;
        });
        None
    }

    fn holder(&self, key: &K) -> StoreFuture<Option<Holder>> {
        let Some(names) = self.names(key) else {
            return StoreFuture::ready(None);
        };
        let redis = self.redis.clone();
        let local = Arc::clone(&self.local);
        let key = key.clone();
        StoreFuture::pending(async move {
            let fields = redis
                .call("holder", |mut connection| async move {
                    scripts::HOLDER
                        .key(&names.lease)
                        .key(&names.holder)
                        .invoke_async::<Vec<String>>(&mut connection)
                        .await
                })
                .await;
            match fields {
                Ok(fields) => holder_of(&fields),
                // What this replica holds while Redis is away.
                Err(_) => local.holder(&key).await,
            }
        })
    }

    fn set_progress(&self, key: &K, lease: LeaseId, progress: Progress) -> StoreFuture<bool> {
        let Some(names) = self.names(key) else {
            return StoreFuture::ready(false);
        };
        let Some(nonce) = self.tokens.nonce(&names.key, lease, false) else {
            return self.local.set_progress(key, lease, progress);
        };
        let Ok(json) = serde_json::to_string(&progress) else {
            return StoreFuture::ready(false);
        };
        let redis = self.redis.clone();
        StoreFuture::pending(async move {
            redis
                .call("progress", |mut connection| async move {
                    scripts::PROGRESS
                        .key(&names.lease)
                        .key(&names.holder)
                        .arg(format!("{nonce:032x}"))
                        .arg(json)
                        .invoke_async::<bool>(&mut connection)
                        .await
                })
                .await
                .unwrap_or(false)
        })
    }

    fn list(&self) -> StoreFuture<Vec<(K, Holder)>> {
        let redis = self.redis.clone();
        let local = Arc::clone(&self.local);
        StoreFuture::pending(async move {
            let listed = redis
                .call("list", |connection| list(connection, redis.clone()))
                .await;
            let mut held = listed.unwrap_or_default();
            held.extend(local.list().await);
            held
        })
    }

    fn force_release(&self, key: &K, only: Option<LeaseId>) -> StoreFuture<Option<Holder>> {
        let Some(names) = self.names(key) else {
            return StoreFuture::ready(None);
        };
        let redis = self.redis.clone();
        let local = Arc::clone(&self.local);
        let key = key.clone();
        StoreFuture::pending(async move {
            // A holding listed from this process's local leases is freed
            // there.
            let local_holder = local.holder(&key).await;
            if only.is_some() && local_holder.is_some_and(|holder| Some(holder.lease()) == only) {
                return local.force_release(&key, only).await;
            }
            let (fence, generation) = only.map_or_else(
                || (String::new(), String::new()),
                |lease| (lease.token().to_string(), lease.generation().to_string()),
            );
            redis
                .call("force_release", |mut connection| async move {
                    scripts::FORCE_RELEASE
                        .key(&names.lease)
                        .key(&names.holder)
                        .arg(fence)
                        .arg(TOMBSTONE_MS)
                        .arg(generation)
                        .invoke_async::<Vec<String>>(&mut connection)
                        .await
                })
                .await
                .ok()
                .and_then(|fields| holder_of(&fields))
        })
    }

    fn flush(&self) -> StoreFuture<()> {
        if self.releases.is_idle() {
            return StoreFuture::ready(());
        }
        let releases = Arc::clone(&self.releases);
        StoreFuture::pending(async move { releases.flushed().await })
    }
}

/// The lease taken, or the holder that has it.
fn taken(fields: &[String]) -> Option<Result<LeaseId, Refused>> {
    let (won, rest) = fields.split_first()?;
    if won == "1" {
        let fence = rest.first()?.parse().ok()?;
        let generation = rest.get(1)?.parse().ok()?;
        return Some(Ok(LeaseId::new(generation, fence)));
    }
    Some(Err(Refused::Held(holder_of(rest)?.contended())))
}

/// Releases the holding `nonce` may have taken, once Redis answers (every
/// half second, for up to a minute). Safe whatever happened: only a lease
/// holding this attempt's own random token is deleted.
fn release_later(redis: Redis, names: Names, nonce: u128, sending: Sending) {
    let names = Arc::new(names);
    redis.until_answered("release", move |mut connection| {
        // Counted for as long as the retries go on (the closure lives as
        // long as they do).
        let _ = &sending;
        let names = Arc::clone(&names);
        async move { release(&mut connection, &names, nonce).await }
    });
}

async fn release(
    connection: &mut redis::aio::ConnectionManager,
    names: &Names,
    nonce: u128,
) -> redis::RedisResult<bool> {
    scripts::RELEASE
        .key(&names.lease)
        .key(&names.holder)
        .arg(format!("{nonce:032x}"))
        .arg(TOMBSTONE_MS)
        .invoke_async(connection)
        .await
}

/// Reads a holder described by the scripts' `describe`.
fn holder_of(fields: &[String]) -> Option<Holder> {
    let [fence, generation, since, now, ttl, contended, replica, progress, _nonce] = fields else {
        return None;
    };
    let number = |text: &String| text.parse::<i64>().ok();
    let lease = LeaseId::new(generation.parse().ok()?, fence.parse().ok()?);
    let here = Instant::now();
    let running_for = millis_between(number(since)?, number(now)?);
    let since = here.checked_sub(running_for).unwrap_or(here);
    // -1: no expiry (a table's `Duration::MAX`).
    let expires_at = match number(ttl)? {
        -1 => time::after(here, Duration::MAX),
        left => time::after(here, Duration::from_millis(u64::try_from(left).ok()?)),
    };
    let mut holder = Holder::new(lease, since, expires_at);
    if contended == "1" {
        holder = holder.contended();
    }
    if !replica.is_empty() {
        holder = holder.on_replica(Arc::from(replica.as_str()));
    }
    if let Ok(progress) = serde_json::from_str::<Progress>(progress) {
        holder = holder.with_progress(progress);
    }
    Some(holder)
}

/// `to - from` milliseconds, as a duration; zero when `to` is earlier.
fn millis_between(from: i64, to: i64) -> Duration {
    Duration::from_millis(u64::try_from(to.saturating_sub(from)).unwrap_or(0))
}

/// Applies the failure policy to an acquisition Redis did not answer.
async fn unavailable<K: Hash + Eq + Clone + Send + Sync + 'static>(
    failure: Failure,
    policy: WhenUnavailable,
    redis: &Redis,
    local: &MemoryStore<K>,
    key: &K,
    ttl: Duration,
) -> Result<LeaseId, Refused> {
    match policy {
        WhenUnavailable::Refuse => {
            redis.counters().refused.fetch_add(1, Relaxed);
            Err(Refused::Unavailable(Unavailable::new(failure.reason())))
        }
        WhenUnavailable::LocalLease => {
            redis.counters().local_leases.fetch_add(1, Relaxed);
            tracing::warn!(
                reason = failure.reason(),
                "redis unavailable: lease taken in this process only"
            );
            local.acquire(key, ttl).await
        }
    }
}

/// Every lease under the prefix, with its holder, up to [`MAX_LISTED`].
async fn list<K: DeserializeOwned>(
    mut connection: redis::aio::ConnectionManager,
    redis: Redis,
) -> redis::RedisResult<Vec<(K, Holder)>> {
    let prefix = redis.prefix();
    let pattern = prefix.lease_pattern();
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut cursor = 0_u64;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(256)
            .query_async(&mut connection)
            .await?;
        names.extend(batch);
        cursor = next;
        if cursor == 0 || names.len() >= MAX_LISTED {
            break;
        }
    }
    names.sort_unstable();
    names.dedup();
    names.truncate(MAX_LISTED);
    let mut held = Vec::with_capacity(names.len());
    for name in names {
        let Some(encoded) = prefix.key_of_lease(&name) else {
            continue;
        };
        let Some(key) = keys::decode::<K>(encoded) else {
            continue;
        };
        let fields: Vec<String> = scripts::HOLDER
            .key(&name)
            .key(prefix.holder(encoded))
            .invoke_async(&mut connection)
            .await?;
        if let Some(holder) = holder_of(&fields) {
            held.push((key, holder));
        }
    }
    Ok(held)
}

/// A lease's milliseconds for `PX`: at least 1, at most [`MAX_TTL_MS`].
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MS)
}

/// 128 random bits, never zero (zero marks a lease of the local fallback).
fn random_nonce() -> Option<u128> {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(u128::from_le_bytes(bytes).max(1))
}
