//! The `result` binary as an operator runs it: as an unprivileged user, with the PostgreSQL
//! password in a file, which never shows in its output or its metrics.

use std::time::Duration;

use hyper::StatusCode;
use testkit::service::{Credentials, SecretFile, ServiceProcess, unprivileged_user};

use crate::helpers::{Infra, voter};

const READY_WITHIN: Duration = Duration::from_secs(30);

#[tokio::test]
async fn runs_unprivileged_and_keeps_passwords_out_of_its_output_and_metrics() {
    let pg_password = "pg-pw-3fa2b9c1";
    let url_password = "url-pw-0b5e77";
    let run_as = unprivileged_user().expect("an unprivileged user to run as");
    if run_as.is_none() {
        println!("the tests run unprivileged already: the service runs as the same user");
    }
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

    let credentials = Credentials::of(result.pid()).unwrap();
    assert!(credentials.is_unprivileged(), "{credentials:?}");
    if let Some((uid, _)) = run_as {
        assert!(
            credentials.uids.iter().all(|u| *u == uid),
            "{credentials:?}"
        );
    }

    let tally = result.get("/api/tally").await.unwrap();
    assert_eq!(tally.status, StatusCode::OK);
    assert!(tally.body.contains("\"total\":1"), "{}", tally.body);
    let metrics = result.get("/metrics").await.unwrap();
    assert_eq!(metrics.status, StatusCode::OK);
    for password in [pg_password, url_password] {
        assert!(!metrics.body.contains(password), "{}", metrics.body);
    }

    let (status, output) = result.stop().unwrap();
    assert!(
        status.success(),
        "SIGTERM is a clean stop: {status}\n{output}"
    );
    assert!(
        output.contains("listening"),
        "the log was captured: {output}"
    );
    for password in [pg_password, url_password] {
        assert!(
            !output.contains(password),
            "{password} in the log:\n{output}"
        );
    }
}
