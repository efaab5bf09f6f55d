//! The age of a stored response (RFC 9111 §4.2.3), from the one clock the
//! cache reads: Tokio's, with the wall time it stood for when the cache was
//! made, so that `Date` and `Expires` are compared with the same clock that
//! decides freshness (and a paused test clock moves both).

use std::{
    sync::OnceLock,
    time::{Duration, SystemTime},
};

use http::{header, HeaderMap, HeaderValue};
use tokio::time::Instant;

use super::directives::delta_seconds;

/// Wall time, read off Tokio's clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    wall: SystemTime,
    at: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            wall: SystemTime::now(),
            at: Instant::now(),
        }
    }

    /// The wall time at `instant`.
    pub(crate) fn wall(&self, instant: Instant) -> SystemTime {
        let since = instant.saturating_duration_since(self.at);
        self.wall.checked_add(since).unwrap_or(self.wall)
    }
}

/// An HTTP date header, if present and valid.
pub(crate) fn date(headers: &HeaderMap, name: &header::HeaderName) -> Option<SystemTime> {
    let value = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(value).ok()
}

/// `later - earlier`, or zero when `later` is not later.
pub(crate) fn between(earlier: SystemTime, later: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

/// The age a response had when it arrived (§4.2.3's
/// `corrected_initial_age`): what its `Age` says, plus the time the request
/// took, or what its `Date` says, whichever is more.
pub(crate) fn initial_age(
    headers: &HeaderMap,
    requested: Instant,
    received: Instant,
    clock: &Clock,
) -> Duration {
    let apparent = date(headers, &header::DATE)
        .map_or(Duration::ZERO, |date| between(date, clock.wall(received)));
    // A list-based `Age` is read by its first member (§5.1); one that is
    // not delta-seconds is not available: 0.
    let age_value = headers
        .get(header::AGE)
        .and_then(|age| age.as_bytes().split(|byte| *byte == b',').next())
        .and_then(|first| delta_seconds(first.trim_ascii()))
        .unwrap_or(Duration::ZERO);
    let delay = received.saturating_duration_since(requested);
    apparent.max(age_value.saturating_add(delay))
}

/// An `Age` value. The first [`STATIC_AGES`] seconds come from a table made
/// once, whose values borrow one static string: a hit neither allocates nor
/// writes a reference count another core reads (a shared value's count would
/// be written by every core serving the same age).
pub(crate) fn age_value(age: Duration) -> HeaderValue {
    static TABLE: OnceLock<Box<[HeaderValue]>> = OnceLock::new();
    let secs = age.as_secs();
    let table = TABLE.get_or_init(|| {
        let digits: &'static str = (0..STATIC_AGES)
            .map(|secs| secs.to_string())
            .collect::<String>()
            .leak();
        let mut at = 0;
        (0..STATIC_AGES)
            .map(|secs| {
                let len = secs.checked_ilog10().map_or(1, |log| log as usize + 1);
                at += len;
                HeaderValue::from_static(&digits[at - len..at])
            })
            .collect()
    });
    usize::try_from(secs)
        .ok()
        .and_then(|index| table.get(index))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(secs))
}

/// How many `Age` values [`age_value`] keeps made (ten minutes' worth).
const STATIC_AGES: u64 = 600;

/// A `Date` for a response that has none (RFC 9110 §6.6.1: a cache adds
/// the time it received it).
pub(crate) fn date_value(at: SystemTime) -> HeaderValue {
    let date = httpdate::fmt_http_date(at);
    HeaderValue::from_str(&date)
        .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_from_the_table_and_past_it_read_as_their_seconds() {
        for secs in [0, 1, 9, 10, 99, 100, 599, 600, 86_400, u64::MAX] {
            let value = age_value(Duration::from_secs(secs));
            assert_eq!(value.to_str().unwrap(), secs.to_string());
        }
        assert_eq!(age_value(Duration::from_millis(1999)), "1");
    }

    fn headers(pairs: &[(header::HeaderName, String)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.clone(), HeaderValue::from_str(value).unwrap()))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_origins_age_and_the_request_delay_add_up() {
        let clock = Clock::new();
        let requested = Instant::now();
        tokio::time::advance(Duration::from_secs(2)).await;
        let received = Instant::now();
        let now = httpdate::fmt_http_date(clock.wall(received));
        let aged = headers(&[(header::AGE, "7200".into()), (header::DATE, now.clone())]);
        let age = initial_age(&aged, requested, received, &clock);
        assert_eq!(age, Duration::from_secs(7202));
        // A `Date` an hour old says more than a missing `Age`.
        let hour_ago = httpdate::fmt_http_date(clock.wall(received) - Duration::from_secs(3600));
        let dated = headers(&[(header::DATE, hour_ago)]);
        let age = initial_age(&dated, requested, received, &clock);
        assert!(age >= Duration::from_secs(3599) && age <= Duration::from_secs(3601));
        // §5.1: a list-based `Age` is read by its first member.
        let listed = headers(&[(header::AGE, "7200, 0".into())]);
        let age = initial_age(&listed, requested, received, &clock);
        assert_eq!(age, Duration::from_secs(7202));
        // A `Date` in the future is not a negative age.
        let future = httpdate::fmt_http_date(clock.wall(received) + Duration::from_secs(3600));
        let ahead = headers(&[(header::DATE, future), (header::AGE, "junk".into())]);
        let age = initial_age(&ahead, requested, received, &clock);
        assert_eq!(age, Duration::from_secs(2));
    }
}
