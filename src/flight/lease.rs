//! Leases: who holds a key, and the store that remembers it.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Instant;

use super::progress::Progress;

/// Names one holding of a key.
///
/// The `generation` counts holdings of the same key while its entry lives (the
/// first holder is 1, whoever takes over an expired lease gets 2, ...). The
/// `token` is unique across the whole store and never reused, so a holder whose
/// lease expired can never release or renew whatever holds the key after it,
/// even when the key was freed and taken again in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId {
    generation: u64,
    token: u64,
}

impl LeaseId {
    /// Builds a lease id; for [`LeaseStore`] implementations.
    pub fn new(generation: u64, token: u64) -> Self {
        Self { generation, token }
    }

    /// How many times this key was held in a row, this holding included.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The store-wide unique fencing token of this holding: strictly greater
    /// than every token the store gave before (across replicas, for a store
    /// shared between them), so the resource the work writes to can refuse a
    /// writer whose lease has passed on (see
    /// [`LeaseHandle::fencing_token`](super::LeaseHandle::fencing_token)).
    pub fn token(&self) -> u64 {
        self.token
    }
}

/// What a store knows of the current holder of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    lease: LeaseId,
    since: Instant,
    expires_at: Instant,
    contended: bool,
    /// Progress and replica, in one shared box: a holder is copied for
    /// every duplicate it turns away, and moved on every acquisition, so it
    /// stays small (no call to `memcpy`, one check when dropped).
    details: Option<std::sync::Arc<Details>>,
}

/// What a holder reported, and where it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Details {
    progress: Option<Progress>,
    replica: Option<std::sync::Arc<str>>,
}

impl Holder {
    /// Describes a holding; for [`LeaseStore`] implementations.
    pub fn new(lease: LeaseId, since: Instant, expires_at: Instant) -> Self {
        Self {
            lease,
            since,
            expires_at,
            contended: false,
            details: None,
        }
    }

    /// The same holding with its details changed by `change`.
    fn with_details(mut self, change: impl FnOnce(&mut Details)) -> Self {
        let mut details = self
            .details
            .take()
            .map(std::sync::Arc::unwrap_or_clone)
            .unwrap_or_default();
        change(&mut details);
        self.details = Some(std::sync::Arc::new(details));
        self
    }

    /// The same holding, taken by the replica called `name` (for a store
    /// shared between replicas).
    #[must_use]
    pub fn on_replica(self, name: std::sync::Arc<str>) -> Self {
        self.with_details(|details| details.replica = Some(name))
    }

    /// The replica that holds the key, for a store shared between replicas.
    pub fn replica(&self) -> Option<&str> {
        self.details.as_ref()?.replica.as_deref()
    }

    /// The same holding, having turned a duplicate away.
    #[must_use]
    pub fn contended(mut self) -> Self {
        self.contended = true;
        self
    }

    /// Whether a duplicate was turned away while it held the key: only such
    /// runs inform when duplicates are told to retry.
    pub fn was_contended(&self) -> bool {
        self.contended
    }

    /// The same holding, having reported `progress`.
    #[must_use]
    pub fn with_progress(self, progress: Progress) -> Self {
        self.with_details(|details| details.progress = Some(progress))
    }

    /// The same holding, its lease now ending at `expires_at`.
    #[must_use]
    pub fn expiring_at(mut self, expires_at: Instant) -> Self {
        self.expires_at = expires_at;
        self
    }

    /// What the holder last reported of its work.
    pub fn progress(&self) -> Option<&Progress> {
        self.details.as_ref()?.progress.as_ref()
    }

    /// The holding this describes.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// The holding's generation, see [`LeaseId::generation`].
    pub fn generation(&self) -> u64 {
        self.lease.generation
    }

    /// When the holder acquired the key.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// When the lease ends unless it is renewed or released first.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// How long the holder has held the key.
    pub fn running_for(&self) -> Duration {
        self.since.elapsed()
    }

    /// How long until the lease ends, unless renewed or released first.
    pub fn expires_in(&self) -> Duration {
        self.expires_at.saturating_duration_since(Instant::now())
    }
}

/// Why a key was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refused {
    /// Someone holds the key: answer "already running".
    Held(Holder),
    /// The store could not be asked in time (a remote store that is down or
    /// slow) and its policy is to refuse rather than risk a second run, or
    /// the table is shutting down ([`Unavailable::is_shutting_down`]):
    /// answer `503 Service Unavailable`.
    Unavailable(Unavailable),
}

impl Refused {
    /// The holder, when the key is held.
    pub fn holder(&self) -> Option<&Holder> {
        match self {
            Self::Held(holder) => Some(holder),
            Self::Unavailable(_) => None,
        }
    }

    /// The holder, when the key is held.
    pub fn into_holder(self) -> Option<Holder> {
        match self {
            Self::Held(holder) => Some(holder),
            Self::Unavailable(_) => None,
        }
    }
}

impl From<Holder> for Refused {
    fn from(holder: Holder) -> Self {
        Self::Held(holder)
    }
}

/// The key was not taken, and not because someone holds it: a lease store
/// that could not answer in time, or a table that is shutting down
/// ([`Flights::shutdown`](super::Flights::shutdown)). Either way, the answer
/// is "not now": `503 Service Unavailable` with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    reason: &'static str,
    shutting_down: bool,
}

impl Unavailable {
    /// Names why the store could not answer (for logs and the `503` body).
    pub fn new(reason: &'static str) -> Self {
        Self {
            reason,
            shutting_down: false,
        }
    }

    /// Refused because the table is shutting down.
    pub(crate) fn shutting_down() -> Self {
        Self {
            reason: "the table is shutting down",
            shutting_down: true,
        }
    }

    /// Why the key was not taken.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// Whether it was refused because the table is shutting down (rather
    /// than because the store could not be asked).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.shutting_down {
            write!(f, "refused: {}", self.reason)
        } else {
            write!(f, "lease store unavailable: {}", self.reason)
        }
    }
}

impl std::error::Error for Unavailable {}

/// Whether work runs for a key, as [`Flights::status`](super::Flights::status)
/// tells it: never `Running` once the holder released the key or its lease
/// ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlightStatus {
    /// The key is held.
    Running {
        /// When the holder acquired the key.
        since: Instant,
        /// What the holder last reported.
        progress: Option<Progress>,
        /// The holding's generation.
        generation: u64,
    },
    /// Nobody holds the key.
    Idle,
}

impl From<Option<Holder>> for FlightStatus {
    fn from(holder: Option<Holder>) -> Self {
        match holder {
            Some(holder) => Self::Running {
                since: holder.since,
                generation: holder.generation(),
                progress: holder.progress().cloned(),
            },
            None => Self::Idle,
        }
    }
}

/// Where a [`Flights`](super::Flights) table keeps its leases.
///
/// The default is the in-process [`MemoryStore`](super::MemoryStore). A store
/// shared between processes (Redis, a database) implements this trait and is
/// passed to [`Flights::with_store`](super::Flights::with_store); nothing in
/// the HTTP layer changes.
///
/// Every method that may need a round trip returns a [`StoreFuture`], which an
/// in-process store makes [`ready`](StoreFuture::ready) at no cost.
///
/// # Contract
///
/// - `acquire` succeeds when the key is free or its lease has expired, and
///   gives every success a `token` never given before.
/// - `release` and `renew` act only when the stored holding has the same
///   `token`; anything else is a stale holder and is ignored.
/// - A holding that turned a duplicate away is marked
///   [`contended`](Holder::contended).
/// - An expired holding is never reported as held.
///
/// A caller that stops waiting for `acquire` cannot tell the store: a remote
/// store that took the key for it anyway holds it until its TTL. Keep remote
/// TTLs short and [renew](super::LeaseHandle::renew) long work.
pub trait LeaseStore<K>: Send + Sync + 'static {
    /// Takes the key for `ttl`, or reports who holds it (or, for a remote
    /// store whose policy is to fail closed, that it could not be asked).
    fn acquire(&self, key: &K, ttl: Duration) -> StoreFuture<Result<LeaseId, Refused>>;

    /// Extends a holding to `ttl` from now; `false` when `lease` is no longer
    /// the current holding (expired, released, or taken over).
    fn renew(&self, key: &K, lease: LeaseId, ttl: Duration) -> StoreFuture<bool>;

    /// Frees the key if `lease` still holds it, and returns the holding it
    /// freed; `None` for a stale holding (expired, force-released, taken
    /// over), whose entry the store may keep so that the next generation
    /// follows on.
    ///
    /// Called from `Drop`, so it must not block: a remote store sends the
    /// release from a spawned task and answers `None` (unknown).
    fn release(&self, key: &K, lease: LeaseId) -> Option<Holder>;

    /// The current, unexpired holder of the key.
    fn holder(&self, key: &K) -> StoreFuture<Option<Holder>>;

    /// Records the holder's progress, if `lease` still holds the key.
    fn set_progress(&self, key: &K, lease: LeaseId, progress: Progress) -> StoreFuture<bool>;

    /// Every key held now, with its holder.
    fn list(&self) -> StoreFuture<Vec<(K, Holder)>>;

    /// Ends the current holding of the key at once and returns it; with
    /// `only`, only if that is the holding. The old holder's guard is stale
    /// from then on: its renewals fail and its drop frees nothing; the next
    /// holder's generation follows on from the released one.
    fn force_release(&self, key: &K, only: Option<LeaseId>) -> StoreFuture<Option<Holder>>;

    /// Resolves once the releases this store sends in the background
    /// (from [`release`](Self::release)) have been answered or given up:
    /// [`Flights::shutdown`](super::Flights::shutdown) awaits it, so that the
    /// keys its jobs held are free for the next process. The default
    /// resolves at once: for a store whose `release` is done when it
    /// returns, as [`MemoryStore`](super::MemoryStore)'s is.
    fn flush(&self) -> StoreFuture<()> {
        StoreFuture::ready(())
    }
}

/// A shared store is a store: keep an `Arc` to look at it while a table uses it.
impl<K, S: LeaseStore<K>> LeaseStore<K> for std::sync::Arc<S> {
    fn acquire(&self, key: &K, ttl: Duration) -> StoreFuture<Result<LeaseId, Refused>> {
        (**self).acquire(key, ttl)
    }

    fn renew(&self, key: &K, lease: LeaseId, ttl: Duration) -> StoreFuture<bool> {
        (**self).renew(key, lease, ttl)
    }

    fn release(&self, key: &K, lease: LeaseId) -> Option<Holder> {
        (**self).release(key, lease)
    }

    fn holder(&self, key: &K) -> StoreFuture<Option<Holder>> {
        (**self).holder(key)
    }

    fn set_progress(&self, key: &K, lease: LeaseId, progress: Progress) -> StoreFuture<bool> {
        (**self).set_progress(key, lease, progress)
    }

    fn list(&self) -> StoreFuture<Vec<(K, Holder)>> {
        (**self).list()
    }

    fn force_release(&self, key: &K, only: Option<LeaseId>) -> StoreFuture<Option<Holder>> {
        (**self).force_release(key, only)
    }

    fn flush(&self) -> StoreFuture<()> {
        (**self).flush()
    }
}

/// The answer of a [`LeaseStore`]: ready at once, or boxed for a store that
/// has to wait. Await it: a remote store acts only when it is polled.
#[must_use = "a store acts when its answer is awaited"]
pub struct StoreFuture<T> {
    repr: Repr<T>,
}

enum Repr<T> {
    Ready(Option<T>),
    Pending(Pin<Box<dyn Future<Output = T> + Send>>),
}

impl<T> StoreFuture<T> {
    /// An answer known now; allocates nothing.
    pub fn ready(value: T) -> Self {
        Self {
            repr: Repr::Ready(Some(value)),
        }
    }

    /// An answer that takes a round trip.
    pub fn pending(future: impl Future<Output = T> + Send + 'static) -> Self {
        Self {
            repr: Repr::Pending(Box::pin(future)),
        }
    }

    /// Takes the answer if it is already known, so callers can skip a state.
    pub(crate) fn take_ready(&mut self) -> Option<T> {
        match &mut self.repr {
            Repr::Ready(value) => value.take(),
            Repr::Pending(_) => None,
        }
    }
}

impl<T> Unpin for StoreFuture<T> {}

impl<T> Future for StoreFuture<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut self.get_mut().repr {
            Repr::Ready(value) => {
                Poll::Ready(value.take().expect("StoreFuture polled after it completed"))
            }
            Repr::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl<T> fmt::Debug for StoreFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.repr {
            Repr::Ready(Some(_)) => "ready",
            Repr::Ready(None) => "done",
            Repr::Pending(_) => "pending",
        };
        f.debug_tuple("StoreFuture").field(&state).finish()
    }
}
