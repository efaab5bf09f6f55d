//! The client's address as the proxies in front of the application recorded
//! it: [`ForwardedIp`].
//!
//! Read from the right, because that is the end the proxies write: each
//! appends the address it was connected from, so the last `N` entries were
//! written by the `N` trusted proxies and everything before them by whoever
//! sent the request. Hand-written rather than taken from a crate: the
//! Forwarded parsers on crates.io split a field on every `,` and `;`, quoted
//! or not, and read it from the left, so a quoted value a proxy copied from
//! the client (`host="a,for=1.2.3.4"`) becomes an element of its own; and
//! none reads several field lines, nor stops at the entries it needs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::{header, request::Parts, HeaderName, HeaderValue};

use super::KeyExtractor;

/// The key extractor of [`forwarded_ip()`](super::forwarded_ip).
#[derive(Debug, Clone)]
#[must_use]
pub struct ForwardedIp {
    name: HeaderName,
    syntax: Syntax,
    trusted_proxies: usize,
}

/// The header [`ForwardedIp`] reads the client's address from; only that
/// one: the others are ignored, whatever they say.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: 203.0.113.7, 10.0.0.2`: addresses, IPv6 ones
    /// bare or in brackets, each with a port or without. The default.
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=203.0.113.7;proto=https, for="[2001:db8::1]:80"`:
    /// the `for=` parameter of each element.
    Forwarded,
    /// Another header in `X-Forwarded-For`'s form: `X-Real-IP`, say, which
    /// the one proxy in front sets (count it as one trusted proxy).
    Other(HeaderName),
}

impl ForwardedIp {
    pub(super) fn new(trusted_proxies: usize) -> Self {
        Self::new_from(ForwardedHeader::XForwardedFor, trusted_proxies)
    }

    fn new_from(source: ForwardedHeader, trusted_proxies: usize) -> Self {
        let (name, syntax) = match source {
            ForwardedHeader::XForwardedFor => {
                (HeaderName::from_static("x-forwarded-for"), Syntax::List)
            }
            ForwardedHeader::Forwarded => (header::FORWARDED, Syntax::Forwarded),
            ForwardedHeader::Other(name) => (name, Syntax::List),
        };
        Self {
            name,
            syntax,
            trusted_proxies,
        }
    }

    /// Reads `source` instead of `X-Forwarded-For`.
    ///
    /// ```
    /// use tower_singleflight::key::{self, ForwardedHeader};
    ///
    /// let client = key::forwarded_ip(1).source(ForwardedHeader::Forwarded);
    /// # let _ = client;
    /// ```
    pub fn source(self, source: ForwardedHeader) -> Self {
        Self::new_from(source, self.trusted_proxies)
    }

    /// The client's address, if the request carries one where the trusted
    /// proxies put it.
    fn client(&self, parts: &Parts) -> Option<IpAddr> {
        let Some(nth) = self.trusted_proxies.checked_sub(1) else {
            return super::ip::peer(&parts.extensions);
        };
        let syntax = self.syntax;
        let lines = parts.headers.get_all(&self.name).iter();
        let lines = lines.map(HeaderValue::as_bytes);
        let entry = FromRight::new(lines, syntax).nth(nth)?;
        let entry = std::str::from_utf8(entry).ok()?;
        let ip = match syntax {
            Syntax::List => address(entry, syntax)?,
            Syntax::Forwarded => address(forwarded_for(entry)?, syntax)?,
        };
        Some(ip.to_canonical())
    }
}

/// An address is kept inline: nothing besides it.
impl KeyExtractor for ForwardedIp {
    type Key = IpAddr;

    fn extract(&self, parts: &Parts) -> Option<IpAddr> {
        self.client(parts)
    }
}

/// How a header writes its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    /// Addresses separated by commas.
    List,
    /// RFC 7239 elements, whose values may be quoted strings.
    Forwarded,
}

/// Optional whitespace (RFC 9110 §5.6.3).
const OWS: [char; 2] = [' ', '\t'];

/// The non-empty entries of a header's field lines, joined in order (RFC 9110
/// §5.3), from the last one back. It reads each line from its end, and
/// reads no further than the entries asked for: what lies before them (the
/// part a client wrote) is never looked at, however long, and an unclosed
/// quote there cannot swallow the entries after it.
struct FromRight<'a, I> {
    lines: I,
    /// The line being read, and where the unread part of it ends.
    line: Option<(&'a [u8], usize)>,
    /// Whether a `"` opens a quoted string, in which `,` separates nothing.
    quoted: bool,
}

impl<'a, I: DoubleEndedIterator<Item = &'a [u8]>> FromRight<'a, I> {
    fn new(lines: I, syntax: Syntax) -> Self {
        Self {
            lines,
            line: None,
            quoted: syntax == Syntax::Forwarded,
        }
    }

    /// The entry that ends at `end` in `line`, and where the one before it
    /// ends (`None`: it was the first of its line).
    fn entry(&self, line: &'a [u8], end: usize) -> (&'a [u8], Option<usize>) {
        let mut in_quotes = false;
        let mut at = end;
        while let Some(before) = at.checked_sub(1) {
            at = before;
            match line[at] {
                b'"' if self.quoted => {
                    // Read backwards, a quote closes a string when seen
                    // first, and opens it unless a backslash escapes it.
                    in_quotes = !in_quotes || escaped(&line[..at]);
                }
                b',' if !in_quotes => return (&line[at + 1..end], Some(at)),
                _ => {}
            }
        }
        (&line[..end], None)
    }
}

impl<'a, I: DoubleEndedIterator<Item = &'a [u8]>> Iterator for FromRight<'a, I> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let (line, end) = match self.line {
                Some(read) => read,
                None => {
                    let line = self.lines.next_back()?;
                    (line, line.len())
                }
            };
            let (entry, before) = self.entry(line, end);
            self.line = before.map(|end| (line, end));
            // Empty entries (`a, , b`) are no entries (RFC 9110 §5.6.1).
            let entry = trim(entry);
            if !entry.is_empty() {
                return Some(entry);
            }
        }
    }
}

/// Whether the byte after `before` is escaped: an odd number of
/// backslashes ends `before`.
fn escaped(before: &[u8]) -> bool {
    let backslashes = before.iter().rev().take_while(|&&byte| byte == b'\\');
    backslashes.count() % 2 == 1
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_ows = |byte: &u8| *byte == b' ' || *byte == b'\t';
    let start = bytes.iter().position(|byte| !is_ows(byte));
    let end = bytes.iter().rposition(|byte| !is_ows(byte));
    match (start, end) {
        (Some(start), Some(end)) => &bytes[start..=end],
        _ => &[],
    }
}

/// The node of the one `for=` parameter of a Forwarded element (RFC 7239
/// §4), unquoted; `None` if it has none, has two, or is malformed.
fn forwarded_for(element: &str) -> Option<&str> {
    let mut node = None;
    let mut rest = element;
    loop {
        rest = rest.trim_start_matches(OWS);
        if let Some(after) = rest.strip_prefix(';') {
            rest = after;
            continue;
        }
        if rest.is_empty() {
            return node;
        }
        let (name, after) = rest.split_once('=')?;
        if !is_token(name) {
            return None;
        }
        let (value, after) = pair_value(after)?;
        let after = after.trim_start_matches(OWS);
        if !after.is_empty() && !after.starts_with(';') {
            return None;
        }
        if name.eq_ignore_ascii_case("for") {
            if node.is_some() {
                return None;
            }
            node = Some(value);
        }
        rest = after;
    }
}

/// A parameter's value (a token, or a quoted string's content as written,
/// escapes and all) and what follows it.
fn pair_value(text: &str) -> Option<(&str, &str)> {
    let Some(quoted) = text.strip_prefix('"') else {
        let end = text.find(|c: char| !is_tchar(c)).unwrap_or(text.len());
        return (end > 0).then(|| text.split_at(end));
    };
    let mut escape = false;
    for (at, byte) in quoted.bytes().enumerate() {
        match byte {
            _ if escape => escape = false,
            b'\\' => escape = true,
            b'"' => return Some((&quoted[..at], &quoted[at + 1..])),
            _ => {}
        }
    }
    None
}

fn is_token(text: &str) -> bool {
    !text.is_empty() && text.chars().all(is_tchar)
}

/// RFC 9110 §5.6.2.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// The address of a node: `192.0.2.7`, `192.0.2.7:8080`,
/// `[2001:db8::1]`, `[2001:db8::1]:8080`, and in a list a bare
/// `2001:db8::1`. `unknown`, an obfuscated `_name` and anything else is no
/// address.
fn address(node: &str, syntax: Syntax) -> Option<IpAddr> {
    if let Some(bracketed) = node.strip_prefix('[') {
        let (v6, after) = bracketed.split_once(']')?;
        if !after.is_empty() && !port(after.strip_prefix(':')?, syntax) {
            return None;
        }
        return v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if syntax == Syntax::List {
        if let Ok(v6) = node.parse::<Ipv6Addr>() {
            return Some(IpAddr::V6(v6));
        }
    }
    let v4 = match node.split_once(':') {
        Some((v4, port_text)) if port(port_text, syntax) => v4,
        Some(_) => return None,
        None => node,
    };
    v4.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A port: up to five digits that make a `u16`, or in Forwarded an
/// obfuscated `_name` (RFC 7239 §6.3).
fn port(text: &str, syntax: Syntax) -> bool {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    if digits {
        return text.parse::<u16>().is_ok();
    }
    syntax == Syntax::Forwarded && obfuscated(text)
}

/// `_` then letters, digits, `.`, `_` and `-` (RFC 7239 §6.3).
fn obfuscated(text: &str) -> bool {
    text.strip_prefix('_').is_some_and(|rest| {
        rest.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn entries<'a>(lines: &[&'a str], syntax: Syntax) -> Vec<&'a str> {
        let lines = lines.iter().map(|line| line.as_bytes());
        FromRight::new(lines, syntax)
            .map(|entry| std::str::from_utf8(entry).unwrap())
            .collect()
    }

    #[test]
    fn entries_are_read_from_the_last_line_back() {
        assert_eq!(
            entries(&["a, b", " , c", "d"], Syntax::List),
            ["d", "c", "b", "a"]
        );
        assert_eq!(entries(&["", ",,", " "], Syntax::List), Vec::<&str>::new());
    }

    #[test]
    fn commas_in_quoted_strings_separate_nothing_in_forwarded() {
        let line = r#"for=192.0.2.1, for=192.0.2.2;host="a,for=6.6.6.6", for=192.0.2.3"#;
        assert_eq!(
            entries(&[line], Syntax::Forwarded),
            [
                "for=192.0.2.3",
                r#"for=192.0.2.2;host="a,for=6.6.6.6""#,
                "for=192.0.2.1"
            ]
        );
        // An escaped quote does not end the string; an escaped backslash
        // before the closing quote does not escape it.
        let line =
            r#"for=192.0.2.1, for=192.0.2.2;x="a\",b", for=192.0.2.3;y="c\\", for=192.0.2.4"#;
        assert_eq!(
            entries(&[line], Syntax::Forwarded),
            [
                "for=192.0.2.4",
                r#"for=192.0.2.3;y="c\\""#,
                r#"for=192.0.2.2;x="a\",b""#,
                "for=192.0.2.1"
            ]
        );
    }

    /// An unclosed quote a client put on the left cannot reach the
    /// entries a proxy appended after it.
    #[test]
    fn an_unclosed_quote_on_the_left_swallows_nothing_after_it() {
        let line = r#"for="192.0.2.66, for=192.0.2.1"#;
        let read = entries(&[line], Syntax::Forwarded);
        assert_eq!(read[0], "for=192.0.2.1");
    }

    /// Only as much is read as is asked for: the lines before are never
    /// fetched, and in the line, the scan stops at the entry's comma.
    #[test]
    fn reads_no_further_than_the_entries_it_needs() {
        let long = format!("{}, 192.0.2.9, 192.0.2.1", "9.9.9.9,".repeat(100_000));
        let lines = ["never read", long.as_str(), "10.0.0.1"];
        let fetched = Cell::new(0);
        let counted = lines.iter().map(|line| {
            fetched.set(fetched.get() + 1);
            line.as_bytes()
        });
        let mut read = FromRight::new(counted, Syntax::List);
        assert_eq!(read.nth(1), Some(&b"192.0.2.1"[..]));
        assert_eq!(fetched.get(), 2, "the first line was fetched");
        let (_, unread) = read.line.expect("the long line is being read");
        assert_eq!(unread, long.len() - " 192.0.2.1".len() - 1);
    }

    #[test]
    fn the_for_parameter_of_an_element() {
        assert_eq!(
            forwarded_for("for=192.0.2.60;proto=http;by=203.0.113.43"),
            Some("192.0.2.60")
        );
        assert_eq!(
            forwarded_for(r#"For="[2001:db8:cafe::17]:4711""#),
            Some("[2001:db8:cafe::17]:4711")
        );
        assert_eq!(
            forwarded_for(r#"proto=https; host="a;b" ;for=_hidden"#),
            Some("_hidden")
        );
        assert_eq!(forwarded_for("proto=https"), None, "no for=");
        assert_eq!(
            forwarded_for("for=192.0.2.1;for=192.0.2.2"),
            None,
            "two for="
        );
        assert_eq!(forwarded_for("for=192.0.2.1 junk"), None);
        assert_eq!(forwarded_for("junk;for=192.0.2.1"), None);
        assert_eq!(forwarded_for(r#"for="192.0.2.1"#), None, "unclosed quote");
        assert_eq!(forwarded_for("for="), None);
    }

    #[test]
    fn addresses_of_nodes() {
        let v4 = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
        let v6 = Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)));
        for syntax in [Syntax::List, Syntax::Forwarded] {
            assert_eq!(address("192.0.2.7", syntax), v4);
            assert_eq!(address("192.0.2.7:8080", syntax), v4);
            assert_eq!(address("[2001:db8::1]", syntax), v6);
            assert_eq!(address("[2001:db8::1]:443", syntax), v6);
            for garbage in [
                "unknown",
                "_hidden",
                "192.0.2.7:99999",
                "192.0.2.7:",
                "192.0.2.07",
                "192.0.2",
                "[2001:db8::1",
                "[2001:db8::1]x",
                "[192.0.2.7]",
                "[fe80::1%eth0]",
                "example.com",
                "",
            ] {
                assert_eq!(address(garbage, syntax), None, "{garbage:?}");
            }
        }
        assert_eq!(address("2001:db8::1", Syntax::List), v6);
        assert_eq!(
            address("2001:db8::1", Syntax::Forwarded),
            None,
            "RFC 7239 puts IPv6 in brackets"
        );
        assert_eq!(address("192.0.2.7:_port", Syntax::Forwarded), v4);
        assert_eq!(address("192.0.2.7:_port", Syntax::List), None);
    }
}
