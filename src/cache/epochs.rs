//! Which invalidations a read in flight crossed, so that it does not store
//! an answer older than a write it overlapped: counted per path, so that a
//! write to one path does not keep reads of every other path from being
//! stored.

use std::{
    hash::{BuildHasher, BuildHasherDefault, DefaultHasher},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

/// Paths are counted in this many stripes: two paths in one stripe only
/// cost a read of one of them its store, never a stale answer.
const STRIPES: usize = 64;

/// Invalidation counts: one for the whole cache (by key, by predicate, or
/// of everything) and one per stripe of paths (writes).
#[derive(Debug)]
pub(crate) struct Epochs {
    all: AtomicU64,
    paths: [AtomicU64; STRIPES],
}

impl Default for Epochs {
    fn default() -> Self {
        Self {
            all: AtomicU64::new(0),
            paths: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The counts a read saw when it looked the cache up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epoch {
    all: u64,
    stripe: usize,
    path: u64,
}

/// A fixed hash: a client that aims two paths at one stripe only keeps one
/// of its own reads from being stored.
fn stripe(path: &str) -> usize {
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(path);
    usize::try_from(hash % STRIPES as u64).unwrap_or(0)
}

impl Epochs {
    /// The counts now, for a read of `path`.
    pub(crate) fn now(&self, path: &str) -> Epoch {
        let stripe = stripe(path);
        Epoch {
            all: self.all.load(Relaxed),
            stripe,
            path: self.paths[stripe].load(Relaxed),
        }
    }

    /// Whether an invalidation that concerns the read happened since.
    pub(crate) fn crossed(&self, epoch: Epoch) -> bool {
        self.all.load(Relaxed) != epoch.all || self.paths[epoch.stripe].load(Relaxed) != epoch.path
    }

    /// Everything, or entries picked by key, were invalidated.
    pub(crate) fn bump_all(&self) {
        self.all.fetch_add(1, Relaxed);
    }

    /// A write to `path` (on any host) invalidated its answers.
    pub(crate) fn bump_path(&self, path: &str) {
        self.paths[stripe(path)].fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_to_one_path_leaves_reads_of_others_alone() {
        let epochs = Epochs::default();
        let (read, other) = (epochs.now("/a"), epochs.now("/config/x"));
        assert_ne!(read.stripe, other.stripe, "pick two paths in two stripes");
        epochs.bump_path("/config/x");
        assert!(!epochs.crossed(read));
        assert!(epochs.crossed(other));
        epochs.bump_all();
        assert!(epochs.crossed(read));
    }
}
