//! `Nginx`: the project's routes (`nginx/routes.conf`) in front of two echo servers standing
//! in for vote and result: prefixes stripped, redirects, forwarded headers, body limit, gzip,
//! keepalive to the upstreams, the services' health and metrics not published, the security
//! headers on Nginx's own answers, and the per-client connection limits (in front of a server
//! that holds every request it gets).

use std::convert::Infallible;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use testkit::Nginx;
use testkit::http::{Answer, send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server that answers every request with what it saw, one `name: value` per line:
/// `service`, `method`, `path`, `peer` and the headers the routes set. `/big.css` answers a
/// stylesheet of 4 KiB instead.
async fn echo(service: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let handler =
                hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    if req.uri().path() == "/hardened" {
                        let resp = Response::builder()
                            .header("x-content-type-options", "nosniff")
                            .header("referrer-policy", "same-origin")
                            .header(
                                "content-security-policy",
                                "default-src 'self'; frame-ancestors 'none'",
                            )
                            .body(Full::new(Bytes::from_static(b"hardened\n")))
                            .unwrap();
                        return Ok::<_, Infallible>(resp);
                    }
                    if req.uri().path() == "/big.css" {
                        let css = "body { color: black; }\n".repeat(200);
                        let resp = Response::builder()
                            .header("content-type", "text/css")
                            .body(Full::new(Bytes::from(css)))
                            .unwrap();
                        return Ok::<_, Infallible>(resp);
                    }
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string()
                    };
                    let mut text = format!(
                        "service: {service}\nmethod: {}\npath: {}\npeer: {peer}\n",
                        req.method(),
                        req.uri()
                    );
                    for name in [
                        "host",
                        "x-forwarded-for",
                        "x-forwarded-proto",
                        "connection",
                        "upgrade",
                    ] {
                        text.push_str(&format!("{name}: {}\n", header(name)));
                    }
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    text.push_str(&format!("body: {}\n", body.len()));
                    Ok(Response::new(Full::new(Bytes::from(text))))
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), handler),
            );
        }
    });
    addr
}

/// The value of `name` in an echo.
fn seen<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer
        .body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("{name} in {:?}", answer.body))
}

async fn start() -> Nginx {
    testkit::init_logging();
    let vote = echo("vote").await;
    let result = echo("result").await;
    tokio::task::block_in_place(|| Nginx::start(vote, result)).expect("nginx starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_strip_the_prefix_and_forward_the_origin() {
    let nginx = start().await;
    let host = format!("127.0.0.1:{}", nginx.port());

    let vote = send(nginx.addr(), Method::GET, "/vote/api/x?y=1", &[], "")
        .await
        .unwrap();
    assert_eq!(vote.status, StatusCode::OK, "{}", nginx.error_log_tail());
    assert_eq!(seen(&vote, "service"), "vote");
    assert_eq!(seen(&vote, "path"), "/api/x?y=1");
    assert_eq!(seen(&vote, "host"), host, "Host with its port");
    assert_eq!(seen(&vote, "x-forwarded-proto"), "http");
    assert_eq!(seen(&vote, "x-forwarded-for"), "127.0.0.1");
    assert_eq!(
        seen(&vote, "connection"),
        "-",
        "no Connection: close upstream"
    );

    let result = testkit::http::get(nginx.addr(), "/result/").await.unwrap();
    assert_eq!(seen(&result, "service"), "result");
    assert_eq!(seen(&result, "path"), "/");
    let ws = testkit::http::get(nginx.addr(), "/result/ws")
        .await
        .unwrap();
    assert_eq!(seen(&ws, "service"), "result");
    assert_eq!(seen(&ws, "path"), "/ws");
    assert_eq!(seen(&ws, "upgrade"), "-", "no upgrade asked, none passed");

    let post = send(nginx.addr(), Method::POST, "/vote/", &[], "vote=a")
        .await
        .unwrap();
    assert_eq!(seen(&post, "method"), "POST");
    assert_eq!(seen(&post, "body"), "6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_and_unknown_paths() {
    let nginx = start().await;
    for (path, status, location) in [
        ("/", StatusCode::FOUND, "/vote/"),
        ("/vote", StatusCode::MOVED_PERMANENTLY, "/vote/"),
        ("/result", StatusCode::MOVED_PERMANENTLY, "/result/"),
        ("/vote?x=1", StatusCode::MOVED_PERMANENTLY, "/vote/?x=1"),
    ] {
        let answer = testkit::http::get(nginx.addr(), path).await.unwrap();
        assert_eq!(answer.status, status, "{path}");
        assert_eq!(answer.header("location"), location, "{path}");
    }
    for path in ["/favicon.ico", "/voter/", "/results/"] {
        let answer = testkit::http::get(nginx.addr(), path).await.unwrap();
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stop_at_nginx_and_text_is_compressed() {
    let nginx = start().await;
    let big = send(
        nginx.addr(),
        Method::POST,
        "/vote/",
        &[],
        vec![b'x'; 16 * 1024],
    )
    .await
    .unwrap();
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);

    let css = send(
        nginx.addr(),
        Method::GET,
        "/vote/big.css",
        &[("accept-encoding", "gzip")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.header("content-encoding"), "gzip");
    assert!(css.header("vary").contains("Accept-Encoding"), "{css:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive() {
    let nginx = start().await;
    let first = testkit::http::get(nginx.addr(), "/vote/").await.unwrap();
    let second = testkit::http::get(nginx.addr(), "/vote/").await.unwrap();
    assert_eq!(
        seen(&first, "peer"),
        seen(&second, "peer"),
        "both requests came over one upstream connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_stops_nginx() {
    let nginx = start().await;
    let addr = nginx.addr();
    drop(nginx);
    assert!(TcpStream::connect(addr).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_health_and_metrics_are_not_published() {
    let nginx = start().await;
    for service in ["vote", "result"] {
        for path in ["healthz", "readyz", "metrics"] {
            for spelled in [
                format!("/{service}/{path}"),
                format!("/{service}//{path}"),
                format!("/{service}/%{:02x}{}", path.as_bytes()[0], &path[1..]),
                format!("/{service}/{path}?x=1"),
            ] {
                let answer = testkit::http::get(nginx.addr(), &spelled).await.unwrap();
                assert_eq!(
                    answer.status,
                    StatusCode::NOT_FOUND,
                    "{spelled}: {answer:?}"
                );
                assert!(
                    !answer.body.contains("service:"),
                    "{spelled} reached {answer:?}"
                );
                testkit::http::assert_hardened(&spelled, &answer.headers);
            }
        }
    }
    // The rest of the services' paths still goes through.
    let page = testkit::http::get(nginx.addr(), "/vote/healthz/x")
        .await
        .unwrap();
    assert_eq!(seen(&page, "path"), "/healthz/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_own_answers_carry_the_security_headers() {
    let nginx = start().await;
    let not_found = testkit::http::get(nginx.addr(), "/favicon.ico")
        .await
        .unwrap();
    assert_eq!(not_found.status, StatusCode::NOT_FOUND);
    testkit::http::assert_hardened("404", &not_found.headers);
    let redirect = testkit::http::get(nginx.addr(), "/").await.unwrap();
    assert_eq!(redirect.status, StatusCode::FOUND);
    testkit::http::assert_hardened("302", &redirect.headers);
    let big = send(
        nginx.addr(),
        Method::POST,
        "/vote/",
        &[],
        vec![b'x'; 16 * 1024],
    )
    .await
    .unwrap();
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    testkit::http::assert_hardened("413", &big.headers);

    // A service's own headers are passed once, not doubled.
    let own = testkit::http::get(nginx.addr(), "/vote/hardened")
        .await
        .unwrap();
    assert_eq!(own.body, "hardened\n");
    for name in [
        "x-content-type-options",
        "referrer-policy",
        "content-security-policy",
    ] {
        assert_eq!(
            own.headers.get_all(name).iter().count(),
            1,
            "{name}: {own:?}"
        );
    }
    assert_eq!(
        own.header("content-security-policy"),
        "default-src 'self'; frame-ancestors 'none'",
        "the service's, not Nginx's"
    );

    // A service that is down: Nginx's 502.
    let gone = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let alone = tokio::task::block_in_place(|| Nginx::start(gone, gone)).expect("nginx starts");
    let bad_gateway = testkit::http::get(alone.addr(), "/vote/").await.unwrap();
    assert_eq!(bad_gateway.status, StatusCode::BAD_GATEWAY);
    testkit::http::assert_hardened("502", &bad_gateway.headers);
}

/// Pages: requests in progress per client. Sockets: open WebSockets per client. As in
/// nginx/routes.conf.
const PAGES_PER_CLIENT: usize = 128;
const SOCKETS_PER_CLIENT: usize = 256;
/// How long a request may take to reach the holding upstream before the test fails.
const ARRIVAL_DEADLINE: Duration = Duration::from_secs(30);

/// A server that reads each request's head, counts it, and never answers: every request
/// through Nginx stays in progress.
async fn holding() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrived = Arc::new(AtomicUsize::new(0));
    let count = arrived.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        count.fetch_add(1, Ordering::SeqCst);
                        head.clear();
                    }
                }
            });
        }
    });
    (addr, arrived)
}

/// A connection to Nginx from `client` (any address of 127.0.0.0/8) that sends `request`.
async fn from(client: [u8; 4], nginx: SocketAddr, request: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((client, 0))).unwrap();
    let mut stream = socket.connect(nginx).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Waits until the holding server has seen `n` requests.
async fn until_arrived(arrived: &AtomicUsize, n: usize) {
    testkit::eventually(
        ARRIVAL_DEADLINE,
        &format!("{n} requests upstream"),
        || async { (arrived.load(Ordering::SeqCst) >= n).then_some(()) },
    )
    .await;
}

/// The whole answer on `stream` until Nginx closes it or the deadline.
async fn answer(stream: &mut tokio::net::TcpStream) -> String {
    let mut text = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
            }
            if text.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(ARRIVAL_DEADLINE, read).await;
    String::from_utf8_lossy(&text).into_owned()
}

/// One client can hold at most [`PAGES_PER_CLIENT`] requests in progress and
/// [`SOCKETS_PER_CLIENT`] WebSockets: the next is answered 429 (with the security headers),
/// while other clients and the other kind are still served. Loopback is not limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_more_than_its_share() {
    testkit::init_logging();
    let (upstream, arrived) = holding().await;
    let nginx = tokio::task::block_in_place(|| Nginx::start(upstream, upstream)).unwrap();
    let page = "GET /vote/ HTTP/1.1\r\nHost: example.com\r\n\r\n";
    let socket = "GET /result/ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let mut held = Vec::new();
    let mut seen = 0;
    for (request, limit) in [(page, PAGES_PER_CLIENT), (socket, SOCKETS_PER_CLIENT)] {
        for _ in 0..limit {
            held.push(from([127, 0, 0, 2], nginx.addr(), request).await);
            seen += 1;
            until_arrived(&arrived, seen).await;
        }
        let mut refused = from([127, 0, 0, 2], nginx.addr(), request).await;
        let refusal = answer(&mut refused).await;
        assert!(
            refusal.starts_with("HTTP/1.1 429"),
            "past the limit: {refusal:?}"
        );
        assert!(
            refusal
                .to_ascii_lowercase()
                .contains("x-content-type-options: nosniff"),
            "{refusal}"
        );
        // Another client is served.
        held.push(from([127, 0, 0, 3], nginx.addr(), request).await);
        seen += 1;
        until_arrived(&arrived, seen).await;
    }
    // Loopback is not limited (load tools and a local TLS terminator).
    for _ in 0..=PAGES_PER_CLIENT {
        held.push(from([127, 0, 0, 1], nginx.addr(), page).await);
        seen += 1;
        until_arrived(&arrived, seen).await;
    }
    assert!(
        !nginx
            .error_log_tail()
            .contains("worker_connections are not enough"),
        "{}",
        nginx.error_log_tail()
    );
}

/// Several replicas share the load round-robin, and a reload points the routes at other ones
/// (the bench's scale scenario adds and removes replicas this way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_routes_and_a_reload_changes_them() {
    testkit::init_logging();
    let (one, two, three) = (
        echo("vote-1").await,
        echo("vote-2").await,
        echo("vote-3").await,
    );
    let result = echo("result").await;
    let mut nginx = tokio::task::block_in_place(|| Nginx::start_many(&[one, two], &[result]))
        .expect("nginx starts");
    let services = |nginx: &Nginx| {
        let addr = nginx.addr();
        async move {
            let mut seen_now = std::collections::BTreeSet::new();
            for _ in 0..6 {
                let answer = testkit::http::get(addr, "/vote/").await.unwrap();
                seen_now.insert(seen(&answer, "service").to_string());
            }
            seen_now.into_iter().collect::<Vec<_>>()
        }
    };
    assert_eq!(services(&nginx).await, ["vote-1", "vote-2"]);
    tokio::task::block_in_place(|| nginx.set_upstreams(&[two, three], &[result]))
        .expect("nginx reloads");
    assert_eq!(
        services(&nginx).await,
        ["vote-2", "vote-3"],
        "{}",
        nginx.error_log_tail()
    );
}
