//! `Nginx`: the project's routes (`nginx/routes.conf`) in front of two echo servers standing
//! in for vote and result: prefixes stripped, redirects, forwarded headers, body limit, gzip,
//! keepalive to the upstreams.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpStream};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use testkit::Nginx;
use testkit::http::{Answer, send};
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
