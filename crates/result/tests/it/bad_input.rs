//! Bad input gets a clear answer: refused handshakes, the socket cap, oversized messages,
//! unknown paths and wrong methods. None of it disturbs the sockets already open.

use hyper::{Method, StatusCode};
use tokio_tungstenite::tungstenite::{self, protocol::frame::coding::CloseCode};

use crate::helpers::{DEADLINE, Infra, Received, cast, eventually, spawn_result, voter};

const UPGRADE: [(&str, &str); 4] = [
    ("connection", "Upgrade"),
    ("upgrade", "websocket"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

fn refusal_status(error: tungstenite::Error) -> StatusCode {
    match error {
        tungstenite::Error::Http(resp) => resp.status(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test]
async fn requests_to_ws_that_are_not_websocket_handshakes_are_refused() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| f).await;

    let plain = app.get("/ws").await;
    assert_eq!(plain.status, StatusCode::UPGRADE_REQUIRED);
    assert_eq!(plain.header("upgrade"), "websocket");

    let mut old = UPGRADE;
    old[2] = ("sec-websocket-version", "8");
    let answer = app.send(Method::GET, "/ws", &old).await;
    assert_eq!(answer.status, StatusCode::UPGRADE_REQUIRED);
    assert_eq!(answer.header("sec-websocket-version"), "13");

    let answer = app.send(Method::GET, "/ws", &UPGRADE[..3]).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "no key");

    let answer = app.send(Method::POST, "/ws", &UPGRADE).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.header("allow"), "GET");
}

#[tokio::test]
async fn cross_origin_sockets_are_forbidden() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| f).await;

    let refused = app
        .socket_with(&[("origin", "http://evil.example")])
        .await
        .err()
        .expect("a cross-origin socket is refused");
    assert_eq!(refusal_status(refused), StatusCode::FORBIDDEN);
    let refused = app.socket_with(&[("origin", "null")]).await.err().unwrap();
    assert_eq!(refusal_status(refused), StatusCode::FORBIDDEN);

    let origin = format!("http://{}", app.addr);
    let mut same = app
        .socket_with(&[("origin", &origin)])
        .await
        .expect("a same-origin socket opens");
    same.next_tally().await;
}

/// A `Host` without a port is the default port (80): a page on another port of the same host
/// is another origin. The rule is vote's (`domain::origin`).
#[tokio::test]
async fn a_host_without_a_port_is_the_default_port() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| f).await;

    for (host, origin) in [
        ("127.0.0.1", "http://127.0.0.1:8080"),
        ("127.0.0.1:8080", "http://127.0.0.1"),
    ] {
        let refused = app
            .socket_with(&[
                ("host", host),
                ("origin", origin),
                ("sec-fetch-site", "same-site"),
            ])
            .await
            .err()
            .unwrap_or_else(|| panic!("Host {host}, Origin {origin}: refused"));
        assert_eq!(refusal_status(refused), StatusCode::FORBIDDEN);
    }
    for (host, origin) in [
        ("127.0.0.1", "http://127.0.0.1"),
        ("127.0.0.1:80", "http://127.0.0.1"),
        ("127.0.0.1", "http://127.0.0.1:80"),
    ] {
        let mut socket = app
            .socket_with(&[("host", host), ("origin", origin)])
            .await
            .unwrap_or_else(|e| panic!("Host {host}, Origin {origin}: {e}"));
        socket.next_tally().await;
    }
}

#[tokio::test]
async fn a_trusted_proxy_names_the_scheme_the_origin_must_have() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| f.merge(("http.trust_proxy", true))).await;
    let https = format!("https://{}", app.addr);
    let http = format!("http://{}", app.addr);

    let mut secure = app
        .socket_with(&[("origin", &https), ("x-forwarded-proto", "https")])
        .await
        .expect("an https origin opens when the proxy says https");
    secure.next_tally().await;
    let mut plain = app
        .socket_with(&[("origin", &http), ("x-forwarded-proto", "http")])
        .await
        .expect("an http origin opens when the proxy says http");
    plain.next_tally().await;

    let refused = app
        .socket_with(&[("origin", &http), ("x-forwarded-proto", "https")])
        .await
        .err()
        .expect("an http origin is refused when the proxy says https");
    assert_eq!(refusal_status(refused), StatusCode::FORBIDDEN);
    let refused = app
        .socket_with(&[
            ("origin", "https://evil.example"),
            ("x-forwarded-proto", "https"),
        ])
        .await
        .err()
        .expect("another host is refused whatever the scheme");
    assert_eq!(refusal_status(refused), StatusCode::FORBIDDEN);

    // https's default port is 443.
    let mut secure = app
        .socket_with(&[
            ("host", "example.com"),
            ("origin", "https://example.com"),
            ("x-forwarded-proto", "https"),
        ])
        .await
        .expect("https://example.com is example.com on https");
    secure.next_tally().await;
    let refused = app
        .socket_with(&[
            ("host", "example.com"),
            ("origin", "https://example.com:8443"),
            ("x-forwarded-proto", "https"),
        ])
        .await
        .err()
        .expect("another port than 443 is refused");
    assert_eq!(refusal_status(refused), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn forwarded_proto_is_ignored_unless_the_proxy_is_trusted() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| f).await;
    let http = format!("http://{}", app.addr);

    let mut socket = app
        .socket_with(&[("origin", &http), ("x-forwarded-proto", "https")])
        .await
        .expect("the header means nothing from an untrusted client");
    socket.next_tally().await;
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| f).await;
    assert_eq!(app.get("/nope").await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/result/").await.status, StatusCode::NOT_FOUND);
    for (method, path, allow) in [
        (Method::POST, "/", "GET, HEAD"),
        (Method::DELETE, "/api/tally", "GET, HEAD"),
        (Method::PUT, "/static/result.js", "GET, HEAD"),
        (Method::POST, "/metrics", "GET"),
    ] {
        let answer = app.send(method.clone(), path, &[]).await;
        assert_eq!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(answer.header("allow"), allow, "{method} {path}");
    }
    let head = app.send(Method::HEAD, "/", &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn the_socket_cap_answers_503_and_frees_places() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| f.merge(("result.max_sockets", 2))).await;
    let mut first = app.socket().await;
    first.next_tally().await;
    let mut second = app.socket().await;
    second.next_tally().await;

    let refused = app
        .socket_with(&[])
        .await
        .err()
        .expect("the third is refused");
    assert_eq!(refusal_status(refused), StatusCode::SERVICE_UNAVAILABLE);
    let text = app.get("/metrics").await.body;
    assert!(
        text.contains("result_sockets_refused_total{reason=\"full\"} 1"),
        "{text}"
    );

    // The sockets already open keep working.
    cast(&infra, &voter(1), "a").await;
    first.tally_where("the vote", |t| t.total == 1).await;

    first.close().await;
    let mut third = eventually(DEADLINE, "a place is free again", || async {
        app.socket_with(&[]).await.ok()
    })
    .await;
    assert_eq!(third.next_tally().await.total, 1);
    second.tally_where("the vote", |t| t.total == 1).await;
}

#[tokio::test]
async fn client_messages_are_ignored_and_oversized_ones_close_with_1009() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| f).await;
    let mut bystander = app.socket().await;
    bystander.next_tally().await;
    let mut chatty = app.socket().await;
    chatty.next_tally().await;
    let mut big = app.socket().await;
    big.next_tally().await;

    // Small messages are read and ignored.
    chatty.send_text("hello".into()).await.unwrap();
    chatty.send_text("{\"vote\":\"a\"}".into()).await.unwrap();

    // 64 KiB is far over the 4 KiB limit.
    let _ = big.send_text("x".repeat(64 * 1024)).await;
    match big.receive().await {
        Received::Closed(Some(frame)) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected a close with 1009, got {other:?}"),
    }

    cast(&infra, &voter(1), "b").await;
    bystander.tally_where("the vote", |t| t.total == 1).await;
    chatty.tally_where("the vote", |t| t.total == 1).await;
    let mut later = app.socket().await;
    assert_eq!(later.next_tally().await.total, 1);
    let text = app.get("/metrics").await.body;
    assert!(
        text.contains("result_sockets_dropped_total{reason=\"too_large\"} 1"),
        "{text}"
    );
}
