//! `Cache-Status` (RFC 9211): what the cache did with each request, in the
//! answer itself.

use std::{fmt::Write, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue};

/// The `Cache-Status` field.
pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Why a request went forward to the origin (RFC 9211 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forward {
    /// Nothing stored for the request's target.
    UriMiss,
    /// Something stored, but for other values of the headers it varies on.
    VaryMiss,
    /// Something stored, but stale: validated, or fetched again.
    Stale,
    /// The request's own directives (`no-cache`, `max-age`...) sent it on.
    Request,
}

impl Forward {
    fn as_str(self) -> &'static str {
        match self {
            Self::UriMiss => "uri-miss",
            Self::VaryMiss => "vary-miss",
            Self::Stale => "stale",
            Self::Request => "request",
        }
    }
}

/// One cache's member of the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Answered from the cache; `ttl` is the freshness left, negative when
    /// stale.
    Hit { ttl: i64 },
    /// Went forward.
    Forwarded {
        why: Forward,
        /// The origin's status, when it differs from the answer's (a `304`
        /// that refreshed a stored answer).
        origin_status: Option<u16>,
        /// The freshness the stored answer got, if it was stored.
        stored: Option<i64>,
        /// Waited for another request's trip to the origin.
        collapsed: bool,
    },
}

/// What the leader's store did with a shared answer, carried in its
/// extensions to every waiter's `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoreReport {
    /// The freshness it was stored with; `None` if not stored.
    pub(crate) ttl: Option<i64>,
    /// The origin's status when it was not the answer's (`304`).
    pub(crate) origin_status: Option<u16>,
}

/// Seconds of freshness left: `lifetime - age`, negative when stale.
pub(crate) fn ttl(lifetime: Duration, age: Duration) -> i64 {
    let seconds = |duration: Duration| i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
    if lifetime >= age {
        seconds(lifetime - age)
    } else {
        -seconds(age - lifetime)
    }
}

/// Adds this cache's member after those of the caches nearer the origin
/// (RFC 9211 §2: the field lists caches from the origin's side).
pub(crate) fn append(headers: &mut HeaderMap, name: &HeaderValue, status: Status) {
    let mut member = String::with_capacity(name.len() + 40);
    // The name is a token or a quoted string: ASCII, checked when set.
    member.push_str(name.to_str().unwrap_or("cache"));
    match status {
        Status::Hit { ttl } => {
            let _ = write!(member, "; hit; ttl={ttl}");
        }
        Status::Forwarded {
            why,
            origin_status,
            stored,
            collapsed,
        } => {
            let _ = write!(member, "; fwd={}", why.as_str());
            if let Some(status) = origin_status {
                let _ = write!(member, "; fwd-status={status}");
            }
            if let Some(ttl) = stored {
                let _ = write!(member, "; stored; ttl={ttl}");
            }
            if collapsed {
                member.push_str("; collapsed");
            }
        }
    }
    if let Ok(value) = HeaderValue::try_from(member) {
        headers.append(CACHE_STATUS, value);
    }
}

/// A cache's name as RFC 9211 takes it: a token if it is one, else a quoted
/// string (printable ASCII, `"` and `\` escaped).
pub(crate) fn identifier(name: &str) -> HeaderValue {
    let token = name.bytes().enumerate().all(|(at, byte)| {
        byte.is_ascii_alphabetic()
            || byte == b'*'
            || (at > 0 && (byte.is_ascii_digit() || b":/!#$%&'+-.^_`|~".contains(&byte)))
    });
    let text = if token && !name.is_empty() {
        name.to_owned()
    } else {
        let mut quoted = String::from("\"");
        for character in name
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
        {
            if character == '"' || character == '\\' {
                quoted.push('\\');
            }
            quoted.push(character);
        }
        quoted.push('"');
        quoted
    };
    HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("tower-singleflight"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_appended_after_the_origins_side() {
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_STATUS, HeaderValue::from_static("origin-cdn; hit"));
        let name = identifier("edge");
        append(&mut headers, &name, Status::Hit { ttl: -3 });
        let stored = Status::Forwarded {
            why: Forward::Stale,
            origin_status: Some(304),
            stored: Some(60),
            collapsed: true,
        };
        append(&mut headers, &name, stored);
        let members: Vec<_> = headers.get_all(CACHE_STATUS).iter().collect();
        assert_eq!(members[0], "origin-cdn; hit");
        assert_eq!(members[1], "edge; hit; ttl=-3");
        assert_eq!(
            members[2],
            "edge; fwd=stale; fwd-status=304; stored; ttl=60; collapsed"
        );
    }

    #[test]
    fn names_that_are_not_tokens_are_quoted() {
        assert_eq!(identifier("edge-1.example"), "edge-1.example");
        assert_eq!(identifier("my \"cache\""), "\"my \\\"cache\\\"\"");
        assert_eq!(identifier("1st"), "\"1st\"");
        assert_eq!(identifier("caf\u{e9}\r\n"), "\"caf\"");
    }

    #[test]
    fn ttl_is_negative_when_stale() {
        let s = Duration::from_secs;
        assert_eq!(ttl(s(60), s(10)), 50);
        assert_eq!(ttl(s(60), s(75)), -15);
        assert_eq!(ttl(Duration::MAX, s(0)), i64::MAX);
    }
}
