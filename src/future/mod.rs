//! The response futures of the two modes.

mod cached;
#[cfg(feature = "redis")]
mod clustered;
mod lead;
mod leading;
pub mod reject;
pub mod share;
pub(crate) mod span;

/// Takes the service `poll_ready` made ready, leaving a clone in its place:
/// for a request that calls it later, from its response future.
pub(crate) fn take_ready<S: Clone>(service: &mut S) -> S {
    let clone = service.clone();
    std::mem::replace(service, clone)
}

/// Gives up the readiness `poll_ready` took, for a request that will not call
/// the service: whatever capacity it holds (a permit) is freed at once.
pub(crate) fn release<S: Clone>(service: &mut S) {
    drop(take_ready(service));
}
