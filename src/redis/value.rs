//! A Redis tier behind a `ValueCache`'s moka: values computed on one replica
//! are found on the others, computed once in the cluster, and dropped
//! everywhere when one replica invalidates them.

use std::{fmt, future::Future, marker::PhantomData, pin::Pin, sync::Arc, time::Duration};

use serde::{de::DeserializeOwned, Serialize};

use super::{
    flight::{Name, Ticket},
    keys, scripts, Redis,
};

/// The Redis tier of a [`ValueCache`](crate::ValueCache), set with
/// [`ValueCacheBuilder::redis`](crate::cache::ValueCacheBuilder::redis).
///
/// - A local miss reads Redis before computing anything; a value computed on
///   one replica is written to both tiers.
/// - A miss in both tiers is computed once in the cluster: one replica
///   leads (a fenced lease), the others wait for its value.
/// - A stale value is refreshed once in the cluster: the refresh first looks
///   for a fresher value in Redis, then takes the same flight.
/// - [`invalidate`](crate::ValueCache::invalidate) deletes the value in
///   Redis and tells every replica to drop its local copy (pub/sub).
///
/// Values travel as JSON (`V: Serialize + DeserializeOwned`), under
/// `PREFIX:value:NAME:KEY-JSON`; their age is read from Redis's clock. While
/// Redis cannot be asked, each replica caches and computes on its own.
#[derive(Clone)]
pub struct ValueTier {
    redis: Redis,
    name: Arc<str>,
    lease: Duration,
}

impl ValueTier {
    /// The tier of the cache called `name` (two caches with different
    /// names never see each other's values).
    pub fn new(redis: Redis, name: impl Into<String>) -> Self {
        Self {
            redis,
            name: name.into().into(),
            lease: Duration::from_secs(10),
        }
    }

    /// How long a replica computing a value holds the cluster's lease
    /// without renewal (default 10 s; renewed while it computes). A replica
    /// that dies mid-computation is replaced this long after.
    #[must_use]
    pub fn leader_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
}

impl fmt::Debug for ValueTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueTier")
            .field("name", &self.name)
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a `ValueCache` asks of its remote tier; object-safe, so the cache
/// needs `Serialize` only where the tier is set.
pub(crate) trait Remote<K, V>: Send + Sync {
    /// The key's invalidation count (to give [`put`](Self::put)), and its
    /// value and age if the tier has one; `None` when Redis cannot be asked.
    fn get<'a>(&'a self, key: &'a K) -> Boxed<'a, Option<Read<V>>>;
    /// Stores `value` for `lifetime`, unless the key was invalidated since
    /// its count read `epoch`.
    fn put<'a>(
        &'a self,
        key: &'a K,
        value: &'a V,
        lifetime: Duration,
        epoch: Epoch,
    ) -> Boxed<'a, ()>;
    /// Deletes the value and tells every replica.
    fn invalidate<'a>(&'a self, key: &'a K) -> Boxed<'a, ()>;
    /// The cluster flight that computes the key.
    fn ticket(&self, key: &K) -> Option<Ticket>;
    fn encode(&self, value: &V) -> Option<Vec<u8>>;
    fn decode(&self, bytes: &[u8]) -> Option<V>;
    /// Calls `drop_local` with every key another replica invalidates, and
    /// with `None` (drop everything) when invalidations may have been missed
    /// (the subscription was lost and made again), for as long as the
    /// returned handle lives.
    fn on_invalidation(
        &self,
        drop_local: Box<dyn Fn(Option<K>) + Send + Sync>,
    ) -> Arc<dyn Send + Sync>;
}

/// What a read of the tier found: the key's invalidation count, and its
/// value and age if stored.
pub(crate) type Read<V> = (Epoch, Option<(V, Duration)>);

/// A key's invalidation count in Redis, as a computation read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Epoch(Vec<u8>);

/// The tier for one key and value type.
pub(crate) struct RemoteValues<K, V> {
    tier: ValueTier,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> RemoteValues<K, V> {
    pub(crate) fn new(tier: ValueTier) -> Self {
        Self {
            tier,
            types: PhantomData,
        }
    }

    fn redis(&self) -> &Redis {
        &self.tier.redis
    }
}

/// `Redis` milliseconds for a duration: at least 1, at most about 34 years.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, 1 << 40)
}

impl<K, V> Remote<K, V> for RemoteValues<K, V>
where
    K: Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn get<'a>(&'a self, key: &'a K) -> Boxed<'a, Option<Read<V>>> {
        Box::pin(async move {
            let key = keys::encode(key)?;
            let prefix = self.redis().prefix();
            let (name, epoch) = (
                prefix.value(&self.tier.name, &key),
                prefix.value_epoch(&self.tier.name, &key),
            );
            let found: Vec<Vec<u8>> = self
                .redis()
                .call("value get", |mut connection| async move {
                    scripts::VALUE_GET
                        .key(&name)
                        .key(&epoch)
                        .invoke_async(&mut connection)
                        .await
                })
                .await
                .ok()?;
            let (count, rest) = found.split_first()?;
            let value = match rest {
                [value, age] => (|| {
                    let age: u64 = std::str::from_utf8(age).ok()?.parse().ok()?;
                    Some((
                        serde_json::from_slice(value).ok()?,
                        Duration::from_millis(age),
                    ))
                })(),
                _ => None,
            };
            Some((Epoch(count.clone()), value))
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a K,
        value: &'a V,
        lifetime: Duration,
        epoch: Epoch,
    ) -> Boxed<'a, ()> {
        Box::pin(async move {
            let (Some(key), Ok(value)) = (keys::encode(key), serde_json::to_vec(value)) else {
                return;
            };
            let prefix = self.redis().prefix();
            let (name, count) = (
                prefix.value(&self.tier.name, &key),
                prefix.value_epoch(&self.tier.name, &key),
            );
            let _ = self
                .redis()
                .call("value put", |mut connection| async move {
                    scripts::VALUE_PUT
                        .key(&name)
                        .key(&count)
                        .arg(value)
                        .arg(millis(lifetime))
                        .arg(epoch.0)
                        .invoke_async::<i64>(&mut connection)
                        .await
                })
                .await;
        })
    }

    fn invalidate<'a>(&'a self, key: &'a K) -> Boxed<'a, ()> {
        Box::pin(async move {
            let Some(key) = keys::encode(key) else {
                return;
            };
            let prefix = self.redis().prefix();
            let (name, channel) = (
                prefix.value(&self.tier.name, &key),
                prefix.invalidation_channel(),
            );
            let epoch = prefix.value_epoch(&self.tier.name, &key);
            let mut message = self.tier.name.as_bytes().to_vec();
            message.push(b'\n');
            message.extend_from_slice(&key);
            let drop_everywhere = move |mut connection: redis::aio::ConnectionManager| {
                let (name, epoch) = (name.clone(), epoch.clone());
                let (channel, message) = (channel.clone(), message.clone());
                async move {
                    scripts::VALUE_DROP
                        .key(name)
                        .key(epoch)
                        .arg(channel)
                        .arg(message)
                        .invoke_async::<i64>(&mut connection)
                        .await
                }
            };
            // Sent again until Redis takes it: an invalidation lost to an
            // outage would let the tier serve the old value once it is back.
            let redis = self.redis();
            if redis
                .call("value invalidate", &drop_everywhere)
                .await
                .is_err()
            {
                redis.until_answered("value invalidate", drop_everywhere);
            }
        })
    }

    fn ticket(&self, key: &K) -> Option<Ticket> {
        let mut name = Name::new("value");
        name.field(self.tier.name.as_bytes())
            .field(&keys::encode(key)?);
        Some(name.ticket(&self.tier.redis, self.tier.lease))
    }

    fn encode(&self, value: &V) -> Option<Vec<u8>> {
        serde_json::to_vec(value).ok()
    }

    fn decode(&self, bytes: &[u8]) -> Option<V> {
        serde_json::from_slice(bytes).ok()
    }

    fn on_invalidation(
        &self,
        drop_local: Box<dyn Fn(Option<K>) + Send + Sync>,
    ) -> Arc<dyn Send + Sync> {
        let cache = Arc::clone(&self.tier.name);
        let listener: Arc<super::hub::Listener> = Arc::new(move |message: &[u8]| {
            // The subscription was made again: what was said meanwhile is
            // lost, so everything goes.
            if message.is_empty() {
                return drop_local(None);
            }
            let Some(at) = message.iter().position(|byte| *byte == b'\n') else {
                return;
            };
            if message[..at] != *cache.as_bytes() {
                return;
            }
            if let Some(key) = keys::decode::<K>(&message[at + 1..]) {
                drop_local(Some(key));
            }
        });
        self.redis().on_invalidation(&listener);
        Arc::new(listener)
    }
}
