//! The response futures of the two modes.

mod lead;
pub mod reject;
pub mod share;
