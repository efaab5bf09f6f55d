//! Over real sockets: the layer behind `axum::serve`, driven by an HTTP client.

mod common;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{routing::get, Router};
use bytes::Bytes;
use common::Runs;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::{io::AsyncWriteExt, net::TcpStream, sync::Notify, task::JoinSet};
use tower_singleflight::{layer::ShareLayer, SingleFlightLayer};

/// Serves `app` on an ephemeral loopback port.
async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A share-mode route whose handler waits until the test opens `gate`.
fn gated_report(runs: &Runs, gate: &Arc<Notify>, layer: ShareLayer) -> Router {
    let (runs, gate) = (runs.clone(), gate.clone());
    Router::new()
        .route(
            "/report",
            get(move || async move {
                let execution = runs.bump();
                gate.notified().await;
                format!("report, execution {execution}")
            }),
        )
        .layer(layer)
}

/// Polls `condition` until it holds; the server runs on other tasks.
async fn wait_for(condition: impl Fn() -> bool) {
    for _ in 0..2_000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition never became true");
}

fn fire(addr: SocketAddr, n: usize) -> JoinSet<(StatusCode, Bytes)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut requests = JoinSet::new();
    for _ in 0..n {
        let (client, uri) = (client.clone(), format!("http://{addr}/report"));
        requests.spawn(async move {
            let response = client.get(uri.parse().unwrap()).await.unwrap();
            let status = response.status();
            (
                status,
                response.into_body().collect().await.unwrap().to_bytes(),
            )
        });
    }
    requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_over_http_share_one_run() {
    let (runs, gate, layer) = (
        Runs::default(),
        Arc::new(Notify::new()),
        SingleFlightLayer::share(),
    );
    let addr = serve(gated_report(&runs, &gate, layer.clone())).await;

    let requests = fire(addr, 50);
    wait_for(|| layer.stats().followers == 49).await;
    gate.notify_one();

    let replies = requests.join_all().await;
    assert_eq!(runs.get(), 1);
    assert!(replies
        .iter()
        .all(|reply| *reply == (StatusCode::OK, Bytes::from("report, execution 1"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_connection_closes_does_not_fail_its_followers() {
    let (runs, gate, layer) = (
        Runs::default(),
        Arc::new(Notify::new()),
        SingleFlightLayer::share(),
    );
    let addr = serve(gated_report(&runs, &gate, layer.clone())).await;

    let mut leader = TcpStream::connect(addr).await.unwrap();
    // The same host as the client's requests: hosts never share a flight.
    let request = format!("GET /report HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    leader.write_all(request.as_bytes()).await.unwrap();
    wait_for(|| runs.get() == 1).await;
    let followers = fire(addr, 10);
    wait_for(|| layer.stats().followers == 10).await;

    drop(leader);
    gate.notify_one();

    let replies = followers.join_all().await;
    assert_eq!(runs.get(), 1);
    assert!(replies.iter().all(|(status, _)| *status == StatusCode::OK));
    wait_for(|| layer.stats().in_flight == 0).await;
}
