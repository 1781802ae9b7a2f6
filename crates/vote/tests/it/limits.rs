//! The limits every connection has, seen from raw TCP: slow clients are cut off and free
//! their place, connections past the cap wait their turn, oversized or malformed request
//! heads get `431` or `400`, and a trickled body gets `408`. Nothing refused is queued.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::spawn_app;

/// Longest a raw exchange may take before the test fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(15);

/// Sends `request` as is on a new connection and returns everything the server sent back
/// until it closed the connection (or reset it: what arrived before counts).
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    socket
        .write_all(request)
        .await
        .expect("the request is sent");
    read_until_closed(&mut socket).await
}

/// Reads until the server closes the connection; a reset ends the read like a close.
async fn read_until_closed(socket: &mut TcpStream) -> String {
    let read = async {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the server answers or closes within the deadline")
}

/// A POST of a form vote for `a` with `extra` header lines (each ending in CRLF).
fn form_post(extra: &str) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 6\r\nConnection: close\r\n{extra}\r\nvote=a"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_a_normal_client_is_served() {
    // Two places, both taken by slow clients: one silent, one sending its head a byte at a
    // time. The header timeout must free both for the normal client behind them.
    let app = spawn_app(|f| {
        f.merge(("http.max_connections", 2))
            .merge(("http.header_timeout_ms", 500))
    })
    .await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let mut trickler = TcpStream::connect(app.addr).await.unwrap();
    // Accepted in order, so the normal client comes third and waits for a place.
    let normal = tokio::spawn(exchange(
        app.addr,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    ));

    let trickled = async {
        let head = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
        let mut sent = 0usize;
        let mut answer = Vec::new();
        loop {
            let byte = head.get(sent).copied().unwrap_or(b'a');
            if trickler.write_all(&[byte]).await.is_err() {
                break;
            }
            sent += 1;
            let mut buf = [0u8; 1024];
            match tokio::time::timeout(Duration::from_millis(100), trickler.read(&mut buf)).await {
                Err(_) => continue, // nothing yet: send the next byte
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            }
        }
        (sent, answer)
    };
    let (sent, trickler_answer) = tokio::time::timeout(DEADLINE, trickled)
        .await
        .expect("the trickling client is cut off within the deadline");
    let silent_answer = read_until_closed(&mut silent).await;
    let normal_answer = tokio::time::timeout(DEADLINE, normal)
        .await
        .expect("the normal client is served within the deadline")
        .unwrap();

    assert!(
        silent_answer.is_empty(),
        "a client that sent nothing is closed without an answer: {silent_answer:?}"
    );
    assert!(
        trickler_answer.is_empty(),
        "a client still trickling after {sent} bytes is closed without an answer: {:?}",
        String::from_utf8_lossy(&trickler_answer)
    );
    assert!(
        normal_answer.starts_with("HTTP/1.1 200"),
        "the client behind them is served: {normal_answer}"
    );
    assert!(normal_answer.ends_with("ok\n"), "{normal_answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_a_client_waits_and_is_served_when_a_place_frees() {
    let app = spawn_app(|f| f.merge(("http.max_connections", 1))).await;
    // The one place: a keep-alive connection that has been answered once.
    let stream = TcpStream::connect(app.addr).await.unwrap();
    let (mut holder, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let held = tokio::spawn(conn);
    let get = || {
        Request::get("/healthz")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let first = holder.send_request(get()).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    first.into_body().collect().await.unwrap();

    // The next client gets no refusal: it waits in the listen backlog.
    let mut waiting = TcpStream::connect(app.addr).await.unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..3 {
        holder
            .ready()
            .await
            .expect("the held connection stays open");
        let again = holder.send_request(get()).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        again.into_body().collect().await.unwrap();
        let mut buf = [0u8; 64];
        let unanswered = waiting.try_read(&mut buf);
        assert!(
            matches!(&unanswered, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "no answer while the only place is held: {unanswered:?}"
        );
    }

    drop(holder);
    held.await.unwrap().unwrap();
    let answer = read_until_closed(&mut waiting).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_are_431() {
    let app = spawn_app(|f| f).await;
    let max = common::web::MAX_HEAD_BYTES;

    let long_cookie = format!("Cookie: voter_id={}\r\n", "a".repeat(max + 1));
    let many_headers: String = (0..=common::web::MAX_HEADERS)
        .map(|i| format!("X-Header-{i}: {i}\r\n"))
        .collect();
    let long_uri = format!(
        "POST /?{} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 6\r\nConnection: close\r\n\r\nvote=a",
        "q".repeat(max + 1)
    );
    let cases = [
        ("one header line over the limit", form_post(&long_cookie)),
        ("too many header fields", form_post(&many_headers)),
        ("request line over the limit", long_uri.into_bytes()),
    ];
    for (what, request) in cases {
        let answer = exchange(app.addr, &request).await;
        assert!(
            answer.starts_with("HTTP/1.1 431"),
            "{what}: {}",
            answer.lines().next().unwrap_or("(no answer)")
        );
        assert!(answer.ends_with("\r\n\r\n"), "{what}: a body in {answer:?}");
        assert!(
            app.stream_entries().await.is_empty(),
            "{what} queued a vote"
        );
    }

    // A head well within the limit, with a large cookie a browser might hold, is served.
    let big_but_fine = format!("Cookie: other={}\r\n", "b".repeat(max / 2));
    let answer = exchange(app.addr, &form_post(&big_but_fine)).await;
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    assert_eq!(app.stream_entries().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_heads_are_400() {
    let app = spawn_app(|f| f).await;
    let cases: [(&str, &[u8]); 5] = [
        ("not HTTP", b"HELLO THERE\r\n\r\n"),
        (
            "header without a colon",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n",
        ),
        (
            "space in the method",
            b"G ET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ),
        (
            "two different lengths",
            b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
              Content-Length: 6\r\nContent-Length: 7\r\n\r\nvote=a",
        ),
        (
            "a length that is not a number",
            b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
              Content-Length: six\r\n\r\nvote=a",
        ),
    ];
    for (what, request) in cases {
        let answer = exchange(app.addr, request).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{what}: {}",
            answer.lines().next().unwrap_or("(no answer)")
        );
        // hyper writes these itself, without the security headers (it has no hook for
        // them): they have no body, so there is nothing for those headers to govern.
        assert!(answer.ends_with("\r\n\r\n"), "{what}: a body in {answer:?}");
    }
    assert!(app.stream_entries().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_off_with_408() {
    // The body timeout bounds the whole body, not the pause between two bytes.
    let app = spawn_app(|f| f.merge(("http.body_timeout_ms", 300))).await;
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    socket
        .write_all(
            b"POST /api/vote HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n",
        )
        .await
        .unwrap();
    let trickle = async {
        let body = br#"{"vote":"a"}"#.iter().chain(std::iter::repeat(&b' '));
        for byte in body.take(1000) {
            if socket.write_all(&[*byte]).await.is_err() {
                break;
            }
            let mut buf = [0u8; 1024];
            match tokio::time::timeout(Duration::from_millis(50), socket.peek(&mut buf)).await {
                Err(_) => continue,
                Ok(_) => break, // an answer (or the close) arrived
            }
        }
        read_until_closed(&mut socket).await
    };
    let answer = tokio::time::timeout(DEADLINE, trickle)
        .await
        .expect("the trickled body is cut off within the deadline");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(app.stream_entries().await.is_empty(), "nothing is queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_both_a_length_and_chunking_smuggles_nothing() {
    // Request smuggling: a proxy reading by Content-Length would forward all of this as one
    // request, while a server reading the chunks would find a second, hidden request after
    // them. The hidden vote must never be queued.
    let app = spawn_app(|f| f.merge(("http.header_timeout_ms", 500))).await;
    let hidden = "POST /api/vote HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                  Content-Length: 12\r\n\r\n{\"vote\":\"b\"}";
    let body = format!("c\r\n{{\"vote\":\"a\"}}\r\n0\r\n\r\n{hidden}");
    let request = format!(
        "POST /api/vote HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange(app.addr, request.as_bytes()).await;
    let answers = answer.matches("HTTP/1.1 ").count();
    assert!(answers <= 1, "one request, at most one answer:\n{answer}");
    let votes: Vec<String> = app
        .stream_entries()
        .await
        .into_iter()
        .map(|(_, _, vote)| vote)
        .collect();
    assert!(
        !votes.contains(&"b".to_string()),
        "the hidden vote was queued: {votes:?}\n{answer}"
    );
    println!(
        "answer: {}; queued: {votes:?}",
        answer.lines().next().unwrap_or("(none)")
    );
}

/// What Nginx refuses is refused straight to the service too, and queues nothing: HTTP/1.1
/// without a `Host`, two `Host`s (`400`), a transfer coding other than `chunked` (`501`, where
/// hyper alone read the chunks and ignored the `gzip`). Each refusal carries the security
/// headers and closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_nginx_refuses_are_refused_here_too() {
    let app = spawn_app(|f| f).await;
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    let chunked_vote = "6\r\nvote=a\r\n0\r\n\r\n";
    let cases = [
        (
            "no Host",
            format!("POST / HTTP/1.1\r\n{form}Content-Length: 6\r\n\r\nvote=a"),
            "HTTP/1.1 400",
        ),
        (
            "two Hosts",
            format!(
                "POST / HTTP/1.1\r\nHost: localhost\r\nHost: example.com\r\n{form}Content-Length: 6\r\n\r\nvote=a"
            ),
            "HTTP/1.1 400",
        ),
        (
            "gzip, chunked",
            format!(
                "POST / HTTP/1.1\r\nHost: localhost\r\n{form}Transfer-Encoding: gzip, chunked\r\n\r\n{chunked_vote}"
            ),
            "HTTP/1.1 501",
        ),
        (
            "gzip and chunked in two lines",
            format!(
                "POST / HTTP/1.1\r\nHost: localhost\r\n{form}Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_vote}"
            ),
            "HTTP/1.1 501",
        ),
    ];
    for (what, request, status) in cases {
        let answer = exchange(app.addr, request.as_bytes()).await;
        assert!(answer.starts_with(status), "{what}: {answer}");
        let head = answer.to_ascii_lowercase();
        assert!(
            head.contains("x-content-type-options: nosniff"),
            "{what}: {answer}"
        );
        assert!(head.contains("connection: close"), "{what}: {answer}");
    }
    assert!(app.stream_entries().await.is_empty());

    // HTTP/1.0 needs no Host, and plain chunking is served.
    let answer = exchange(app.addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    let request = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\n{form}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunked_vote}"
    );
    let answer = exchange(app.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    assert_eq!(app.stream_entries().await.len(), 1);
}

/// A client that pipelines GETs and never reads its answers: once an answer has made no
/// progress for `http.write_timeout_ms` (set small here), the connection is closed, its place
/// freed, and the close counted in `/metrics`. With every place taken by such clients,
/// `/healthz` is still answered once they are cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off_by_the_write_deadline() {
    let app = spawn_app(|f| {
        f.merge(("http.write_timeout_ms", 200))
            .merge(("http.max_connections", 3))
    })
    .await;
    let request = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(100);
    let stallers: Vec<_> = (0..3)
        .map(|_| {
            let request = request.clone();
            let addr = app.addr;
            tokio::spawn(async move {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                // A small window, so that the server's writes fill it soon.
                socket.set_recv_buffer_size(4096).unwrap();
                let mut stream = socket.connect(addr).await.unwrap();
                // Pipelined requests until the server closes: the write then fails.
                loop {
                    if stream.write_all(request.as_bytes()).await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    for staller in stallers {
        tokio::time::timeout(Duration::from_secs(60), staller)
            .await
            .expect("a client that never reads is cut off")
            .unwrap();
    }
    let health = app.get("/healthz", &[]).await;
    assert_eq!(health.status, StatusCode::OK);
    let metrics = app.get("/metrics", &[]).await.body;
    let closed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vote_connections_write_timeout_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the counter in {metrics}"));
    assert!(closed >= 3, "{metrics}");
}
