//! The `healthcheck` probe against tiny servers on 127.0.0.1: a 200 is healthy; a 503, an
//! answer that is not HTTP, a server that never answers and a closed port are not, each within
//! the timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::healthcheck::{Answer, probe};

/// A server that accepts one connection, reads the request head, answers `reply` (or nothing,
/// holding the connection open for `hold`), and hands back the request it read.
fn serve_once(reply: &'static [u8], hold: Duration) -> (SocketAddr, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port on 127.0.0.1");
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("the probe connects");
        let request = read_head(&mut conn);
        conn.write_all(reply).unwrap();
        std::thread::sleep(hold);
        request
    });
    (addr, server)
}

fn read_head(conn: &mut TcpStream) -> String {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

const TIMEOUT: Duration = Duration::from_millis(500);

#[test]
fn a_200_is_healthy_and_the_request_is_plain_http_1_1() {
    let (addr, server) = serve_once(
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
        Duration::ZERO,
    );
    let answer = probe(&format!("http://{addr}/readyz"), TIMEOUT).unwrap();
    assert_eq!(
        answer,
        Answer {
            status: 200,
            detail: "ok".into()
        }
    );
    let request = server.join().unwrap();
    assert!(request.starts_with("GET /readyz HTTP/1.1\r\n"), "{request}");
    assert!(request.contains(&format!("Host: {addr}\r\n")), "{request}");
    assert!(request.contains("Connection: close\r\n"), "{request}");
}

#[test]
fn a_503_is_reported_with_the_reason_the_body_gives() {
    let (addr, server) = serve_once(
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 25\r\n\r\nredis: connection refused",
        Duration::ZERO,
    );
    let answer = probe(&format!("http://{addr}/readyz"), TIMEOUT).unwrap();
    assert_eq!(answer.status, 503);
    assert_eq!(answer.detail, "redis: connection refused");
    server.join().unwrap();
}

#[test]
fn the_status_counts_even_when_the_body_never_ends() {
    // Headers, then the server stalls: the status line is enough.
    let (addr, server) = serve_once(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial",
        Duration::from_millis(1500),
    );
    let started = Instant::now();
    let answer = probe(&format!("http://{addr}/healthz"), TIMEOUT).unwrap();
    assert_eq!(answer.status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    server.join().unwrap();
}

#[test]
fn garbage_is_not_healthy() {
    let (addr, server) = serve_once(b"SSH-2.0-OpenSSH_9.2\r\n", Duration::ZERO);
    let e = probe(&format!("http://{addr}/readyz"), TIMEOUT).unwrap_err();
    assert!(e.contains("not an HTTP answer"), "{e}");
    server.join().unwrap();
}

#[test]
fn a_server_that_never_answers_times_out() {
    let (addr, server) = serve_once(b"", Duration::from_millis(1500));
    let started = Instant::now();
    let e = probe(&format!("http://{addr}/readyz"), TIMEOUT).unwrap_err();
    let took = started.elapsed();
    assert!(e.contains("no answer within 500 ms"), "{e}");
    assert!(took >= TIMEOUT && took < TIMEOUT * 3, "{took:?}");
    server.join().unwrap();
}

#[test]
fn a_closed_port_is_not_healthy() {
    // Bound, then dropped: nothing listens there any more.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = probe(&format!("http://{addr}/readyz"), TIMEOUT).unwrap_err();
    assert!(e.contains("connecting to"), "{e}");
}
