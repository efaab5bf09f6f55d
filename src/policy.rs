//! Whether one caller's response may be handed to another.

use std::fmt;

use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};

/// Why a response was not shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unshareable {
    SetCookie,
    NoStore,
    /// `Cache-Control: private` for a key that is not per identity, or for an
    /// anonymous caller.
    Private,
    /// `Vary: *`, or a `Vary` that cannot be read.
    VaryAll,
    /// An informational, partial or not-modified answer: it answers the
    /// leader's request only.
    Status,
    TooLarge,
    /// `text/event-stream`: a stream, never buffered.
    Stream,
    /// The body did not arrive whole within the buffering budget.
    Slow,
    BodyFailed,
    /// The origin's `304` is about another representation than the one the
    /// cache revalidated (RFC 9111 §4.3.4): no answer to share, and no
    /// failure of the origin either (no stale copy stands in).
    OtherRepresentation,
    ServiceError,
    /// A `5xx` that could not be shared: a failure all the same.
    ServerError,
    /// Nobody but the leader waited: its response went to it, unbuffered.
    Alone,
}

impl Unshareable {
    /// Whether the inner service failed to answer at all (an error, a body
    /// that broke off), rather than answered something unshareable.
    pub(crate) fn is_call_failure(self) -> bool {
        matches!(
            self,
            Self::ServiceError | Self::BodyFailed | Self::OtherRepresentation
        )
    }

    /// Whether the origin failed (rather than answered something private).
    pub(crate) fn is_failure(self) -> bool {
        matches!(
            self,
            Self::ServiceError | Self::BodyFailed | Self::ServerError
        )
    }
}

impl fmt::Display for Unshareable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SetCookie => "response sets a cookie",
            Self::NoStore => "response is no-store",
            Self::Private => "response is private",
            Self::VaryAll => "response varies on everything",
            Self::Status => "response status answers the leader alone",
            Self::TooLarge => "response body exceeds the buffer cap",
            Self::Stream => "response is an event stream",
            Self::Slow => "response body took longer than the buffering budget",
            Self::BodyFailed => "response body failed",
            Self::OtherRepresentation => "not modified, but another representation",
            Self::ServiceError => "inner service failed",
            Self::ServerError => "server error not shareable",
            Self::Alone => "nobody else waited",
        })
    }
}

/// Whether a request header asks for an answer of the request's own:
/// conditional and range requests get answers (`304`, `206`) that are
/// theirs alone, and an upgrade is a connection of its own. Such requests
/// are not coalesced.
pub(crate) fn asks_own_answer(name: &HeaderName) -> bool {
    const OWN_ANSWER: [HeaderName; 5] = [
        header::RANGE,
        header::IF_RANGE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::UPGRADE,
    ];
    OWN_ANSWER.contains(name)
}

/// Whether a request header makes a `GET` conditional on the validators
/// of a cached answer: a cache answers it itself; without a cache, the
/// request is not coalesced (its answer may be a `304`, its own).
pub(crate) fn is_validation(name: &HeaderName) -> bool {
    name == header::IF_NONE_MATCH || name == header::IF_MODIFIED_SINCE
}

/// Checks a response head before its body is read.
///
/// `private_ok` is true when the flight's waiters are known to be one caller:
/// the key is per identity and the identity is not anonymous. `targeted`: a
/// field (RFC 9213's `CDN-Cache-Control`) read instead of `Cache-Control`
/// when the response has it.
pub(crate) fn check(
    status: StatusCode,
    headers: &HeaderMap,
    private_ok: bool,
    targeted: Option<&HeaderName>,
) -> Result<(), Unshareable> {
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Err(Unshareable::Status);
    }
    // One pass over the response's headers (a handful), rather than a hashed
    // lookup for each name; the reasons keep their precedence.
    let mut found = Found::default();
    let directives = directives_field(headers, targeted).unwrap_or(&header::CACHE_CONTROL);
    for (name, value) in headers {
        if *name == header::SET_COOKIE {
            found.set_cookie = true;
        } else if name == directives && found.cache_control.is_none() {
            // The first directive that forbids sharing gives the reason.
            // Read at every comma, quoted or not: a value that can be read
            // two ways is read the way that shares less.
            for directive in at_every_comma(value.as_bytes()) {
                let name = directive
                    .split(|byte| *byte == b'=')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii();
                if name.eq_ignore_ascii_case(b"no-store") {
                    found.cache_control = Some(Unshareable::NoStore);
                } else if name.eq_ignore_ascii_case(b"private") && !private_ok {
                    found.cache_control = Some(Unshareable::Private);
                }
                if found.cache_control.is_some() {
                    break;
                }
            }
        } else if *name == header::CONTENT_TYPE {
            found.stream |= is_event_stream(value);
        } else if *name == header::VARY {
            // `*`, or any name that cannot be checked against each follower.
            let unknowable = |name: &[u8]| name == b"*" || HeaderName::from_bytes(name).is_err();
            found.vary_all |= value_elements(value).any(unknowable);
        }
    }
    if found.stream {
        Err(Unshareable::Stream)
    } else if found.set_cookie {
        Err(Unshareable::SetCookie)
    } else if let Some(reason) = found.cache_control {
        Err(reason)
    } else if found.vary_all {
        Err(Unshareable::VaryAll)
    } else {
        Ok(())
    }
}

/// The targeted field (RFC 9213) whose directives replace `Cache-Control`'s
/// for a response: when it has one that is a valid, non-empty Structured
/// Field Dictionary (an empty or invalid one is ignored, §2.1). `None`: read
/// `Cache-Control`.
#[inline]
pub(crate) fn directives_field<'a>(
    headers: &HeaderMap,
    targeted: Option<&'a HeaderName>,
) -> Option<&'a HeaderName> {
    // Without a targeted field configured: one check, inlined.
    let targeted = targeted?;
    let lines = headers.get_all(targeted).iter().map(HeaderValue::as_bytes);
    crate::structured::is_dictionary(lines).then_some(targeted)
}

/// What [`check`] found in a response's headers.
#[derive(Default)]
struct Found {
    set_cookie: bool,
    /// `no-store`, or `private` where it may not be shared.
    cache_control: Option<Unshareable>,
    vary_all: bool,
    stream: bool,
}

/// Whether a `Content-Type` is `text/event-stream` (parameters aside).
fn is_event_stream(value: &HeaderValue) -> bool {
    let essence = value
        .as_bytes()
        .split(|byte| *byte == b';')
        .next()
        .unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"text/event-stream")
}

/// Checks a response's trailers, which may say what its headers could:
/// `Set-Cookie`, `Cache-Control: no-store` or `private`.
pub(crate) fn check_trailers(
    trailers: &HeaderMap,
    private_ok: bool,
    targeted: Option<&HeaderName>,
) -> Result<(), Unshareable> {
    check(StatusCode::OK, trailers, private_ok, targeted)
}

/// The leader's request headers, kept for the `Vary` of its response: a flat
/// copy (one allocation, no index), as only the few names a `Vary` gives are
/// ever looked up in it.
#[derive(Debug, Default)]
pub(crate) struct LeaderHeaders(Vec<(HeaderName, HeaderValue)>);

impl LeaderHeaders {
    pub(crate) fn of(request: &HeaderMap) -> Self {
        let copy = request
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()));
        Self(copy.collect())
    }

    /// The values of `name`, in the request's order.
    fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a HeaderValue> {
        self.0
            .iter()
            .filter(move |(each, _)| each == name)
            .map(|(_, value)| value)
    }
}

/// The leader's values of the request headers a response varies on. A
/// follower may take the response only if its own values are the same.
/// The values are copies: they outlive the leader's request.
#[derive(Debug, Default, Clone)]
pub(crate) struct Vary {
    headers: Vec<(HeaderName, Vec<HeaderValue>)>,
}

impl Vary {
    pub(crate) fn new(response: &HeaderMap, leader_request: &LeaderHeaders) -> Self {
        let headers = elements(response, &header::VARY)
            .filter_map(|name| HeaderName::from_bytes(name).ok())
            .map(|name| {
                let values = leader_request
                    .get_all(&name)
                    .map(|value| {
                        HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone())
                    })
                    .collect();
                (name, values)
            })
            .collect();
        Self { headers }
    }

    /// The bytes it keeps.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.headers
            .iter()
            .map(|(name, values)| {
                name.as_str().len()
                    + values.iter().map(|value| value.len() + 48).sum::<usize>()
                    + 48
            })
            .sum()
    }

    /// Whether a request with these headers gets the same answer: the values
    /// of each named header are the same, or the same once normalized (RFC
    /// 9111 §4.1: lists compared element by element, whitespace aside, and
    /// case aside for the `Accept` family).
    pub(crate) fn matches(&self, request: &HeaderMap) -> bool {
        self.headers.iter().all(|(name, values)| {
            let sent = request.get_all(name);
            // An absent field matches only where it is absent (§4.1), even
            // against an empty one.
            let present = sent.iter().next().is_some();
            present != values.is_empty()
                && (sent.iter().eq(values.iter()) || same_list(name, sent.iter(), values.iter()))
        })
    }

    /// Whether two answers are variants for the same request values.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    pub(crate) fn same_as(&self, other: &Vary) -> bool {
        self.headers.len() == other.headers.len()
            && self
                .headers
                .iter()
                .zip(&other.headers)
                .all(|(mine, theirs)| {
                    mine.0 == theirs.0 && same_list(&mine.0, mine.1.iter(), theirs.1.iter())
                })
    }
}

/// Whether two sets of values of `name` hold the same list elements.
fn same_list<'a>(
    name: &HeaderName,
    a: impl Iterator<Item = &'a HeaderValue>,
    b: impl Iterator<Item = &'a HeaderValue>,
) -> bool {
    let caseless = name.as_str().starts_with("accept");
    let mut a = a.flat_map(value_elements);
    let mut b = b.flat_map(value_elements);
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x == y || (caseless && x.eq_ignore_ascii_case(y)) => {}
            _ => return false,
        }
    }
}

/// The comma-separated elements of every value of a list header, as bytes:
/// a value that is not UTF-8 is read all the same, never skipped.
pub(crate) fn elements<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = &'a [u8]> {
    headers.get_all(name).iter().flat_map(value_elements)
}

/// The elements of a list value split at every comma, quotes or not,
/// trimmed: how restrictive directives are looked for, so that a quoted
/// string (well-formed or not) cannot hide a `no-store`.
pub(crate) fn at_every_comma(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|byte| *byte == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|element| !element.is_empty())
}

/// The comma-separated elements of one header value, trimmed: a comma in
/// a quoted string (`ext="a, b"`) does not end one (RFC 9110 §5.6.4). A
/// quote never closed quotes nothing: from it on, every comma ends an
/// element, so that a broken value cannot hide the directives after it
/// (`ext=", no-store`). Each byte is looked at twice at most, whatever the
/// value (a client sends these).
fn value_elements(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    let bytes = value.as_bytes();
    let unclosed = unclosed_quote(bytes);
    let mut start = 0;
    std::iter::from_fn(move || loop {
        if start > bytes.len() {
            return None;
        }
        let (mut at, mut quoted, mut escaped) = (start, false, false);
        while let Some(byte) = bytes.get(at) {
            #[cfg(test)]
            tests::SCANNED.with(|scanned| scanned.set(scanned.get() + 1));
            match byte {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' if unclosed.is_none_or(|open| at < open) => quoted = !quoted,
                b',' if !quoted => break,
                _ => {}
            }
            at += 1;
        }
        let element = bytes[start..at].trim_ascii();
        start = at + 1;
        if !element.is_empty() {
            return Some(element);
        }
    })
}

/// Where the quote that opens and is never closed is, if one is.
fn unclosed_quote(bytes: &[u8]) -> Option<usize> {
    let (mut open, mut escaped) = (None, false);
    for (at, byte) in bytes.iter().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if open.is_some() => escaped = true,
            b'"' => open = if open.is_some() { None } else { Some(at) },
            _ => {}
        }
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    fn check(headers: &HeaderMap, private_ok: bool) -> Result<(), Unshareable> {
        super::check(StatusCode::OK, headers, private_ok, None)
    }

    #[test]
    fn plain_responses_are_shareable() {
        let plain = headers(&[("cache-control", "public, max-age=60"), ("vary", "accept")]);
        assert_eq!(check(&plain, false), Ok(()));
    }

    #[test]
    fn answers_to_the_leader_alone_are_not_shared() {
        for status in [
            StatusCode::SWITCHING_PROTOCOLS,
            StatusCode::PARTIAL_CONTENT,
            StatusCode::NOT_MODIFIED,
        ] {
            assert_eq!(
                super::check(status, &HeaderMap::new(), true, None),
                Err(Unshareable::Status)
            );
        }
    }

    #[test]
    fn a_directive_is_found_in_a_value_that_is_not_utf8() {
        let mut odd = HeaderMap::new();
        odd.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_bytes(b"no-store, ext=\"\xe9\"").unwrap(),
        );
        assert_eq!(check(&odd, true), Err(Unshareable::NoStore));
        let mut vary = HeaderMap::new();
        vary.insert(
            header::VARY,
            HeaderValue::from_bytes(b"accept, \xe9").unwrap(),
        );
        assert_eq!(check(&vary, true), Err(Unshareable::VaryAll));
    }

    #[test]
    fn conditional_range_and_upgrade_requests_are_not_coalesced() {
        assert!(!asks_own_answer(&header::ACCEPT));
        for name in ["range", "if-range", "if-match", "upgrade"] {
            assert!(asks_own_answer(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["if-none-match", "if-modified-since"] {
            assert!(is_validation(&HeaderName::from_static(name)), "{name}");
        }
    }

    #[test]
    fn cookies_no_store_and_vary_star_are_never_shared() {
        let set_cookie = headers(&[("set-cookie", "a=b")]);
        let no_store = headers(&[("cache-control", "max-age=0, No-Store")]);
        let vary_all = headers(&[("vary", "accept, *")]);
        assert_eq!(check(&set_cookie, true), Err(Unshareable::SetCookie));
        assert_eq!(check(&no_store, true), Err(Unshareable::NoStore));
        assert_eq!(check(&vary_all, true), Err(Unshareable::VaryAll));
    }

    #[test]
    fn the_first_cache_control_directive_against_sharing_is_the_reason() {
        let private_first = headers(&[("cache-control", "private"), ("cache-control", "no-store")]);
        assert_eq!(check(&private_first, false), Err(Unshareable::Private));
        assert_eq!(check(&private_first, true), Err(Unshareable::NoStore));
        let no_store_first = headers(&[("cache-control", "max-age=5, no-store, private")]);
        assert_eq!(check(&no_store_first, false), Err(Unshareable::NoStore));
    }

    #[test]
    fn private_is_shared_only_within_one_identity() {
        let private = headers(&[("cache-control", "private=\"x-user\"")]);
        assert_eq!(check(&private, false), Err(Unshareable::Private));
        assert_eq!(check(&private, true), Ok(()));
    }

    #[test]
    fn vary_compares_every_named_header() {
        let response = headers(&[("vary", "Accept-Encoding, Accept-Language")]);
        let leader = headers(&[
            ("accept-encoding", "gzip"),
            ("accept-encoding", "br"),
            ("accept-language", "fr"),
            ("user-agent", "one"),
        ]);
        let vary = Vary::new(&response, &LeaderHeaders::of(&leader));
        assert!(vary.matches(&leader));
        let same_but_elsewhere = headers(&[
            ("user-agent", "another"),
            ("accept-language", "fr"),
            ("accept-encoding", "gzip"),
            ("accept-encoding", "br"),
        ]);
        assert!(vary.matches(&same_but_elsewhere));
        assert!(!vary.matches(&headers(&[
            ("accept-encoding", "gzip"),
            ("accept-language", "fr")
        ])));
        assert!(!vary.matches(&headers(&[("accept-encoding", "gzip")])));
        assert!(!vary.matches(&headers(&[
            ("accept-encoding", "br"),
            ("accept-language", "fr")
        ])));
    }

    #[test]
    fn a_comma_in_a_quoted_string_ends_no_element() {
        let value = HeaderValue::from_static(r#"max-age=1, ext="x, s-maxage=9, \"y", no-store"#);
        let read: Vec<_> = value_elements(&value).collect();
        assert_eq!(
            read,
            [
                &b"max-age=1"[..],
                br#"ext="x, s-maxage=9, \"y""#,
                b"no-store"
            ]
        );
        let open = HeaderValue::from_static(r#"a, "b, c"#);
        assert_eq!(
            value_elements(&open).count(),
            3,
            "a quote never closed quotes nothing"
        );
        let hiding = HeaderValue::from_static(r#"stale-if-error=", no-store"#);
        assert!(value_elements(&hiding).any(|element| element == b"no-store"));
        let escaped_open = HeaderValue::from_static(r#"a="x\", b, c"#);
        assert_eq!(value_elements(&escaped_open).count(), 3);
    }

    thread_local! {
        /// Bytes `value_elements` looked at, on this thread.
        pub(super) static SCANNED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// The fourth review: `\",` repeated left a quote open at every
    /// element, and each element was a scan to the end of the value.
    #[test]
    fn a_hostile_list_is_split_in_linear_time() {
        for hostile in ["\\\",", "\",", ",\"", "a=\"\\\"\", "] {
            let value = HeaderValue::from_str(&hostile.repeat(16 * 1024)).unwrap();
            SCANNED.with(|scanned| scanned.set(0));
            let elements = value_elements(&value).count();
            let scanned = SCANNED.with(std::cell::Cell::get);
            assert!(elements > 0);
            assert!(
                scanned <= value.len() + 1,
                "{hostile:?}: {scanned} steps for {} bytes",
                value.len()
            );
        }
    }

    #[test]
    fn vary_compares_lists_whitespace_and_accept_case_aside() {
        let response = headers(&[("vary", "Accept-Language, X-Tenant")]);
        let leader = headers(&[("accept-language", "en, fr"), ("x-tenant", "Acme")]);
        let vary = Vary::new(&response, &LeaderHeaders::of(&leader));
        let spelled = headers(&[
            ("accept-language", "EN"),
            ("accept-language", "fr"),
            ("x-tenant", " Acme "),
        ]);
        assert!(vary.matches(&spelled));
        let other_case = headers(&[("accept-language", "en,fr"), ("x-tenant", "acme")]);
        assert!(
            !vary.matches(&other_case),
            "only the Accept family is caseless"
        );
        let other_order = headers(&[("accept-language", "fr, en"), ("x-tenant", "Acme")]);
        assert!(!vary.matches(&other_order));
    }
}
