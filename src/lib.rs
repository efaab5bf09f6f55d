//! tower-singleflight
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod buffer;
mod flight;
mod future;
pub mod key;
mod layer;
mod mode;
mod policy;
mod rejection;
mod role;
mod service;
mod shared;

pub use body::ResponseBody;
pub use flight::{
    Acquire, CallOptions, FlightError, FlightStats, Flights, Holder, Joined, Leader, LeaseGuard,
    LeaseId, LeaseStore, MemoryStore, Outcome, Overloaded, StoreFuture, Waiter,
};
pub use future::{reject, share};
pub use layer::SingleFlightLayer;
pub use mode::{Reject, Share};
pub use rejection::AlreadyRunning;
pub use role::{FlightRole, ROLE_HEADER};
pub use service::SingleFlight;
