//! Helpers of the unit tests.

use http::{HeaderMap, HeaderName, HeaderValue};

/// A header map of static names and values, in order.
pub(crate) fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| {
            (
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )
        })
        .collect()
}
