//! Hit-for-pass: keys whose last answer could not be shared pass straight
//! through for a while, instead of each burst queueing behind a leader and
//! then running its own requests anyway.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Mutex, PoisonError,
    },
    time::Duration,
};

use tokio::time::Instant;

use crate::time;

/// Keys remembered at most. Past it, expired marks go first, then any.
const CAPACITY: usize = 4096;

/// Marks by key hash (the flights table's keyed hash): small whatever the
/// keys, and a collision only makes a key pass through (uncoalesced) for a
/// while, never answer wrongly.
#[derive(Debug)]
pub(crate) struct PassList {
    until: Mutex<HashMap<u64, Instant>>,
    /// How many marks there are, read without the lock: most tables have
    /// none, and then a request pays nothing.
    marks: AtomicUsize,
    window: Duration,
}

impl PassList {
    /// Marks last `window`; `Duration::MAX` means for ever, zero never.
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            until: Mutex::new(HashMap::new()),
            marks: AtomicUsize::new(0),
            window,
        }
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// Whether the key with this hash passes through now.
    pub(crate) fn passes(&self, hash: u64) -> bool {
        if self.marks.load(Relaxed) == 0 {
            return false;
        }
        let mut until = self.lock();
        match until.get(&hash) {
            Some(until) if Instant::now() < *until => true,
            Some(_) => {
                until.remove(&hash);
                self.marks.store(until.len(), Relaxed);
                false
            }
            None => false,
        }
    }

    /// Makes the key with this hash pass through for the window.
    pub(crate) fn mark(&self, hash: u64) {
        if self.window.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut until = self.lock();
        if until.len() >= CAPACITY {
            until.retain(|_, until| *until > now);
            if until.len() >= CAPACITY {
                if let Some(any) = until.keys().next().copied() {
                    until.remove(&any);
                }
            }
        }
        until.insert(hash, time::after(now, self.window));
        self.marks.store(until.len(), Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        self.until.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_mark_lasts_its_window() {
        let passes = PassList::new(Duration::from_secs(10));
        assert!(!passes.passes(1));
        passes.mark(1);
        assert!(passes.passes(1));
        assert!(!passes.passes(2));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!passes.passes(1));
        assert_eq!(passes.marks.load(Relaxed), 0, "the expired mark is gone");
    }

    #[tokio::test(start_paused = true)]
    async fn marks_are_bounded() {
        let passes = PassList::new(Duration::from_secs(10));
        for key in 0..CAPACITY * 2 {
            passes.mark(key as u64);
        }
        assert_eq!(passes.lock().len(), CAPACITY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_window_disables_it() {
        let passes = PassList::new(Duration::ZERO);
        passes.mark(1);
        assert!(!passes.passes(1));
    }
}
