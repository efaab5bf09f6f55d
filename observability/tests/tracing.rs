//! What traces say about a flight: its role, a digest of its key (never
//! the key itself unless asked), the layer's name and the route, after
//! OpenTelemetry's HTTP conventions; and a request left unkeyed is told.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    http::{request::Parts, StatusCode},
    routing, Router,
};
use common::{count, get, send, send_all};
use tokio::time::sleep;
use tower_singleflight::SingleFlightLayer;
use tracing::{
    field::{Field, Visit},
    span, Event, Subscriber,
};
use tracing_subscriber::{layer::Context, prelude::*, registry::LookupSpan, Layer};

/// A span's or an event's name (or message) and fields, as text.
#[derive(Debug, Clone, Default)]
struct Record {
    name: String,
    fields: BTreeMap<String, String>,
}

impl Visit for Record {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.fields.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields
            .insert(field.name().to_owned(), value.to_owned());
    }
}

/// Keeps every span and event the crate writes.
#[derive(Clone, Default)]
struct Captured {
    spans: Arc<Mutex<Vec<Record>>>,
    events: Arc<Mutex<Vec<Record>>>,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Captured {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, _: &span::Id, _: Context<'_, S>) {
        let mut record = Record {
            name: attrs.metadata().name().to_owned(),
            ..Record::default()
        };
        attrs.record(&mut record);
        self.spans.lock().unwrap().push(record);
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut record = Record::default();
        event.record(&mut record);
        record.name = record.fields.remove("message").unwrap_or_default();
        self.events.lock().unwrap().push(record);
    }
}

impl Captured {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }

    fn flights(&self) -> Vec<Record> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|s| s.name == "singleflight")
            .cloned()
            .collect()
    }

    fn events_named(&self, name: &str) -> Vec<Record> {
        let events = self.events.lock().unwrap();
        events.iter().filter(|e| e.name == name).cloned().collect()
    }
}

const SECRET: &str = "tenant-4711";

/// `GET /reports/{id}` taking 100 ms, behind share mode named "reports".
fn app(trace_keys: bool) -> Router {
    let layer = SingleFlightLayer::share()
        .name("reports")
        .trace_keys(trace_keys);
    Router::new()
        .route(
            "/reports/{id}",
            routing::get(|| async {
                sleep(Duration::from_millis(100)).await;
                "report"
            }),
        )
        .layer(layer)
}

#[tokio::test(start_paused = true)]
async fn a_flight_has_one_span_with_role_digest_layer_and_route_never_the_key() {
    let captured = Captured::default();
    let _guard = captured.install();
    let uri = format!("/reports/7?tenant={SECRET}");
    let replies = send_all(&app(false), (0..3).map(|_| get(&uri))).await;
    assert_eq!(count(&replies, StatusCode::OK), 3);

    let flights = captured.flights();
    assert_eq!(flights.len(), 1, "one span per flight: {flights:?}");
    let span = &flights[0].fields;
    assert_eq!(span["singleflight.role"], "leader");
    assert_eq!(span["singleflight.layer"], "reports");
    assert_eq!(span["http.request.method"], "GET");
    assert_eq!(span["http.route"], "/reports/{id}");
    assert_eq!(span["url.path"], "/reports/7");
    let digest = &span["singleflight.key_digest"];
    assert_eq!(digest.len(), 16, "a 64-bit digest in hex: {digest}");
    assert!(digest.chars().all(|c| c.is_ascii_hexdigit()));

    let followers: Vec<_> = captured
        .events_named("single-flight role")
        .into_iter()
        .filter(|e| e.fields.get("singleflight.role").map(String::as_str) == Some("follower"))
        .collect();
    assert_eq!(followers.len(), 2, "each follower is told");
    for follower in &followers {
        assert_eq!(
            &follower.fields["singleflight.key_digest"], digest,
            "same flight, same digest"
        );
        assert_eq!(follower.fields["http.route"], "/reports/{id}");
    }

    let everything = format!(
        "{:?}{:?}",
        captured.spans.lock().unwrap(),
        captured.events.lock().unwrap()
    );
    assert!(
        !everything.contains(SECRET),
        "the query (part of the key) reached no trace"
    );
}

#[tokio::test(start_paused = true)]
async fn trace_keys_adds_the_query_and_the_host() {
    let captured = Captured::default();
    let _guard = captured.install();
    let uri = format!("/reports/7?tenant={SECRET}");
    send(&app(true), get(&uri)).await;
    let flights = captured.flights();
    assert_eq!(flights.len(), 1);
    assert_eq!(flights[0].fields["url.query"], format!("tenant={SECRET}"));
}

#[tokio::test(start_paused = true)]
async fn a_request_left_unkeyed_is_told_at_debug_with_its_route() {
    let captured = Captured::default();
    let _guard = captured.install();
    let never = |_: &Parts| None::<u8>;
    let layer = SingleFlightLayer::share().name("reports").key(never);
    let app = Router::new()
        .route("/reports/{id}", routing::get(|| async { "report" }))
        .layer(layer.clone());
    send(&app, get("/reports/7")).await;

    let told = captured.events_named("request not keyed: passes through uncoalesced");
    assert_eq!(told.len(), 1, "{:?}", captured.events.lock().unwrap());
    assert_eq!(told[0].fields["layer"], "reports");
    assert_eq!(told[0].fields["http.route"], "/reports/{id}");
    assert_eq!(layer.stats().keyless, 1);
}
