//! The `Cache-Control` directives of a response (RFC 9111 §5.2.2) and of a
//! request (§5.2.1), each read in one pass.

use std::time::Duration;

use http::{header, HeaderMap, HeaderName};

use crate::policy::elements;

/// A delta-seconds directive: absent, or present with a value that is not
/// delta-seconds (which makes a response stale, §4.2.1), or a duration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Seconds {
    #[default]
    Absent,
    Invalid,
    Valid(Duration),
}

impl Seconds {
    fn read(value: Option<&[u8]>) -> Self {
        value
            .and_then(delta_seconds)
            .map_or(Self::Invalid, Self::Valid)
    }

    pub(crate) fn valid(self) -> Option<Duration> {
        match self {
            Self::Valid(seconds) => Some(seconds),
            Self::Absent | Self::Invalid => None,
        }
    }
}

/// What a response's `Cache-Control` says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    pub(crate) no_store: bool,
    /// Qualified or not: a qualified `no-cache` is read as unqualified, as
    /// §5.2.2.4 allows.
    pub(crate) no_cache: bool,
    /// Qualified or not: a shared cache stores neither (§5.2.2.7).
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) must_understand: bool,
    pub(crate) max_age: Seconds,
    pub(crate) s_maxage: Seconds,
    pub(crate) stale_while_revalidate: Seconds,
    pub(crate) stale_if_error: Seconds,
    /// Read from a targeted field (RFC 9213): `Expires` is then ignored too
    /// (§2.2).
    pub(crate) targeted: bool,
}

impl ResponseDirectives {
    /// The directives of `headers`: those of `targeted` (RFC 9213's
    /// `CDN-Cache-Control`, say) when it is set and has a valid, non-empty
    /// value, else those of `Cache-Control`.
    pub(crate) fn of(headers: &HeaderMap, targeted: Option<&HeaderName>) -> Self {
        let selected = crate::policy::directives_field(headers, targeted);
        let name = selected.unwrap_or(&header::CACHE_CONTROL);
        let mut read = Self {
            targeted: selected.is_some(),
            ..Self::default()
        };
        for directive in elements(headers, name) {
            let (name, value) = split(directive);
            let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
            if is("no-store") {
                read.no_store = true;
            } else if is("no-cache") {
                read.no_cache = true;
            } else if is("private") {
                read.private = true;
            } else if is("public") {
                read.public = true;
            } else if is("must-revalidate") {
                read.must_revalidate = true;
            } else if is("proxy-revalidate") {
                read.proxy_revalidate = true;
            } else if is("must-understand") {
                read.must_understand = true;
            } else if is("max-age") {
                read.max_age = first(read.max_age, value);
            } else if is("s-maxage") {
                read.s_maxage = first(read.s_maxage, value);
            } else if is("stale-while-revalidate") {
                read.stale_while_revalidate = first(read.stale_while_revalidate, value);
            } else if is("stale-if-error") {
                read.stale_if_error = first(read.stale_if_error, value);
            }
        }
        // The directives that restrict are looked for at every comma too,
        // quoted or not: a value that can be read two ways is read the way
        // that stores less.
        let lines = headers.get_all(name).iter();
        for directive in lines.flat_map(|line| crate::policy::at_every_comma(line.as_bytes())) {
            let name = split(directive).0;
            let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
            read.no_store |= is("no-store");
            read.no_cache |= is("no-cache");
            read.private |= is("private");
            read.must_revalidate |= is("must-revalidate");
            read.proxy_revalidate |= is("proxy-revalidate");
        }
        read
    }

    /// Whether a stale copy may never be served without validation: a
    /// shared cache reads `proxy-revalidate` and `s-maxage` as
    /// `must-revalidate` (§5.2.2.8, §5.2.2.10), and `no-cache` is stale
    /// from the start.
    pub(crate) fn forbids_stale(&self) -> bool {
        self.must_revalidate
            || self.proxy_revalidate
            || self.no_cache
            || self.s_maxage != Seconds::Absent
    }
}

/// A directive given twice is read once, the first time (a conflict is not
/// resolved in the longer lifetime's favour: §4.2.1 reads duplicates as
/// invalid, which the first invalid one already is).
fn first(read: Seconds, value: Option<&[u8]>) -> Seconds {
    match read {
        Seconds::Absent => Seconds::read(value),
        // Two values: §4.2.1 says a cache should treat it as stale.
        Seconds::Valid(_) | Seconds::Invalid => Seconds::Invalid,
    }
}

/// What a request's `Cache-Control` (or, without one, `Pragma: no-cache`,
/// §5.4) asks of the cache. Request directives are advisory (§5.2.1): the
/// cache honours them unless configured not to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RequestDirectives {
    pub(crate) no_cache: bool,
    pub(crate) no_store: bool,
    pub(crate) only_if_cached: bool,
    pub(crate) max_age: Option<Duration>,
    pub(crate) min_fresh: Option<Duration>,
    /// `Some(Duration::MAX)` for a `max-stale` without a value: any age.
    pub(crate) max_stale: Option<Duration>,
}

impl RequestDirectives {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut read = Self::default();
        let mut any = false;
        for directive in elements(headers, &header::CACHE_CONTROL) {
            any = true;
            let (name, value) = split(directive);
            let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
            let seconds = || value.and_then(delta_seconds);
            if is("no-cache") {
                read.no_cache = true;
            } else if is("no-store") {
                read.no_store = true;
            } else if is("only-if-cached") {
                read.only_if_cached = true;
            } else if is("max-age") {
                // An invalid value asks for nothing in particular.
                read.max_age = seconds().or(read.max_age);
            } else if is("min-fresh") {
                read.min_fresh = seconds().or(read.min_fresh);
            } else if is("max-stale") {
                read.max_stale = match value {
                    None => Some(Duration::MAX),
                    Some(_) => seconds().or(read.max_stale),
                };
            }
        }
        if !any {
            read.no_cache = elements(headers, &header::PRAGMA)
                .any(|element| element.eq_ignore_ascii_case(b"no-cache"));
        }
        read
    }
}

fn split(directive: &[u8]) -> (&[u8], Option<&[u8]>) {
    match directive.iter().position(|byte| *byte == b'=') {
        Some(at) => (
            directive[..at].trim_ascii(),
            Some(directive[at + 1..].trim_ascii()),
        ),
        None => (directive, None),
    }
}

/// The largest delta-seconds: RFC 9111 §1.2.2 has caches read anything
/// larger, however many digits, as 2^31 seconds (about 68 years).
const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// Delta-seconds (§1.2.2): digits only, clamped to [`MAX_DELTA_SECONDS`];
/// a sign or a fraction is not delta-seconds. Quoted digits are read as
/// digits: senders must not quote them, but §5.2 has recipients accept both
/// forms.
pub(crate) fn delta_seconds(value: &[u8]) -> Option<Duration> {
    let value = match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    };
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Saturating, so that digits past u64 clamp too instead of failing.
    let seconds = value.iter().fold(0u64, |seconds, digit| {
        seconds
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    });
    Some(Duration::from_secs(seconds.min(MAX_DELTA_SECONDS)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    fn response(cache_control: &'static str) -> ResponseDirectives {
        ResponseDirectives::of(&headers(&[("cache-control", cache_control)]), None)
    }

    #[test]
    fn invalid_max_age_values_are_invalid_not_absent() {
        for value in ["max-age=-3600", "max-age=1.5", "max-age", "max-age=\"36"] {
            assert_eq!(response(value).max_age, Seconds::Invalid, "{value}");
        }
        assert_eq!(response("public").max_age, Seconds::Absent);
        // §5.2: recipients accept the quoted form senders must not send.
        assert_eq!(
            response("max-age=\"3600\"").max_age,
            Seconds::Valid(Duration::from_secs(3600))
        );
        assert_eq!(
            response("MAX-AGE=60").max_age,
            Seconds::Valid(Duration::from_secs(60))
        );
        assert_eq!(response("max-age=5, max-age=60").max_age, Seconds::Invalid);
    }

    #[test]
    fn qualified_private_and_no_cache_are_read_as_unqualified() {
        let read = response("private=\"x-user\", no-cache=\"set-cookie\"");
        assert!(read.private && read.no_cache);
    }

    #[test]
    fn a_targeted_field_replaces_cache_control() {
        let both = headers(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=600"),
        ]);
        let cdn = HeaderName::from_static("cdn-cache-control");
        let read = ResponseDirectives::of(&both, Some(&cdn));
        assert!(!read.no_store);
        assert_eq!(read.max_age, Seconds::Valid(Duration::from_secs(600)));
        assert!(ResponseDirectives::of(&both, None).no_store);
        let only_cc = headers(&[("cache-control", "max-age=5")]);
        assert_eq!(
            ResponseDirectives::of(&only_cc, Some(&cdn)).max_age,
            Seconds::Valid(Duration::from_secs(5))
        );
    }

    #[test]
    fn request_directives_and_pragma() {
        let read = RequestDirectives::of(&headers(&[(
            "cache-control",
            "max-age=0, min-fresh=5, max-stale, only-if-cached",
        )]));
        assert_eq!(read.max_age, Some(Duration::ZERO));
        assert_eq!(read.min_fresh, Some(Duration::from_secs(5)));
        assert_eq!(read.max_stale, Some(Duration::MAX));
        assert!(read.only_if_cached && !read.no_cache);
        assert!(RequestDirectives::of(&headers(&[("pragma", "no-cache")])).no_cache);
        let both = headers(&[("pragma", "no-cache"), ("cache-control", "max-stale=9")]);
        assert!(!RequestDirectives::of(&both).no_cache);
    }

    #[test]
    fn delta_seconds_clamp_at_2_pow_31() {
        let clamped = Some(Duration::from_secs(1 << 31));
        assert_eq!(delta_seconds(b"2147483648"), clamped);
        assert_eq!(delta_seconds(b"18446744073709551615"), clamped);
        assert_eq!(delta_seconds(b"99999999999999999999999999"), clamped);
        assert_eq!(
            delta_seconds(b"2147483647"),
            Some(Duration::from_secs((1 << 31) - 1))
        );
        assert_eq!(delta_seconds(b"\"5\""), Some(Duration::from_secs(5)));
        for invalid in [&b"+5"[..], b"-5", b"", b"\"", b"\"\"", b"1.5"] {
            assert_eq!(delta_seconds(invalid), None);
        }
    }
}
