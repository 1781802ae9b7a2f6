//! Health, readiness and metrics; starting while PostgreSQL is unreachable; shutdown; the
//! hardening headers on every answer.

use hyper::{Method, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::helpers::{DEADLINE, Infra, Received, cast, eventually, metric, spawn_result, voter};

#[tokio::test]
async fn health_readiness_and_metrics() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| f).await;
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    app.tally_where("a fresh tally", |t| !t.stale).await;
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);

    let mut socket = app.socket().await;
    socket.next_tally().await;
    cast(&infra, &voter(1), "a").await;
    socket.tally_where("the vote", |t| t.total == 1).await;

    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.body;
    assert_eq!(metric(&text, "result_sockets_open"), 1);
    assert!(
        metric(&text, "result_snapshots_published_total") >= 2,
        "{text}"
    );
    assert!(
        metric(&text, "result_notifications_received_total") >= 1,
        "{text}"
    );
    assert!(
        metric(&text, "result_notify_lag_seconds_count") >= 1,
        "{text}"
    );
    assert!(
        metric(&text, "result_refreshes_total{trigger=\"connect\"}") >= 1,
        "{text}"
    );
    assert_eq!(metric(&text, "result_snapshot_votes"), 1);
    assert_eq!(metric(&text, "result_snapshot_stale"), 0);
}

#[tokio::test]
async fn starts_and_serves_while_postgres_is_unreachable() {
    // A port nothing listens on.
    let port = testkit::free_port();
    let unreachable = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let app = spawn_result(&Infra::default(), |f| {
        f.merge(("postgres.url", unreachable))
    })
    .await;

    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(
        app.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let page = app.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("No votes yet"));
    assert!(
        page.body
            .contains("data-state=\"stale\">These results may be stale")
    );
    let tally = app.tally().await;
    assert!(tally.stale);
    assert_eq!(tally.total, 0);
    let mut socket = app.socket().await;
    assert!(socket.next_tally().await.stale);
}

#[tokio::test]
async fn shutdown_closes_open_sockets_with_1001() {
    let infra = Infra::database().await.with_schema().await;
    let mut app = spawn_result(&infra, |f| f).await;
    let mut socket = app.socket().await;
    socket.next_tally().await;
    app.stop().await.expect("the service stops cleanly");
    loop {
        match socket.receive().await {
            Received::Tally(_) => continue,
            Received::Closed(frame) => {
                assert_eq!(frame.map(|f| f.code), Some(CloseCode::Away));
                break;
            }
        }
    }
}

/// `(what, method, path, headers, expected status)` of one request.
type Case<'a> = (
    &'a str,
    Method,
    &'a str,
    &'a [(&'a str, &'a str)],
    StatusCode,
);

#[tokio::test]
async fn every_answer_carries_the_hardening_headers() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| f.merge(("result.max_sockets", 1))).await;
    app.tally_where("a fresh tally", |t| !t.stale).await;
    let upgrade = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let foreign = [upgrade.as_slice(), &[("origin", "http://evil.example")]].concat();
    let cases: Vec<Case<'_>> = vec![
        ("page", Method::GET, "/", &[], StatusCode::OK),
        ("page HEAD", Method::HEAD, "/", &[], StatusCode::OK),
        ("tally", Method::GET, "/api/tally", &[], StatusCode::OK),
        (
            "css",
            Method::GET,
            "/static/result.css",
            &[],
            StatusCode::OK,
        ),
        ("js", Method::GET, "/static/result.js", &[], StatusCode::OK),
        ("healthz", Method::GET, "/healthz", &[], StatusCode::OK),
        ("readyz", Method::GET, "/readyz", &[], StatusCode::OK),
        ("metrics", Method::GET, "/metrics", &[], StatusCode::OK),
        ("404", Method::GET, "/missing", &[], StatusCode::NOT_FOUND),
        (
            "405",
            Method::POST,
            "/",
            &[],
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "plain GET /ws",
            Method::GET,
            "/ws",
            &[],
            StatusCode::UPGRADE_REQUIRED,
        ),
        (
            "ws without key",
            Method::GET,
            "/ws",
            &upgrade[..3],
            StatusCode::BAD_REQUEST,
        ),
        (
            "ws cross-origin",
            Method::GET,
            "/ws",
            &foreign,
            StatusCode::FORBIDDEN,
        ),
        (
            "ws accepted",
            Method::GET,
            "/ws",
            &upgrade,
            StatusCode::SWITCHING_PROTOCOLS,
        ),
    ];
    for (what, method, path, headers, status) in cases {
        let answer = app.send(method, path, headers).await;
        assert_eq!(answer.status, status, "{what}: {answer:?}");
        testkit::http::assert_hardened(what, &answer.headers);
    }
    // The socket accepted above is gone once its client hung up; the next one takes the one
    // place, and another while it is open is refused with 503, hardened too.
    let _open = eventually(DEADLINE, "the place is free again", || async {
        app.socket_with(&[]).await.ok()
    })
    .await;
    let full = app.send(Method::GET, "/ws", &upgrade).await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE, "{full:?}");
    testkit::http::assert_hardened("ws full", &full.headers);

    // Without PostgreSQL, /readyz says 503: hardened as well.
    let port = testkit::free_port();
    let unreachable = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let down = spawn_result(&Infra::default(), |f| {
        f.merge(("postgres.url", unreachable))
    })
    .await;
    let readyz = down.get("/readyz").await;
    assert_eq!(readyz.status, StatusCode::SERVICE_UNAVAILABLE);
    testkit::http::assert_hardened("readyz 503", &readyz.headers);
}
