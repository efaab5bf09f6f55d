//! Share mode never holds a stream back, and never shares what a body's
//! trailers keep for the leader.

mod common;

use std::{convert::Infallible, time::Duration};

use axum::{
    body::Body,
    http::{header, HeaderMap, StatusCode},
    response::Response,
    routing, Router,
};
use bytes::Bytes;
use common::{get, send_all, Runs};
use futures_util::stream;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::time::{sleep, Instant};
use tower::ServiceExt;
use tower_singleflight::{CacheConfig, SingleFlightLayer};

const SETUP: Duration = Duration::from_millis(50);
const EVERY: Duration = Duration::from_millis(100);

/// A body of `events` chunks `every` apart (endless when `None`).
fn ticking(events: Option<u32>, every: Duration) -> Body {
    let ticks = stream::unfold(0u32, move |n| async move {
        if events.is_some_and(|events| n >= events) {
            return None;
        }
        sleep(every).await;
        Some((
            Ok::<_, Infallible>(Bytes::from(format!("data: {n}\n\n"))),
            n + 1,
        ))
    });
    Body::from_stream(ticks)
}

/// `GET /events`: after `SETUP`, an endless server-sent-events stream.
/// `GET /slow`: after `SETUP`, a plain body of five chunks, 400 ms apart.
fn streams(runs: &Runs) -> Router {
    let (events, slow) = (runs.clone(), runs.clone());
    Router::new()
        .route(
            "/events",
            routing::get(move || async move {
                events.bump();
                sleep(SETUP).await;
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .body(ticking(None, EVERY))
                    .expect("a valid response")
            }),
        )
        .route(
            "/slow",
            routing::get(move || async move {
                slow.bump();
                sleep(SETUP).await;
                Response::new(ticking(Some(5), Duration::from_millis(400)))
            }),
        )
        .layer(SingleFlightLayer::share())
}

/// Sends a request and reads its head and first chunk: when each came.
async fn first_bytes(app: Router, uri: &'static str) -> (StatusCode, Duration, Bytes) {
    let start = Instant::now();
    let response = app.oneshot(get(uri)).await.expect("infallible");
    let status = response.status();
    let mut body = response.into_body();
    let first = loop {
        let frame = body
            .frame()
            .await
            .expect("a first frame")
            .expect("no error");
        if let Ok(data) = frame.into_data() {
            break data;
        }
    };
    (status, start.elapsed(), first)
}

/// Observation 8: two concurrent clients of an event stream each get it at
/// once, and so does a third one a moment later.
#[tokio::test(start_paused = true)]
async fn server_sent_events_are_never_held() {
    let runs = Runs::default();
    let app = streams(&runs);
    let first = tokio::spawn(first_bytes(app.clone(), "/events"));
    let second = tokio::spawn(first_bytes(app.clone(), "/events"));
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(first.1, SETUP + EVERY, "the leader's stream, as it comes");
    assert_eq!(
        second.1,
        SETUP + SETUP + EVERY,
        "the follower runs its own as soon as the leader's head shows a stream"
    );
    for (status, _, data) in [first, second] {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(data, "data: 0\n\n");
    }
    sleep(Duration::from_millis(100)).await;
    let (status, took, _) = first_bytes(app, "/events").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(took, SETUP + EVERY, "a later client is not kept waiting");
    assert_eq!(runs.get(), 3, "every client its own stream");
}

/// Observation 8: a finite body slower than the buffering budget reaches the
/// leader as it comes, whole, and its followers run their own.
#[tokio::test(start_paused = true)]
async fn a_slow_body_streams_to_the_leader_after_the_budget_at_most() {
    let runs = Runs::default();
    let app = streams(&runs);
    let budget = Duration::from_secs(1);
    let chunk = Duration::from_millis(400);
    let leader = tokio::spawn(first_bytes(app.clone(), "/slow"));
    let follower = tokio::spawn(first_bytes(app.clone(), "/slow"));
    let (leader, follower) = (leader.await.unwrap(), follower.await.unwrap());
    assert_eq!(leader.1, SETUP + budget, "the budget, not the whole body");
    assert_eq!(
        leader.2, "data: 0\n\ndata: 1\n\n",
        "what was read, then the rest"
    );
    assert_eq!(
        follower.1,
        SETUP + budget + SETUP + chunk,
        "its own, from then"
    );
    assert_eq!(runs.get(), 2);

    // Past the hit-for-pass window, the same again, read whole.
    sleep(Duration::from_secs(60)).await;
    let start = Instant::now();
    let replies = send_all(&app, [get("/slow"), get("/slow")]).await;
    assert_eq!(start.elapsed(), SETUP + budget + SETUP + chunk * 5);
    let whole: String = (0..5).map(|n| format!("data: {n}\n\n")).collect();
    for reply in &replies {
        assert_eq!(reply.text(), whole, "nothing lost, in order");
    }
    assert_eq!(runs.get(), 4);
}

/// `GET /thing`: a small body whose trailers set a cookie.
fn trailing_cookie(runs: &Runs, layer: tower_singleflight::layer::ShareLayer) -> Router {
    let runs = runs.clone();
    Router::new()
        .route(
            "/thing",
            routing::get(move || async move {
                let run = runs.bump();
                sleep(EVERY).await;
                let mut trailers = HeaderMap::new();
                trailers.insert(
                    header::SET_COOKIE,
                    format!("session={run}").parse().unwrap(),
                );
                let frames = [
                    Ok::<_, Infallible>(Frame::data(Bytes::from(format!("run {run}")))),
                    Ok(Frame::trailers(trailers)),
                ];
                Response::new(Body::new(StreamBody::new(stream::iter(frames))))
            }),
        )
        .layer(layer)
}

/// Observation 6: a cookie set in the trailers is the leader's alone.
#[tokio::test(start_paused = true)]
async fn a_cookie_set_in_trailers_is_never_shared_nor_cached() {
    let runs = Runs::default();
    let layer = SingleFlightLayer::share().cache(CacheConfig::new());
    let app = trailing_cookie(&runs, layer.clone());
    let replies = send_all(&app, (0..3).map(|_| get("/thing"))).await;
    let mut bodies: Vec<_> = replies.iter().map(|reply| reply.body.clone()).collect();
    bodies.dedup();
    assert_eq!(bodies.len(), 3, "every caller its own answer");
    send_all(&app, [get("/thing")]).await;
    assert_eq!(runs.get(), 4, "nothing was cached");
    assert_eq!(
        layer.response_cache().map(|cache| cache.stats().stored),
        Some(0)
    );
}
