//! Health, readiness and metrics; starting while PostgreSQL is unreachable; shutdown.

use hyper::StatusCode;

use crate::helpers::{Infra, Received, metric, spawn_result, spawn_result_with, voter};
use common::config::{Config, Service};
use figment::Figment;
use figment::providers::Serialized;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let infra = Infra::start().await;
    let app = spawn_result(&infra, |f| f).await;
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    app.tally_where("a fresh tally", |t| !t.stale).await;
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);

    let mut socket = app.socket().await;
    socket.next_tally().await;
    infra.cast(&voter(1), "a").await;
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
    assert!(metric(&text, "result_notify_lag_count") >= 1, "{text}");
    assert!(
        metric(&text, "result_refreshes_total{trigger=\"connect\"}") >= 1,
        "{text}"
    );
    assert_eq!(metric(&text, "result_votes_total"), 1);
    assert_eq!(metric(&text, "result_snapshot_stale"), 0);
}

#[tokio::test]
async fn starts_and_serves_while_postgres_is_unreachable() {
    // A port nothing listens on.
    let port = testkit::free_port();
    let figment = Figment::from(Serialized::defaults(Config::defaults(Service::Result))).merge((
        "postgres.url",
        format!("postgres://postgres@127.0.0.1:{port}/postgres"),
    ));
    let app = spawn_result_with(Config::from_figment(&figment).unwrap()).await;

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
            .contains("role=\"status\">These results may be stale")
    );
    let tally = app.tally().await;
    assert!(tally.stale);
    assert_eq!(tally.total, 0);
    let mut socket = app.socket().await;
    assert!(socket.next_tally().await.stale);
}

#[tokio::test]
async fn shutdown_closes_open_sockets_with_1001() {
    let infra = Infra::start().await;
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
