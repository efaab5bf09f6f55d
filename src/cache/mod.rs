//! The stampede-protected read path: a moka cache in front of share mode,
//! and [`ValueCache`] for values.
//!
//! A miss goes through the same single flight as share mode: one leader
//! computes, everybody waiting gets its answer, and the answer is stored.
//! What is stored, for how long, and what is served follow RFC 9111: each
//! rule has one module.

mod age;
mod conditional;
mod config;
mod consult;
mod directives;
mod epochs;
mod freshness;
mod front;
mod resolve;
mod response;
mod status;
mod storage;
mod value;

#[cfg(test)]
mod properties;

pub use config::CacheConfig;
pub use response::{CacheStats, ResponseCache};
pub use value::{Peek, ValueCache, ValueCacheBuilder, ValueCacheStats, ValueError};

pub(crate) use conditional::Conditions;
pub(crate) use conditional::{not_modified_headers, refreshes, updated, validate};
pub(crate) use consult::Decision;
pub(crate) use epochs::Epoch;
pub(crate) use response::{CachedResponse, Storing, Target, Written};
pub(crate) use status::append as append_status;
pub(crate) use status::{Forward, Status, StatusName, StoreReport, CACHE_STATUS};
