//! The responses the layer answers with itself: 409, 503, 504, 500.

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::Value;

use crate::flight::{Holder, Progress};

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

/// The key is held: the work this request would start is already running.
///
/// Answered as `409 Conflict` with `Retry-After` and, by default, the body
/// `{"status":"already_running","message":"...","running_for_ms":N}`, plus
/// `"progress":{"done":D,"total":T}` once the holder has reported some.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AlreadyRunning {
    running_for: Duration,
    generation: u64,
    progress: Option<Progress>,
    retry_after: Duration,
}

impl AlreadyRunning {
    /// Describes `holder` to a duplicate, asking it to retry after
    /// `retry_after`.
    pub fn new(holder: &Holder, retry_after: Duration) -> Self {
        Self {
            running_for: holder.running_for(),
            generation: holder.generation(),
            progress: holder.progress().cloned(),
            retry_after,
        }
    }

    /// How long the running work has held the key.
    pub fn running_for(&self) -> Duration {
        self.running_for
    }

    /// The generation of the holder's lease.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What the holder last reported of its work.
    pub fn progress(&self) -> Option<&Progress> {
        self.progress.as_ref()
    }

    /// How long the client is asked to wait before retrying.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// `409 Conflict`.
    pub fn status(&self) -> StatusCode {
        StatusCode::CONFLICT
    }

    /// The human-readable message of the body.
    pub fn body_text(&self) -> String {
        MESSAGE.to_owned()
    }

    /// The default JSON body.
    pub fn to_json(&self) -> Value {
        self.body(Format::Json)
    }

    /// The RFC 9457 problem details body.
    pub fn to_problem_json(&self) -> Value {
        self.body(Format::ProblemJson)
    }

    fn body(&self, format: Format) -> Value {
        // What a duplicate gets, read back: the body is written one way only.
        serde_json::from_slice(&self.render(format)).unwrap_or(Value::Null)
    }
}

/// The message of every conflict body. A macro, so that the bodies'
/// constant openings below are spelled with it at compile time.
macro_rules! message {
    () => {
        "this work is already running; retry later"
    };
}

const MESSAGE: &str = message!();

#[derive(Clone, Copy)]
enum Format {
    Json,
    ProblemJson,
}

/// The constant opening of each conflict body, up to `running_for_ms`.
const JSON_HEAD: &[u8] = concat!(
    r#"{"status":"already_running","message":""#,
    message!(),
    r#"","running_for_ms":"#
)
.as_bytes();
const PROBLEM_HEAD: &[u8] = concat!(
    r#"{"type":"about:blank","title":"Conflict","status":409,"detail":""#,
    message!(),
    r#"","code":"already_running","running_for_ms":"#
)
.as_bytes();

impl AlreadyRunning {
    /// The body, as bytes: the constant opening, then what varies, so that
    /// no constant string is escaped again for every duplicate.
    fn render(&self, format: Format) -> Bytes {
        let mut body = Vec::with_capacity(192);
        body.extend_from_slice(match format {
            Format::Json => JSON_HEAD,
            Format::ProblemJson => PROBLEM_HEAD,
        });
        body.extend_from_slice(millis(self.running_for).to_string().as_bytes());
        if let Some(progress) = &self.progress {
            body.extend_from_slice(br#","progress":"#);
            // A `Value` of numbers and strings always serializes.
            let _ = serde_json::to_writer(&mut body, &progress.to_json());
        }
        body.push(b'}');
        Bytes::from(body)
    }
}

impl fmt::Display for AlreadyRunning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MESSAGE)
    }
}

impl std::error::Error for AlreadyRunning {}

type CustomConflict = dyn Fn(&AlreadyRunning) -> Response<Bytes> + Send + Sync;

/// How a duplicate is answered: the one choice the reject layer
/// ([`conflict_response`](crate::SingleFlightLayer::conflict_response)) and
/// the [`Flight`](crate::extract::Flight) extractor both use.
///
/// Every form gets `Retry-After` unless it sets its own.
///
/// ```
/// use axum::{routing::post, Extension, Router};
/// use tower_singleflight::{layer::ConflictResponse, SingleFlightLayer};
///
/// let conflict = ConflictResponse::problem_json();
/// // The reject layer...
/// let layer = SingleFlightLayer::reject().conflict_response(conflict.clone());
/// // ...and the `Flight` extractor, which finds it in the request's extensions.
/// let app: Router = Router::new()
///     .route("/jobs", post(|| async { "started" }))
///     .layer(Extension(conflict));
/// # let _ = (layer, app);
/// ```
#[derive(Clone, Default)]
pub struct ConflictResponse(ConflictForm);

#[derive(Clone, Default)]
enum ConflictForm {
    #[default]
    Json,
    ProblemJson,
    Custom(Arc<CustomConflict>),
}

impl ConflictResponse {
    /// `application/json`:
    /// `{"status":"already_running","message":"...","running_for_ms":N}`,
    /// plus `"progress"` once the holder reported some. The default.
    pub fn json() -> Self {
        Self(ConflictForm::Json)
    }

    /// RFC 9457 `application/problem+json`, with the same fields as
    /// extension members.
    pub fn problem_json() -> Self {
        Self(ConflictForm::ProblemJson)
    }

    /// Your own response, from what is known of the running work.
    pub fn custom<F, B>(respond: F) -> Self
    where
        F: Fn(&AlreadyRunning) -> Response<B> + Send + Sync + 'static,
        B: Into<Bytes>,
    {
        Self(ConflictForm::Custom(Arc::new(move |busy| {
            respond(busy).map(Into::into)
        })))
    }

    /// The answer to a duplicate of `running`.
    pub fn respond(&self, running: &AlreadyRunning) -> Response<Bytes> {
        let mut response = match &self.0 {
            ConflictForm::Json => {
                json_response(running.status(), running.render(Format::Json), JSON)
            }
            ConflictForm::ProblemJson => json_response(
                running.status(),
                running.render(Format::ProblemJson),
                PROBLEM_JSON,
            ),
            ConflictForm::Custom(respond) => respond(running),
        };
        response
            .headers_mut()
            .entry(header::RETRY_AFTER)
            .or_insert_with(|| retry_after(running.retry_after));
        response
    }
}

impl fmt::Debug for ConflictResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            ConflictForm::Json => "ConflictResponse::Json",
            ConflictForm::ProblemJson => "ConflictResponse::ProblemJson",
            ConflictForm::Custom(_) => "ConflictResponse::Custom",
        })
    }
}

/// `503`: a bound was reached.
pub(crate) fn overloaded(retry: Duration) -> Response<Bytes> {
    let mut response = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        Bytes::from_static(
            br#"{"status":"overloaded","message":"too many requests are waiting for this response; retry later"}"#,
        ),
        JSON,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, retry_after(retry));
    response
}

/// `503`: the key was not taken, though nobody holds it here
/// ([`Unavailable`](crate::flight::Unavailable)): the lease store could not
/// be asked in time and fails closed (the work may or may not run
/// elsewhere), or the table is shutting down. The work did not start.
pub(crate) fn store_unavailable(retry: Duration) -> Response<Bytes> {
    let mut response = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        Bytes::from_static(
            br#"{"status":"unavailable","message":"the work could not be started now; retry later"}"#,
        ),
        JSON,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, retry_after(retry));
    response
}

/// `504`: this waiter waited longer than its maximum, or the work outlived
/// its lease.
pub(crate) fn timed_out() -> Response<Bytes> {
    json_response(
        StatusCode::GATEWAY_TIMEOUT,
        Bytes::from_static(br#"{"status":"timeout","message":"the response took too long"}"#),
        JSON,
    )
}

/// `504`: the client asked for a cached answer only (`only-if-cached`), and
/// none is stored (RFC 9111 §5.2.1.7).
#[cfg(feature = "cache")]
pub(crate) fn not_cached() -> Response<Bytes> {
    json_response(
        StatusCode::GATEWAY_TIMEOUT,
        Bytes::from_static(
            br#"{"status":"not_cached","message":"nothing cached for this request"}"#,
        ),
        JSON,
    )
}

/// A request reject mode cannot key: `400` when it names two hosts, `414`
/// when its identity is longer than the layer keeps.
pub(crate) fn unkeyable(why: crate::identity::Unkeyable) -> Response<Bytes> {
    use crate::identity::Unkeyable;
    let (status, body): (_, &'static [u8]) = match why {
        Unkeyable::AmbiguousHost => (
            StatusCode::BAD_REQUEST,
            br#"{"status":"ambiguous_host","message":"the request names more than one host"}"#,
        ),
        // Only share mode asks for these, and it lets such requests
        // through; answered alike should that ever change.
        Unkeyable::NotCanonical | Unkeyable::OwnAnswer => (
            StatusCode::BAD_REQUEST,
            br#"{"status":"not_canonical","message":"the request target is not in normal form"}"#,
        ),
        Unkeyable::TooLong => (
            StatusCode::URI_TOO_LONG,
            br#"{"status":"key_too_long","message":"the request target is too long"}"#,
        ),
    };
    json_response(status, Bytes::from_static(body), JSON)
}

/// `502`: the call this request waited for failed, and so did the one more
/// try it shared with the other waiters.
pub(crate) fn bad_gateway() -> Response<Bytes> {
    json_response(
        StatusCode::BAD_GATEWAY,
        Bytes::from_static(br#"{"status":"error","message":"the shared request failed"}"#),
        JSON,
    )
}

/// `500`: the work failed. Never carries the panic's message.
pub(crate) fn failed() -> Response<Bytes> {
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        Bytes::from_static(br#"{"status":"error","message":"the request failed"}"#),
        JSON,
    )
}

/// Marks a response share mode made itself (not the service's, nor a
/// stored one): RFC 9211 §2 has a cache add no `Cache-Status` to those.
#[cfg(feature = "cache")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Generated;

fn json_response(status: StatusCode, body: Bytes, content_type: HeaderValue) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
}

/// Whole seconds, rounded up, at least one: `Retry-After: 0` invites a storm.
fn retry_after(after: Duration) -> HeaderValue {
    let seconds = after
        .as_secs()
        .saturating_add(u64::from(after.subsec_nanos() > 0));
    HeaderValue::from(seconds.max(1))
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flight::LeaseId;

    fn rejection() -> AlreadyRunning {
        let since = tokio::time::Instant::now();
        let holder = Holder::new(LeaseId::new(3, 9), since, since + Duration::from_secs(60));
        AlreadyRunning::new(&holder, Duration::from_millis(1500))
    }

    #[tokio::test(start_paused = true)]
    async fn the_default_conflict_is_json_with_retry_after() {
        let rejection = rejection();
        tokio::time::advance(Duration::from_millis(1234)).await;
        let rejection = AlreadyRunning {
            running_for: Duration::from_millis(1234),
            ..rejection
        };
        let response = ConflictResponse::json().respond(&rejection);
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body: Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["status"], "already_running");
        assert_eq!(body["running_for_ms"], 1234);
    }

    #[tokio::test(start_paused = true)]
    async fn progress_is_shown_once_reported() {
        let since = tokio::time::Instant::now();
        let holder = Holder::new(LeaseId::new(1, 1), since, since + Duration::from_secs(60))
            .with_progress(Progress::steps(10, 289));
        let body = AlreadyRunning::new(&holder, Duration::from_secs(1)).to_json();
        assert_eq!(
            body["progress"],
            serde_json::json!({"done": 10, "total": 289})
        );
        assert!(rejection().to_json().get("progress").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn rendered_bodies_are_whole_json_objects() {
        let since = tokio::time::Instant::now();
        let holder = Holder::new(LeaseId::new(1, 1), since, since + Duration::from_secs(60))
            .with_progress(Progress::steps(3, 7));
        tokio::time::advance(Duration::from_millis(4321)).await;
        let rejection = AlreadyRunning::new(&holder, Duration::from_secs(1));
        let parse =
            |format| -> Value { serde_json::from_slice(&rejection.render(format)).unwrap() };
        assert_eq!(
            parse(Format::Json),
            serde_json::json!({
                "status": "already_running",
                "message": MESSAGE,
                "running_for_ms": 4321,
                "progress": {"done": 3, "total": 7},
            })
        );
        assert_eq!(
            parse(Format::ProblemJson),
            serde_json::json!({
                "type": "about:blank",
                "title": "Conflict",
                "status": 409,
                "detail": MESSAGE,
                "code": "already_running",
                "running_for_ms": 4321,
                "progress": {"done": 3, "total": 7},
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn problem_json_follows_rfc_9457() {
        let response = ConflictResponse::problem_json().respond(&rejection());
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body: Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["status"], 409);
        assert_eq!(body["title"], "Conflict");
    }

    #[tokio::test(start_paused = true)]
    async fn a_custom_conflict_keeps_its_own_retry_after() {
        let custom = ConflictResponse::custom(|_: &AlreadyRunning| {
            Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header(header::RETRY_AFTER, "30")
                .body(Bytes::from_static(b"busy"))
                .unwrap()
        });
        let response = custom.respond(&rejection());
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "30");
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after(Duration::ZERO), "1");
        assert_eq!(retry_after(Duration::from_millis(1001)), "2");
        assert_eq!(retry_after(Duration::from_secs(5)), "5");
    }
}
