//! Runs that must fail, and say why: refused votes, votes that never reach PostgreSQL, a
//! wrong stored vote, no server at all.

use crate::helpers::{Stack, config, run, run_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_reported_as_503_and_exit_1() {
    let mut app = Stack::vote_only().await;
    app.infra.redis_mut().kill();
    // Each refusal takes the vote service its Redis pool's wait (2 s): refuse them all at once.
    let report = run(&["--url", &app.url(), "--votes", "40", "--concurrency", "40"]).await;
    assert_eq!(report.accepted, 0, "{report:#?}");
    assert_eq!(report.refused, 40, "{report:#?}");
    assert_eq!(report.refused_by_status.get(&503), Some(&40), "{report:#?}");
    assert!(report.latency_ms.is_none());
    assert_eq!(report.exit_code(), 1);

    let out = run_binary(&["--url", &app.url(), "--votes", "10", "--concurrency", "10"]).await;
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stdout.contains("refused    10"), "{}", out.stdout);
    assert!(out.stdout.contains("503:    10"), "{}", out.stdout);
    assert!(out.stdout.contains("FAILED"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_that_never_reach_postgres_are_reported_missing() {
    // No worker: the votes stay queued in Redis, and no schema exists yet either.
    let app = Stack::with_database().await;
    let report = run(&[
        "--url",
        &app.url(),
        "--votes",
        "100",
        "--verify",
        app.db_url(),
        "--verify-timeout",
        "500ms",
    ])
    .await;
    assert_eq!(report.accepted, 100, "{report:#?}");
    let verify = report.verify.as_ref().expect("verified");
    assert_eq!(
        (verify.voters, verify.missing, verify.present),
        (100, 100, 0)
    );
    assert!(!verify.complete && verify.drain_s.is_none(), "{verify:#?}");
    assert_eq!(verify.examples.len(), 10);
    assert!(verify.examples.iter().all(|m| m.stored.is_none()));
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_stored_differently_is_reported_wrong() {
    let mut app = Stack::with_database().await;
    let mut pg = app.infra.pg().await;
    common::schema::migrate(&mut pg).await.expect("schema");
    // Voter 0 of seed 7 already holds `b` with a version no stream entry can beat: the
    // worker will (rightly) keep it, and loadgen must notice that its `a` is not there.
    let seed = 7;
    let voter = loadgen::plan::voter_id(seed, 0).to_string();
    pg.execute(
        "INSERT INTO votes (id, vote, version_ms, version_seq) VALUES ($1, 'b', $2, 0)",
        &[&voter, &i64::MAX],
    )
    .await
    .expect("insert");
    app.start_worker().await;
    let report = run(&[
        "--url",
        &app.url(),
        "--votes",
        "30",
        "--voters",
        "10",
        "--options",
        "a",
        "--seed",
        "7",
        "--concurrency",
        "1",
        "--verify",
        app.db_url(),
        "--verify-timeout",
        "3s",
    ])
    .await;
    assert_eq!(report.accepted, 30, "{report:#?}");
    let verify = report.verify.as_ref().expect("verified");
    assert_eq!(
        (verify.voters, verify.present, verify.wrong),
        (10, 9, 1),
        "{verify:#?}"
    );
    let m = &verify.examples[0];
    assert_eq!(m.voter_id, voter);
    assert_eq!(
        (m.expected.as_deref(), m.stored.as_deref()),
        (Some("a"), Some("b"))
    );
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_is_connect_errors() {
    let port = testkit::free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let report = run(&["--url", &url, "--votes", "6", "--concurrency", "3"]).await;
    assert_eq!(report.sent, 6);
    assert_eq!(report.errors.connect, 6, "{report:#?}");
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test]
async fn an_unresolvable_host_is_an_error() {
    let config = config(&["--url", "http://no-such-host.invalid/", "--votes", "1"]);
    let err = loadgen::run(&config, std::future::pending())
        .await
        .expect_err("nothing to connect to");
    assert!(
        format!("{err:#}").contains("no-such-host.invalid"),
        "{err:#}"
    );
}
