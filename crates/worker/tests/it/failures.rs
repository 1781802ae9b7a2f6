//! Outages: PostgreSQL down keeps the votes in Redis, `/readyz` says why, and the worker
//! resumes by itself when PostgreSQL is back.

use std::collections::BTreeMap;
use std::time::Duration;

use common::config::Program;
use hyper::StatusCode;

use crate::helpers::{
    config, eventually, infra, own_infra, tallies_checked, voter, votes_table, worker, xlen,
};

#[tokio::test]
async fn postgres_down_keeps_votes_queued_then_resumes() {
    let mut infra = own_infra().await;
    let config = config(&infra, Program::Worker, "w", |f| f);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker::run(config, listener, async {
        let _ = stopped.await;
    }));

    infra.xadd(&voter(1), "a").await;
    eventually(
        Duration::from_secs(20),
        "the first vote is applied",
        || async { (votes_table(&infra).await.len() == 1).then_some(()) },
    )
    .await;
    let ready = testkit::http::get(addr, "/readyz").await.unwrap();
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);

    infra.server().stop_immediate().unwrap();
    for n in 2..=6 {
        infra.xadd(&voter(n), "b").await;
    }
    let not_ready = eventually(
        Duration::from_secs(20),
        "/readyz reports PostgreSQL down",
        || async {
            let answer = testkit::http::get(addr, "/readyz").await.unwrap();
            (answer.status == StatusCode::SERVICE_UNAVAILABLE).then_some(answer.body)
        },
    )
    .await;
    assert!(not_ready.contains("postgres"), "{not_ready}");
    assert_eq!(
        xlen(&infra, "ballots").await,
        5,
        "nothing is acknowledged while PostgreSQL is down"
    );
    assert_eq!(
        testkit::http::get(addr, "/healthz").await.unwrap().status,
        StatusCode::OK
    );

    infra.server().start_again().unwrap();
    eventually(
        Duration::from_secs(30),
        "the queued votes are applied after the restart",
        || async { (xlen(&infra, "ballots").await == 0).then_some(()) },
    )
    .await;
    assert_eq!(votes_table(&infra).await.len(), 6);
    assert_eq!(
        tallies_checked(&infra).await,
        BTreeMap::from([("a".into(), 1), ("b".into(), 5)])
    );
    // The counters move just after the acknowledgement that emptied the stream.
    eventually(
        Duration::from_secs(30),
        "metrics count 6 entries",
        || async {
            let metrics = testkit::http::get(addr, "/metrics").await.unwrap().body;
            metrics.contains("worker_entries_total 6").then_some(())
        },
    )
    .await;

    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn redis_down_is_retried_and_nothing_is_lost() {
    let mut infra = infra().await;
    let mut w = worker(&infra, "w");
    w.connect().await.unwrap();
    infra.xadd(&voter(1), "a").await;
    // Make sure the vote is durable in the append-only file before the crash.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("always")
        .query_async(&mut infra.redis_conn().await)
        .await
        .unwrap();
    infra.xadd(&voter(2), "b").await;
    infra.redis_mut().kill();
    assert!(w.step().await.is_err(), "a step fails while Redis is down");
    infra.redis_mut().restart().unwrap();
    let w = tokio::sync::Mutex::new(w);
    eventually(
        Duration::from_secs(20),
        "both votes are applied",
        || async {
            let _ = w.lock().await.step().await;
            (votes_table(&infra).await.len() == 2).then_some(())
        },
    )
    .await;
    tallies_checked(&infra).await;
}

#[tokio::test]
async fn schema_migration_is_idempotent_and_concurrent() {
    let infra = infra().await;
    let config = config(&infra, Program::Worker, "w", |f| f);
    let runs = (0..4).map(|_| {
        let pg = config.postgres.clone();
        tokio::spawn(async move {
            let mut client = common::pools::pg_connect(&pg).await.unwrap();
            common::schema::migrate(&mut client).await
        })
    });
    for run in runs.collect::<Vec<_>>() {
        run.await.unwrap().unwrap();
    }
    // Over the original app's data: tallies start from what is there.
    let pg = infra.pg().await;
    pg.batch_execute(
        "INSERT INTO votes (id, vote) VALUES ('x', 'a'), ('y', 'a');
         DELETE FROM tallies;
         DROP TRIGGER votes_tally_insert ON votes;",
    )
    .await
    .unwrap();
    let mut client = common::pools::pg_connect(&config.postgres).await.unwrap();
    common::schema::migrate(&mut client).await.unwrap();
    assert_eq!(
        tallies_checked(&infra).await,
        BTreeMap::from([("a".into(), 2)])
    );
    // A hand-typed DELETE keeps the tallies right too.
    pg.batch_execute("DELETE FROM votes WHERE id = 'x'")
        .await
        .unwrap();
    assert_eq!(
        tallies_checked(&infra).await,
        BTreeMap::from([("a".into(), 1)])
    );
}
