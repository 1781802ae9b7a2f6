//! The `result` binary as an operator runs it: as an unprivileged user, with the PostgreSQL
//! password in a file, which never shows in its output or its metrics; with a refused
//! password, `/readyz` says why and the log says it once, not once per retry.

use std::time::Duration;

use hyper::StatusCode;
use testkit::service::{SecretFile, ServiceProcess, test_user};

use crate::helpers::{Infra, voter};

const READY_WITHIN: Duration = Duration::from_secs(30);

#[tokio::test]
async fn runs_unprivileged_and_keeps_passwords_out_of_its_output_and_metrics() {
    let pg_password = "pg-pw-3fa2b9c1";
    let url_password = "url-pw-0b5e77";
    let run_as = test_user();
    let infra = Infra::start().await;
    infra.cast(&voter(1), "b").await;
    let secret = SecretFile::new(pg_password, run_as).unwrap();
    // The URL's own password is replaced by the file's.
    let url = infra.db_url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{url_password}@"),
        1,
    );
    assert_ne!(
        url, infra.db_url,
        "the test URL has the expected form: {url}"
    );

    let mut result = ServiceProcess::spawn(
        env!("CARGO_BIN_EXE_result").as_ref(),
        &[
            ("RUST_LOG", "debug".to_string()),
            ("VOTING_POSTGRES__URL", url),
            (
                "VOTING_POSTGRES__PASSWORD_FILE",
                secret.path().display().to_string(),
            ),
        ],
        run_as,
    )
    .expect("the result binary starts");
    result.until_ready(READY_WITHIN).await;

    result.assert_runs_as(run_as);

    let tally = result.get("/api/tally").await.unwrap();
    assert_eq!(tally.status, StatusCode::OK);
    assert!(tally.body.contains("\"total\":1"), "{}", tally.body);
    result.metrics_without(&[pg_password, url_password]).await;
    result.stop_cleanly_without(&[pg_password, url_password]);
}

#[tokio::test]
async fn a_refused_password_is_named_by_readyz_and_logged_once_per_change() {
    let (right, wrong) = ("right-pw-77d0", "wrong-pw-2c4f");
    let infra = Infra::start().await;
    infra.pg.require_password(right).await.unwrap();
    let port = infra.pg.port();
    let result = ServiceProcess::spawn(
        env!("CARGO_BIN_EXE_result").as_ref(),
        &[
            ("NO_COLOR", "1".to_string()),
            (
                "VOTING_POSTGRES__URL",
                format!("postgres://postgres:{wrong}@127.0.0.1:{port}/postgres"),
            ),
        ],
        None,
    )
    .expect("the result binary starts");
    let result_ref = &result;
    testkit::eventually(READY_WITHIN, "four refused connections", || async {
        let metrics = result_ref.get("/metrics").await.ok()?;
        let failures: u64 = metrics
            .body
            .lines()
            .find_map(|l| l.strip_prefix("result_feed_failures_total "))?
            .parse()
            .ok()?;
        (failures >= 4).then_some(())
    })
    .await;
    let answer = result.get("/readyz").await.unwrap();
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(answer.body.lines().count(), 1, "one line: {}", answer.body);
    assert!(
        answer.body.contains("password authentication failed"),
        "{}",
        answer.body
    );
    let log = result.stop_cleanly_without(&[right, wrong]);
    assert_eq!(
        log.matches("tally feed lost PostgreSQL").count(),
        1,
        "one line for the outage, not one per retry:\n{log}"
    );
}

#[test]
fn answers_help_and_version() {
    testkit::service::assert_help_and_version(env!("CARGO_BIN_EXE_result").as_ref(), "result");
}
