//! PostgreSQL stopped and started under an open socket: the socket keeps the last tally,
//! marked stale, `/readyz` says 503, and after the restart the same socket gets new votes.

use hyper::StatusCode;

use crate::helpers::{DEADLINE, Infra, cast, eventually, metric, spawn_result, voter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_an_open_socket() {
    let mut infra = Infra::own_postgres().await.with_schema().await;
    let app = spawn_result(&infra, |f| f).await;
    let mut socket = app.socket().await;
    socket.tally_where("a fresh tally", |t| !t.stale).await;
    cast(&infra, &voter(1), "a").await;
    socket
        .tally_where("the first vote", |t| t.count("a") == 1)
        .await;
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);

    tokio::task::block_in_place(|| infra.server().stop_immediate()).expect("PostgreSQL stops");
    let stale = socket.tally_where("a stale tally", |t| t.stale).await;
    assert_eq!(stale.count("a"), 1, "the last counts are kept");
    let readyz = app.get("/readyz").await;
    assert_eq!(readyz.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(readyz.body.contains("postgres"), "{}", readyz.body);
    let page = app.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("1 vote<"), "{}", page.body);
    assert!(
        page.body
            .contains("data-state=\"stale\">These results may be stale")
    );
    assert!(app.tally().await.stale);
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);

    tokio::task::block_in_place(|| infra.server().start_again()).expect("PostgreSQL starts again");
    let fresh = socket
        .tally_where("a fresh tally after the restart", |t| !t.stale)
        .await;
    assert_eq!(fresh.count("a"), 1);
    cast(&infra, &voter(2), "b").await;
    let after = socket
        .tally_where("the vote after the restart", |t| t.count("b") == 1)
        .await;
    assert_eq!(after.total, 2);
    assert!(!after.stale);

    eventually(DEADLINE, "ready again", || async {
        (app.get("/readyz").await.status == StatusCode::OK).then_some(())
    })
    .await;
    let text = app.get("/metrics").await.body;
    assert!(metric(&text, "result_feed_connects_total") >= 2, "{text}");
    assert!(metric(&text, "result_feed_failures_total") >= 1, "{text}");
    assert_eq!(
        metric(&text, "result_sockets_opened_total"),
        1,
        "no reconnect"
    );
}
