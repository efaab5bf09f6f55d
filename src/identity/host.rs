//! The host a request is for, read from every place that can name it.

use http::{header, HeaderMap, HeaderName, HeaderValue, Uri};

/// Where the application reads the host it picks its tenant (or virtual
/// host) by. The host in keys must be that one, or a request could be
/// answered for one host and shared under another.
///
/// In share mode, every other place that names a host must agree with the
/// source: a request that names two hosts is never coalesced or cached (it
/// is let through). Reject mode reads the source alone (the request's own
/// host, or the forwarded header named), so that a made-up header can
/// neither move a lock nor get a trigger refused; a request whose own
/// authority and `Host` disagree gets `400`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostSource {
    /// The request's own host: its URI authority (HTTP/2's `:authority`, an
    /// absolute-form target) and its `Host` header, which must agree. In
    /// share mode so must `X-Forwarded-Host` and `Forwarded: host=` when a
    /// client sends them (axum-extra's `Host` extractor, for one, prefers
    /// those). For an application that clients reach directly. The
    /// default.
    #[default]
    Request,
    /// `X-Forwarded-Host`, for an application behind a proxy that sets it
    /// and rewrites `Host`. In share mode `Forwarded: host=`, if present,
    /// must agree. Without `X-Forwarded-Host`, the request's own host, as
    /// with [`Request`](Self::Request).
    XForwardedHost,
    /// `Forwarded: host=` (RFC 7239), for an application behind a proxy
    /// that sets it. In share mode `X-Forwarded-Host`, if present, must
    /// agree. Without `Forwarded: host=`, the request's own host, as with
    /// [`Request`](Self::Request).
    Forwarded,
}

/// The request names more than one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ambiguous;

/// What a request says of its host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostRead {
    /// Normalized; `None` when the request names none.
    pub(crate) host: Option<HeaderValue>,
    /// Whether every place that named it spelled it in normal form.
    pub(crate) canonical: bool,
}

/// The normalized host of a request. With `forwarded_must_agree`, a
/// forwarded host that is not the `source` must agree too (share mode: an
/// answer made for one host must not be kept under another); without it,
/// forwarded hosts are read only when they are the source (reject mode: a
/// lock keyed by the request's own host cannot be walked around with them).
pub(crate) fn host_of(
    uri: &Uri,
    headers: &HeaderMap,
    source: HostSource,
    forwarded_must_agree: bool,
) -> Result<HostRead, Ambiguous> {
    let mut scan = HostScan::new(source, forwarded_must_agree);
    for (name, value) in headers {
        scan.header(name, value)?;
    }
    scan.finish(uri)
}

/// [`host_of`] a header at a time, for a caller that reads the headers for
/// other things in the same pass.
pub(crate) struct HostScan {
    source: HostSource,
    strict: bool,
    /// What the source header says, when it is a forwarded one.
    forwarded: Found,
    /// What the request says of itself: `Host` and the URI's authority.
    own: Found,
    /// With `strict`: what the forwarded headers that are not the source
    /// say, which must agree with the host read.
    others: Found,
}

/// The kinds of header that name a host.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Host,
    XForwardedHost,
    Forwarded,
}

impl HostScan {
    pub(crate) fn new(source: HostSource, forwarded_must_agree: bool) -> Self {
        Self {
            source,
            strict: forwarded_must_agree,
            forwarded: Found::default(),
            own: Found::default(),
            others: Found::default(),
        }
    }

    /// Where a header of this kind goes: `None` when it is not read.
    fn found_for(&mut self, kind: Kind) -> Option<&mut Found> {
        let source = match self.source {
            HostSource::Request => Kind::Host,
            HostSource::XForwardedHost => Kind::XForwardedHost,
            HostSource::Forwarded => Kind::Forwarded,
        };
        match kind {
            Kind::Host => Some(&mut self.own),
            _ if kind == source => Some(&mut self.forwarded),
            _ if self.strict => Some(&mut self.others),
            _ => None,
        }
    }

    /// Reads one header, if it names a host.
    pub(crate) fn header(
        &mut self,
        name: &HeaderName,
        value: &HeaderValue,
    ) -> Result<(), Ambiguous> {
        if *name == header::HOST {
            self.own.agree_value(value)?;
        } else if *name == X_FORWARDED_HOST {
            if let Some(found) = self.found_for(Kind::XForwardedHost) {
                // Every element counts, empty ones too: an empty forwarded
                // host is one the application may read as "no host".
                for element in value.as_bytes().split(|byte| *byte == b',') {
                    found.agree_forwarded(element)?;
                }
            }
        } else if *name == header::FORWARDED {
            if let Some(found) = self.found_for(Kind::Forwarded) {
                for element in forwarded_hosts(value.as_bytes()) {
                    found.agree_forwarded(element)?;
                }
            }
        }
        Ok(())
    }

    /// The host, once every header was read.
    pub(crate) fn finish(self, uri: &Uri) -> Result<HostRead, Ambiguous> {
        let read = if self.forwarded.forwarded {
            // The proxy's word; `Host` and the authority are its own.
            self.forwarded.into_read()
        } else {
            let mut own = self.own;
            if let Some(authority) = uri.authority() {
                own.agree(authority.as_str().as_bytes(), uri.scheme_str())?;
            }
            own.into_read()
        };
        if self.others.forwarded && self.others.host != read.host {
            return Err(Ambiguous);
        }
        Ok(HostRead {
            canonical: read.canonical && self.others.canonical,
            ..read
        })
    }
}

const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The host found so far.
struct Found {
    host: Option<HeaderValue>,
    forwarded: bool,
    canonical: bool,
}

impl Default for Found {
    fn default() -> Self {
        Self {
            host: None,
            forwarded: false,
            canonical: true,
        }
    }
}

impl Found {
    fn into_read(self) -> HostRead {
        HostRead {
            host: self.host,
            canonical: self.canonical,
        }
    }

    fn agree(&mut self, raw: &[u8], scheme: Option<&str>) -> Result<(), Ambiguous> {
        let host = match normal_form(raw, scheme).ok_or(Ambiguous)? {
            None => HeaderValue::from_bytes(raw),
            Some(normal) => {
                self.canonical = false;
                HeaderValue::from_bytes(&normal)
            }
        };
        self.agree_with(host.map_err(|_| Ambiguous)?)
    }

    /// [`agree`](Self::agree) for a whole header value: the value itself
    /// when it is normal already, as nearly every one is (a reference
    /// count, not a copy; a cached key is copied when it is stored).
    fn agree_value(&mut self, value: &HeaderValue) -> Result<(), Ambiguous> {
        match normal_form(value.as_bytes(), None).ok_or(Ambiguous)? {
            None => self.agree_with(value.clone()),
            Some(normal) => {
                self.canonical = false;
                self.agree_with(HeaderValue::from_bytes(&normal).map_err(|_| Ambiguous)?)
            }
        }
    }

    fn agree_with(&mut self, host: HeaderValue) -> Result<(), Ambiguous> {
        match &self.host {
            Some(known) if *known != host => Err(Ambiguous),
            Some(_) => Ok(()),
            None => {
                self.host = Some(host);
                Ok(())
            }
        }
    }

    fn agree_forwarded(&mut self, raw: &[u8]) -> Result<(), Ambiguous> {
        self.forwarded = true;
        self.agree(raw, None)
    }
}

/// Every host a request names in the places `source` reads (its authority,
/// `Host`, and the forwarded header that is the source), normalized and
/// without repeats: for a write that named several, which may have changed
/// any of them.
#[cfg(feature = "cache")]
pub(crate) fn hosts_named(uri: &Uri, headers: &HeaderMap, source: HostSource) -> Vec<HeaderValue> {
    let scheme = uri.scheme_str();
    let mut raw: Vec<&[u8]> = Vec::new();
    if let Some(authority) = uri.authority() {
        raw.push(authority.as_str().as_bytes());
    }
    raw.extend(
        headers
            .get_all(header::HOST)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    match source {
        HostSource::Request => {}
        HostSource::XForwardedHost => raw.extend(
            headers
                .get_all(X_FORWARDED_HOST)
                .iter()
                .flat_map(|value| elements(value.as_bytes())),
        ),
        HostSource::Forwarded => raw.extend(
            headers
                .get_all(header::FORWARDED)
                .iter()
                .flat_map(|value| forwarded_hosts(value.as_bytes())),
        ),
    }
    let mut hosts: Vec<HeaderValue> = Vec::new();
    for host in raw.into_iter().filter_map(|raw| normalize(raw, scheme)) {
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
}

/// `raw` lower-cased, without a trailing dot or a default port (80 for
/// `http`, 443 for `https`, either when the scheme is not known); `None`
/// when it is no host at all (userinfo included).
#[cfg(any(test, feature = "cache"))]
pub(crate) fn normalize(raw: &[u8], scheme: Option<&str>) -> Option<HeaderValue> {
    match normal_form(raw, scheme)? {
        None => HeaderValue::from_bytes(raw).ok(),
        Some(normal) => HeaderValue::from_bytes(&normal).ok(),
    }
}

/// `Some(None)` when `raw` is a host in normal form, `Some(Some(normal))`
/// when it is a host spelled otherwise, `None` when it is no host.
fn normal_form(raw: &[u8], scheme: Option<&str>) -> Option<Option<Vec<u8>>> {
    // Nearly every host is a lower-case name without a port: one pass says so.
    let plain =
        |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"-.".contains(byte);
    if raw.iter().all(plain)
        && raw.first().is_some_and(|first| *first != b'.')
        && raw.last() != Some(&b'.')
    {
        return Some(None);
    }
    let whole = raw;
    let raw = raw.trim_ascii();
    // Userinfo has no place in a host (RFC 9110 §4.2.4), and what comes
    // before an `@` is not checked by anyone: such a value is no host.
    if raw.contains(&b'@') {
        return None;
    }
    let (name, port) = split_port(raw)?;
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || !name.iter().all(|byte| is_host_byte(*byte)) {
        return None;
    }
    let default = matches!(
        (port, scheme),
        (None | Some(b""), _)
            | (Some(b"80"), Some("http") | None)
            | (Some(b"443"), Some("https") | None)
    );
    let port = port.filter(|_| !default);
    let unchanged = name.iter().all(|byte| !byte.is_ascii_uppercase())
        && name.len() + port.map_or(0, |port| port.len() + 1) == whole.len();
    if unchanged {
        return Some(None);
    }
    let mut out = name.to_ascii_lowercase();
    if let Some(port) = port {
        out.push(b':');
        out.extend_from_slice(port);
    }
    Some(Some(out))
}

/// The name and the port (digits, possibly empty) of `host[:port]`, with
/// IPv6 literals in brackets.
fn split_port(raw: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let name_end = if raw.first() == Some(&b'[') {
        raw.iter().position(|byte| *byte == b']')? + 1
    } else {
        raw.iter()
            .position(|byte| *byte == b':')
            .unwrap_or(raw.len())
    };
    let (name, rest) = raw.split_at(name_end);
    match rest {
        [] => Some((name, None)),
        [b':', port @ ..] if port.iter().all(u8::is_ascii_digit) => Some((name, Some(port))),
        _ => None,
    }
}

/// Registered names, IPv4 and bracketed IPv6 literals (RFC 3986 §3.2.2).
fn is_host_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'['
                | b']'
                | b':'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

/// The comma-separated elements of a header value, trimmed.
fn elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|byte| *byte == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|element| !element.is_empty())
}

/// The `host=` parameters of a `Forwarded` value (RFC 7239), unquoted.
fn forwarded_hosts(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    elements(value)
        .flat_map(|element| element.split(|byte| *byte == b';'))
        .filter_map(|pair| {
            let at = pair.iter().position(|byte| *byte == b'=')?;
            let (name, value) = (pair[..at].trim_ascii(), pair[at + 1..].trim_ascii());
            name.eq_ignore_ascii_case(b"host").then_some(value)
        })
        .map(|value| {
            value
                .strip_prefix(b"\"")
                .and_then(|value| value.strip_suffix(b"\""))
                .unwrap_or(value)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn host(raw: &str) -> Option<String> {
        normalize(raw.as_bytes(), None).map(|host| host.to_str().unwrap().to_owned())
    }

    fn of(
        request: http::request::Builder,
        source: HostSource,
    ) -> Result<Option<String>, Ambiguous> {
        let parts = request.body(()).unwrap().into_parts().0;
        host_of(&parts.uri, &parts.headers, source, true)
            .map(|read| read.host.map(|host| host.to_str().unwrap().to_owned()))
    }

    #[test]
    fn spellings_of_one_host_are_one_host() {
        for spelling in [
            "svc.example",
            "SVC.example",
            "svc.example.",
            "svc.example:80",
            "svc.example:443",
            "Svc.Example.:",
        ] {
            assert_eq!(host(spelling).as_deref(), Some("svc.example"), "{spelling}");
        }
        assert_eq!(
            host("svc.example:8080").as_deref(),
            Some("svc.example:8080")
        );
        assert_eq!(host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(
            normalize(b"svc.example:443", Some("http")).unwrap(),
            "svc.example:443"
        );
    }

    #[test]
    fn what_is_no_host_is_refused() {
        for raw in [
            "",
            ":80",
            "a b",
            "svc.example:8x",
            "[::1",
            "svc/example",
            "é.example",
            "user@svc.example",
            "evil.example/#@a.example",
        ] {
            assert_eq!(host(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn an_empty_forwarded_host_is_a_host_named_twice() {
        for forwarded in ["", ",", "a.example,", " , a.example"] {
            let request = Request::builder()
                .uri("/x")
                .header("host", "a.example")
                .header("x-forwarded-host", forwarded);
            assert_eq!(
                of(request, HostSource::Request),
                Err(Ambiguous),
                "{forwarded:?}"
            );
        }
    }

    #[test]
    fn reject_mode_reads_forwarded_hosts_only_when_they_are_the_source() {
        let parts = Request::builder()
            .uri("/x")
            .header("host", "upstream:8080")
            .header("x-forwarded-host", "a.example")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let lenient = host_of(&parts.uri, &parts.headers, HostSource::Request, false);
        assert_eq!(lenient.unwrap().host.unwrap(), "upstream:8080");
    }

    #[test]
    fn canonical_means_every_spelling_was_normal() {
        let read = |host: &str| {
            let parts = Request::builder()
                .uri("/")
                .header("host", host)
                .body(())
                .unwrap();
            let parts = parts.into_parts().0;
            host_of(&parts.uri, &parts.headers, HostSource::Request, true).unwrap()
        };
        assert!(read("a.example").canonical);
        assert!(!read("A.example").canonical);
        assert!(!read("a.example:80").canonical);
        assert_eq!(read("A.example").host, read("a.example").host);
    }

    #[test]
    fn authority_and_host_must_agree() {
        let both = |uri: &str, host: &str| {
            of(
                Request::builder().uri(uri).header("host", host),
                HostSource::Request,
            )
        };
        assert_eq!(
            both("http://a.example/x", "A.example:80"),
            Ok(Some("a.example".into()))
        );
        assert_eq!(both("http://a.example/x", "b.example"), Err(Ambiguous));
        let two_hosts = Request::builder()
            .uri("/x")
            .header("host", "a.example")
            .header("host", "b.example");
        assert_eq!(of(two_hosts, HostSource::Request), Err(Ambiguous));
    }

    #[test]
    fn a_forwarded_host_must_agree_unless_it_is_the_source() {
        let request = || {
            Request::builder()
                .uri("/x")
                .header("host", "internal:8080")
                .header("x-forwarded-host", "a.example")
        };
        assert_eq!(of(request(), HostSource::Request), Err(Ambiguous));
        assert_eq!(
            of(request(), HostSource::XForwardedHost),
            Ok(Some("a.example".into()))
        );
        let both = request().header("forwarded", "for=1.2.3.4;host=\"b.example\"");
        assert_eq!(of(both, HostSource::Forwarded), Err(Ambiguous));
        let agreeing = request().header("forwarded", "for=1.2.3.4;Host=A.example");
        assert_eq!(
            of(agreeing, HostSource::Forwarded),
            Ok(Some("a.example".into()))
        );
        let direct = Request::builder().uri("/x").header("host", "a.example");
        assert_eq!(
            of(direct, HostSource::XForwardedHost),
            Ok(Some("a.example".into()))
        );
    }
}
