//! The crate as a new user meets it: a short root, a front page that says
//! what the README says, and a first build without the benchmarks' tools.

use std::{collections::BTreeSet, fs};

fn source(path: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    fs::read_to_string(format!("{root}/{path}")).expect("a file of the crate")
}

/// The names `src/lib.rs` makes public at the root: its public modules and
/// what its `pub use` lines re-export.
fn root_items() -> BTreeSet<String> {
    let lib = source("src/lib.rs");
    let mut items = BTreeSet::new();
    let mut statement = String::new();
    for line in lib.lines().map(str::trim) {
        if let Some(module) = line.strip_prefix("pub mod ") {
            items.insert(module.trim_end_matches(';').to_owned());
        } else if line.starts_with("pub use ") || !statement.is_empty() {
            statement.push_str(line);
            if line.ends_with(';') {
                let list = statement.trim_end_matches(';');
                let names = match list.split_once('{') {
                    Some((_, group)) => group.trim_end_matches('}').to_owned(),
                    None => list.rsplit("::").next().unwrap_or_default().to_owned(),
                };
                for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let name = name.rsplit(" as ").next().unwrap_or(name);
                    items.insert(name.rsplit("::").next().unwrap_or(name).to_owned());
                }
                statement.clear();
            }
        }
    }
    items
}

#[test]
fn the_crate_root_lists_at_most_fifteen_items() {
    let items = root_items();
    assert!(
        items.len() <= 15,
        "{} items at the crate root: {items:?}",
        items.len()
    );
    for starter in ["SingleFlightLayer", "CacheConfig", "ValueCache", "Flights"] {
        assert!(items.contains(starter), "{starter} is where users start");
    }
    for module in ["flight", "cache", "key", "extract", "admin", "layer"] {
        assert!(items.contains(module), "module {module} is public");
    }
}

#[test]
fn the_front_page_covers_what_the_readme_covers_and_states_the_default_key() {
    let lib = source("src/lib.rs");
    let front: String = lib
        .lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    for topic in [
        "SingleFlightLayer::reject",
        "SingleFlightLayer::share",
        "CacheConfig",
        "ValueCache",
        "extract::Flight",
        "redis",
    ] {
        assert!(front.contains(topic), "the front page mentions {topic}");
    }
    let words = front.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("**method, host, path and query**"),
        "the default key, exactly"
    );
    assert!(
        words.contains("**per caller**"),
        "share mode's caller, exactly"
    );
}

#[test]
fn the_examples_do_not_build_the_benchmarks_tools_nor_the_exporter() {
    let manifest = source("Cargo.toml");
    let dev = manifest
        .split("[dev-dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a dev-dependencies table");
    // Every example (the demo first) builds every dev-dependency: the
    // benchmarks' tools and the metrics exporter live in members of their own.
    for tool in [
        "gungraun",
        "divan",
        "clap",
        "criterion",
        "metrics-exporter-prometheus",
        "metrics-util",
        "tracing-subscriber",
    ] {
        assert!(
            !dev.lines().any(|line| line.starts_with(tool)),
            "{tool} belongs to a workspace member, not to every example's build"
        );
    }
}
