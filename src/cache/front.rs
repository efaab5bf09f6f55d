//! A front for hot answers: each thread keeps the variants of the few keys
//! it serves again and again on its own stripe, so that cores serving one
//! hot key do not all go through moka's shared bookkeeping. A moka `get`
//! queues the read for its eviction policy, stores the entry's access time
//! and counts a reference on it: on two cores reading one key, each `get`
//! takes about twice as long as on one (BENCHMARKS.md, "Several cores").
//!
//! What the front answers is what moka would: a slot keeps a key's whole
//! list of variants, as moka held it, and the same first fitting variant is
//! picked from it. It is used only while nothing could have changed that
//! list: every change to a key's variants bumps its bucket's generation,
//! every invalidation the cache-wide one, each after moka has it; a slot
//! remembers both as read before the lookup that filled it, and is void
//! (and emptied) once either moved. A variant is served from it only while
//! fresh: moka drops what is past use on its own clock.
//!
//! moka still hears of the hot key: one hit in [`TOLD_EVERY`] is also read
//! there, so that its eviction policy knows the key is in use.

use std::{
    hash::Hash,
    sync::{
        atomic::{AtomicU64, Ordering::Acquire, Ordering::Release},
        Arc, Mutex,
    },
};

use tokio::time::Instant;

use super::{
    freshness::Freshness,
    response::{CachedResponse, Stored},
};
use crate::{
    flight::{stripe, stripe_count, Padded},
    key::ShareKey,
};

/// Keys kept per stripe: a thread serving a few hot keys at once keeps each.
const SLOTS: usize = 4;

/// What one slot may hold at most, whatever the cache's bound.
const MAX_KEPT_BYTES: usize = 64 * 1024;

/// One hit of a kept key in this many is read in moka too (for its
/// eviction policy: a key read only here would look unused there).
pub(crate) const TOLD_EVERY: u32 = 4;

/// Generations of key buckets: a change to a key voids the slots of the
/// keys in its bucket, no others.
const BUCKETS: usize = 1024;

pub(crate) struct Front<K> {
    stripes: Box<[Padded<Mutex<Stripe<K>>>]>,
    /// What a slot may weigh: all the slots together hold at most a
    /// sixteenth of the cache's bound.
    max_kept: usize,
    /// Bumped after every invalidation.
    everything: AtomicU64,
    /// Bumped after a key's variants change, by bucket of its hash.
    buckets: Box<[AtomicU64]>,
}

struct Stripe<K> {
    slots: [Option<Slot<K>>; SLOTS],
    /// The hash of the last key this stripe looked up.
    candidate: Option<u64>,
    /// The slot the next key takes.
    next: usize,
    /// Hits answered here, to tell moka of one in [`TOLD_EVERY`].
    hits: u32,
}

struct Slot<K> {
    hash: u64,
    /// Detached, as the cache keeps it: no request buffer is pinned here.
    key: ShareKey<K>,
    /// The key's variants as moka holds them, to pick from.
    variants: Stored,
    /// A copy of each, in the same order, to serve: its reference counts
    /// are this thread's alone (the shared answer's would be written by
    /// every core at every hit).
    copies: Box<[Arc<CachedResponse>]>,
    seen: Seen,
}

/// What the front has for a lookup.
pub(crate) enum Looked {
    /// The variant, and whether moka should hear of this hit.
    Kept(Arc<CachedResponse>, bool),
    /// Ask moka; keep its variants if there are generations to keep them at.
    Ask(Option<Seen>),
}

/// The generations a lookup read before it looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    everything: u64,
    bucket: u64,
}

impl<K: Hash + Eq + Clone> Front<K> {
    /// A front for a cache bounded to `max_bytes`.
    pub(crate) fn new(max_bytes: u64) -> Self {
        let stripe = || {
            Padded(Mutex::new(Stripe {
                slots: [const { None }; SLOTS],
                candidate: None,
                next: 0,
                hits: 0,
            }))
        };
        let stripes: Box<[_]> = (0..stripe_count()).map(|_| stripe()).collect();
        let share = usize::try_from(max_bytes / 16).unwrap_or(usize::MAX) / (stripes.len() * SLOTS);
        Self {
            stripes,
            max_kept: share.min(MAX_KEPT_BYTES),
            everything: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn bucket(&self, hash: u64) -> &AtomicU64 {
        &self.buckets[hash as usize % BUCKETS]
    }

    fn seen(&self, hash: u64) -> Seen {
        Seen {
            everything: self.everything.load(Acquire),
            bucket: self.bucket(hash).load(Acquire),
        }
    }

    /// The variant moka would pick for `key` and these request headers, if
    /// this thread keeps the key, nothing could have changed its variants
    /// since, and that variant is fresh at `now`; else whether to keep what
    /// moka answers.
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
        let stripe = &mut *stripe;
        let kept = stripe.slots.iter_mut().find(|slot| {
            slot.as_ref()
                .is_some_and(|slot| slot.hash == hash && slot.key == *key)
        });
        if let Some(kept) = kept {
            let current = kept.as_ref().filter(|slot| slot.seen == seen);
            let picked = current.map(|slot| {
                let at = slot
                    .variants
                    .iter()
                    .position(|variant| variant.fits(request));
                at.map(|at| (&slot.variants[at], &slot.copies[at]))
            });
            match picked {
                Some(Some((variant, copy))) if variant.freshness(now) == Freshness::Fresh => {
                    stripe.hits = stripe.hits.wrapping_add(1);
                    let tell = stripe.hits % TOLD_EVERY == 0;
                    if tell {
                        // Its use count too, which picks the variant that
                        // goes when a key has too many.
                        variant.used();
                    }
                    return Looked::Kept(Arc::clone(copy), tell);
                }
                // Another variant, or a stale one: moka decides.
                Some(_) => {}
                // Void: nothing is kept past its use.
                None => *kept = None,
            }
        }
        // Asked for twice in a row on this stripe: worth keeping (a hit
        // spread over many keys keeps nothing).
        let again = stripe.candidate.replace(hash) == Some(hash);
        Looked::Ask(again.then_some(seen))
    }

    /// Keeps the variants moka gave for `key`, looked up at `seen`, and a
    /// copy of each, if they are small enough.
    pub(crate) fn keep(&self, hash: u64, key: &ShareKey<K>, variants: &Stored, seen: Seen) {
        // Counted twice: the variants and their copies.
        let weight = variants
            .iter()
            .map(|variant| variant.weight().saturating_mul(2))
            .fold(0, usize::saturating_add);
        if weight > self.max_kept {
            return;
        }
        let Ok(mut stripe) = self.mine().try_lock() else {
            return;
        };
        let slot = Slot {
            hash,
            key: key.detached(),
            variants: Arc::clone(variants),
            copies: variants
                .iter()
                .map(|variant| variant.copy_for_thread())
                .collect(),
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

    /// After an invalidation took effect in moka: every slot is void, and
    /// emptied, so that nothing invalidated stays in memory. (Rare: each
    /// stripe's lock is taken once.)
    pub(crate) fn invalidated(&self) {
        self.everything.fetch_add(1, Release);
        for stripe in self.stripes.iter() {
            let mut stripe = stripe
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            stripe.slots = [const { None }; SLOTS];
        }
    }

    fn mine(&self) -> &Mutex<Stripe<K>> {
        &self.stripes[stripe() & (self.stripes.len() - 1)]
    }
}
