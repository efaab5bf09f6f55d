//! Adversarial tests of the front for hot answers (`src/cache/front.rs`):
//! the front must answer exactly what moka would answer without it.

mod common;

use axum::http::header;
use common::origin::{answer, Origin};
use tower_singleflight::CacheConfig;

/// RFC 9111 §4.1: when several stored responses fit a request, the most
/// recent one is used (variants are kept newest first). The front keeps a
/// key's whole list of variants and picks from it as the cache does, so a
/// hot key answers a request a newer variant fits with that variant, as
/// any other thread would, not with the variant that made it hot.
///
/// Run 1 varies on `Accept-Language` (stored for `en`), run 2 on `Accept`
/// (stored for `json`). A request with `en` and `json` fits both: the cache
/// answers run 2, the newest. Made hot for `en` + `xml` (run 1 only), the
/// front answers run 1.
#[tokio::test(start_paused = true)]
async fn a_hot_key_answers_with_the_newest_variant_that_fits() {
    let origin = Origin::new(CacheConfig::new(), |seen| {
        let vary = if seen.run == 1 {
            "Accept-Language"
        } else {
            "Accept"
        };
        answer(
            &seen,
            &[
                (header::CACHE_CONTROL, "max-age=60".into()),
                (header::VARY, vary.into()),
            ],
        )
    });
    let english_xml = [("accept-language", "en"), ("accept", "text/xml")];
    let french_json = [("accept-language", "fr"), ("accept", "application/json")];
    let english_json = [("accept-language", "en"), ("accept", "application/json")];

    assert_eq!(origin.get_with("/a", &english_xml).await.text(), "run 1");
    // A `Vary` miss: stored beside run 1, newest first.
    assert_eq!(origin.get_with("/a", &french_json).await.text(), "run 2");
    assert_eq!(origin.runs.get(), 2);

    // Without the front (or before it kept anything), `en` + `json` is run 2.
    // Made hot for `en` + `xml`, this thread's front keeps run 1.
    for _ in 0..5 {
        assert_eq!(origin.get_with("/a", &english_xml).await.text(), "run 1");
    }
    assert_eq!(
        origin.get_with("/a", &english_json).await.text(),
        "run 2",
        "the most recent fitting variant is served (RFC 9111 §4.1), as without the front"
    );
    assert_eq!(origin.runs.get(), 2);
}

/// moka picks what to evict by how often and how lately each key was read
/// (TinyLFU, LRU). Hits the front serves are told to moka (one in
/// `TOLD_EVERY`): otherwise the hottest key would look to moka as if read
/// three times, long ago, and under pressure keys read a few times each
/// would be admitted in its place; every other thread would fetch it again.
#[test]
fn the_hottest_key_is_not_evicted_for_keys_read_a_few_times() {
    const BOUND: u64 = 2_000_000;
    const FILL: usize = 500;
    const CONTENDERS: usize = 1_000;
    use common::{send, with_headers};
    // Room for about 850 answers; the front keeps answers of up to 1.9 KB
    // (with their copies, a sixteenth of the bound over its slots) on up to
    // 8 stripes (2 cores).
    let origin = std::sync::Arc::new(Origin::new(CacheConfig::new().max_bytes(BOUND), |seen| {
        let mut response = answer(&seen, &[(header::CACHE_CONTROL, "max-age=36000".into())]);
        *response.body_mut() =
            axum::body::Body::from(format!("run {}{}", seen.run, " ".repeat(200)));
        response
    }));
    let cache = origin.layer.response_cache().expect("a cache").clone();
    // Paused: the origin's waits pass at once (moka keeps its own clock).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        // Over half full: moka counts reads from now on.
        for n in 0..FILL {
            origin.get(&format!("/f{n}")).await;
        }
        cache.run_pending_tasks();
        for _ in 0..40 {
            origin.get("/hot").await;
        }
        cache.run_pending_tasks();
        let hot_runs = origin.runs.get();
        // Keys read five times each: three passes, then stored; the hot key
        // read all along, answered by this thread's front.
        for n in 0..CONTENDERS {
            origin.get("/hot").await;
            let uri = format!("/c{n}");
            for _ in 0..3 {
                send(
                    &origin.app,
                    with_headers("GET", &uri, &[("cache-control", "no-store")]),
                )
                .await;
            }
            origin.get(&uri).await;
            cache.run_pending_tasks();
        }
        assert_eq!(origin.runs.get(), hot_runs + 4 * CONTENDERS);
    });
    let runs = origin.runs.get();
    // Another thread (another stripe of the front) asks for the hot key.
    let other = std::sync::Arc::clone(&origin);
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime")
            .block_on(other.get("/hot"));
    })
    .join()
    .expect("no panic");
    assert_eq!(
        origin.runs.get(),
        runs,
        "the hottest key was evicted from the cache"
    );
}
