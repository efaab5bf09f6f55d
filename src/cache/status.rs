//! `Cache-Status` (RFC 9211): what the cache did with each request, in the
//! answer itself.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The `Cache-Status` field.
pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// This cache's name in `Cache-Status`, and its member for a fresh hit,
/// written once: a hit only clones it.
#[derive(Debug, Clone)]
pub(crate) struct StatusName {
    pub(crate) name: HeaderValue,
    fresh_hit: HeaderValue,
}

impl StatusName {
    pub(crate) fn new(name: HeaderValue) -> Self {
        let mut fresh_hit = name.as_bytes().to_vec();
        fresh_hit.extend_from_slice(b"; hit");
        let fresh_hit = HeaderValue::from_maybe_shared(bytes::Bytes::from(fresh_hit))
            .unwrap_or_else(|_| name.clone());
        Self { name, fresh_hit }
    }

    /// Gives a stored copy this cache's member for a fresh hit, last, so
    /// that a hit serves it as it is: a header added to a served copy would
    /// grow (reallocate) its cloned map on every hit.
    pub(crate) fn reserve(&self, headers: &mut HeaderMap) {
        headers.append(CACHE_STATUS, self.fresh_hit.clone());
    }

    /// Takes the member [`reserve`](Self::reserve) gave a stored copy (its
    /// last) off headers made from it, to be shared with waiters that each
    /// get their own. By place, not by value: a cache nearer the origin may
    /// bear the same name.
    pub(crate) fn unreserve(headers: &mut HeaderMap) {
        let http::header::Entry::Occupied(entry) = headers.entry(CACHE_STATUS) else {
            return;
        };
        let (_, values) = entry.remove_entry_mult();
        let mut values: Vec<HeaderValue> = values.collect();
        values.pop();
        for value in values {
            headers.append(CACHE_STATUS, value);
        }
    }

    /// Sets the member of a copy served from the cache, in the place
    /// [`reserve`](Self::reserve) kept: `hit` when fresh (as reserved; its
    /// `Age` tells how fresh), `hit; ttl=-N` when stale.
    pub(crate) fn hit(&self, headers: &mut HeaderMap, ttl: i64) {
        if ttl > 0 {
            return;
        }
        let mut stale = HeaderMap::new();
        append(&mut stale, &self.name, Status::Hit { ttl });
        let Some(stale) = stale.remove(CACHE_STATUS) else {
            return;
        };
        if let http::header::Entry::Occupied(mut entry) = headers.entry(CACHE_STATUS) {
            if let Some(last) = entry.iter_mut().next_back() {
                *last = stale;
            }
        }
    }
}

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
    /// Answered from the cache stale; `ttl` is the freshness left, negative.
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

/// The largest integer a structured field holds (RFC 8941 §3.3.1: 15
/// digits).
const MAX_SF_INTEGER: i64 = 999_999_999_999_999;

/// Seconds of freshness left: `lifetime - age`, negative when stale, within
/// what a structured field's integer holds.
pub(crate) fn ttl(lifetime: Duration, age: Duration) -> i64 {
    let seconds = |duration: Duration| {
        i64::try_from(duration.as_secs())
            .map_or(MAX_SF_INTEGER, |seconds| seconds.min(MAX_SF_INTEGER))
    };
    if lifetime >= age {
        seconds(lifetime - age)
    } else {
        -seconds(age - lifetime)
    }
}

/// Adds this cache's member after those of the caches nearer the origin
/// (RFC 9211 §2: the field lists caches from the origin's side).
pub(crate) fn append(headers: &mut HeaderMap, name: &HeaderValue, status: Status) {
    // Written into one buffer with `itoa`: on every cache hit, so without
    // `fmt` and with a single allocation (the header value's).
    let mut member = Member::default();
    member.push(name.as_bytes());
    match status {
        Status::Hit { ttl } => {
            member.push(b"; hit; ttl=");
            member.push(itoa::Buffer::new().format(ttl).as_bytes());
        }
        Status::Forwarded {
            why,
            origin_status,
            stored,
            collapsed,
        } => {
            member.push(b"; fwd=");
            member.push(why.as_str().as_bytes());
            if let Some(status) = origin_status {
                member.push(b"; fwd-status=");
                member.push(itoa::Buffer::new().format(status).as_bytes());
            }
            if let Some(ttl) = stored {
                member.push(b"; stored; ttl=");
                member.push(itoa::Buffer::new().format(ttl).as_bytes());
            }
            if collapsed {
                member.push(b"; collapsed");
            }
        }
    }
    if let Ok(value) = HeaderValue::from_bytes(member.as_bytes()) {
        headers.append(CACHE_STATUS, value);
    }
}

/// A member being written, on the stack: its capacity holds every member
/// (names are at most 64 characters, quoted at most 130 bytes).
struct Member {
    bytes: [u8; 256],
    len: usize,
}

impl Default for Member {
    fn default() -> Self {
        Self {
            bytes: [0; 256],
            len: 0,
        }
    }
}

impl Member {
    fn push(&mut self, more: &[u8]) {
        let room = self.bytes.len() - self.len;
        let taken = more.len().min(room);
        self.bytes[self.len..self.len + taken].copy_from_slice(&more[..taken]);
        self.len += taken;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A cache's name as RFC 9211 takes it: a token if it is one, else a quoted
/// string (printable ASCII, `"` and `\` escaped); at most 64 characters.
pub(crate) fn identifier(name: &str) -> HeaderValue {
    let name = match name.char_indices().nth(64) {
        Some((cut, _)) => &name[..cut],
        None => name,
    };
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
        let long = identifier(&"\"".repeat(500));
        assert_eq!(long.len(), 2 + 2 * 64);
        let mut headers = HeaderMap::new();
        let stored = Status::Forwarded {
            why: Forward::VaryMiss,
            origin_status: Some(304),
            stored: Some(i64::MIN),
            collapsed: true,
        };
        append(&mut headers, &long, stored);
        assert!(headers[CACHE_STATUS]
            .to_str()
            .unwrap()
            .ends_with("; collapsed"));
    }

    #[test]
    fn a_stored_copy_keeps_its_member_in_place() {
        let name = StatusName::new(identifier("edge"));
        let mut stored = HeaderMap::new();
        stored.append(
            CACHE_STATUS,
            HeaderValue::from_static("origin; fwd=uri-miss"),
        );
        name.reserve(&mut stored);
        let members = |headers: &HeaderMap| -> Vec<String> {
            let values = headers.get_all(CACHE_STATUS).iter();
            values
                .map(|value| value.to_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(members(&stored), ["origin; fwd=uri-miss", "edge; hit"]);
        let mut fresh = stored.clone();
        name.hit(&mut fresh, 30);
        assert_eq!(members(&fresh), ["origin; fwd=uri-miss", "edge; hit"]);
        let mut stale = stored.clone();
        name.hit(&mut stale, -7);
        assert_eq!(
            members(&stale),
            ["origin; fwd=uri-miss", "edge; hit; ttl=-7"]
        );
        StatusName::unreserve(&mut stored);
        assert_eq!(members(&stored), ["origin; fwd=uri-miss"]);
    }

    #[test]
    fn ttl_is_negative_when_stale() {
        let s = Duration::from_secs;
        assert_eq!(ttl(s(60), s(10)), 50);
        assert_eq!(ttl(s(60), s(75)), -15);
        assert_eq!(ttl(Duration::MAX, s(0)), 999_999_999_999_999);
        assert_eq!(ttl(s(0), Duration::MAX), -999_999_999_999_999);
    }
}
