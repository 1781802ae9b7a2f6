//! The `result` binary as an operator runs it: as an unprivileged user, with the PostgreSQL
//! password in a file, which never shows in its output or its metrics; with a refused
//! password, `/readyz` says why and the log says it once, not once per retry; and started
//! with a soft limit of 1,024 open files, as many container runtimes start it.

use std::time::Duration;

use futures_util::future::join_all;
use hyper::StatusCode;
use testkit::child::{ChildProcess, SecretFile, test_user};

use crate::helpers::{Infra, Socket, cast, metric, voter};

const READY_WITHIN: Duration = Duration::from_secs(30);

#[tokio::test]
async fn runs_unprivileged_and_keeps_passwords_out_of_its_output_and_metrics() {
    let pg_password = "pg-pw-3fa2b9c1";
    let url_password = "url-pw-0b5e77";
    let run_as = test_user();
    let infra = Infra::database().await.with_schema().await;
    cast(&infra, &voter(1), "b").await;
    let secret = SecretFile::new(pg_password, run_as).unwrap();
    // The URL's own password is replaced by the file's.
    let url = infra.db_url().replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{url_password}@"),
        1,
    );
    assert_ne!(
        url,
        infra.db_url(),
        "the test URL has the expected form: {url}"
    );

    let mut result = ChildProcess::spawn(
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
    let mut infra = Infra::own_postgres().await.with_schema().await;
    infra.server().require_password(right).await.unwrap();
    let port = infra.server().port();
    let result = ChildProcess::spawn(
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

/// More sockets than the soft limit the process is started with.
const PAST_1024: usize = 1500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_with_a_soft_limit_of_1024_open_files_it_holds_more_sockets_than_that() {
    // This process holds the client ends, and the service inherits its hard limit.
    let own = common::nofile::raise().expect("the open-file limit can be read");
    assert!(
        own.hard >= 2 * PAST_1024 as u64 + 200,
        "this test needs a hard limit of open files of at least {} (it is {}): run the tests \
         under `ulimit -n 20000`",
        2 * PAST_1024 + 200,
        own.hard
    );
    let run_as = test_user();
    let infra = Infra::database().await.with_schema().await;
    cast(&infra, &voter(1), "a").await;
    let mut result = ChildProcess::spawn_with_soft_nofile(
        env!("CARGO_BIN_EXE_result").as_ref(),
        &[
            ("VOTING_POSTGRES__URL", infra.db_url().to_string()),
            // Caps that fit the hard limit: no warning expected.
            ("VOTING_HTTP__MAX_CONNECTIONS", "1000".into()),
            ("VOTING_RESULT__MAX_SOCKETS", "2000".into()),
        ],
        run_as,
        Some(1024),
    )
    .expect("the result binary starts");
    result.until_ready(READY_WITHIN).await;

    let output = result.output();
    let logged = output
        .lines()
        .find(|l| l.contains("open-file limit"))
        .unwrap_or_else(|| panic!("the limit is logged:\n{output}"));
    assert!(logged.contains("started_with=1024"), "{logged}");
    assert!(logged.contains(&format!("soft={}", own.hard)), "{logged}");
    assert!(!output.contains("the open-file limit is"), "{output}");
    let metrics = result.get("/metrics").await.unwrap().body;
    assert_eq!(metric(&metrics, "process_max_fds"), own.hard);

    let mut sockets = Vec::with_capacity(PAST_1024);
    for _ in 0..PAST_1024 / 100 {
        let batch = join_all((0..100).map(|_| async {
            let mut socket = Socket::open(&format!("ws://{}/ws", result.addr()), &[])
                .await
                .expect("the socket opens");
            assert_eq!(socket.next_tally().await.total, 1);
            socket
        }))
        .await;
        sockets.extend(batch);
    }
    let metrics = result.get("/metrics").await.unwrap().body;
    assert_eq!(metric(&metrics, "result_sockets_open"), PAST_1024 as u64);
    assert!(metric(&metrics, "process_open_fds") > 1024, "{metrics}");

    // Every one of them is live: the next vote reaches them all.
    cast(&infra, &voter(2), "b").await;
    let tasks = sockets.into_iter().map(|mut socket| {
        tokio::spawn(async move {
            socket
                .tally_where("the second vote", |t| t.total == 2)
                .await;
        })
    });
    for joined in join_all(tasks).await {
        joined.expect("every socket got the second vote");
    }
    result.stop_cleanly_without(&[]);
}

#[test]
fn answers_help_and_version() {
    testkit::child::assert_help_and_version(env!("CARGO_BIN_EXE_result").as_ref(), "result");
}
