//! Keys by client address, attacked: a client writes whatever it likes to
//! the left of what the trusted proxies append, and must neither choose its
//! key nor take another client's, however it spells its headers.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{request::Parts, HeaderName, Request, Response, StatusCode},
    routing, Router,
};
use common::{count, send, send_all, with_headers, work_app, Runs};
use tokio::{sync::Notify, time::sleep};
use tower_singleflight::{
    key::{self, ForwardedHeader, ForwardedIp, KeyExtractor},
    FlightRole, SingleFlightLayer,
};

const WORK: Duration = Duration::from_millis(300);
const CLIENT: &str = "203.0.113.7";
const PROXY: &str = "10.0.0.2";

fn client() -> Option<IpAddr> {
    Some(CLIENT.parse().unwrap())
}

/// The key `extractor` gives a request with these header lines, in order.
fn key_of(extractor: &ForwardedIp, lines: &[(&str, &str)]) -> Option<IpAddr> {
    let mut request = Request::builder();
    for (name, value) in lines {
        request = request.header(*name, *value);
    }
    let parts = request.body(()).unwrap().into_parts().0;
    extractor.extract(&parts)
}

fn xff(trusted: usize) -> ForwardedIp {
    key::forwarded_ip(trusted)
}

fn forwarded(trusted: usize) -> ForwardedIp {
    key::forwarded_ip(trusted).source(ForwardedHeader::Forwarded)
}

/// Whatever a client writes before the proxies' entries, its key is the
/// address the first trusted proxy saw.
#[test]
fn spoofed_leftmost_entries_do_not_change_the_key() {
    let spoofs = [
        "",
        "198.51.100.1, ",
        "127.0.0.1, 10.0.0.1, ",
        "unknown, _hidden, garbage, ",
        "[2001:db8::1]:80, ::1, ",
    ];
    for spoof in spoofs {
        // One proxy, which appends the client's address.
        let one = format!("{spoof}{CLIENT}");
        assert_eq!(
            key_of(&xff(1), &[("x-forwarded-for", &one)]),
            client(),
            "{one}"
        );
        // Two: the outer one appends the client, the inner one the outer.
        let two = format!("{spoof}{CLIENT}, {PROXY}");
        assert_eq!(
            key_of(&xff(2), &[("x-forwarded-for", &two)]),
            client(),
            "{two}"
        );
    }
    let spoofs = [
        "",
        "for=198.51.100.1, ",
        "for=\"[2001:db8::1]:80\";proto=https, ",
        "for=unknown, for=_hidden, ",
        "garbage;;=, ",
    ];
    for spoof in spoofs {
        let one = format!("{spoof}for={CLIENT};proto=https");
        assert_eq!(
            key_of(&forwarded(1), &[("forwarded", &one)]),
            client(),
            "{one}"
        );
        let two = format!("{spoof}for=\"{CLIENT}:51234\", for={PROXY};by=_edge");
        assert_eq!(
            key_of(&forwarded(2), &[("forwarded", &two)]),
            client(),
            "{two}"
        );
    }
}

/// A client that writes another's address gets its own key, not the
/// other's: it cannot take the lock of a victim's trigger.
#[test]
fn a_client_cannot_take_another_clients_key() {
    let attacker = "198.51.100.66";
    let spoofed = format!("{CLIENT}, {attacker}");
    assert_eq!(
        key_of(&xff(1), &[("x-forwarded-for", &spoofed)]),
        attacker.parse().ok()
    );
    let spoofed = format!("for={CLIENT}, for={attacker}");
    assert_eq!(
        key_of(&forwarded(1), &[("forwarded", &spoofed)]),
        attacker.parse().ok()
    );
}

/// Field lines count as one list, in order: a proxy that adds a line of its
/// own instead of appending to the client's is read the same way.
#[test]
fn several_header_lines_are_one_list_in_order() {
    let lines = [
        ("x-forwarded-for", "198.51.100.1, 198.51.100.2"),
        ("x-forwarded-for", CLIENT),
    ];
    assert_eq!(key_of(&xff(1), &lines), client());
    let lines = [
        ("x-forwarded-for", "198.51.100.1"),
        ("x-forwarded-for", &format!("198.51.100.2, {CLIENT}")),
        ("x-forwarded-for", PROXY),
    ];
    assert_eq!(key_of(&xff(2), &lines), client());
    let lines = [
        ("forwarded", "for=198.51.100.1"),
        ("forwarded", &format!("for={CLIENT}")),
        ("forwarded", ""),
        ("forwarded", &format!(" , for={PROXY}")),
    ];
    assert_eq!(
        key_of(&forwarded(2), &lines),
        client(),
        "empty lines and entries are none"
    );
}

/// No address where the client's should be: no key (the request passes
/// through, or is rejected with `or_reject`), never a guess.
#[test]
fn garbage_where_the_client_should_be_gives_no_key() {
    for entry in [
        "unknown",
        "_hidden",
        "example.com",
        "203.0.113.7:99999",
        "[203.0.113.7]",
        "fe80::1%eth0",
        "203.0.113.7 198.51.100.1",
        "\"203.0.113.7\"",
    ] {
        let value = format!("198.51.100.1, {entry}");
        assert_eq!(
            key_of(&xff(1), &[("x-forwarded-for", &value)]),
            None,
            "{value}"
        );
    }
    for element in [
        "for=unknown",
        "for=_hidden",
        "for=\"_hidden:_port\"",
        "for=2001:db8::1",
        "for=\"203.0.113.7",
        "proto=https",
        "for=203.0.113.7;for=198.51.100.1",
        "203.0.113.7",
    ] {
        let value = format!("for=198.51.100.1, {element}");
        assert_eq!(
            key_of(&forwarded(1), &[("forwarded", &value)]),
            None,
            "{value}"
        );
    }
    // A proxy that hides itself is still counted as one.
    let value = format!("for={CLIENT}, for=unknown");
    assert_eq!(key_of(&forwarded(2), &[("forwarded", &value)]), client());
    // Not UTF-8.
    let mut parts = Request::new(()).into_parts().0;
    let value = http::HeaderValue::from_bytes(b"203.0.113.7\xff").unwrap();
    parts.headers.insert("x-forwarded-for", value);
    assert_eq!(xff(1).extract(&parts), None);
}

/// Fewer entries than proxies: the request came round a proxy, or a proxy
/// wrote nothing. The leftmost entry, which the client wrote, is not taken
/// instead.
#[test]
fn fewer_entries_than_trusted_proxies_give_no_key() {
    assert_eq!(key_of(&xff(2), &[("x-forwarded-for", CLIENT)]), None);
    assert_eq!(key_of(&xff(1), &[]), None);
    assert_eq!(
        key_of(&xff(3), &[("x-forwarded-for", "1.1.1.1, , 2.2.2.2")]),
        None
    );
    assert_eq!(key_of(&forwarded(2), &[("forwarded", "for=1.1.1.1")]), None);
    assert_eq!(
        key_of(&xff(usize::MAX), &[("x-forwarded-for", CLIENT)]),
        None
    );
}

/// One header is read, the one named: the other never changes the key, nor
/// stands in for a missing one.
#[test]
fn one_source_is_read_the_other_is_ignored() {
    let both = [
        ("x-forwarded-for", CLIENT),
        ("forwarded", "for=198.51.100.66"),
    ];
    assert_eq!(key_of(&xff(1), &both), client());
    assert_eq!(key_of(&forwarded(1), &both), "198.51.100.66".parse().ok());
    assert_eq!(key_of(&forwarded(1), &[("x-forwarded-for", CLIENT)]), None);
    assert_eq!(
        key_of(&xff(1), &[("forwarded", &format!("for={CLIENT}"))]),
        None
    );
    let real_ip =
        key::forwarded_ip(1).source(ForwardedHeader::Other(HeaderName::from_static("x-real-ip")));
    let lines = [("x-forwarded-for", "198.51.100.66"), ("x-real-ip", CLIENT)];
    assert_eq!(key_of(&real_ip, &lines), client());
}

/// One client is one key, however its address is written.
#[test]
fn spellings_of_one_address_are_one_key() {
    for spelling in [
        CLIENT,
        "203.0.113.7:443",
        "::ffff:203.0.113.7",
        "[::ffff:203.0.113.7]:80",
        "[::ffff:cb00:7107]",
    ] {
        assert_eq!(
            key_of(&xff(1), &[("x-forwarded-for", spelling)]),
            client(),
            "{spelling}"
        );
    }
    for spelling in [
        "for=203.0.113.7",
        "FOR=\"203.0.113.7:80\"",
        "for=\"[::ffff:203.0.113.7]\"",
    ] {
        assert_eq!(
            key_of(&forwarded(1), &[("forwarded", spelling)]),
            client(),
            "{spelling}"
        );
    }
    let v6 = "2001:db8::7";
    let as_written = format!("for=\"[{v6}]:4711\"");
    assert_eq!(
        key_of(&forwarded(1), &[("forwarded", &as_written)]),
        v6.parse().ok()
    );
    assert_eq!(key_of(&xff(1), &[("x-forwarded-for", v6)]), v6.parse().ok());
}

/// A header of hundreds of kilobytes, with an unclosed quote on the left:
/// the key is still the proxy's entry, and the request is keyed by the
/// address alone (the header is not kept, nor counted towards
/// `max_key_bytes`).
#[tokio::test(start_paused = true)]
async fn a_huge_forwarded_header_is_read_from_its_end() {
    let junk = format!("for=\"{}", "198.51.100.1, ".repeat(30_000));
    let value = format!("{junk}, for={CLIENT}");
    assert_eq!(key_of(&forwarded(1), &[("forwarded", &value)]), client());

    let runs = Runs::default();
    let layer = SingleFlightLayer::share().key(key::method_path_query().and(forwarded(1)));
    let app = work_app(layer, &runs, WORK);
    let huge = || with_headers("GET", "/work", &[("forwarded", &value)]);
    let replies = send_all(&app, [huge(), huge()]).await;
    assert_eq!(count(&replies, StatusCode::OK), 2);
    assert_eq!(runs.get(), 1, "the two requests of one client were one");
}

fn from(value: &str) -> Request<Body> {
    with_headers("POST", "/work", &[("x-forwarded-for", value)])
}

/// Reject mode, one proxy: a client that makes up a new leftmost entry for
/// each click still gets `409`; two clients run side by side.
#[tokio::test(start_paused = true)]
async fn a_client_cannot_dodge_the_lock_with_made_up_entries() {
    let runs = Runs::default();
    let app = work_app(
        SingleFlightLayer::reject().key(key::path().and(xff(1))),
        &runs,
        WORK,
    );
    let clicks = [
        from(CLIENT),
        from(&format!("198.51.100.1, {CLIENT}")),
        from(&format!("198.51.100.2, 198.51.100.3, {CLIENT}")),
    ];
    let replies = send_all(&app, clicks).await;
    assert_eq!(count(&replies, StatusCode::OK), 1);
    assert_eq!(count(&replies, StatusCode::CONFLICT), 2);

    let two_clients = [from(CLIENT), from(&format!("{CLIENT}, 198.51.100.9"))];
    let replies = send_all(&app, two_clients).await;
    assert_eq!(
        count(&replies, StatusCode::OK),
        2,
        "the second is another client"
    );
    assert_eq!(runs.get(), 3);
}

fn bad_request(_: &Parts) -> Response<&'static str> {
    let mut response = Response::new("no client address");
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

/// Failing closed: without a client address, `400`, and nothing runs, in
/// both modes.
#[tokio::test(start_paused = true)]
async fn an_undeterminable_client_fails_closed_with_or_reject() {
    let runs = Runs::default();
    let reject = SingleFlightLayer::reject().key(xff(2).or_reject(bad_request));
    let share =
        SingleFlightLayer::share().key(key::method_path_query().and(xff(2)).or_reject(bad_request));
    let apps = [
        (work_app(reject, &runs, WORK), "POST"),
        (work_app(share, &runs, WORK), "GET"),
    ];
    for (app, method) in apps {
        for request in [
            with_headers(method, "/work", &[]),
            with_headers(method, "/work", &[("x-forwarded-for", CLIENT)]),
            with_headers(method, "/work", &[("x-forwarded-for", "unknown, 10.0.0.2")]),
        ] {
            let reply = send(&app, request).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method}");
            assert_eq!(reply.text(), "no client address");
            assert_eq!(reply.role, Some(FlightRole::Rejected));
        }
        let fine = with_headers(
            method,
            "/work",
            &[("x-forwarded-for", "203.0.113.7, 10.0.0.2")],
        );
        assert_eq!(send(&app, fine).await.status, StatusCode::OK, "{method}");
    }
    assert_eq!(runs.get(), 2, "only the requests with a client ran");
}

/// `peer_ip` reads axum's `ConnectInfo`, as `into_make_service_with_connect_info`
/// puts it: the port is not part of the key, a mapped IPv4 address is the
/// IPv4 address, and a request without it passes through.
#[tokio::test(start_paused = true)]
async fn peer_ip_reads_connect_info() {
    let runs = Runs::default();
    let app = work_app(SingleFlightLayer::reject().key(key::peer_ip()), &runs, WORK);
    let v4 = Ipv4Addr::new(203, 0, 113, 7);
    let connected = |ip: IpAddr, port: u16| {
        let mut request = with_headers("POST", "/work", &[("x-forwarded-for", "198.51.100.1")]);
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(ip, port)));
        request
    };
    let replies = send_all(
        &app,
        [
            connected(IpAddr::V4(v4), 50_000),
            connected(IpAddr::V6(v4.to_ipv6_mapped()), 50_001),
        ],
    )
    .await;
    assert_eq!(
        count(&replies, StatusCode::CONFLICT),
        1,
        "one client, one key"
    );

    let unconnected = || with_headers("POST", "/work", &[]);
    let replies = send_all(&app, [unconnected(), unconnected()]).await;
    assert_eq!(
        count(&replies, StatusCode::OK),
        2,
        "no peer: passed through"
    );
    assert_eq!(runs.get(), 3);
}

/// Over real sockets, served with `ConnectInfo`: two connections from one
/// address (two source ports) are one client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_ip_over_real_connections() {
    let gate = Arc::new(Notify::new());
    let layer = SingleFlightLayer::reject().key(key::peer_ip());
    let held = gate.clone();
    let app = Router::new()
        .route(
            "/work",
            routing::post(move || async move {
                held.notified().await;
                "done"
            }),
        )
        .layer(layer.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await.unwrap() });

    let post = move || async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "POST /work HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .unwrap();
        let mut reply = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut reply)
            .await
            .unwrap();
        reply
    };
    let first = tokio::spawn(post());
    for _ in 0..2_000 {
        if layer.stats().leases_held == 1 {
            break;
        }
        sleep(Duration::from_millis(5)).await;
    }
    let second = post().await;
    assert!(second.starts_with("HTTP/1.1 409"), "{second}");
    gate.notify_one();
    let first = first.await.unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
}
