//! The response futures of the two modes.

pub mod reject;
pub mod share;
