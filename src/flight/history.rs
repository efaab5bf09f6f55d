//! How long recent runs of each key took, to tell duplicates when to retry.
//! Only runs that turned a duplicate away are recorded: keys nobody
//! duplicates never need an estimate, and recording them would cost every
//! lease a second map update.

use std::{collections::HashMap, hash::Hash, time::Duration};

use super::{lock, sync::Mutex};

/// Keys remembered at most: past it, an arbitrary old key is forgotten, so the
/// history never grows with the number of keys.
const CAPACITY: usize = 4096;

/// Run durations, smoothed per key.
#[derive(Debug)]
pub(crate) struct RunHistory<K> {
    runs: Mutex<HashMap<K, Duration>>,
}

impl<K> Default for RunHistory<K> {
    fn default() -> Self {
        Self {
            runs: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> RunHistory<K> {
    /// The smoothed duration of this key's recent runs.
    pub(crate) fn typical(&self, key: &K) -> Option<Duration> {
        lock(&self.runs).get(key).copied()
    }
}

/// Records a finished run; erased over the key's bounds so that lease guards
/// carry none.
pub(crate) trait RecordRun<K>: Send + Sync {
    fn record(&self, key: &K, took: Duration);
}

impl<K: Hash + Eq + Clone + Send + Sync> RecordRun<K> for RunHistory<K> {
    fn record(&self, key: &K, took: Duration) {
        let mut runs = lock(&self.runs);
        if let Some(typical) = runs.get_mut(key) {
            // Half the last run, half the ones before: quick to follow a
            // change, steady against one odd run.
            *typical = (*typical + took) / 2;
            return;
        }
        if runs.len() >= CAPACITY {
            if let Some(old) = runs.keys().next().cloned() {
                runs.remove(&old);
            }
        }
        runs.insert(key.clone(), took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_smoothed_per_key() {
        let history = RunHistory::default();
        history.record(&"a", Duration::from_secs(4));
        history.record(&"a", Duration::from_secs(2));
        history.record(&"b", Duration::from_secs(10));
        assert_eq!(history.typical(&"a"), Some(Duration::from_secs(3)));
        assert_eq!(history.typical(&"b"), Some(Duration::from_secs(10)));
        assert_eq!(history.typical(&"c"), None);
    }

    #[test]
    fn the_history_is_bounded() {
        let history = RunHistory::default();
        for key in 0..CAPACITY * 2 {
            history.record(&key, Duration::from_secs(1));
        }
        assert_eq!(lock(&history.runs).len(), CAPACITY);
    }
}
