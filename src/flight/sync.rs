//! The locks and atomics the flight table, the lease store and the counters
//! share between threads: `std`'s, or, in this crate's tests built with
//! `--cfg shuttle`, shuttle's, so that its model checker decides every
//! interleaving at them (see `model.rs`).
//!
//! Left on `std` under shuttle too: the shard count (a `OnceLock` read once
//! per process) and the thread's counter stripe (`shards::stripe`), process
//! statics that would outlive one explored execution and only choose where
//! a thread counts, not what it counts.

#[cfg(all(test, shuttle))]
pub(crate) use shuttle::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize},
    Mutex, MutexGuard,
};
#[cfg(not(all(test, shuttle)))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize},
    Mutex, MutexGuard,
};
