//! The stampede-protected read path: a moka cache in front of share mode,
//! and [`ValueCache`] for values.
//!
//! A miss goes through the same single flight as share mode: one leader
//! computes, everybody waiting gets its answer, and the answer is stored.

mod config;
mod directives;
mod epochs;
mod freshness;
mod response;
mod value;

pub use config::CacheConfig;
pub use response::{CacheStats, ResponseCache};
pub use value::{Peek, ValueCache, ValueCacheBuilder, ValueCacheStats, ValueError};

pub(crate) use epochs::Epoch;
pub(crate) use freshness::Freshness;
pub(crate) use response::{CachedResponse, Counters, Lookup, Target};
