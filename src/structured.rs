//! Whether a field value is a Structured Field Dictionary (RFC 8941 §3.2),
//! as RFC 9213's targeted cache-control fields must be: one that is not is
//! ignored (RFC 9213 §2.1).
//!
//! A validator only, written here: the directives are then read by the
//! crate's `Cache-Control` reader. The `sfv` crate parses structured fields
//! whole, but brings a second `syn` (through `ref-cast`) into every build
//! for a yes-or-no answer.

/// Whether the field lines, combined (RFC 8941 §4.2), are a non-empty
/// Dictionary.
pub(crate) fn is_dictionary<'a>(lines: impl Iterator<Item = &'a [u8]>) -> bool {
    let mut combined = Vec::new();
    for line in lines {
        if !combined.is_empty() {
            combined.extend_from_slice(b", ");
        }
        combined.extend_from_slice(line);
    }
    let mut input = Input(combined.trim_ascii());
    if input.0.is_empty() {
        return false;
    }
    loop {
        if !input.member() {
            return false;
        }
        input.ows();
        if input.0.is_empty() {
            return true;
        }
        if !input.eat(b',') {
            return false;
        }
        input.ows();
        if input.0.is_empty() {
            return false;
        }
    }
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let eaten = self.peek() == Some(byte);
        if eaten {
            self.0 = &self.0[1..];
        }
        eaten
    }

    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> usize {
        let taken = self.0.iter().take_while(|byte| keep(**byte)).count();
        self.0 = &self.0[taken..];
        taken
    }

    fn ows(&mut self) {
        self.take_while(|byte| byte == b' ' || byte == b'\t');
    }

    fn sp(&mut self) -> usize {
        self.take_while(|byte| byte == b' ')
    }

    /// `key ( "=" member-value / parameters )`.
    fn member(&mut self) -> bool {
        if !self.key() {
            return false;
        }
        if self.eat(b'=') {
            if self.peek() == Some(b'(') {
                self.inner_list()
            } else {
                self.bare_item() && self.parameters()
            }
        } else {
            self.parameters()
        }
    }

    fn key(&mut self) -> bool {
        match self.peek() {
            Some(first) if first.is_ascii_lowercase() || first == b'*' => {
                self.take_while(|byte| {
                    byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_-.*".contains(&byte)
                });
                true
            }
            _ => false,
        }
    }

    fn parameters(&mut self) -> bool {
        while self.eat(b';') {
            self.sp();
            if !self.key() {
                return false;
            }
            if self.eat(b'=') && !self.bare_item() {
                return false;
            }
        }
        true
    }

    fn inner_list(&mut self) -> bool {
        self.eat(b'(');
        loop {
            self.sp();
            if self.eat(b')') {
                return self.parameters();
            }
            if !(self.bare_item() && self.parameters()) {
                return false;
            }
            if self.peek() != Some(b')') && self.sp() == 0 {
                return false;
            }
        }
    }

    fn bare_item(&mut self) -> bool {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'"') => self.string(),
            Some(b':') => self.byte_sequence(),
            Some(b'?') => {
                self.eat(b'?');
                self.eat(b'0') || self.eat(b'1')
            }
            Some(first) if first.is_ascii_alphabetic() || first == b'*' => {
                self.take_while(|byte| {
                    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&byte)
                });
                true
            }
            _ => false,
        }
    }

    /// An integer (up to 15 digits) or a decimal (12 and 3).
    fn number(&mut self) -> bool {
        self.eat(b'-');
        let whole = self.take_while(|byte| byte.is_ascii_digit());
        if !self.eat(b'.') {
            return (1..=15).contains(&whole);
        }
        let fraction = self.take_while(|byte| byte.is_ascii_digit());
        (1..=12).contains(&whole) && (1..=3).contains(&fraction)
    }

    fn string(&mut self) -> bool {
        self.eat(b'"');
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.eat(b'"');
                    return true;
                }
                Some(b'\\') => {
                    self.eat(b'\\');
                    if !(self.eat(b'"') || self.eat(b'\\')) {
                        return false;
                    }
                }
                Some(0x20..=0x7e) => self.0 = &self.0[1..],
                _ => return false,
            }
        }
    }

    fn byte_sequence(&mut self) -> bool {
        self.eat(b':');
        self.take_while(|byte| byte.is_ascii_alphanumeric() || b"+/=".contains(&byte));
        self.eat(b':')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(value: &str) -> bool {
        is_dictionary(std::iter::once(value.as_bytes()))
    }

    #[test]
    fn dictionaries_of_directives_are_valid() {
        for value in [
            "max-age=3600",
            "no-store",
            "max-age=60, stale-while-revalidate=30",
            "private, ext=\"a, \\\"b\\\"\", flag=?1, list=(a b);p=1",
            "  max-age=5  ",
            "a=1.5, b=-3, c=:aGk=:",
        ] {
            assert!(valid(value), "{value}");
        }
        let lines = [&b"max-age=60"[..], b"no-transform"];
        assert!(is_dictionary(lines.into_iter()));
    }

    #[test]
    fn what_is_no_dictionary_is_refused() {
        for value in [
            "",
            "  ",
            "max-age=3600,",
            "MAX-AGE=3600",
            "max-age=1234567890123456",
            "max-age = 60",
            "a=\"open",
            "a=(b",
            ",a",
            "a=1.2345",
        ] {
            assert!(!valid(value), "{value}");
        }
    }
}
