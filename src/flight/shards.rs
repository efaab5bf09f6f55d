//! Splitting shared state so that cores working on different keys (or
//! counting the same events) do not contend on one lock or one cache line.

use std::{
    cell::Cell,
    ops::Deref,
    sync::{
        atomic::{AtomicUsize, Ordering, Ordering::Relaxed},
        OnceLock,
    },
};

use super::sync::AtomicU64;

/// How many shards a table (or stripes a counter) has: four per core, a
/// power of two, at most 64. Enough that two cores rarely pick the same
/// shard; few enough that summing them for a snapshot stays cheap.
pub(crate) fn count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
        cores.saturating_mul(4).next_power_of_two().min(64)
    })
}

/// A value alone on its cache line (128 bytes: adjacent-line prefetch pairs
/// 64-byte lines on x86), so that writes to one shard do not slow readers
/// of its neighbour.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// `count()` values of `S`, one chosen per key by the key's hash.
pub(crate) struct Sharded<S> {
    shards: Box<[Padded<S>]>,
}

impl<S> Sharded<S> {
    /// `make(index)` for each shard's index: a shard may number what it
    /// hands out with its index, unique table-wide.
    pub(crate) fn new(make: impl FnMut(u64) -> S) -> Self {
        Self {
            shards: (0..count() as u64).map(make).map(Padded).collect(),
        }
    }

    /// The shard of a key whose (keyed) hash is `hash`. Bits 32 and up:
    /// hashbrown places entries by the low bits and tags them with the top
    /// seven, so these leave each shard's own table well spread.
    #[inline]
    pub(crate) fn of(&self, hash: u64) -> &S {
        let index = (hash >> 32) as usize & (self.shards.len() - 1);
        &self.shards[index]
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &S> {
        self.shards.iter().map(|shard| &shard.0)
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.len()
    }
}

/// `N` counters, striped: each thread adds on its own stripe (its own cache
/// line), and a read sums the stripes, so that cores counting every request
/// do not fight over one line. Every counter wraps: one taken on a stripe
/// and given back on another leaves +1 and -1, which sum to 0.
#[derive(Debug)]
pub(crate) struct Striped<const N: usize> {
    stripes: Box<[Padded<[AtomicU64; N]>]>,
}

impl<const N: usize> Default for Striped<N> {
    fn default() -> Self {
        let stripe = || Padded(std::array::from_fn(|_| AtomicU64::new(0)));
        Self {
            stripes: (0..count()).map(|_| stripe()).collect(),
        }
    }
}

impl<const N: usize> Striped<N> {
    /// This thread's stripe.
    #[inline]
    pub(crate) fn mine(&self) -> &[AtomicU64; N] {
        &self.stripes[stripe() & (self.stripes.len() - 1)]
    }

    /// Adds one to counter `index`.
    #[inline]
    pub(crate) fn add(&self, index: usize) {
        self.mine()[index].fetch_add(1, Relaxed);
    }

    /// Counter `index`, summed over the stripes.
    pub(crate) fn sum(&self, index: usize, order: Ordering) -> u64 {
        self.stripes.iter().fold(0u64, |sum, stripe| {
            sum.wrapping_add(stripe.0[index].load(order))
        })
    }

    /// Every counter, summed over the stripes.
    pub(crate) fn sums(&self) -> [u64; N] {
        let mut sums = [0u64; N];
        for stripe in self.stripes.iter() {
            for (sum, counter) in sums.iter_mut().zip(&stripe.0) {
                *sum = sum.wrapping_add(counter.load(Relaxed));
            }
        }
        sums
    }
}

/// This thread's stripe of a striped counter: threads take stripes in turn,
/// so that each core mostly writes a line no other core writes.
#[inline]
pub(crate) fn stripe() -> usize {
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(UNASSIGNED) };
    }
    STRIPE.with(|stripe| match stripe.get() {
        UNASSIGNED => assign(stripe),
        index => index,
    })
}

const UNASSIGNED: usize = usize::MAX;

#[cold]
fn assign(stripe: &Cell<usize>) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // Never UNASSIGNED: only the low bits are ever used.
    let index = NEXT.fetch_add(1, Relaxed) & (UNASSIGNED >> 1);
    stripe.set(index);
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_a_power_of_two_within_bounds() {
        let count = count();
        assert!(count.is_power_of_two());
        assert!((4..=64).contains(&count));
    }

    #[test]
    fn every_shard_is_reachable_and_hashes_pick_one_shard_each() {
        let sharded = Sharded::new(|_| 0u8);
        let mut seen = vec![false; sharded.len()];
        for high in 0..sharded.len() as u64 {
            let hash = (high << 32) | 0xdead_beef;
            let shard: *const u8 = sharded.of(hash);
            let index = sharded
                .iter()
                .position(|candidate| std::ptr::eq(candidate, shard))
                .expect("a shard of the table");
            assert_eq!(index, high as usize);
            seen[index] = true;
        }
        assert!(seen.iter().all(|seen| *seen));
    }

    #[test]
    fn shards_sit_on_separate_cache_lines() {
        assert_eq!(std::mem::align_of::<Padded<u8>>(), 128);
        let sharded = Sharded::new(|_| 0u8);
        let addresses: Vec<usize> = sharded.iter().map(|s| s as *const u8 as usize).collect();
        assert!(addresses.windows(2).all(|pair| pair[1] - pair[0] >= 128));
    }

    #[test]
    fn striped_counters_sum_what_every_thread_added() {
        let striped = std::sync::Arc::new(Striped::<2>::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let striped = std::sync::Arc::clone(&striped);
                std::thread::spawn(move || (0..1000).for_each(|_| striped.add(1)))
            })
            .collect();
        threads
            .into_iter()
            .for_each(|thread| thread.join().expect("no panic"));
        striped.add(0);
        assert_eq!(striped.sums(), [1, 4000]);
        assert_eq!(striped.sum(1, Relaxed), 4000);
    }

    #[test]
    fn a_thread_keeps_its_stripe_and_threads_take_different_ones() {
        let here = stripe();
        assert_eq!(stripe(), here);
        let there = std::thread::spawn(stripe).join().expect("no panic");
        assert_ne!(here, there);
    }
}
