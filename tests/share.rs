//! Share mode through an axum router: one run, one response, many copies.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering::SeqCst},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::Body,
    extract::Path,
    http::{header, HeaderMap, StatusCode},
    response::IntoResponse,
    routing, Json, Router,
};
use common::{
    call_kept, count, failing_backend, get, get_with, gets_ready, played, send, send_all, spawn,
    until, Runs,
};
use serde_json::json;
use tokio::time::{sleep, Instant};
use tower::ServiceExt;
use tower_singleflight::{layer::ShareLayer, FlightRole, SingleFlightLayer};

const WORK: Duration = Duration::from_millis(300);

/// `GET /report/{id}`: sleeps, then names the id and which run this was.
fn report_app(layer: ShareLayer, runs: &Runs) -> Router {
    let runs = runs.clone();
    Router::new()
        .route(
            "/report/{id}",
            routing::get(move |Path(id): Path<u32>| async move {
                let execution = runs.bump();
                sleep(WORK).await;
                Json(json!({ "id": id, "execution": execution }))
            }),
        )
        .layer(layer)
}

#[tokio::test(start_paused = true)]
async fn a_thousand_identical_requests_run_the_handler_once() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::share();
    let app = report_app(layer.clone(), &runs);

    let replies = send_all(&app, (0..1000).map(|_| get("/report/1"))).await;

    assert_eq!(runs.get(), 1);
    assert_eq!(count(&replies, StatusCode::OK), 1000);
    assert!(replies.iter().all(|reply| reply.body == replies[0].body));
    assert!(replies
        .iter()
        .all(|reply| reply.headers == replies[0].headers));
    assert_eq!(replies[0].json(), json!({ "id": 1, "execution": 1 }));
    assert_eq!(played(&replies, FlightRole::Follower), 999);
    let unmarked = replies.iter().filter(|reply| reply.role.is_none()).count();
    assert_eq!(
        unmarked, 1,
        "by default the leader's own answer carries no role"
    );
    assert_eq!(layer.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn overlapping_requests_with_different_keys_each_run() {
    let runs = Runs::default();
    let app = report_app(SingleFlightLayer::share(), &runs);

    let requests = (0..100).map(|i| get(&format!("/report/{}", i % 10)));
    let replies = send_all(&app, requests).await;

    assert_eq!(runs.get(), 10);
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply.json()["id"], i % 10, "each key gets its own response");
    }
}

#[tokio::test(start_paused = true)]
async fn the_next_request_after_a_flight_runs_afresh() {
    let runs = Runs::default();
    let app = report_app(SingleFlightLayer::share(), &runs);
    let first = send(&app, get("/report/1")).await;
    let second = send(&app, get("/report/1")).await;
    assert_eq!(first.json()["execution"], 1);
    assert_eq!(second.json()["execution"], 2, "nothing is cached");
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_client_leaves_still_serves_its_followers() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::share();
    let app = report_app(layer.clone(), &runs);

    let leader = spawn(&app, get("/report/1"));
    until(|| runs.get() == 1).await;
    let followers = tokio::spawn({
        let app = app.clone();
        async move { send_all(&app, (0..5).map(|_| get("/report/1"))).await }
    });
    until(|| layer.stats().followers == 5).await;
    leader.abort();

    let replies = followers.await.unwrap();
    assert_eq!(count(&replies, StatusCode::OK), 5);
    assert_eq!(runs.get(), 1);
    assert_eq!(layer.stats().in_flight, 0);
}

/// `GET /slow`: counts its start, sleeps `WORK`, then sets `finished`.
fn finishing_app(layer: ShareLayer, runs: &Runs, finished: Arc<AtomicBool>) -> Router {
    let runs = runs.clone();
    Router::new()
        .route(
            "/slow",
            routing::get(move || async move {
                runs.bump();
                sleep(WORK).await;
                finished.store(true, SeqCst);
                "done"
            }),
        )
        .layer(layer)
}

/// The leader runs the work in its own future; when its client leaves with
/// nobody else waiting, the work still ends in a task (what it cost is not
/// wasted), unless `abort_when_unused` says to drop it.
async fn a_lone_leader_leaves(abort_when_unused: bool) -> bool {
    let (runs, finished) = (Runs::default(), Arc::new(AtomicBool::new(false)));
    let layer = SingleFlightLayer::share().abort_when_unused(abort_when_unused);
    let app = finishing_app(layer.clone(), &runs, finished.clone());

    let leader = spawn(&app, get("/slow"));
    until(|| runs.get() == 1).await;
    leader.abort();
    sleep(WORK * 2).await;

    assert_eq!(runs.get(), 1);
    assert_eq!(layer.stats().in_flight, 0, "the key is free either way");
    finished.load(SeqCst)
}

#[tokio::test(start_paused = true)]
async fn a_lone_leader_that_leaves_lets_its_work_finish() {
    assert!(a_lone_leader_leaves(false).await);
}

#[tokio::test(start_paused = true)]
async fn a_lone_leader_that_leaves_drops_its_work_when_told_to() {
    assert!(!a_lone_leader_leaves(true).await);
}

#[tokio::test(start_paused = true)]
async fn a_follower_that_leaves_disturbs_nobody() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::share();
    let app = report_app(layer.clone(), &runs);

    let stayers = tokio::spawn({
        let app = app.clone();
        async move { send_all(&app, (0..3).map(|_| get("/report/1"))).await }
    });
    until(|| layer.stats().followers == 2).await;
    let leaver = spawn(&app, get("/report/1"));
    until(|| layer.stats().followers == 3).await;
    leaver.abort();

    let replies = stayers.await.unwrap();
    assert_eq!(count(&replies, StatusCode::OK), 3);
    assert_eq!(runs.get(), 1);
}

/// A service whose handler panics, in `call` or in its future, while `armed`.
fn panicking_app(runs: &Runs, in_call: bool, armed: Arc<AtomicBool>) -> Router {
    let runs = runs.clone();
    let service = tower::service_fn(move |_request: http::Request<Body>| {
        let execution = runs.bump();
        let armed = armed.clone();
        if in_call && armed.load(SeqCst) {
            panic!("secret panic message in call");
        }
        async move {
            sleep(WORK).await;
            if armed.load(SeqCst) {
                panic!("secret panic message in the future");
            }
            Ok::<_, std::convert::Infallible>(format!("run {execution}").into_response())
        }
    });
    Router::new()
        .route_service("/panic", service)
        .layer(SingleFlightLayer::share())
}

async fn every_waiter_gets_500_when_the_handler_panics(in_call: bool) {
    let runs = Runs::default();
    let armed = Arc::new(AtomicBool::new(true));
    let app = panicking_app(&runs, in_call, armed.clone());

    let replies = send_all(&app, (0..20).map(|_| get("/panic"))).await;
    assert_eq!(count(&replies, StatusCode::INTERNAL_SERVER_ERROR), 20);
    // A panic in the future comes after `WORK`, when all twenty wait on the
    // one run. A panic in `call` ends each run as it starts, before the next
    // request arrives: each is its own flight, and its own 500.
    let expected_runs = if in_call { 20 } else { 1 };
    assert_eq!(runs.get(), expected_runs);
    for reply in &replies {
        assert!(
            !reply.text().contains("secret"),
            "the panic message never leaks"
        );
        assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
    }

    armed.store(false, SeqCst);
    let next = send(&app, get("/panic")).await;
    let expected = format!("run {}", expected_runs + 1);
    assert_eq!(
        (next.status, next.text()),
        (StatusCode::OK, expected.as_str())
    );
}

#[tokio::test(start_paused = true)]
async fn a_panic_inside_the_handler_future_gives_every_waiter_500() {
    every_waiter_gets_500_when_the_handler_panics(false).await;
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_call_gives_every_waiter_500() {
    every_waiter_gets_500_when_the_handler_panics(true).await;
}

#[tokio::test(start_paused = true)]
async fn a_waiter_past_its_max_wait_alone_gets_504() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::share().max_wait(Duration::from_millis(250));
    let app = report_app(layer.clone(), &runs);

    // The leader arrives at 0 ms and gives up at 250 ms; the follower
    // arrives at 100 ms and is still within its wait when the work ends at 300.
    let leader = spawn(&app, get("/report/1"));
    sleep(Duration::from_millis(100)).await;
    let follower = send(&app, get("/report/1")).await;
    let leader = leader.await.unwrap();

    assert_eq!(leader.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(leader.json()["status"], "timeout");
    assert_eq!(follower.status, StatusCode::OK);
    assert_eq!(runs.get(), 1);
    assert_eq!(layer.stats().timed_out, 1);
}

#[tokio::test(start_paused = true)]
async fn work_past_the_flight_lease_is_aborted_and_the_key_freed() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::share().lease(Duration::from_millis(100));
    let app = report_app(layer.clone(), &runs);

    let replies = send_all(&app, (0..3).map(|_| get("/report/1"))).await;
    assert_eq!(count(&replies, StatusCode::GATEWAY_TIMEOUT), 3);
    assert_eq!(layer.stats().in_flight, 0);
}

/// The handler answers with whatever `respond` builds, after `WORK`.
fn app_responding<R>(layer: ShareLayer, runs: &Runs, respond: fn(usize, HeaderMap) -> R) -> Router
where
    R: IntoResponse + Send + 'static,
{
    let runs = runs.clone();
    Router::new()
        .route(
            "/thing",
            routing::get(move |headers: HeaderMap| async move {
                let execution = runs.bump();
                sleep(WORK).await;
                respond(execution, headers)
            }),
        )
        .layer(layer)
}

/// Ten concurrent requests for an unshareable response: the leader gets its
/// own, then the nine followers run theirs side by side, not in a queue.
async fn unshareable<R>(layer: ShareLayer, respond: fn(usize, HeaderMap) -> R)
where
    R: IntoResponse + Send + 'static,
{
    let runs = Runs::default();
    let app = app_responding(layer.expose_role(), &runs, respond);
    let start = Instant::now();

    let replies = send_all(&app, (0..10).map(|_| get("/thing"))).await;

    assert_eq!(start.elapsed(), WORK * 2, "followers ran concurrently");
    assert_eq!(runs.get(), 10);
    assert_eq!(count(&replies, StatusCode::OK), 10);
    assert_eq!(played(&replies, FlightRole::Leader), 1);
    assert_eq!(played(&replies, FlightRole::Fallback), 9);
    let mut bodies: Vec<_> = replies.iter().map(|reply| reply.body.clone()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 10, "every caller got its own response");
}

#[tokio::test(start_paused = true)]
async fn a_set_cookie_response_is_not_shared() {
    unshareable(SingleFlightLayer::share(), |run, _| {
        (
            [(header::SET_COOKIE, format!("session={run}"))],
            format!("run {run}"),
        )
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_no_store_response_is_not_shared() {
    unshareable(SingleFlightLayer::share(), |run, _| {
        ([(header::CACHE_CONTROL, "no-store")], format!("run {run}"))
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_cap_is_not_shared_and_reaches_the_leader_whole() {
    unshareable(SingleFlightLayer::share().max_body(1024), |run, _| {
        format!("run {run} {}", "x".repeat(4096))
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_private_response_is_not_shared_between_anonymous_callers() {
    unshareable(SingleFlightLayer::share(), |run, _| {
        ([(header::CACHE_CONTROL, "private")], format!("run {run}"))
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn vary_shares_only_with_followers_that_match_the_leader() {
    let runs = Runs::default();
    let app = app_responding(SingleFlightLayer::share(), &runs, |run, headers| {
        let language = headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        (
            [(header::VARY, "accept-language")],
            format!("run {run} in {language}"),
        )
    });
    let with_language = |value| get_with("/thing", header::ACCEPT_LANGUAGE, value);
    let start = Instant::now();

    let replies = send_all(&app, ["fr", "fr", "de", "de"].map(with_language)).await;

    assert_eq!(start.elapsed(), WORK * 2);
    assert_eq!(
        runs.get(),
        2,
        "the French follower shared; the Germans entered again and shared one run"
    );
    assert_eq!(replies[0].body, replies[1].body);
    assert_eq!(replies[1].role, Some(FlightRole::Follower));
    assert!(replies[2].text().ends_with("in de"));
    assert_eq!(replies[2].body, replies[3].body);
}

#[tokio::test(start_paused = true)]
async fn callers_with_different_credentials_never_share() {
    let runs = Runs::default();
    let app = app_responding(SingleFlightLayer::share(), &runs, |run, headers| {
        let caller = headers[header::AUTHORIZATION]
            .to_str()
            .unwrap_or("?")
            .to_owned();
        (
            [(header::CACHE_CONTROL, "private")],
            format!("run {run} for {caller}"),
        )
    });
    let as_caller = |value| get_with("/thing", header::AUTHORIZATION, value);

    let replies = send_all(
        &app,
        ["Bearer a", "Bearer b", "Bearer a", "Bearer b"].map(as_caller),
    )
    .await;

    assert_eq!(runs.get(), 2);
    assert!(replies[0].text().ends_with("for Bearer a"));
    assert!(replies[1].text().ends_with("for Bearer b"));
    assert_eq!(
        replies[0].body, replies[2].body,
        "one caller's private response is shared with itself"
    );
    assert_eq!(replies[1].body, replies[3].body);
}

#[tokio::test(start_paused = true)]
async fn sharing_across_identities_is_an_explicit_opt_out() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::share().share_across_identities();
    let app = app_responding(layer, &runs, |run, _| format!("run {run}"));
    let as_caller = |value| get_with("/thing", header::COOKIE, value);
    let replies = send_all(&app, ["a=1", "a=2"].map(as_caller)).await;
    assert_eq!(runs.get(), 1);
    assert_eq!(replies[0].body, replies[1].body);
}

#[tokio::test(start_paused = true)]
async fn head_and_get_never_share() {
    let runs = Runs::default();
    let app = report_app(SingleFlightLayer::share(), &runs);
    let replies = send_all(
        &app,
        [get("/report/1"), common::request("HEAD", "/report/1")],
    )
    .await;
    assert_eq!(runs.get(), 2);
    assert_eq!(count(&replies, StatusCode::OK), 2);
}

#[tokio::test(start_paused = true)]
async fn other_methods_pass_through() {
    let runs = Runs::default();
    let app = {
        let runs = runs.clone();
        Router::new()
            .route(
                "/thing",
                routing::post(move || async move { runs.bump().to_string() }),
            )
            .layer(SingleFlightLayer::share().expose_role())
    };
    let replies = send_all(&app, (0..5).map(|_| common::request("POST", "/thing"))).await;
    assert_eq!(runs.get(), 5);
    assert_eq!(played(&replies, FlightRole::Bypass), 5);
    assert_eq!(replies[0].headers["x-singleflight-role"], "bypass");
}

#[tokio::test(start_paused = true)]
async fn past_max_waiters_callers_get_503_at_once() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::share().max_waiters(3);
    let app = report_app(layer.clone(), &runs);

    let replies = send_all(&app, (0..5).map(|_| get("/report/1"))).await;

    assert_eq!(runs.get(), 1);
    assert_eq!(count(&replies, StatusCode::OK), 3);
    assert_eq!(count(&replies, StatusCode::SERVICE_UNAVAILABLE), 2);
    let overloaded = replies
        .iter()
        .find(|reply| reply.status == StatusCode::SERVICE_UNAVAILABLE)
        .unwrap();
    assert_eq!(overloaded.headers[header::RETRY_AFTER], "1");
    assert_eq!(overloaded.json()["status"], "overloaded");
    assert_eq!(layer.stats().overloaded, 2);
}

#[tokio::test(start_paused = true)]
async fn abort_when_unused_stops_the_handler_once_every_caller_left() {
    let cancelled = Arc::new(AtomicBool::new(false));
    let layer = SingleFlightLayer::share().abort_when_unused(true);
    let app = {
        let cancelled = cancelled.clone();
        Router::new()
            .route(
                "/forever",
                routing::get(move || async move {
                    struct Flag(Arc<AtomicBool>);
                    impl Drop for Flag {
                        fn drop(&mut self) {
                            self.0.store(true, SeqCst);
                        }
                    }
                    let _flag = Flag(cancelled);
                    std::future::pending::<()>().await;
                }),
            )
            .layer(layer.clone())
    };
    let callers: Vec<_> = (0..3).map(|_| spawn(&app, get("/forever"))).collect();
    until(|| layer.stats().followers == 2).await;

    callers[0].abort();
    callers[1].abort();
    tokio::task::yield_now().await;
    assert!(!cancelled.load(SeqCst), "one caller still waits");

    callers[2].abort();
    until(|| cancelled.load(SeqCst)).await;
    assert_eq!(layer.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn no_flight_is_left_after_100_000_requests_over_unique_keys() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::share();
    let app = {
        let runs = runs.clone();
        Router::new()
            .route(
                "/item/{id}",
                routing::get(move |Path(id): Path<u32>| async move {
                    runs.bump();
                    id.to_string()
                }),
            )
            .layer(layer.clone())
    };
    for batch in 0..100 {
        let requests = (0..1000).map(|i| get(&format!("/item/{}", batch * 1000 + i)));
        let replies = send_all(&app, requests).await;
        assert_eq!(count(&replies, StatusCode::OK), 1000);
    }
    assert_eq!(runs.get(), 100_000);
    let stats = layer.stats();
    assert_eq!((stats.in_flight, stats.leaders), (0, 100_000));
}

/// A request with these headers, for `/page`.
fn page(headers: &[(&'static str, &'static str)]) -> http::Request<Body> {
    let mut request = get("/page");
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    request
}

/// `GET /page`: answers for the host it was sent to, with an ETag, honouring
/// `If-None-Match`.
fn pages(runs: &Runs) -> Router {
    let runs = runs.clone();
    Router::new()
        .route(
            "/page",
            routing::get(move |headers: HeaderMap| async move {
                runs.bump();
                sleep(WORK).await;
                let host = headers[header::HOST].to_str().unwrap_or("?").to_owned();
                if headers
                    .get(header::IF_NONE_MATCH)
                    .is_some_and(|tag| tag == "\"v1\"")
                {
                    return StatusCode::NOT_MODIFIED.into_response();
                }
                ([(header::ETAG, "\"v1\"")], format!("home of {host}")).into_response()
            }),
        )
        .layer(SingleFlightLayer::share().expose_role())
}

#[tokio::test(start_paused = true)]
async fn requests_for_different_hosts_never_share() {
    let runs = Runs::default();
    let app = pages(&runs);
    let replies = send_all(
        &app,
        [
            page(&[("host", "tenant-a.example")]),
            page(&[("host", "tenant-b.example")]),
        ],
    )
    .await;
    assert_eq!(runs.get(), 2);
    assert_eq!(replies[0].text(), "home of tenant-a.example");
    assert_eq!(replies[1].text(), "home of tenant-b.example");
}

#[tokio::test(start_paused = true)]
async fn conditional_and_range_requests_get_their_own_answer() {
    let runs = Runs::default();
    let app = pages(&runs);
    let host = ("host", "a.example");
    let replies = send_all(
        &app,
        [
            page(&[host, ("if-none-match", "\"v1\"")]),
            page(&[host]),
            page(&[host, ("range", "bytes=0-3")]),
            page(&[host]),
        ],
    )
    .await;
    assert_eq!(replies[0].status, StatusCode::NOT_MODIFIED);
    assert_eq!(replies[0].role, Some(FlightRole::Bypass));
    assert_eq!(replies[2].role, Some(FlightRole::Bypass));
    assert_eq!(
        (replies[1].status, replies[1].text()),
        (StatusCode::OK, "home of a.example")
    );
    assert_eq!(replies[3].role, Some(FlightRole::Follower));
    assert_eq!(runs.get(), 3, "only the two plain requests shared a run");
}

#[tokio::test(start_paused = true)]
async fn waiting_followers_hold_none_of_the_inner_services_capacity() {
    let app: Router = Router::new()
        .route(
            "/slow",
            routing::get(|| async {
                sleep(Duration::from_secs(60)).await;
                "slow"
            }),
        )
        .route("/fast", routing::get(|| async { "fast" }));
    let service = tower::ServiceBuilder::new()
        .layer(SingleFlightLayer::share())
        .layer(tower::limit::ConcurrencyLimitLayer::new(4))
        .service(app);
    let call = |uri: &'static str| {
        let service = service.clone();
        tokio::spawn(async move {
            service
                .oneshot(get(uri))
                .await
                .map(|response| response.status())
        })
    };

    // One leader and three followers: one inner call runs, three wait.
    let slow: Vec<_> = (0..4).map(|_| call("/slow")).collect();
    tokio::task::yield_now().await;
    let fast = tokio::time::timeout(Duration::from_secs(5), call("/fast")).await;
    assert!(
        matches!(fast, Ok(Ok(Ok(StatusCode::OK)))),
        "waiting followers starved /fast"
    );
    for request in slow {
        request.abort();
    }
}

/// The same when each caller keeps its service after `call`, as a
/// connection or a client loop does: the readiness a follower's `poll_ready`
/// took is given up in `call`, not left in the service for its next request.
#[tokio::test(start_paused = true)]
async fn a_follower_whose_caller_keeps_its_service_holds_no_permit() {
    let app: Router = Router::new().route(
        "/slow",
        routing::get(|| async {
            sleep(Duration::from_secs(60)).await;
            "slow"
        }),
    );
    let service = tower::ServiceBuilder::new()
        .layer(SingleFlightLayer::share())
        .layer(tower::limit::ConcurrencyLimitLayer::new(2))
        .service(app);
    let (mut leader, mut follower) = (service.clone(), service.clone());
    let led = call_kept(&mut leader, get("/slow")).await;
    let followed = call_kept(&mut follower, get("/slow")).await;
    let waiting = tokio::spawn(async move { (led.await, followed.await) });
    tokio::task::yield_now().await;

    // One inner call runs: the other permit must be free.
    assert!(
        gets_ready(&service).await,
        "a waiting follower's permit was kept"
    );
    waiting.abort();
}

/// A `503` at `max_flights` runs nothing: a caller that keeps its service
/// keeps none of the inner service's capacity.
#[tokio::test(start_paused = true)]
async fn a_503_whose_caller_keeps_its_service_holds_no_permit() {
    let app: Router = Router::new().route(
        "/{n}",
        routing::get(|| async {
            sleep(Duration::from_secs(60)).await;
            "slow"
        }),
    );
    let service = tower::ServiceBuilder::new()
        .layer(SingleFlightLayer::share().max_flights(1))
        .layer(tower::limit::ConcurrencyLimitLayer::new(2))
        .service(app);
    let mut leader = service.clone();
    let led = tokio::spawn(call_kept(&mut leader, get("/a")).await);
    tokio::task::yield_now().await;

    let mut kept = service.clone();
    let busy = call_kept(&mut kept, get("/b")).await.await.unwrap();
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(gets_ready(&service).await, "a 503's permit was kept");
    led.abort();
}

/// An answer the layer makes for a leader (here its `504`) carries the role,
/// as every answer the layer makes does; only the inner service's own answer
/// goes unmarked by default.
#[tokio::test(start_paused = true)]
async fn the_layers_own_answer_to_a_leader_carries_its_role() {
    let app = Router::new()
        .route(
            "/w",
            routing::get(|| async {
                sleep(Duration::from_millis(300)).await;
                "done"
            }),
        )
        .layer(SingleFlightLayer::share().max_wait(Duration::from_millis(250)));
    let reply = send(&app, get("/w")).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.role, Some(FlightRole::Leader));
}

#[tokio::test(start_paused = true)]
async fn a_leader_nobody_else_waits_for_gets_its_own_response_streamed() {
    // One chunk, then a body that never ends: buffering it would wait for
    // ever (until the lease), streaming it hands the leader the first chunk.
    let app = Router::new()
        .route(
            "/live",
            routing::get(|| async {
                let first = futures_util::stream::iter([Ok::<_, std::io::Error>(
                    bytes::Bytes::from_static(b"tick"),
                )]);
                let never = futures_util::stream::pending();
                Body::from_stream(futures_util::StreamExt::chain(first, never))
            }),
        )
        .layer(SingleFlightLayer::share().expose_role());
    let response = app.clone().oneshot(get("/live")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.extensions().get::<FlightRole>(),
        Some(&FlightRole::Leader)
    );
    let mut body = response.into_body();
    let first = http_body_util::BodyExt::frame(&mut body)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "tick");
}

#[tokio::test(start_paused = true)]
async fn an_unshareable_key_passes_straight_through_for_a_while() {
    let runs = Runs::default();
    let app = {
        let runs = runs.clone();
        Router::new()
            .route(
                "/session",
                routing::get(move || async move {
                    let run = runs.bump();
                    sleep(WORK).await;
                    ([(header::SET_COOKIE, format!("s={run}"))], "hi")
                }),
            )
            .layer(
                SingleFlightLayer::share()
                    .hit_for_pass(Duration::from_secs(10))
                    .expose_role(),
            )
    };
    send(&app, get("/session")).await;

    let start = Instant::now();
    let burst = send_all(&app, (0..10).map(|_| get("/session"))).await;
    assert_eq!(
        start.elapsed(),
        WORK,
        "1x the handler time: nobody queued behind a leader"
    );
    assert_eq!(played(&burst, FlightRole::Bypass), 10);
    assert_eq!(runs.get(), 11);

    sleep(Duration::from_secs(10)).await;
    let later = send_all(&app, (0..2).map(|_| get("/session"))).await;
    assert_eq!(
        played(&later, FlightRole::Leader),
        1,
        "coalescing again after the window"
    );
}

/// A leader's future kept but never polled again: the followers' own timers
/// end the flight at its lease; the key is not held past it.
#[tokio::test(start_paused = true)]
async fn the_lease_ends_even_when_the_leaders_future_is_no_longer_polled() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::share().lease(Duration::from_millis(100));
    let app = report_app(layer.clone(), &runs);

    let mut leader = tokio_test::task::spawn(app.clone().oneshot(get("/report/1")));
    assert!(leader.poll().is_pending());
    assert_eq!(layer.stats().in_flight, 1);
    let follower = spawn(&app, get("/report/1"));
    until(|| layer.stats().followers == 1).await;

    sleep(Duration::from_millis(150)).await;
    let in_flight = layer.stats().in_flight;
    drop(leader);
    let follower = follower.await.unwrap();
    assert_eq!(follower.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(in_flight, 0, "the key is free at the lease");
}

/// The same with the layer straight on a service: `call` enters the flight,
/// and the leader's future is never polled at all. The next request after
/// the lease leads a new flight.
#[tokio::test(start_paused = true)]
async fn a_leader_future_never_polled_holds_the_key_no_longer_than_its_lease() {
    use tower::{Layer, Service};
    let runs = Runs::default();
    let layer = SingleFlightLayer::share().lease(Duration::from_millis(100));
    let service = layer.layer(tower::service_fn({
        let runs = runs.clone();
        move |_: http::Request<Body>| {
            let runs = runs.clone();
            async move {
                runs.bump();
                Ok::<_, std::convert::Infallible>(http::Response::new(Body::from("ok")))
            }
        }
    }));
    let mut owner = service.clone();
    let leader = owner.ready().await.unwrap().call(get("/x"));
    assert_eq!(layer.stats().in_flight, 1);

    sleep(Duration::from_millis(150)).await;
    let next = service.clone().oneshot(get("/x")).await.unwrap();
    assert_eq!(next.status(), StatusCode::OK);
    assert_eq!(
        runs.get(),
        1,
        "the later request ran; the stuck one never did"
    );
    let stats = layer.stats();
    assert_eq!(
        stats.in_flight, 0,
        "the stuck flight was ended, the new one finished"
    );
    assert_eq!(stats.timed_out, 1);
    drop(leader);
    assert_eq!(layer.stats().in_flight, 0);
}

/// A leader dropped on a thread outside the runtime still hands its work on.
#[tokio::test(start_paused = true)]
async fn a_leader_dropped_off_the_runtime_still_serves_its_followers() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::share();
    let app = report_app(layer.clone(), &runs);

    let mut leader = tokio_test::task::spawn(app.clone().oneshot(get("/report/1")));
    assert!(leader.poll().is_pending());
    let followers = tokio::spawn({
        let app = app.clone();
        async move { send_all(&app, (0..5).map(|_| get("/report/1"))).await }
    });
    until(|| layer.stats().followers == 5).await;
    std::thread::spawn(move || drop(leader)).join().unwrap();

    let replies = followers.await.unwrap();
    assert_eq!(count(&replies, StatusCode::OK), 5);
    assert_eq!(layer.stats().in_flight, 0);
    assert_eq!(runs.get(), 1, "no follower ran the work again");
}

/// A service counting its runs, answering after `work`: for the layer
/// straight on a service, where `call` enters the flight.
fn counting(
    runs: &Runs,
    work: Duration,
) -> impl tower::Service<
    http::Request<Body>,
    Response = http::Response<Body>,
    Error = std::convert::Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static {
    let runs = runs.clone();
    tower::service_fn(move |_: http::Request<Body>| {
        runs.bump();
        async move {
            sleep(work).await;
            Ok(http::Response::new(Body::from("ok")))
        }
    })
}

/// Dropped off the runtime before its work was ever polled, the leader
/// still hands it on: on the runtime a follower joined from.
#[tokio::test(start_paused = true)]
async fn a_leader_dropped_off_the_runtime_before_its_first_poll_still_serves_its_followers() {
    use tower::{Layer, Service};
    let runs = Runs::default();
    let layer = SingleFlightLayer::share();
    let service = layer.layer(counting(&runs, WORK));
    let leader = service.clone().ready().await.unwrap().call(get("/x"));
    let followers: Vec<_> = (0..5)
        .map(|_| tokio::spawn(service.clone().oneshot(get("/x"))))
        .collect();
    until(|| layer.stats().followers == 5).await;
    std::thread::spawn(move || drop(leader)).join().unwrap();

    for follower in followers {
        let response = follower.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(
        layer.stats().fell_back,
        0,
        "no follower ran its own request"
    );
    assert_eq!(runs.get(), 1);
}

/// At `max_flights`, a flight past its lease gives up its slot.
#[tokio::test(start_paused = true)]
async fn a_flight_past_its_lease_does_not_count_towards_max_flights() {
    use tower::{Layer, Service};
    let runs = Runs::default();
    let layer = SingleFlightLayer::share()
        .lease(Duration::from_millis(100))
        .max_flights(1);
    let service = layer.layer(counting(&runs, Duration::ZERO));
    let stuck = service.clone().ready().await.unwrap().call(get("/a"));
    sleep(Duration::from_millis(150)).await;

    let other = service.clone().oneshot(get("/b")).await.unwrap();
    assert_eq!(other.status(), StatusCode::OK, "/b is not turned away");
    assert_eq!(layer.stats().in_flight, 0);
    assert_eq!(layer.stats().timed_out, 1, "the stuck flight timed out");
    drop(stuck);
}

/// Observation 9: the followers of a failed call do not each call the failing
/// backend: they try once more, together.
#[tokio::test(start_paused = true)]
async fn followers_of_a_failed_call_make_one_more_call_between_them() {
    for (failures, followers_get) in [(1, StatusCode::OK), (2, StatusCode::BAD_GATEWAY)] {
        let runs = Runs::default();
        let service = tower::Layer::layer(
            &SingleFlightLayer::share(),
            failing_backend(&runs, failures, WORK),
        );
        let calls: Vec<_> = (0..6)
            .map(|_| tokio::spawn(service.clone().oneshot(get("/report"))))
            .collect();
        let mut results = Vec::new();
        for call in calls {
            results.push(call.await.expect("the call ran"));
        }
        assert_eq!(runs.get(), 2, "the leader's call and one more");
        assert!(results[0].is_err(), "the leader gets its own error");
        let statuses: Vec<_> = results[1..]
            .iter()
            .filter_map(|result| result.as_ref().ok().map(http::Response::status))
            .collect();
        let errors = results[1..].iter().filter(|result| result.is_err()).count();
        match followers_get {
            StatusCode::OK => {
                assert_eq!(errors, 0);
                assert_eq!(statuses, vec![StatusCode::OK; 5]);
            }
            _ => {
                assert_eq!(errors, 1, "the follower that made the second call");
                assert_eq!(statuses, vec![StatusCode::BAD_GATEWAY; 4]);
            }
        }
    }
}
