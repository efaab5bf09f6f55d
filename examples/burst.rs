//! Run with: cargo run --release --example burst -- ADDR METHOD PATH N
//!
//! The burst client of `bench/run.sh`: `N` identical HTTP/1.1 requests that
//! reach the server at the same moment. Every connection is opened first;
//! then every request is written, before any answer is read. Prints one JSON
//! object: each request's status, its latency from its own send (ms), and when
//! its answer was complete (seconds on one clock, for the spread of answers).
//!
//! It runs on one thread, like the server it measures: a client in Python
//! spent longer reading a thousand answers than the server took to send them.

use std::{io, time::Instant};

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// One request's answer: its status, and when it was complete.
struct Answer {
    status: u16,
    done: Instant,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, method, path, n] = args.as_slice() else {
        eprintln!("usage: burst ADDR METHOD PATH N");
        std::process::exit(2);
    };
    let n: usize = n.parse().map_err(|_| invalid("N must be a number"))?;

    let mut connections = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = TcpStream::connect(addr.as_str()).await?;
        stream.set_nodelay(true)?;
        connections.push(stream);
    }
    let request = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\n\r\n");
    let mut sent = Vec::with_capacity(n);
    for stream in &mut connections {
        stream.write_all(request.as_bytes()).await?;
        sent.push(Instant::now());
    }
    let readers: Vec<_> = connections
        .into_iter()
        .map(|stream| tokio::spawn(answer(stream)))
        .collect();
    let mut answers = Vec::with_capacity(n);
    for reader in readers {
        answers.push(reader.await.map_err(io::Error::other)??);
    }

    let origin = sent[0];
    let statuses: Vec<u16> = answers.iter().map(|answer| answer.status).collect();
    let latency_ms: Vec<f64> = answers
        .iter()
        .zip(&sent)
        .map(|(answer, sent)| (answer.done - *sent).as_secs_f64() * 1000.0)
        .collect();
    let done_s: Vec<f64> = answers
        .iter()
        .map(|answer| (answer.done - origin).as_secs_f64())
        .collect();
    println!(
        "{}",
        json!({ "statuses": statuses, "latency_ms": latency_ms, "done_s": done_s })
    );
    Ok(())
}

/// Reads one answer: its head, then exactly `content-length` bytes of body.
async fn answer(mut stream: TcpStream) -> io::Result<Answer> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..end]).map_err(|_| invalid("head"))?;
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|status| status.parse().ok())
                .ok_or_else(|| invalid("status line"))?;
            let length = head
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, value)| value.trim().parse::<usize>().ok())
                .ok_or_else(|| invalid("a content-length"))?;
            if buffer.len() >= end + 4 + length {
                return Ok(Answer {
                    status,
                    done: Instant::now(),
                });
            }
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(invalid("connection closed before the answer was complete"));
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unreadable answer: {what}"),
    )
}
