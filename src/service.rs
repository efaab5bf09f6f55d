//! `SingleFlight`: the service the layer wraps around yours.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::{
    body::ResponseBody,
    flight::{Event, Flights, Settled},
    future::{reject, release, share, span, take_ready},
    identity::{Caller, Identify, Reading, Unkeyable},
    key::{Extracted, KeyExtractor, ShareKey},
    metrics::Unkeyed,
    mode::{Reject, Share},
    rejection,
    role::{FlightRole, Marks},
};

/// Middleware that rejects or coalesces identical in-flight requests.
///
/// Built by [`SingleFlightLayer`](crate::SingleFlightLayer); see there.
pub struct SingleFlight<S, M, X> {
    inner: S,
    config: Arc<Config<M, X>>,
}

/// What every clone of one layer's service shares.
pub(crate) struct Config<M, X> {
    pub(crate) mode: M,
    pub(crate) key: X,
    pub(crate) identify: Identify,
    pub(crate) expose_role: bool,
    pub(crate) trace_keys: bool,
}

impl<S, M, X> SingleFlight<S, M, X> {
    pub(crate) fn new(inner: S, config: Config<M, X>) -> Self {
        Self {
            inner,
            config: Arc::new(config),
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, M, X> Clone for SingleFlight<S, M, X> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, M: fmt::Debug, X> fmt::Debug for SingleFlight<S, M, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleFlight")
            .field("inner", &self.inner)
            .field("mode", &self.config.mode)
            .field("key", &std::any::type_name::<X>())
            .finish()
    }
}

impl<S, X, ReqB, ResB> Service<Request<ReqB>> for SingleFlight<S, Reject<X::Key>, X>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    X: KeyExtractor,
    ResB: Body,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = reject::ResponseFuture<S, ReqB, X::Key>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let mode = &self.config.mode;
        let marks = Marks::new(
            self.config.expose_role,
            self.config.trace_keys,
            mode.flights.meter(),
        );
        if !mode.guards(request.method()) {
            return reject::ResponseFuture::bypass(self.inner.call(request), marks);
        }
        let (parts, body) = request.into_parts();
        let key = match self.config.identify.read(&parts, Reading::Locking) {
            Ok(identity) => match self.config.key.extract_or_reject(&parts, &identity) {
                Extracted::Key(key) => {
                    let bytes = identity
                        .len()
                        .saturating_add(self.config.key.key_bytes(&key));
                    if bytes > self.config.identify.max_key_bytes {
                        release(&mut self.inner);
                        mode.flights.recorder().record(Event::Unkeyed);
                        marks.meter().unkeyed(Unkeyed::Unkeyable);
                        let response = rejection::unkeyable(Unkeyable::TooLong);
                        return reject::ResponseFuture::rejected(response, marks);
                    }
                    Some(key)
                }
                Extracted::Pass => None,
                Extracted::Reject(response) => {
                    release(&mut self.inner);
                    return reject::ResponseFuture::rejected(response, marks);
                }
            },
            Err(why) => {
                // Unkeyed, it would run beside the holder: refused instead.
                release(&mut self.inner);
                mode.flights.recorder().record(Event::Unkeyed);
                marks.meter().unkeyed(Unkeyed::Unkeyable);
                let response = rejection::unkeyable(why);
                return reject::ResponseFuture::rejected(response, marks);
            }
        };
        let request = Request::from_parts(parts, body);
        let Some(key) = key else {
            keyless(&mode.flights, &marks, &request);
            return reject::ResponseFuture::bypass(self.inner.call(request), marks);
        };
        let mut acquire = mode.flights.try_acquire(key, mode.lease_ttl);
        match acquire.settle_now() {
            Some(Settled::Acquired(guard)) => {
                reject::ResponseFuture::running(self.inner.call(request), guard, marks)
            }
            Some(Settled::Held(holder, key)) => {
                // Answered here: the readiness `poll_ready` took is given up.
                release(&mut self.inner);
                let (digest, name) = (span::digest(&key), &mode.flights.counters().name);
                span::answered(
                    &request,
                    digest,
                    name,
                    FlightRole::Rejected,
                    marks.trace_keys,
                );
                let busy = mode.already_running(&key, &holder);
                reject::ResponseFuture::rejected(mode.conflict.respond(&busy), marks)
            }
            Some(Settled::Unavailable(_)) => {
                release(&mut self.inner);
                let response = crate::rejection::store_unavailable(mode.retry_after);
                reject::ResponseFuture::rejected(response, marks)
            }
            None => reject::ResponseFuture::acquiring(
                acquire,
                take_ready(&mut self.inner),
                request,
                mode,
                marks,
            ),
        }
    }
}

impl<S, X, ReqB, ResB> Service<Request<ReqB>> for SingleFlight<S, Share<X::Key>, X>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    X: KeyExtractor,
    ReqB: Body + Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
    ResB::Error: Send,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = share::ResponseFuture<S, ReqB, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let config = &*self.config;
        let mode = &config.mode;
        let marks = Marks::new(config.expose_role, config.trace_keys, mode.flights.meter());
        let coalesced = mode.methods.contains(request.method()) && bodiless(request.body());
        if !coalesced {
            let after = invalidation(mode, &config.identify, &request);
            let future = self.inner.call(request);
            return share::ResponseFuture::bypass_then(future, marks, after);
        }
        let (parts, body) = request.into_parts();
        let caller = mode.identity.as_ref();
        let mut asks = crate::identity::Asks::default();
        let mut rejected = None;
        let keyed = config
            .identify
            .read_shared(&parts, caller, mode.has_cache())
            .and_then(|(identity, caller, asked)| {
                asks = asked;
                let key = match config.key.extract_or_reject(&parts, &identity) {
                    Extracted::Key(key) => key,
                    Extracted::Pass => return Ok(None),
                    Extracted::Reject(response) => {
                        rejected = Some(response);
                        return Ok(None);
                    }
                };
                let key_bytes = config.key.key_bytes(&key);
                let key = ShareKey::new(
                    key,
                    parts.method.clone(),
                    crate::key::Scheme::of(&parts.uri),
                    identity.host().cloned(),
                    caller,
                    key_bytes,
                );
                if identity.len().saturating_add(key.extra_len()) > config.identify.max_key_bytes {
                    return Err(Unkeyable::TooLong);
                }
                Ok(Some(key))
            });
        if let Some(response) = rejected {
            release(&mut self.inner);
            return share::ResponseFuture::rejected(response, marks);
        }
        let request = Request::from_parts(parts, body);
        let key = match keyed {
            Ok(Some(keyed)) => keyed,
            Ok(None) => {
                keyless(&mode.flights, &marks, &request);
                return share::ResponseFuture::bypass(self.inner.call(request), marks);
            }
            Err(Unkeyable::OwnAnswer) => {
                return share::ResponseFuture::bypass(self.inner.call(request), marks)
            }
            Err(why) => {
                tracing::debug!(
                    ?why,
                    layer = %mode.flights.name(),
                    "http.route" = span::route(&request),
                    "url.path" = request.uri().path(),
                    "request not coalesced"
                );
                mode.flights.recorder().record(Event::Unkeyed);
                marks.meter().unkeyed(Unkeyed::Unkeyable);
                return share::ResponseFuture::bypass(self.inner.call(request), marks);
            }
        };
        // `private` responses may be shared only among one identified caller.
        let private_ok = key.caller.as_ref().is_some_and(Caller::is_identified);
        let entry = share::Entry {
            key,
            private_ok,
            retry: false,
            asks,
        };
        share::ResponseFuture::start(&mut self.inner, request, entry, mode, marks)
    }
}

/// A request whose key extractor returned `None`: counted, and told at
/// `debug`, as it runs uncoalesced and without a lease.
fn keyless<K, T, B>(flights: &Flights<K, T>, marks: &Marks, request: &Request<B>)
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    flights.counters().record(Event::Keyless);
    marks.meter().unkeyed(Unkeyed::NoKey);
    tracing::debug!(
        layer = %flights.name(),
        "http.route" = span::route(request),
        "url.path" = request.uri().path(),
        "request not keyed: passes through uncoalesced"
    );
}

/// Whether a request surely has no body: only such requests are coalesced,
/// as the body is not part of the key.
fn bodiless<B: Body>(body: &B) -> bool {
    body.is_end_stream() || body.size_hint().exact() == Some(0)
}

/// For a write the cache is told to watch: drop the answers cached for its
/// host and path once it succeeds.
#[cfg(feature = "cache")]
fn invalidation<K, B>(
    mode: &Share<K>,
    identify: &Identify,
    request: &Request<B>,
) -> Option<share::AfterResponse>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    let cache = mode.cache.as_ref()?;
    if request.method().is_safe() || !cache.config().invalidate_on_write {
        return None;
    }
    let cache = cache.clone();
    let written = crate::cache::Written::of(identify, request);
    Some(Box::new(
        move |status: http::StatusCode, headers: &http::HeaderMap| {
            // RFC 9111 §4.4: a non-error answer to an unsafe request invalidates
            // its target, and the same-origin targets its answer names.
            if status.is_success() || status.is_redirection() {
                cache.invalidate_written(&written);
                let named = [http::header::LOCATION, http::header::CONTENT_LOCATION];
                for value in named.iter().filter_map(|name| headers.get(name)) {
                    if let Some(named) = written.named(value) {
                        cache.invalidate_written(&named);
                    }
                }
            }
        },
    ))
}

#[cfg(not(feature = "cache"))]
fn invalidation<K, B>(_: &Share<K>, _: &Identify, _: &Request<B>) -> Option<share::AfterResponse> {
    None
}
