//! The response futures of the two modes.

mod lead;
mod leading;
pub mod reject;
pub mod share;
