//! Whole runs against a healthy app: every vote accepted and, with `--verify`, found in
//! PostgreSQL as each voter's last accepted vote.

use std::time::Duration;

use crate::helpers::{Stack, config, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_vote_is_in_postgres() {
    let app = Stack::with_worker().await;
    let report = run(&[
        "--url",
        &app.url(),
        "--votes",
        "500",
        "--voters",
        "20",
        "--revote-ratio",
        "0.5",
        "--concurrency",
        "8",
        "--verify",
        app.db_url(),
    ])
    .await;

    assert_eq!(
        (report.sent, report.accepted, report.refused),
        (500, 500, 0),
        "{report:#?}"
    );
    assert_eq!(report.errors.total, 0, "{report:#?}");
    assert_eq!(report.voters, 20);
    assert_eq!(
        report.revotes, 480,
        "once all 20 have voted, every vote is a re-vote"
    );
    assert!(report.latency_ms.is_some());
    let verify = report.verify.as_ref().expect("verified");
    assert_eq!(
        (verify.voters, verify.present, verify.missing, verify.wrong),
        (20, 20, 0, 0),
        "{verify:#?}"
    );
    assert!(
        verify.complete && verify.drain_s.is_some() && verify.confirmed_s.is_some(),
        "{verify:#?}"
    );
    assert!(report.ok);
    assert_eq!(report.exit_code(), 0);

    // And PostgreSQL agrees, counted independently: 20 voters, and the tallies add up.
    let pg = app.infra.pg().await;
    let rows: i64 = pg
        .query_one("SELECT count(*) FROM votes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 20);
    let tallied: i64 = pg
        .query_one("SELECT sum(count)::bigint FROM tallies", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tallied, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_votes_with_a_mix_are_all_accepted() {
    let app = Stack::with_worker().await;
    let report = run(&[
        "--url",
        &app.url(),
        "--form",
        "--votes",
        "300",
        "--mix",
        "a=90,b=10",
        "--revote-ratio",
        "0.2",
        "--concurrency",
        "4",
        "--verify",
        app.db_url(),
    ])
    .await;
    assert_eq!((report.accepted, report.refused), (300, 0), "{report:#?}");
    assert_eq!(report.mode, "form");
    assert_eq!(report.expected_status, 303);
    assert_eq!(report.revotes, 60);
    assert_eq!(report.voters, 240);
    assert!(
        report.verify.as_ref().is_some_and(|v| v.ok()),
        "{report:#?}"
    );
    assert_eq!(report.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_run_sends_at_most_the_votes_due() {
    let app = Stack::vote_only().await;
    let report = run(&[
        "--url",
        &app.url(),
        "--rate",
        "200/s",
        "--duration",
        "1s",
        "--concurrency",
        "4",
    ])
    .await;
    let missed = report
        .missed
        .expect("a paced run with a duration counts missed votes");
    assert_eq!(report.sent + missed, 200, "{report:#?}");
    assert_eq!(report.accepted, report.sent, "{report:#?}");
    assert_eq!(report.target_rate, Some(200.0));
    assert!(report.ok, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_stops_and_says_so() {
    let app = Stack::vote_only().await;
    let url = app.url();
    let config = config(&[
        "--url",
        &url,
        "--duration",
        "1h",
        "--rate",
        "100",
        "--quiet",
    ]);
    let report = loadgen::run(&config, tokio::time::sleep(Duration::from_millis(300)))
        .await
        .expect("the run completes");
    assert!(report.interrupted, "{report:#?}");
    assert_eq!(
        report.accepted, report.sent,
        "votes in flight are answered: {report:#?}"
    );
    assert_eq!(report.exit_code(), 1);
}
