//! Resolving a `Location` or `Content-Location` against the request it
//! answers (RFC 3986 §5.2), for invalidation (RFC 9111 §4.4).
//!
//! Written here rather than taken from the `url` crate: only the path
//! merge and dot-segment removal are needed, and `url` (WHATWG URLs, IDNA)
//! would be the largest dependency of the crate for twenty lines.

/// An authority a reference names, with the scheme it came with, if any.
pub(crate) type Authority = (String, Option<String>);

/// The authority (if it names one) and the absolute path a reference
/// names, relative to `base_path`; `None` for what is no reference to a
/// path over HTTP.
pub(crate) fn reference(base_path: &str, reference: &str) -> Option<(Option<Authority>, String)> {
    // The query and fragment name the same resource: its path is what
    // cached answers are dropped by.
    let reference = reference.split(['?', '#']).next().unwrap_or_default();
    // A scheme is what comes before the first `:`, if no `/` does (§3.1).
    let scheme = reference
        .split_once(':')
        .filter(|(scheme, _)| is_scheme(scheme) && !scheme.contains('/'));
    let (scheme, rest) = match scheme {
        Some((scheme, rest)) => {
            let scheme = scheme.to_ascii_lowercase();
            // Another scheme is another origin; `http:g` (no authority) is
            // a URI of its own to a strict parser (§5.4.2): neither names a
            // path here.
            let rest = rest.strip_prefix("//");
            if (scheme != "http" && scheme != "https") || rest.is_none() {
                return None;
            }
            (Some(scheme), rest)
        }
        None => (None, reference.strip_prefix("//")),
    };
    let (authority, path) = match rest {
        // An absolute URI or a network-path reference: its own authority.
        Some(rest) => {
            let at = rest.find('/').unwrap_or(rest.len());
            let authority = &rest[..at];
            // Userinfo names the same host (and is read no further).
            let host = authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host);
            let path = if at == rest.len() { "/" } else { &rest[at..] };
            (Some((host.to_owned(), scheme)), path.to_owned())
        }
        None if reference.starts_with('/') => (None, reference.to_owned()),
        None if reference.is_empty() => (None, base_path.to_owned()),
        // A relative path: merged with the base's directory (§5.2.3).
        None => {
            let directory = base_path.rfind('/').map_or("/", |at| &base_path[..=at]);
            (None, format!("{directory}{reference}"))
        }
    };
    Some((authority, remove_dot_segments(&path)))
}

/// `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(scheme: &str) -> bool {
    let mut bytes = scheme.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic())
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || b"+-.".contains(&byte))
}

/// RFC 3986 §5.2.4, for an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    for (at, segment) in segments.iter().enumerate() {
        match *segment {
            "." | ".." => {
                if *segment == ".." {
                    kept.pop();
                }
                // A final dot segment leaves a trailing slash.
                if at == last {
                    kept.push("");
                }
            }
            segment => kept.push(segment),
        }
    }
    format!("/{}", kept.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(base: &str, reference: &str) -> Option<String> {
        super::reference(base, reference).map(|(_, path)| path)
    }

    #[test]
    fn references_resolve_as_rfc_3986_says() {
        assert_eq!(path("/items/", "5").as_deref(), Some("/items/5"));
        assert_eq!(path("/items", "items/5").as_deref(), Some("/items/5"));
        assert_eq!(path("/items/", "./5").as_deref(), Some("/items/5"));
        assert_eq!(path("/a/b/c", "../d?x#y").as_deref(), Some("/a/d"));
        assert_eq!(path("/a/b/", "..").as_deref(), Some("/a/"));
        assert_eq!(path("/a", "/../../x").as_deref(), Some("/x"));
        assert_eq!(path("/a", "").as_deref(), Some("/a"));
        assert_eq!(path("/a", "ftp://example.com/a"), None);
        // RFC 3986 §5.4.1 and §5.4.2: `g:h` and (strictly) `http:g` are URIs
        // of their own; `./g:h` is a path.
        assert_eq!(path("/a", "mailto:x@y"), None);
        assert_eq!(path("/b/c/d;p", "g:h"), None);
        assert_eq!(path("/b/c/d;p", "http:g"), None);
        assert_eq!(path("/b/c/d;p", "./g:h").as_deref(), Some("/b/c/g:h"));
        assert_eq!(path("/b/c/d;p", "g/../h").as_deref(), Some("/b/c/h"));
        assert_eq!(path("/b/c/d;p", "../../../g").as_deref(), Some("/g"));
    }

    #[test]
    fn authorities_are_read_without_userinfo() {
        let (authority, path) = reference("/", "HTTP://user@Example.com:80/items/5").unwrap();
        assert_eq!(
            authority,
            Some(("Example.com:80".to_owned(), Some("http".to_owned())))
        );
        assert_eq!(path, "/items/5");
        let (authority, path) = reference("/", "//example.com").unwrap();
        assert_eq!(authority, Some(("example.com".to_owned(), None)));
        assert_eq!(path, "/");
    }
}
