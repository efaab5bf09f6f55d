//! Percent-encoding normalization of paths and queries (RFC 3986 §6.2.2).

use std::borrow::Cow;

/// `text` with the percent-escapes of unreserved characters decoded and the
/// hex digits of every other escape upper-cased (RFC 3986 §6.2.2.1 and
/// §6.2.2.2), so that `/flows/%31` and `/flows/1`, or `%2f` and `%2F`, are
/// one spelling. Escapes of reserved characters (`%2F` is not `/`) stay
/// escapes: the application may tell them apart. A `%` not followed by two
/// hex digits is kept as it is.
///
/// Borrows when nothing changes, which is the common case.
pub(crate) fn normalize(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let Some(first) = bytes.iter().position(|byte| *byte == b'%') else {
        return Cow::Borrowed(text);
    };
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first]);
    let mut changed = false;
    let mut at = first;
    while at < bytes.len() {
        let byte = bytes[at];
        let escape = (byte == b'%')
            .then(|| Some((hex(*bytes.get(at + 1)?)?, hex(*bytes.get(at + 2)?)?)))
            .flatten();
        let Some((high, low)) = escape else {
            out.push(byte);
            at += 1;
            continue;
        };
        let decoded = high << 4 | low;
        if is_unreserved(decoded) {
            out.push(decoded);
            changed = true;
        } else {
            let upper = [b'%', HEX[usize::from(high)], HEX[usize::from(low)]];
            changed |= upper != bytes[at..at + 3];
            out.extend_from_slice(&upper);
        }
        at += 3;
    }
    if !changed {
        return Cow::Borrowed(text);
    }
    // Only ASCII bytes were written in place of ASCII escapes, and every
    // other byte was copied whole, so the text stays UTF-8.
    match String::from_utf8(out) {
        Ok(normal) => Cow::Owned(normal),
        Err(_) => Cow::Borrowed(text),
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3: `ALPHA / DIGIT / "-" / "." / "_" / "~"`.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(normalize("/flows/%31/resume"), "/flows/1/resume");
        assert_eq!(normalize("/%7euser/%2d%5F%2E"), "/~user/-_.");
        assert_eq!(normalize("/a%2fb"), "/a%2Fb");
        assert_eq!(normalize("/a%2Fb"), "/a%2Fb");
        assert_eq!(normalize("q=%e9t%C3%a9"), "q=%E9t%C3%A9");
    }

    #[test]
    fn what_needs_no_change_is_borrowed() {
        assert!(matches!(normalize("/plain/path"), Cow::Borrowed(_)));
        assert!(matches!(normalize("/a%2Fb%20c"), Cow::Borrowed(_)));
    }

    #[test]
    fn stray_percent_signs_are_kept() {
        assert_eq!(normalize("/100%"), "/100%");
        assert_eq!(normalize("/%zz%4"), "/%zz%4");
        assert_eq!(normalize("/%%41"), "/%A");
    }
}
