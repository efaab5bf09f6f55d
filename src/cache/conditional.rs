//! Validation (RFC 9111 §4.3): the conditional request the cache sends for a
//! stale answer, the `304` that refreshes it (§3.2, §4.3.4), and a client's
//! own `If-None-Match` / `If-Modified-Since` answered from the cache
//! (RFC 9110 §13.1).

use http::{header, HeaderMap, HeaderName, HeaderValue, Method};

/// A client's conditional headers, taken off its request: the cache answers
/// them itself, so that the origin only ever sees the cache's own.
#[derive(Debug, Clone, Default)]
pub(crate) struct Conditions {
    if_none_match: Option<HeaderValue>,
    if_modified_since: Option<HeaderValue>,
}

impl Conditions {
    /// Takes a `GET`'s or `HEAD`'s `If-None-Match` and `If-Modified-Since`
    /// off `headers`.
    pub(crate) fn take(method: &Method, headers: &mut HeaderMap) -> Option<Self> {
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let if_none_match = take_joined(headers, &header::IF_NONE_MATCH);
        let if_modified_since = take_joined(headers, &header::IF_MODIFIED_SINCE);
        (if_none_match.is_some() || if_modified_since.is_some()).then_some(Self {
            if_none_match,
            if_modified_since,
        })
    }

    /// Whether `answer` is to go to the client as a `304`: it is a `2xx`
    /// (RFC 9110 §13.2.1: preconditions are evaluated only then) that has
    /// not changed for the client.
    pub(crate) fn apply_to<B>(&self, answer: &http::Response<B>) -> bool {
        answer.status().is_success() && self.not_modified(answer.headers())
    }

    /// Whether an answer with these headers has not changed for the client
    /// (a `304` for it). `If-Modified-Since` counts only without
    /// `If-None-Match` (RFC 9110 §13.2.2), and is compared with the
    /// answer's `Last-Modified`, else its `Date` (RFC 9111 §4.3.2).
    pub(crate) fn not_modified(&self, answer: &HeaderMap) -> bool {
        if let Some(tags) = &self.if_none_match {
            // `*`: any current representation, with an `ETag` or not.
            if tags.as_bytes().trim_ascii() == b"*" {
                return true;
            }
            let Some(etag) = answer.get(header::ETAG) else {
                return false;
            };
            return entity_tags(tags.as_bytes()).any(|tag| weak_eq(tag, etag.as_bytes()));
        }
        let modified = answer
            .get(header::LAST_MODIFIED)
            .or_else(|| answer.get(header::DATE));
        let (Some(since), Some(modified)) = (
            self.if_modified_since.as_ref().and_then(date),
            modified.and_then(date),
        ) else {
            return false;
        };
        modified <= since
    }
}

/// Every value of `name`, removed and joined into one list.
fn take_joined(headers: &mut HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut values = match headers.entry(name) {
        http::header::Entry::Occupied(entry) => entry.remove_entry_mult().1,
        http::header::Entry::Vacant(_) => return None,
    };
    let first = values.next()?;
    let mut joined = first.as_bytes().to_vec();
    for value in values {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(value.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

fn date(value: &HeaderValue) -> Option<std::time::SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

/// The entity tags of a list (`W/"a", "b"`), each with its `W/` if any.
/// Commas inside quotes do not split.
fn entity_tags(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = list;
    std::iter::from_fn(move || loop {
        rest = rest.trim_ascii_start();
        rest = rest.strip_prefix(b",").unwrap_or(rest).trim_ascii_start();
        if rest.is_empty() {
            return None;
        }
        let open = if rest.starts_with(b"W/\"") { 2 } else { 0 };
        if rest.get(open) != Some(&b'"') {
            // Not an entity tag: skip to the next comma.
            let next = rest
                .iter()
                .position(|byte| *byte == b',')
                .unwrap_or(rest.len());
            rest = &rest[next..];
            continue;
        }
        let close = rest[open + 1..].iter().position(|byte| *byte == b'"')?;
        let end = open + 1 + close + 1;
        let tag = &rest[..end];
        rest = &rest[end..];
        return Some(tag);
    })
}

/// Weak comparison (RFC 9110 §8.8.3.2): the opaque tags match, `W/` or not.
fn weak_eq(a: &[u8], b: &[u8]) -> bool {
    let opaque = |tag: &[u8]| -> Vec<u8> {
        let tag = tag.trim_ascii();
        tag.strip_prefix(b"W/").unwrap_or(tag).to_vec()
    };
    let b = opaque(b);
    b.first() == Some(&b'"') && opaque(a) == b
}

/// The conditional headers the cache sends to revalidate a stored answer
/// with these headers: its `ETag` and `Last-Modified` (§4.3.1).
pub(crate) fn validate(request: &mut HeaderMap, stored: &HeaderMap) {
    if let Some(etag) = stored.get(header::ETAG) {
        request.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = stored.get(header::LAST_MODIFIED) {
        request.insert(header::IF_MODIFIED_SINCE, modified.clone());
    }
}

/// Whether a `304` is about the stored answer it validated (§4.3.4): its
/// validators, where it gives them, are the stored answer's.
pub(crate) fn refreshes(not_modified: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(etag) = not_modified.get(header::ETAG) {
        return stored
            .get(header::ETAG)
            .is_some_and(|stored| weak_eq(etag.as_bytes(), stored.as_bytes()));
    }
    match (
        not_modified.get(header::LAST_MODIFIED),
        stored.get(header::LAST_MODIFIED),
    ) {
        (Some(new), Some(old)) => new == old,
        _ => true,
    }
}

/// The stored headers, updated with those of a `304` (§3.2): each field it
/// sends replaces the stored one, except `Content-Length` and the
/// connection's own fields.
pub(crate) fn updated(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let listed: Vec<&[u8]> = crate::policy::elements(not_modified, &header::CONNECTION).collect();
    let kept = |name: &HeaderName| {
        !matches!(
            name.as_str(),
            "content-length"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "te"
                | "transfer-encoding"
                | "upgrade"
                | "trailer"
        ) && !listed
            .iter()
            .any(|listed| listed.eq_ignore_ascii_case(name.as_str().as_bytes()))
    };
    let mut headers = stored.clone();
    for name in not_modified.keys().filter(|name| kept(name)) {
        headers.remove(name);
        for value in not_modified.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// The headers a `304` made from an answer keeps: those RFC 9110 §15.4.5
/// lists, and `Set-Cookie` (not representation metadata: an origin's new
/// cookie is the client's whatever the status; stored answers have none).
pub(crate) fn not_modified_headers(answer: &HeaderMap) -> HeaderMap {
    const KEPT: [HeaderName; 9] = [
        header::SET_COOKIE,
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::LAST_MODIFIED,
        header::AGE,
    ];
    let mut headers = HeaderMap::new();
    for (name, value) in answer {
        if KEPT.contains(name) || name == super::status::CACHE_STATUS {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(HeaderName, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.clone(), HeaderValue::from_static(value)))
            .collect()
    }

    #[test]
    fn if_none_match_compares_weakly_and_reads_lists() {
        let answer = map(&[(header::ETAG, "W/\"v,1\"")]);
        let asks = |tags: &'static str| Conditions {
            if_none_match: Some(HeaderValue::from_static(tags)),
            if_modified_since: None,
        };
        assert!(asks("\"v,1\"").not_modified(&answer));
        assert!(asks("\"x\", W/\"v,1\"").not_modified(&answer));
        assert!(asks("*").not_modified(&answer));
        assert!(!asks("\"v\"").not_modified(&answer));
        assert!(!asks("junk, \"v").not_modified(&answer));
        assert!(!asks("\"v,1\"").not_modified(&HeaderMap::new()));
    }

    #[test]
    fn if_modified_since_counts_only_without_if_none_match() {
        let answer = map(&[
            (header::ETAG, "\"b\""),
            (header::LAST_MODIFIED, "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        let since = Conditions {
            if_none_match: None,
            if_modified_since: Some(HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT")),
        };
        assert!(since.not_modified(&answer));
        let earlier = Conditions {
            if_none_match: None,
            if_modified_since: Some(HeaderValue::from_static("Sat, 05 Nov 1994 08:49:37 GMT")),
        };
        assert!(!earlier.not_modified(&answer));
        let both = Conditions {
            if_none_match: Some(HeaderValue::from_static("\"a\"")),
            ..since
        };
        assert!(!both.not_modified(&answer));
    }

    #[test]
    fn a_304_replaces_fields_but_not_content_length() {
        let stored = map(&[
            (header::CONTENT_LENGTH, "5"),
            (header::CACHE_CONTROL, "max-age=1"),
            (header::ETAG, "\"1\""),
            (header::CONTENT_TYPE, "text/plain"),
        ]);
        let not_modified = map(&[
            (header::CONTENT_LENGTH, "0"),
            (header::CACHE_CONTROL, "max-age=100"),
            (header::ETAG, "\"1\""),
        ]);
        assert!(refreshes(&not_modified, &stored));
        let headers = updated(&stored, &not_modified);
        assert_eq!(headers[header::CONTENT_LENGTH], "5");
        assert_eq!(headers[header::CACHE_CONTROL], "max-age=100");
        assert_eq!(headers[header::CONTENT_TYPE], "text/plain");
        let other = map(&[(header::ETAG, "\"2\"")]);
        assert!(!refreshes(&other, &stored));
    }
}
