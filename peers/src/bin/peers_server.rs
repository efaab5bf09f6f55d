//! Run with: cargo run --release -p tower-singleflight-peers --bin peers_server -- MODE
//!
//! - `serve VARIANT PORT`: serves one variant of `tower_singleflight_peers`
//!   on `127.0.0.1:PORT` and prints `listening on http://ADDR`; the runtime
//!   has `TOKIO_WORKER_THREADS` workers (the machine's cores by default).
//! - `stampede [N]`: for each variant in turn, on a current-thread runtime,
//!   sends N (1,000 by default) identical requests at once to a new router
//!   whose handler waits at a gate, opens the gate once they are all parked,
//!   and prints as JSON how many times each handler's body ran and how many
//!   answers were `200 hello stampede`.
//! - `list`: the variants' names.

use std::{io::Write, net::SocketAddr, time::Duration};

use axum::{body::Body, extract::Request};
use http_body_util::BodyExt;
use tower_singleflight_peers::{variant, Work, VARIANTS};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", name, port] => {
            let port = port.parse().expect("a port number");
            serve(name, port);
        }
        ["stampede"] => stampede(1_000),
        ["stampede", n] => stampede(n.parse().expect("a number of requests")),
        ["list"] => {
            for (name, _) in VARIANTS {
                println!("{name}");
            }
        }
        _ => {
            eprintln!("usage: peers_server serve VARIANT PORT | stampede [N] | list");
            std::process::exit(2);
        }
    }
}

fn serve(name: &str, port: u16) {
    let Some(app) = variant(name) else {
        eprintln!("no variant {name}; `peers_server list` names them");
        std::process::exit(2);
    };
    let app = app(Work::new());
    // `TOKIO_WORKER_THREADS` sets the workers, as for `#[tokio::main]`.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .expect("bind the listening socket");
        let listener = socket.listen(4096).expect("listen");
        let addr = listener.local_addr().expect("the bound address");
        println!("listening on http://{addr}");
        std::io::stdout().flush().expect("flush stdout");
        axum::serve(listener, tower::make::Shared::new(app))
            .await
            .expect("serve");
    });
}

fn stampede(requests: usize) {
    let mut results = serde_json::Map::new();
    for (name, app) in VARIANTS {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let (runs, ok) = runtime.block_on(async {
            let (work, gate) = Work::gated();
            let app = app(work.clone());
            let answers: Vec<_> = (0..requests)
                .map(|_| {
                    let request = Request::get("/item/stampede")
                        .body(Body::empty())
                        .expect("a valid request");
                    let app = app.clone();
                    tokio::spawn(async move {
                        let response = app.send(request).await;
                        let status = response.status();
                        let body = response.into_body().collect().await.map(|b| b.to_bytes());
                        status.is_success() && body.is_ok_and(|body| body == "hello stampede")
                    })
                })
                .collect();
            // One thread: while this task sleeps, every request runs until it
            // waits (at the gate, or on the request that got there first).
            tokio::time::sleep(Duration::from_millis(50)).await;
            gate.open();
            let mut ok = 0;
            for answer in answers {
                ok += usize::from(answer.await.expect("no panic"));
            }
            (work.runs(), ok)
        });
        eprintln!("{name}: {runs} runs, {ok} of {requests} answered");
        results.insert(
            (*name).to_owned(),
            serde_json::json!({ "requests": requests, "runs": runs, "ok": ok }),
        );
    }
    println!("{}", serde_json::Value::Object(results));
}
