//! The front for hot answers: each thread keeps the answers it serves again
//! and again. Every test first makes an answer hot (five hits: the front
//! keeps it from the third), then changes what the cache holds, and checks
//! that the kept copy is never served in place of what the cache would
//! answer now.

mod common;

use std::time::Duration;

use axum::http::{header, StatusCode};
use common::{
    origin::{answer, cache_status, Origin},
    send, with_headers,
};
use tokio::time::advance;
use tower_singleflight::CacheConfig;

const S: Duration = Duration::from_secs(1);

/// An origin whose answers are fresh for 60 s.
fn sixty_seconds() -> Origin {
    Origin::new(CacheConfig::new(), |seen| {
        answer(&seen, &[(header::CACHE_CONTROL, "max-age=60".into())])
    })
}

/// Five plain `GET`s of `uri`, each a hit on run `run`.
async fn make_hot(origin: &Origin, uri: &str, run: usize) {
    let first = origin.get(uri).await;
    for _ in 0..5 {
        assert_eq!(origin.get(uri).await.text(), first.text());
    }
    assert_eq!(first.text(), format!("run {run}"));
}

#[tokio::test(start_paused = true)]
async fn a_hot_answer_fetched_again_is_replaced_at_once() {
    let origin = sixty_seconds();
    make_hot(&origin, "/a", 1).await;
    let fetched = origin
        .get_with("/a", &[("cache-control", "no-cache")])
        .await;
    assert_eq!(fetched.text(), "run 2");
    assert_eq!(origin.get("/a").await.text(), "run 2");
}

#[tokio::test(start_paused = true)]
async fn a_hot_answer_is_not_served_once_stale() {
    let origin = sixty_seconds();
    make_hot(&origin, "/a", 1).await;
    advance(61 * S).await;
    assert_eq!(origin.get("/a").await.text(), "run 2");
    assert_eq!(origin.runs.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn invalidating_voids_hot_answers() {
    let origin = sixty_seconds();
    make_hot(&origin, "/a", 1).await;
    let cache = origin.layer.response_cache().expect("a cache");
    cache.invalidate_all();
    assert_eq!(origin.get("/a").await.text(), "run 2");

    make_hot(&origin, "/b", 3).await;
    cache.invalidate_if(|_| true);
    assert_eq!(origin.get("/b").await.text(), "run 4");
}

#[tokio::test(start_paused = true)]
async fn a_write_voids_the_hot_answer_of_its_path() {
    let origin = sixty_seconds();
    make_hot(&origin, "/items/1", 1).await;
    let written = send(&origin.app, with_headers("POST", "/items/1", &[])).await;
    assert_eq!(written.status, StatusCode::OK);
    assert_eq!(written.text(), "run 2");
    assert_eq!(origin.get("/items/1").await.text(), "run 3");
}

#[tokio::test(start_paused = true)]
async fn a_hot_variant_is_served_only_to_requests_its_vary_fits() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        let language = seen.request.get(header::ACCEPT_LANGUAGE).cloned();
        let headers = [
            (header::CACHE_CONTROL, "max-age=60".into()),
            (header::VARY, "Accept-Language".into()),
        ];
        let mut response = answer(&seen, &headers);
        if let Some(language) = language {
            response.headers_mut().insert("x-language", language);
        }
        response
    });
    for _ in 0..6 {
        let english = origin.get_with("/a", &[("accept-language", "en")]).await;
        assert_eq!(english.headers["x-language"], "en");
    }
    let french = origin.get_with("/a", &[("accept-language", "fr")]).await;
    assert_eq!(french.headers["x-language"], "fr");
    assert!(cache_status(&french)[0].contains("fwd=vary-miss"));
    // The French variant is newer: it is the one every thread sees for `fr`,
    // and `en` keeps its own.
    for _ in 0..3 {
        let english = origin.get_with("/a", &[("accept-language", "en")]).await;
        assert_eq!(english.headers["x-language"], "en");
    }
    assert_eq!(origin.runs.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn hot_hits_are_counted_as_hits() {
    let origin = sixty_seconds();
    make_hot(&origin, "/a", 1).await;
    let stats = origin.stats();
    assert_eq!((stats.misses, stats.hits), (1, 5));
}

/// Runs `f` on a thread of its own (its own stripe of the front) with a
/// runtime of its own.
fn on_own_thread<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(f())
    })
    .join()
    .expect("no panic")
}

#[test]
fn an_answer_replaced_on_one_thread_is_not_served_from_another_threads_front() {
    let origin = std::sync::Arc::new(sixty_seconds());
    let reader = std::sync::Arc::clone(&origin);
    // One thread keeps the answer hot, and stays alive to ask again.
    let (ask, asked) = std::sync::mpsc::channel::<()>();
    let (tell, told) = std::sync::mpsc::channel::<String>();
    let kept = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(make_hot(&reader, "/a", 1));
        tell.send("hot".into()).expect("the test waits");
        asked.recv().expect("asked again");
        let again = runtime.block_on(reader.get("/a"));
        tell.send(again.text().to_owned()).expect("the test waits");
    });
    assert_eq!(told.recv().expect("made hot"), "hot");
    // Fetched again on another thread: the cache holds run 2 now.
    let writer = std::sync::Arc::clone(&origin);
    let fetched = on_own_thread(move || {
        Box::pin(async move {
            let reply = writer
                .get_with("/a", &[("cache-control", "no-cache")])
                .await;
            reply.text().to_owned()
        })
    });
    assert_eq!(fetched, "run 2");
    ask.send(()).expect("the thread waits");
    assert_eq!(told.recv().expect("asked again"), "run 2");
    kept.join().expect("no panic");
}

#[tokio::test(start_paused = true)]
async fn a_hot_answer_answers_conditional_requests_and_directives_as_the_cache_does() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        let headers = [
            (header::CACHE_CONTROL, "max-age=60".into()),
            (header::ETAG, format!("\"v{}\"", seen.run)),
        ];
        answer(&seen, &headers)
    });
    make_hot(&origin, "/a", 1).await;
    let unchanged = origin.get_with("/a", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    let changed = origin.get_with("/a", &[("if-none-match", "\"v0\"")]).await;
    assert_eq!((changed.status, changed.text()), (StatusCode::OK, "run 1"));
    // A request with directives of its own is decided on the stored
    // variant: `max-age=0` revalidates it with the origin.
    let young = origin
        .get_with("/a", &[("cache-control", "max-age=0")])
        .await;
    assert_eq!(young.text(), "run 2");
    assert_eq!(origin.last_request()[header::IF_NONE_MATCH], "\"v1\"");
    assert_eq!(origin.get("/a").await.text(), "run 2");
}
