//! The `vote` binary as an operator runs it: as an unprivileged user, with the Redis password
//! in a file, which never shows in its output or its metrics; a bad configuration file stops
//! it with exit code 2 and one line naming the key; a Redis that refuses its password is
//! named by `/readyz` and logged once, not once per vote.

use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use testkit::child::{ChildProcess, SecretFile, test_user};

const READY_WITHIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_unprivileged_and_keeps_passwords_out_of_its_output_and_metrics() {
    let redis_password = "redis-pw-5e1f0a2b";
    let pg_password = "pg-pw-77aa13";
    let run_as = test_user();
    let redis = testkit::Redis::start().expect("redis-server starts");
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis
        .require_password(redis_password)
        .expect("Redis now asks for a password");
    let secret = SecretFile::new(&format!("{redis_password}\n"), run_as).unwrap();

    let mut vote = ChildProcess::spawn(
        env!("CARGO_BIN_EXE_vote").as_ref(),
        &[
            ("RUST_LOG", "debug".to_string()),
            ("VOTING_REDIS__URL", redis.url()),
            (
                "VOTING_REDIS__PASSWORD_FILE",
                secret.path().display().to_string(),
            ),
            // vote never connects to PostgreSQL, but the setting is read, and logged nowhere.
            (
                "VOTING_POSTGRES__URL",
                format!("postgres://app:{pg_password}@127.0.0.1:1/votes"),
            ),
        ],
        run_as,
    )
    .expect("the vote binary starts");
    vote.until_ready(READY_WITHIN).await;

    vote.assert_runs_as(run_as);

    // A vote goes through with the password read from the file.
    let answer = testkit::http::send(
        vote.addr(),
        http::Method::POST,
        "/api/vote",
        &[("content-type", "application/json")],
        r#"{"vote":"a"}"#,
    )
    .await
    .unwrap();
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    let queued: u64 = redis::cmd("XLEN")
        .arg("ballots")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(queued, 1);

    vote.metrics_without(&[redis_password, pg_password]).await;
    vote.stop_cleanly_without(&[redis_password, pg_password]);
}

/// Votes refused because Redis refuses the password: each is a 503, `/readyz` names the
/// refusal in one line, and the log says it once; once the password is right, the log says
/// once that votes are queued again.
#[tokio::test]
async fn a_refused_password_is_logged_once_not_once_per_vote() {
    let (right, wrong) = ("right-pw-0d1e", "wrong-pw-4b7a");
    let redis = testkit::Redis::start().expect("redis-server starts");
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis.require_password(right).unwrap();
    let port = redis.port();
    let vote = ChildProcess::spawn(
        env!("CARGO_BIN_EXE_vote").as_ref(),
        &[
            ("NO_COLOR", "1".to_string()),
            (
                "VOTING_REDIS__URL",
                format!("redis://:{wrong}@127.0.0.1:{port}"),
            ),
        ],
        None,
    )
    .expect("the vote binary starts");
    let cast = || async {
        testkit::http::send(
            vote.addr(),
            http::Method::POST,
            "/api/vote",
            &[("content-type", "application/json")],
            r#"{"vote":"a"}"#,
        )
        .await
    };
    // Until it listens.
    testkit::eventually(READY_WITHIN, "vote answers", || async {
        vote.get("/healthz").await.ok().map(|_| ())
    })
    .await;
    for _ in 0..3 {
        let answer = cast().await.unwrap();
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    }
    let ready = vote.get("/readyz").await.unwrap();
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.body.lines().count(), 1, "{}", ready.body);
    assert!(
        ready.body.contains("Password authentication failed"),
        "{}",
        ready.body
    );
    assert!(!ready.body.contains(wrong), "{}", ready.body);

    // The operator sets the password the service has.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(wrong)
        .query_async(&mut admin)
        .await
        .unwrap();
    testkit::eventually(READY_WITHIN, "a vote is queued again", || async {
        (cast().await.ok()?.status == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    cast().await.unwrap();
    let log = vote.stop_cleanly_without(&[right, wrong]);
    assert_eq!(log.matches("votes are queued again").count(), 1, "{log}");
    assert_eq!(log.matches("vote not confirmed").count(), 1, "{log}");
}

#[test]
fn an_unknown_key_in_the_config_file_exits_2_naming_it() {
    let dir = std::env::temp_dir().join(format!("vote-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text, key) in [
        (
            "unknown.toml",
            "[http]\nmax_conections = 5\n",
            "http.max_conections",
        ),
        (
            "wrong-type.toml",
            "[http]\nmax_body_bytes = \"4k\"\n",
            "http.max_body_bytes",
        ),
        ("top-level.toml", "colour = \"red\"\n", "colour"),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_vote"))
            .env_clear()
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{file}: one line: {stderr}");
        assert!(
            stderr.contains(key) && stderr.contains(file),
            "{file}: names {key} and the file: {stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn answers_help_and_version() {
    testkit::child::assert_help_and_version(env!("CARGO_BIN_EXE_vote").as_ref(), "vote");
}

/// Idle connections the binary holds, and the bound on what each may cost.
const IDLE_CONNECTIONS: usize = 2_000;
const IDLE_KIB_EACH: u64 = 6;

/// A connection that has sent nothing costs its task and socket only, not hyper's state and
/// read buffer (13 KiB each, when 9,500 idle connections took vote past its Kubernetes memory
/// limit of 128 MiB). Measured on the real binary's RSS, from `/proc`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_costs_a_few_kib() {
    let vote = ChildProcess::spawn(
        env!("CARGO_BIN_EXE_vote").as_ref(),
        &[
            ("VOTING_REDIS__URL", "redis://127.0.0.1:1".to_string()),
            // Nobody is cut off while the memory is read.
            ("VOTING_HTTP__HEADER_TIMEOUT_MS", "600000".to_string()),
        ],
        None,
    )
    .expect("the vote binary starts");
    testkit::eventually(READY_WITHIN, "vote answers", || async {
        vote.get("/healthz").await.ok().map(|_| ())
    })
    .await;
    let proc_dir = format!("/proc/{}", vote.pid());
    let fds = || std::fs::read_dir(format!("{proc_dir}/fd")).unwrap().count();
    let rss_kib = || -> u64 {
        let status = std::fs::read_to_string(format!("{proc_dir}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    // Let the probe's connection close.
    testkit::eventually(READY_WITHIN, "the probe's connection closes", || async {
        let before = fds();
        tokio::time::sleep(Duration::from_millis(100)).await;
        (fds() == before).then_some(())
    })
    .await;
    let (fds_before, rss_before) = (fds(), rss_kib());

    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        idle.push(tokio::net::TcpStream::connect(vote.addr()).await.unwrap());
    }
    testkit::eventually(READY_WITHIN, "vote holds every connection", || async {
        (fds() >= fds_before + IDLE_CONNECTIONS).then_some(())
    })
    .await;
    let grown = rss_kib().saturating_sub(rss_before);
    let each = grown as f64 / IDLE_CONNECTIONS as f64;
    println!("{IDLE_CONNECTIONS} idle connections: +{grown} KiB RSS, {each:.2} KiB each");
    assert!(
        grown <= IDLE_KIB_EACH * IDLE_CONNECTIONS as u64,
        "{IDLE_CONNECTIONS} idle connections took {grown} KiB ({each:.2} KiB each)"
    );
    // They are served as soon as they speak.
    let mut first = idle.pop().unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    first.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
