//! The Redis tier behind share mode's response cache, when the layer has
//! both a cache and a cluster: answers stored on one replica are found by
//! the others, and invalidations reach every replica.
//!
//! An entry is the answer as the origin gave it, with the time it was
//! stored by Redis's clock and the invalidation counts it was stored under.
//! A replica that reads it counts the time it spent in Redis in its age (as
//! time on the way) and stores it locally by the same RFC 9111 rules as an
//! answer from the origin; an entry stored before an invalidation (of
//! everything, or of its path) is never read.

use std::{sync::Arc, time::Duration};

use super::{hub::Listener, scripts, share::Published, Redis};

/// A response read from the tier, and how long it sat there: counted in its
/// age as the time it spent on its way (RFC 9111 §4.2.3's response delay),
/// to the millisecond.
pub(crate) struct Found {
    pub(crate) response: Published,
    pub(crate) waited: Duration,
}

/// The invalidation counts a leader read before asking the origin: its
/// answer goes into the tier only if they have not moved since.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counts {
    all: Vec<u8>,
    path: Vec<u8>,
}

/// The longest an entry stays in the tier, whatever its freshness: less
/// than a path's invalidation count lives, so that no entry outlives the
/// count it was stored under.
pub(crate) const MAX_ENTRY_LIFE: Duration = Duration::from_secs(3600);

/// How long a path's invalidation count lives (two hours).
const PATH_COUNT_LIFE_MS: u64 = 7_200_000;

/// The tier, for one layer's cache.
#[derive(Clone)]
pub(crate) struct ResponseTier {
    redis: Redis,
}

/// What a replica's cache does when another replica invalidates.
pub(crate) enum Invalidated<'a> {
    /// Everything (by key, by predicate, or all).
    All,
    /// One path, on any host (a write to it).
    Path(&'a str),
}

impl ResponseTier {
    pub(crate) fn new(redis: &Redis) -> Self {
        Self {
            redis: redis.clone(),
        }
    }

    fn entry(&self, digest: &str) -> Vec<u8> {
        self.redis.prefix().response(digest, "")
    }

    fn epoch_all(&self) -> Vec<u8> {
        self.redis.prefix().response("epoch", "")
    }

    fn epoch_path(&self, path: &str) -> Vec<u8> {
        self.redis.prefix().response("path-epoch", path)
    }

    /// The invalidation counts now (to give [`put`](Self::put)), and the
    /// answer stored under the flight's `digest` if one was stored since the
    /// last invalidation of everything or of `path`.
    pub(crate) async fn get(&self, digest: &str, path: &str) -> Option<(Counts, Option<Found>)> {
        let (entry, all) = (self.entry(digest), self.epoch_all());
        let by_path = self.epoch_path(path);
        let found: Vec<Vec<u8>> = self
            .redis
            .call("response get", |mut connection| async move {
                scripts::RESPONSE_GET
                    .key(&entry)
                    .key(&all)
                    .key(&by_path)
                    .invoke_async(&mut connection)
                    .await
            })
            .await
            .ok()?;
        let (counts, rest) = found.split_at_checked(2)?;
        let counts = Counts {
            all: counts[0].clone(),
            path: counts[1].clone(),
        };
        let found = match rest {
            [answer, aged] => (|| {
                let aged: u64 = std::str::from_utf8(aged).ok()?.parse().ok()?;
                Some(Found {
                    response: Published::read(answer)?,
                    waited: Duration::from_millis(aged),
                })
            })(),
            _ => None,
        };
        Some((counts, found))
    }

    /// Stores `answer` (as encoded for the cluster), `aged` already, under
    /// the flight's `digest`, for `keep` (at most [`MAX_ENTRY_LIFE`]):
    /// unless an invalidation came since the leader read `counts`.
    pub(crate) async fn put(
        &self,
        digest: &str,
        path: &str,
        counts: Counts,
        answer: Vec<u8>,
        aged: Duration,
        keep: Duration,
    ) {
        let aged_ms = u64::try_from(aged.as_millis())
            .unwrap_or(u64::MAX)
            .min(1 << 40);
        let (entry, all, by_path) = (self.entry(digest), self.epoch_all(), self.epoch_path(path));
        let keep_ms = u64::try_from(keep.min(MAX_ENTRY_LIFE).as_millis())
            .unwrap_or(u64::MAX)
            .max(1_000);
        let _ = self
            .redis
            .call("response put", |mut connection| async move {
                scripts::RESPONSE_PUT
                    .key(&entry)
                    .key(&all)
                    .key(&by_path)
                    .arg(answer)
                    .arg(keep_ms)
                    .arg(aged_ms)
                    .arg(counts.all)
                    .arg(counts.path)
                    .invoke_async::<i64>(&mut connection)
                    .await
            })
            .await;
    }

    /// Invalidates in the tier and on every replica, in the background (and
    /// again until Redis answers).
    pub(crate) fn invalidate(&self, what: Invalidated<'_>) {
        let (epoch, message) = match what {
            Invalidated::All => (self.epoch_all(), b"response\n*".to_vec()),
            Invalidated::Path(path) => (
                self.epoch_path(path),
                [b"response\n/".as_slice(), path.as_bytes()].concat(),
            ),
        };
        let channel = self.redis.prefix().invalidation_channel();
        // Sent until Redis takes it: an invalidation lost to an outage would
        // let the tier serve what the write replaced once Redis is back.
        self.redis
            .until_answered("response invalidate", move |mut connection| {
                let (epoch, channel, message) = (epoch.clone(), channel.clone(), message.clone());
                async move {
                    scripts::RESPONSE_INVALIDATE
                        .key(epoch)
                        .arg(channel)
                        .arg(message)
                        .arg(PATH_COUNT_LIFE_MS)
                        .invoke_async::<i64>(&mut connection)
                        .await
                }
            });
    }

    /// Calls `apply` with what other replicas invalidate, for as long as the
    /// returned handle lives.
    pub(crate) fn listen(
        &self,
        apply: impl Fn(Invalidated<'_>) + Send + Sync + 'static,
    ) -> Arc<dyn Send + Sync> {
        let listener: Arc<Listener> = Arc::new(move |message: &[u8]| {
            // The subscription was made again: what was said meanwhile is
            // lost, so everything goes.
            if message.is_empty() {
                return apply(Invalidated::All);
            }
            let Some(what) = message.strip_prefix(b"response\n") else {
                return;
            };
            match what {
                b"*" => apply(Invalidated::All),
                [b'/', path @ ..] => {
                    if let Ok(path) = std::str::from_utf8(path) {
                        apply(Invalidated::Path(path));
                    }
                }
                _ => {}
            }
        });
        self.redis.on_invalidation(&listener);
        Arc::new(listener)
    }
}
