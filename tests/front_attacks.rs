//! Adversarial tests of the front for hot answers (`src/cache/front.rs`):
//! the front must answer exactly what moka would answer without it.

mod common;

use axum::http::header;
use common::origin::{answer, Origin};
use tower_singleflight::CacheConfig;

/// RFC 9111 §4.1: when several stored responses fit a request, the most
/// recent one is used; `lookup` does so (variants are kept newest first).
/// The front keeps one answer per key, the one a request picked, and serves
/// it to any later request its `Vary` fits, even one a newer variant fits
/// too: the older variant is served where the cache (and the same request
/// on any other thread) answers the newer.
///
/// Run 1 varies on `Accept-Language` (stored for `en`), run 2 on `Accept`
/// (stored for `json`). A request with `en` and `json` fits both: the cache
/// answers run 2, the newest. Made hot for `en` + `xml` (run 1 only), the
/// front answers run 1.
#[tokio::test(start_paused = true)]
async fn the_front_serves_an_older_variant_where_a_newer_one_fits() {
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
