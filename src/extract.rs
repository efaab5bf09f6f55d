//! The `Flight` extractor: a lease a handler can move into a background task.

use std::{fmt, hash::Hash, marker::PhantomData, time::Duration};

use axum::extract::Path;
use axum_core::{
    body::Body,
    extract::{FromRef, FromRequestParts},
    response::{IntoResponse, Response},
};
use http::{request::Parts, StatusCode};

use crate::{
    flight::{spawn_holding, Flights, LeaseGuard, LeaseHandle, Settled, Unavailable},
    rejection::{AlreadyRunning, ConflictResponse},
    role::{FlightRole, Source as Answered},
};

/// An extractor whose value names the work a request starts.
///
/// Implemented for [`Path<T>`](axum::extract::Path) (the key is `T`);
/// implement it for your own extractor to take the key from anything else.
///
/// ```
/// use axum::{extract::FromRequestParts, http::request::Parts};
/// use tower_singleflight::extract::FlightKey;
///
/// /// The tenant's nightly import, one at a time per tenant.
/// struct TenantImport(String);
///
/// impl<S: Send + Sync> FromRequestParts<S> for TenantImport {
///     type Rejection = axum::http::StatusCode;
///
///     async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
///         let tenant = parts.headers.get("x-tenant").and_then(|v| v.to_str().ok());
///         tenant.map(|t| Self(t.to_owned())).ok_or(axum::http::StatusCode::BAD_REQUEST)
///     }
/// }
///
/// impl FlightKey for TenantImport {
///     type Key = String;
///
///     fn flight_key(&self) -> String {
///         self.0.clone()
///     }
/// }
/// ```
pub trait FlightKey {
    /// The key of the lease.
    type Key: Hash + Eq + Clone + Send + Sync + 'static;

    /// The key this request's work runs under.
    fn flight_key(&self) -> Self::Key;
}

impl<T> FlightKey for Path<T>
where
    T: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Key = T;

    fn flight_key(&self) -> T {
        self.0.clone()
    }
}

/// Where [`Flight`] finds its table: in request extensions (the default).
///
/// Add the table with `.layer(axum::Extension(flights))`.
#[derive(Debug, Clone, Copy)]
pub struct FromExtensions;

/// Where [`Flight`] finds its table: in the router's state, through
/// [`FromRef`].
#[derive(Debug, Clone, Copy)]
pub struct FromState;

/// A lease on the key extracted by `E`, taken before the handler runs.
///
/// The key is held until the lease guard is dropped: keep the `Flight` (or
/// [`into_guard`](Self::into_guard)) alive in a spawned task and the work can
/// outlive the request. When the key is already held, the request is answered
/// `409 Conflict` as [`SingleFlightLayer::reject`](crate::SingleFlightLayer::reject)
/// answers, including the holder's progress, and the handler does not run:
/// with the [`ConflictResponse`] found in the request's extensions
/// (`.layer(Extension(ConflictResponse::problem_json()))`, whichever the
/// table's source), or the default JSON body.
///
/// The table, a [`Flights<E::Key>`](Flights), is found in request extensions
/// (`Flight<E>`) or in the router state (`Flight<E, FromState>`). Leases last
/// the table's [`lease_ttl`](Flights::with_lease_ttl) unless renewed.
///
/// ```
/// use std::time::Duration;
/// use axum::{extract::Path, http::StatusCode, routing::post, Extension, Router};
/// use tower_singleflight::{extract::Flight, Flights, Progress};
///
/// async fn resume(flight: Flight<Path<(String, u32)>>) -> StatusCode {
///     // Reported before answering, so duplicates see progress at once.
///     flight.guard().report(Progress::steps(0, 10)).await;
///     flight.spawn(|lease| async move {
///         for step in 0..10 {
///             lease.report(Progress::steps(step, 10)).await;
///             tokio::time::sleep(Duration::from_millis(100)).await;
///         }
///     });
///     StatusCode::ACCEPTED
/// }
///
/// let flights: Flights<(String, u32)> = Flights::new();
/// let app: Router = Router::new()
///     .route("/flows/{flow}/phases/{phase}/resume", post(resume))
///     .layer(Extension(flights));
/// ```
///
/// # Cancellation
///
/// Dropping the guard frees the key: the end of the task, an error, a panic
/// (the task's future is dropped) or an abort.
///
/// # Timeouts
///
/// The lease ends at its TTL even if the task still runs: a task that hangs
/// loses the key, and its guard's drop then does nothing to the next holder.
/// A job that may run longer than the TTL must [`renew`](LeaseHandle::renew)
/// its lease as it goes (and can stop when `renew` or `report` answers
/// `false`).
pub struct Flight<E: FlightKey, Source = FromExtensions> {
    value: E,
    guard: LeaseGuard<E::Key>,
    source: PhantomData<fn() -> Source>,
}

impl<E: FlightKey, Source> Flight<E, Source> {
    /// What `E` extracted.
    pub fn value(&self) -> &E {
        &self.value
    }

    /// The key held.
    pub fn key(&self) -> &E::Key {
        self.guard.key()
    }

    /// The lease guard, to report progress or renew.
    pub fn guard(&self) -> &LeaseGuard<E::Key> {
        &self.guard
    }

    /// The lease guard alone; the key is held until it is dropped.
    pub fn into_guard(self) -> LeaseGuard<E::Key> {
        self.guard
    }

    /// What `E` extracted, and the lease guard.
    pub fn into_parts(self) -> (E, LeaseGuard<E::Key>) {
        (self.value, self.guard)
    }

    /// Runs `job` in a spawned task that owns the lease, and frees the key
    /// when the task ends, whatever way it ends and whatever `job` keeps.
    /// `job` receives a [`LeaseHandle`], to report progress or renew: the
    /// lease still ends at its TTL unless renewed.
    ///
    /// A panic in `job` frees the key too, counts in the table's
    /// [`FlightStats::panicked`](crate::flight::FlightStats::panicked) and is logged
    /// (`tracing::error!`) with a digest of the key and the lease's
    /// generation; the `JoinHandle` still reports it.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, like [`tokio::spawn`].
    pub fn spawn<F, Fut>(self, job: F) -> tokio::task::JoinHandle<Fut::Output>
    where
        F: FnOnce(LeaseHandle<E::Key>) -> Fut,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        spawn_holding(self.guard, job)
    }
}

impl<E: FlightKey + fmt::Debug, Source> fmt::Debug for Flight<E, Source> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flight")
            .field("value", &self.value)
            .field("guard", &self.guard)
            .finish()
    }
}

impl<S, E> FromRequestParts<S> for Flight<E, FromExtensions>
where
    S: Send + Sync,
    E: FromRequestParts<S> + FlightKey + Send,
{
    type Rejection = FlightRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let flights = parts
            .extensions
            .get::<Flights<E::Key>>()
            .cloned()
            .ok_or_else(|| FlightRejection::MissingTable(MissingTable::of::<E::Key>()))?;
        acquire(flights, parts, state).await
    }
}

impl<S, E> FromRequestParts<S> for Flight<E, FromState>
where
    S: Send + Sync,
    E: FromRequestParts<S> + FlightKey + Send,
    Flights<E::Key>: FromRef<S>,
{
    type Rejection = FlightRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        acquire(Flights::from_ref(state), parts, state).await
    }
}

async fn acquire<S, E, Source>(
    flights: Flights<E::Key>,
    parts: &mut Parts,
    state: &S,
) -> Result<Flight<E, Source>, FlightRejection>
where
    S: Send + Sync,
    E: FromRequestParts<S> + FlightKey,
{
    let value = E::from_request_parts(parts, state)
        .await
        .map_err(|rejection| FlightRejection::Key(rejection.into_response()))?;
    let mut acquire = flights.try_acquire(value.flight_key(), flights.lease_ttl());
    let settled = match acquire.settle_now() {
        Some(settled) => settled,
        None => std::future::poll_fn(|cx| acquire.poll_settled(cx)).await,
    };
    // Counted as the layer counts its requests (feature `metrics`).
    let meter = flights.meter();
    match settled {
        Settled::Acquired(guard) => {
            meter.responded(FlightRole::Leader, Answered::Inner, StatusCode::OK);
            Ok(Flight {
                value,
                guard,
                source: PhantomData,
            })
        }
        Settled::Held(holder, key) => {
            let running = AlreadyRunning::new(&holder, flights.retry_hint(&key, &holder));
            // Written here, so that it is counted by the status it has.
            let response = match parts.extensions.get::<ConflictResponse>() {
                Some(conflict) => conflict.respond(&running),
                None => ConflictResponse::json().respond(&running),
            };
            meter.responded(FlightRole::Rejected, Answered::Generated, response.status());
            Err(FlightRejection::AlreadyRunning(running, response))
        }
        Settled::Unavailable(unavailable) => {
            let status = StatusCode::SERVICE_UNAVAILABLE;
            meter.responded(FlightRole::Rejected, Answered::Generated, status);
            Err(FlightRejection::Unavailable(unavailable))
        }
    }
}

/// Why [`Flight`] did not let the handler run.
#[derive(Debug)]
#[non_exhaustive]
pub enum FlightRejection {
    /// The key is held: the running work, and the answer the
    /// [`ConflictResponse`] found in the request's extensions wrote (by
    /// default `409 Conflict` with a JSON body).
    AlreadyRunning(AlreadyRunning, http::Response<bytes::Bytes>),
    /// The lease store could not be asked in time and fails closed, or the
    /// table is shutting down ([`Flights::shutdown`]): `503 Service
    /// Unavailable` with `Retry-After`.
    Unavailable(Unavailable),
    /// No table was found: `500`, a mistake in the router's setup.
    MissingTable(MissingTable),
    /// The key's own extractor rejected the request; its response.
    Key(Response),
}

impl IntoResponse for FlightRejection {
    fn into_response(self) -> Response {
        match self {
            Self::AlreadyRunning(_, response) => rejected(response),
            Self::Unavailable(_) => {
                rejected(crate::rejection::store_unavailable(Duration::from_secs(1)))
            }
            Self::MissingTable(missing) => missing.into_response(),
            Self::Key(response) => response,
        }
    }
}

/// An answer of the extractor's own, marked as the reject layer marks it.
fn rejected(mut response: http::Response<bytes::Bytes>) -> Response {
    response.extensions_mut().insert(FlightRole::Rejected);
    response.map(Body::from)
}

impl IntoResponse for AlreadyRunning {
    fn into_response(self) -> Response {
        ConflictResponse::json().respond(&self).map(Body::from)
    }
}

/// No [`Flights`] table for the extractor's key type was found.
#[derive(Debug)]
#[non_exhaustive]
pub struct MissingTable {
    key_type: &'static str,
}

impl MissingTable {
    fn of<K>() -> Self {
        Self {
            key_type: std::any::type_name::<K>(),
        }
    }

    /// `500 Internal Server Error`: the router is set up wrong.
    pub fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    /// The explanation sent in the body.
    pub fn body_text(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for MissingTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Missing single-flight table: no `Flights<{}>` (with the default `()` \
             value type) in request extensions. \
             Is it added with `.layer(axum::Extension(flights))`? \
             (Or keep it in the router state and extract `Flight<_, FromState>`.)",
            self.key_type
        )
    }
}

impl std::error::Error for MissingTable {}

impl IntoResponse for MissingTable {
    fn into_response(self) -> Response {
        tracing::error!(key_type = self.key_type, "Flight extractor has no table");
        (self.status(), self.body_text()).into_response()
    }
}
