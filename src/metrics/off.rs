//! Without the `metrics` feature: the same calls, on empty types, that
//! compile to nothing.

use std::sync::Arc;

use http::StatusCode;

#[cfg(feature = "cache")]
use super::CacheResult;
use super::{Name, Unkeyed};
use crate::{
    flight::{Event, Stats},
    role::{FlightRole, Source},
};

#[derive(Debug, Default)]
// A field, so that the shared code builds it with `default()` either way.
pub(crate) struct Handles(());

impl Handles {
    #[inline(always)]
    pub(crate) fn event(&self, _: &Name, _: Event) {}

    #[inline(always)]
    pub(crate) fn leases(&self, _: &Name, _: f64) {}

    #[inline(always)]
    pub(crate) fn ran(&self, _: &Name, _: tokio::time::Instant) {}
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Meter;

impl Meter {
    #[inline(always)]
    pub(crate) fn of(_: &Arc<Stats>) -> Self {
        Self
    }

    #[inline(always)]
    pub(crate) fn responded(&self, _: FlightRole, _: Source, _: StatusCode) {}

    #[inline(always)]
    pub(crate) fn unkeyed(&self, _: Unkeyed) {}

    #[inline(always)]
    pub(crate) fn waited(&self, _: Since) {}
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Since;

impl Since {
    #[inline(always)]
    pub(crate) fn now() -> Self {
        Self
    }
}

#[cfg(feature = "cache")]
#[derive(Debug, Default)]
pub(crate) struct CacheMeter(());

#[cfg(feature = "cache")]
impl CacheMeter {
    #[inline(always)]
    pub(crate) fn set_name(&self, _: Arc<str>) {}

    #[inline(always)]
    pub(crate) fn result(&self, _: CacheResult) {}
}
