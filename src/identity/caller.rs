//! Who the caller is: the request headers, cookies and extension that tell
//! one caller from another.

use std::{
    any::Any,
    fmt,
    hash::{Hash, Hasher},
    sync::Arc,
};

use http::{header, request::Parts, Extensions, HeaderName, HeaderValue};

/// Which parts of a request identify its caller, for share mode: two
/// requests whose callers differ never share an answer, and a `private`
/// answer is shared only among requests of one identified caller.
///
/// The default reads the credential headers `Authorization`,
/// `Proxy-Authorization` and `X-Api-Key`, and the whole `Cookie` header. Any difference in them
/// keeps callers apart. A credential header identifies its caller; a cookie
/// alone does not (`consent=yes` is no credential), so a `private` answer is
/// never shared on the strength of a `Cookie` header unless you name the
/// cookie that holds the session with [`cookie`](Self::cookie).
///
/// To key by user, let your authentication middleware put the user's id in
/// the request's extensions and name its type with
/// [`extension`](Self::extension): that is the most precise identity.
///
/// ```
/// use http::HeaderName;
/// use tower_singleflight::{identity::CallerIdentity, SingleFlightLayer};
///
/// #[derive(Debug, Clone, PartialEq, Eq, Hash)]
/// struct UserId(u64);
///
/// let layer = SingleFlightLayer::share().identity(
///     CallerIdentity::new()
///         .header(HeaderName::from_static("x-tenant-key"))
///         .cookie("session") // only this cookie counts, and it identifies
///         .extension::<UserId>(),
/// );
/// # let _ = layer;
/// ```
#[derive(Clone)]
#[must_use]
pub struct CallerIdentity {
    headers: Arc<[HeaderName]>,
    /// `None`: the whole `Cookie` header, which keeps callers apart but
    /// identifies nobody.
    cookies: Option<Arc<[Box<str>]>>,
    extension: Option<ReadExtension>,
}

/// Reads the identity extension's value out of a request.
type ReadExtension = fn(&Extensions) -> Option<Arc<dyn Part>>;

impl Default for CallerIdentity {
    fn default() -> Self {
        Self {
            headers: Arc::new([
                header::AUTHORIZATION,
                header::PROXY_AUTHORIZATION,
                HeaderName::from_static("x-api-key"),
            ]),
            cookies: None,
            extension: None,
        }
    }
}

/// One part of a caller, with the name of the header or cookie it came from.
#[cfg(feature = "redis")]
pub(crate) type NamedPart<'a> = (std::borrow::Cow<'a, [u8]>, &'a [u8]);

impl CallerIdentity {
    /// What the part tagged `tag` came from: a header's name, `cookie` for
    /// the whole `Cookie` header, `cookie NAME` for one cookie.
    #[cfg(feature = "redis")]
    fn part_name(&self, tag: usize) -> Option<std::borrow::Cow<'_, [u8]>> {
        use std::borrow::Cow;
        let headers = self.headers.len();
        if tag < headers {
            return Some(Cow::Borrowed(self.headers[tag].as_str().as_bytes()));
        }
        match (tag - headers).checked_sub(1) {
            None => Some(Cow::Borrowed(b"cookie")),
            Some(index) => {
                let name = self.cookies.as_ref()?.get(index)?;
                Some(Cow::Owned([b"cookie ", name.as_bytes()].concat()))
            }
        }
    }

    /// The default identity; see the type's docs.
    pub fn new() -> Self {
        Self::default()
    }

    /// No header, cookie or extension: build the identity from scratch.
    pub fn none() -> Self {
        Self {
            headers: Arc::new([]),
            cookies: Some(Arc::new([])),
            extension: None,
        }
    }

    /// Another request header whose value identifies the caller (an API key
    /// of your own, say).
    pub fn header(mut self, name: HeaderName) -> Self {
        if !self.headers.contains(&name) {
            let mut names = self.headers.to_vec();
            names.push(name);
            self.headers = names.into();
        }
        self
    }

    /// A cookie whose value identifies the caller (the session cookie). Once
    /// a cookie is named, only the named cookies count: the others no longer
    /// keep callers apart, so that visitors who differ only in, say, a
    /// consent cookie share answers.
    pub fn cookie(mut self, name: &str) -> Self {
        let mut names = self
            .cookies
            .as_deref()
            .map(<[_]>::to_vec)
            .unwrap_or_default();
        if !names.iter().any(|known| &**known == name) {
            names.push(name.into());
        }
        self.cookies = Some(names.into());
        self
    }

    /// A value of type `T` in the request's extensions identifies the caller:
    /// the user id your authentication middleware puts there, say. A
    /// request without one is anonymous as far as `T` goes.
    pub fn extension<T>(mut self) -> Self
    where
        T: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    {
        self.extension = Some(|extensions: &Extensions| {
            let value = extensions.get::<T>()?.clone();
            Some(Arc::new(value) as Arc<dyn Part>)
        });
        self
    }

    /// The caller of this request, as these settings see it. A lookup per
    /// identity header: a request carries a dozen headers or more, and few
    /// names are declared.
    pub(crate) fn of(&self, parts: &Parts) -> Caller {
        let mut caller = Caller::default();
        for (index, name) in self.headers.iter().enumerate() {
            for value in parts.headers.get_all(name) {
                caller.identified = true;
                caller.push(index, value.as_bytes());
            }
        }
        for value in parts.headers.get_all(header::COOKIE) {
            self.cookies_of(value, &mut caller);
        }
        if let Some(read) = self.extension {
            caller.extension = read(&parts.extensions);
            caller.identified |= caller.extension.is_some();
        }
        caller
    }

    fn cookies_of(&self, value: &HeaderValue, caller: &mut Caller) {
        // Tagged past the headers, so that no header value can pass for a
        // cookie.
        let tag = self.headers.len();
        let Some(names) = &self.cookies else {
            caller.push(tag, value.as_bytes());
            return;
        };
        for pair in value.as_bytes().split(|byte| *byte == b';') {
            let pair = pair.trim_ascii();
            let Some(at) = pair.iter().position(|byte| *byte == b'=') else {
                continue;
            };
            let name = pair[..at].trim_ascii();
            if let Some(index) = names.iter().position(|known| known.as_bytes() == name) {
                caller.identified = true;
                caller.push(tag + 1 + index, pair[at + 1..].trim_ascii());
            }
        }
    }
}

impl fmt::Debug for CallerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerIdentity")
            .field("headers", &self.headers)
            .field("cookies", &self.cookies)
            .field("extension", &self.extension.is_some())
            .finish()
    }
}

/// One request's caller. Its parts are copied out of the request, so that a
/// cached answer keyed by it never keeps the request's buffers alive.
#[derive(Debug, Clone, Default)]
pub(crate) struct Caller {
    /// Each part tagged with where it came from: values cannot be confused
    /// across headers and cookies.
    parts: Vec<(usize, Box<[u8]>)>,
    extension: Option<Arc<dyn Part>>,
    /// Whether a credential (not just any cookie) names the caller.
    identified: bool,
}

impl Caller {
    fn push(&mut self, tag: usize, value: &[u8]) {
        self.parts.push((tag, value.into()));
    }

    /// Whether a credential names the caller, so that a `private` answer may
    /// be shared among its requests.
    pub(crate) fn is_identified(&self) -> bool {
        self.identified
    }

    /// Its parts as bytes that name it the same way in every process, each
    /// with the name of the header or cookie it came from (replicas whose
    /// identities list them in another order still agree), for a key shared
    /// between replicas; `None` when a typed extension names the caller (its
    /// bytes are not known).
    #[cfg(feature = "redis")]
    pub(crate) fn stable_parts<'a>(
        &'a self,
        identity: &'a CallerIdentity,
    ) -> Option<Vec<NamedPart<'a>>> {
        if self.extension.is_some() {
            return None;
        }
        self.parts
            .iter()
            .map(|(tag, value)| Some((identity.part_name(*tag)?, &**value)))
            .collect()
    }

    /// The bytes it keeps.
    pub(crate) fn len(&self) -> usize {
        self.parts
            .iter()
            .map(|(_, value)| value.len() + 2 * size_of::<usize>())
            .sum::<usize>()
            + self.extension.as_ref().map_or(0, |_| 64)
    }
}

impl PartialEq for Caller {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts
            && match (&self.extension, &other.extension) {
                (Some(mine), Some(theirs)) => mine.equals(&**theirs),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for Caller {}

impl Hash for Caller {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts.hash(state);
        if let Some(extension) = &self.extension {
            extension.hash_into(state);
        }
    }
}

/// An extension value, compared and hashed whatever its type.
pub(crate) trait Part: fmt::Debug + Send + Sync {
    fn equals(&self, other: &dyn Part) -> bool;
    fn hash_into(&self, state: &mut dyn Hasher);
    fn as_any(&self) -> &dyn Any;
}

impl<T: Hash + Eq + fmt::Debug + Send + Sync + 'static> Part for T {
    fn equals(&self, other: &dyn Part) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }

    fn hash_into(&self, mut state: &mut dyn Hasher) {
        self.hash(&mut state);
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn caller(identity: &CallerIdentity, headers: &[(&str, &str)]) -> Caller {
        let mut request = Request::builder();
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        identity.of(&request.body(()).unwrap().into_parts().0)
    }

    #[test]
    fn credentials_identify_and_cookies_only_keep_apart() {
        let identity = CallerIdentity::new();
        let alice = caller(&identity, &[("x-api-key", "alice")]);
        let bob = caller(&identity, &[("x-api-key", "bob")]);
        assert_ne!(alice, bob);
        assert!(alice.is_identified());
        let consent = caller(&identity, &[("cookie", "consent=yes")]);
        assert!(!consent.is_identified());
        assert_ne!(consent, caller(&identity, &[]));
        assert_ne!(
            caller(&identity, &[("authorization", "x")]),
            caller(&identity, &[("proxy-authorization", "x")]),
            "a value is tagged with its header"
        );
    }

    #[test]
    fn named_cookies_are_the_only_cookies_that_count() {
        let identity = CallerIdentity::new().cookie("session");
        let alice = caller(&identity, &[("cookie", "consent=yes; session=alice")]);
        let alice_again = caller(&identity, &[("cookie", "session=alice;consent=no")]);
        let bob = caller(&identity, &[("cookie", "consent=yes; session=bob")]);
        assert_eq!(alice, alice_again);
        assert_ne!(alice, bob);
        assert!(alice.is_identified());
        assert!(!caller(&identity, &[("cookie", "consent=yes")]).is_identified());
    }

    #[test]
    fn an_extension_identifies_by_value_and_type() {
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        struct UserId(u64);
        let identity = CallerIdentity::none().extension::<UserId>();
        let of = |user: Option<u64>| {
            let mut request = Request::new(());
            if let Some(user) = user {
                request.extensions_mut().insert(UserId(user));
            }
            identity.of(&request.into_parts().0)
        };
        assert_eq!(of(Some(1)), of(Some(1)));
        assert_ne!(of(Some(1)), of(Some(2)));
        assert_ne!(of(Some(1)), of(None));
        assert!(of(Some(1)).is_identified());
        assert!(!of(None).is_identified());
    }
}
