//! A front for hot answers: each thread keeps the few answers it serves
//! again and again on its own stripe, so that cores serving one hot key do
//! not all go through moka's shared bookkeeping. A moka `get` queues the read
//! for its eviction policy, stores the entry's access time and counts a
//! reference on it: on two cores reading one key, each `get` takes about
//! twice as long as on one (BENCHMARKS.md, "Several cores").
//!
//! A kept answer is served only while nothing could have replaced it: every
//! change to a key's variants bumps its bucket's generation, every
//! invalidation the cache-wide one, each after moka has it; a slot remembers
//! both as read before the lookup that filled it, and is void once either
//! moved. It is served only while fresh, and only to a request its `Vary`
//! fits: anything else goes to moka, which decides as if the front were not
//! there.

use std::{
    hash::Hash,
    sync::{
        atomic::{AtomicU64, Ordering::Acquire, Ordering::Release},
        Arc, Mutex,
    },
};

use tokio::time::Instant;

use super::{freshness::Freshness, response::CachedResponse};
use crate::{
    flight::{stripe, stripe_count, Padded},
    key::ShareKey,
};

/// Answers kept per stripe: a thread serving a few hot keys at once keeps
/// each.
const SLOTS: usize = 4;

/// Answers larger than this are not kept: what the front pins beyond the
/// cache's own bound is at most this much per slot, on every stripe.
pub(crate) const MAX_KEPT_BYTES: usize = 64 * 1024;

/// Generations of key buckets: a change to a key voids the slots of the
/// keys in its bucket, no others.
const BUCKETS: usize = 1024;

pub(crate) struct Front<K> {
    stripes: Box<[Padded<Mutex<Stripe<K>>>]>,
    /// Bumped after every invalidation.
    everything: AtomicU64,
    /// Bumped after a key's variants change, by bucket of its hash.
    buckets: Box<[AtomicU64]>,
}

struct Stripe<K> {
    slots: [Option<Slot<K>>; SLOTS],
    /// The hash of the last key this stripe looked up.
    candidate: Option<u64>,
    /// The slot the next answer takes.
    next: usize,
}

struct Slot<K> {
    hash: u64,
    key: ShareKey<K>,
    answer: Arc<CachedResponse>,
    seen: Seen,
}

/// What the front has for a lookup.
pub(crate) enum Looked {
    /// The answer, kept.
    Kept(Arc<CachedResponse>),
    /// Ask moka; keep its answer if there are generations to keep it at.
    Ask(Option<Seen>),
}

/// The generations a lookup read before it looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    everything: u64,
    bucket: u64,
}

impl<K: Hash + Eq + Clone> Front<K> {
    pub(crate) fn new() -> Self {
        let stripe = || {
            Padded(Mutex::new(Stripe {
                slots: [const { None }; SLOTS],
                candidate: None,
                next: 0,
            }))
        };
        Self {
            stripes: (0..stripe_count()).map(|_| stripe()).collect(),
            everything: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn bucket(&self, hash: u64) -> &AtomicU64 {
        &self.buckets[hash as usize % BUCKETS]
    }

    /// The generations now, for a lookup about to ask moka.
    pub(crate) fn seen(&self, hash: u64) -> Seen {
        Seen {
            everything: self.everything.load(Acquire),
            bucket: self.bucket(hash).load(Acquire),
        }
    }

    /// The answer this thread keeps for `key`, if nothing could have
    /// replaced it, it is fresh at `now` and a request with these headers
    /// may have it; else whether to keep what moka answers.
    pub(crate) fn get(
        &self,
        hash: u64,
        key: &ShareKey<K>,
        request: &http::HeaderMap,
        now: Instant,
    ) -> Looked {
        // Another thread on this stripe: moka, rather than wait.
        let Ok(mut stripe) = self.mine().try_lock() else {
            return Looked::Ask(None);
        };
        let seen = self.seen(hash);
        let kept = stripe
            .slots
            .iter()
            .flatten()
            .find(|slot| slot.hash == hash && slot.key == *key);
        if let Some(slot) = kept {
            // Fresh only: moka drops what is past use on its own clock, and
            // a copy the front kept past that would be revalidated where
            // moka would fetch anew.
            let usable = slot.seen == seen
                && slot.answer.freshness(now) == Freshness::Fresh
                && slot.answer.fits(request);
            if usable {
                return Looked::Kept(Arc::clone(&slot.answer));
            }
        }
        // Asked for twice in a row on this stripe: worth keeping (a hit
        // spread over many keys keeps nothing).
        let again = stripe.candidate.replace(hash) == Some(hash);
        Looked::Ask(again.then_some(seen))
    }

    /// Keeps an answer moka gave for `key`, looked up at `seen`, if it is
    /// small enough and fresh.
    pub(crate) fn keep(
        &self,
        hash: u64,
        key: &ShareKey<K>,
        answer: &Arc<CachedResponse>,
        seen: Seen,
        now: Instant,
    ) {
        if answer.weight() > MAX_KEPT_BYTES || answer.freshness(now) != Freshness::Fresh {
            return;
        }
        let Ok(mut stripe) = self.mine().try_lock() else {
            return;
        };
        let slot = Slot {
            hash,
            key: key.clone(),
            answer: Arc::clone(answer),
            seen,
        };
        // In place of the key's own void slot, or of the oldest.
        let stripe = &mut *stripe;
        let at = match stripe.slots.iter().position(|kept| {
            kept.as_ref()
                .is_some_and(|kept| kept.hash == hash && kept.key == *key)
        }) {
            Some(at) => at,
            None => {
                let at = stripe.next;
                stripe.next = (at + 1) % SLOTS;
                at
            }
        };
        stripe.slots[at] = Some(slot);
    }

    /// After the variants of the key hashed `hash` changed in moka.
    pub(crate) fn changed(&self, hash: u64) {
        self.bucket(hash).fetch_add(1, Release);
    }

    /// After an invalidation took effect in moka.
    pub(crate) fn invalidated(&self) {
        self.everything.fetch_add(1, Release);
    }

    fn mine(&self) -> &Mutex<Stripe<K>> {
        &self.stripes[stripe() & (self.stripes.len() - 1)]
    }
}
