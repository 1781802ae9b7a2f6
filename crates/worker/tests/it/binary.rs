//! The `worker` binary as a user runs it: bad configuration exits with code 2 and one line
//! naming the key and its source; passwords never reach the log; SIGTERM stops it cleanly;
//! `worker healthcheck` probes a running worker (as a container's health check does); it runs
//! as an unprivileged user, and its passwords never reach its output or its metrics; `worker
//! reset --yes` starts a new poll.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

fn worker() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_worker"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("VOTING_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs to completion; returns exit code and stderr.
fn run(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.output().expect("the worker binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_environment_key_exits_2_naming_it() {
    let (code, stderr) = run(worker().env("VOTING_WORKER__BATCHSIZE", "10"));
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("worker.batchsize") && stderr.contains("VOTING_WORKER__BATCHSIZE"),
        "{stderr}"
    );
}

#[test]
fn wrong_type_in_the_config_file_exits_2_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("voting.toml");
    std::fs::write(&path, "[worker]\nbatch_size = \"lots\"\n").unwrap();
    let (code, stderr) = run(worker().arg("--config").arg(&path));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("worker.batch_size") && stderr.contains("voting.toml"),
        "{stderr}"
    );
}

#[test]
fn config_file_from_voting_config_must_exist() {
    let (code, stderr) = run(worker().env("VOTING_CONFIG", "/nonexistent/voting.toml"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/voting.toml"), "{stderr}");
}

#[test]
fn unknown_argument_exits_2() {
    let (code, stderr) = run(worker().arg("--frobnicate"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--frobnicate"), "{stderr}");
}

#[test]
fn passwords_never_reach_the_log_and_sigterm_stops_cleanly() {
    // Nothing listens on these ports: the worker retries with backoff and logs each failure.
    let (pg_port, redis_port) = (testkit::free_port(), testkit::free_port());
    let mut child = worker()
        .env("RUST_LOG", "debug")
        .env(
            "VOTING_POSTGRES__URL",
            format!("postgres://app:hunter2@127.0.0.1:{pg_port}/votes"),
        )
        .env(
            "VOTING_REDIS__URL",
            format!("redis://:s3cret@127.0.0.1:{redis_port}"),
        )
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        log
    });
    // Let it fail a few times (backoff 100, 200, 400 ms), then stop it.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(800) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "no crash while PostgreSQL is down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(exit.success(), "SIGTERM is a clean stop: {exit:?}\n{log}");
    assert!(log.contains("batch failed"), "failures are logged: {log}");
    assert!(
        log.contains("app:***@127.0.0.1"),
        "the URL is shown redacted: {log}"
    );
    assert!(
        !log.contains("hunter2") && !log.contains("s3cret"),
        "no password in the log: {log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "no colour codes when stderr is not a terminal: {log:?}"
    );
}

/// Runs `worker healthcheck [url]` with the environment of `worker()`; returns whether it
/// exited 0, and its output.
fn healthcheck(port: u16, url: Option<&str>) -> (Option<i32>, String) {
    let mut cmd = worker();
    cmd.env("VOTING_LISTEN", format!("127.0.0.1:{port}"))
        .arg("healthcheck");
    if let Some(url) = url {
        cmd.arg(url);
    }
    let out = cmd.output().expect("the worker binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn healthcheck_probes_the_configured_port() {
    let port = testkit::free_port();
    // Nothing listens yet: unhealthy, exit code 1 (never 2, which Docker reserves).
    let (code, out) = healthcheck(port, None);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("127.0.0.1:{port}/readyz")), "{out}");

    // A worker whose Redis and PostgreSQL are down: alive (/healthz) but not ready (/readyz).
    let (pg_port, redis_port) = (testkit::free_port(), testkit::free_port());
    let mut child = worker()
        .env("VOTING_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "VOTING_POSTGRES__URL",
            format!("postgres://app@127.0.0.1:{pg_port}/votes"),
        )
        .env(
            "VOTING_REDIS__URL",
            format!("redis://127.0.0.1:{redis_port}"),
        )
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out) = healthcheck(port, Some(&healthz));
        if code == Some(0) {
            assert!(out.contains("healthy"), "{out}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never answered /healthz: {out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, out) = healthcheck(port, None);
    assert_eq!(
        code,
        Some(1),
        "not ready while Redis and PostgreSQL are down: {out}"
    );
    assert!(out.contains("503"), "{out}");

    // A URL that cannot be probed is unhealthy too.
    let (code, out) = healthcheck(port, Some("ftp://127.0.0.1/"));
    assert_eq!(code, Some(1), "{out}");

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    child.wait().unwrap();
}

#[tokio::test]
async fn runs_unprivileged_and_keeps_passwords_out_of_its_output_and_metrics() {
    use testkit::child::{ChildProcess, SecretFile, test_user};

    let redis_password = "redis-pw-9c2d41e7";
    let pg_password = "pg-pw-c0ffee11";
    let run_as = test_user();
    let infra = crate::helpers::infra().await;
    infra.xadd(&crate::helpers::voter(1), "b").await;
    infra
        .redis()
        .require_password(redis_password)
        .expect("Redis now asks for a password");
    let redis_secret = SecretFile::new(redis_password, run_as).unwrap();
    let pg_secret = SecretFile::new(pg_password, run_as).unwrap();

    let mut worker = ChildProcess::spawn(
        env!("CARGO_BIN_EXE_worker").as_ref(),
        &[
            ("RUST_LOG", "debug".to_string()),
            ("VOTING_REDIS__URL", infra.redis().url()),
            (
                "VOTING_REDIS__PASSWORD_FILE",
                redis_secret.path().display().to_string(),
            ),
            ("VOTING_POSTGRES__URL", infra.db_url().to_string()),
            (
                "VOTING_POSTGRES__PASSWORD_FILE",
                pg_secret.path().display().to_string(),
            ),
        ],
        run_as,
    )
    .expect("the worker binary starts");
    worker.until_ready(Duration::from_secs(30)).await;

    worker.assert_runs_as(run_as);
    // The ballot queued before it started is applied, through Redis' password.
    testkit::eventually(Duration::from_secs(30), "the ballot is applied", || async {
        crate::helpers::votes_table(&infra)
            .await
            .contains_key(&crate::helpers::voter(1))
            .then_some(())
    })
    .await;

    // The row is visible as soon as it commits; the counters move just after.
    let worker_ref = &worker;
    testkit::eventually(Duration::from_secs(30), "metrics count the row", || async {
        let metrics = worker_ref
            .metrics_without(&[redis_password, pg_password])
            .await;
        metrics
            .body
            .contains("worker_rows_upserted_total 1")
            .then_some(())
    })
    .await;
    for path in ["/healthz", "/readyz", "/metrics", "/missing"] {
        let answer = worker.get(path).await.unwrap();
        testkit::http::assert_hardened(path, &answer.headers);
    }
    let log = worker.stop_cleanly_without(&[redis_password, pg_password]);
    // The schema existed already (the test applied it): re-applying it logs nothing.
    assert!(
        !log.contains("NOTICE"),
        "no PostgreSQL notices in the log:\n{log}"
    );
}

/// A PostgreSQL that refuses the configured password: `/readyz` answers 503 naming the refusal
/// in one line (the password not in it), the worker retries with backoff, and its log says so
/// once, not once per retry; once the password is right, it is ready again and says so once.
#[tokio::test]
async fn a_refused_password_is_named_by_readyz_and_logged_once_per_change() {
    use testkit::child::ChildProcess;
    let (right, wrong) = ("right-pw-5a1c", "wrong-pw-93be");
    let mut infra = crate::helpers::own_infra().await;
    infra.server().require_password(right).await.unwrap();
    let port = infra.server().port();
    let mut worker = ChildProcess::spawn(
        env!("CARGO_BIN_EXE_worker").as_ref(),
        &[
            ("NO_COLOR", "1".to_string()),
            ("VOTING_REDIS__URL", infra.redis().url()),
            (
                "VOTING_POSTGRES__URL",
                format!("postgres://postgres:{wrong}@127.0.0.1:{port}/postgres"),
            ),
        ],
        None,
    )
    .expect("the worker binary starts");

    // Several retries, each refused.
    let worker_ref = &worker;
    testkit::eventually(Duration::from_secs(30), "four refused steps", || async {
        let metrics = worker_ref.get("/metrics").await.ok()?;
        let failures: u64 = metrics
            .body
            .lines()
            .find_map(|l| l.strip_prefix("worker_failures_total "))?
            .parse()
            .ok()?;
        (failures >= 4).then_some(())
    })
    .await;
    let answer = worker.get("/readyz").await.unwrap();
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.body.lines().count(), 1, "one line: {}", answer.body);
    assert!(
        answer.body.contains("password authentication failed"),
        "{}",
        answer.body
    );
    assert!(!answer.body.contains(wrong), "{}", answer.body);

    // The operator fixes it: the password the worker has becomes the right one.
    let admin = testkit::pg_client(&format!(
        "postgres://postgres:{right}@127.0.0.1:{port}/postgres"
    ))
    .await
    .unwrap();
    admin
        .batch_execute(&format!("ALTER ROLE postgres PASSWORD '{wrong}'"))
        .await
        .unwrap();
    worker.until_ready(Duration::from_secs(30)).await;
    // The whole log, once the worker has exited: one line for the outage, not one per retry,
    // and one for the recovery.
    let log = worker.stop_cleanly_without(&[right, wrong]);
    assert_eq!(log.matches("batch failed").count(), 1, "{log}");
    assert_eq!(
        log.matches("password authentication failed").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("batches succeed again").count(), 1, "{log}");
}

#[test]
fn answers_help_and_version() {
    testkit::child::assert_help_and_version(env!("CARGO_BIN_EXE_worker").as_ref(), "worker");
}

/// `worker reset --yes` (what `docker compose exec worker worker reset --yes` runs) deletes
/// the votes, the tallies and the queued ballots, says how many, and the worker's consumer
/// group survives: the next ballot is applied as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_starts_a_new_poll_and_the_queue_keeps_working() {
    use crate::helpers::{drain, infra, tallies_checked, voter, votes_table, xlen};
    let infra = infra().await;
    let mut w = crate::helpers::worker(&infra, "c1");
    for (n, key) in [(1, "a"), (2, "a"), (3, "b")] {
        infra.xadd(&voter(n), key).await;
    }
    drain(&mut w).await;
    infra.xadd(&voter(4), "b").await; // queued, not applied yet
    assert_eq!(votes_table(&infra).await.len(), 3);

    let out = tokio::task::spawn_blocking({
        let (redis, pg) = (infra.redis().url(), infra.db_url().to_string());
        move || {
            worker()
                .args(["reset", "--yes"])
                .env("VOTING_REDIS__URL", redis)
                .env("VOTING_POSTGRES__URL", pg)
                .output()
                .expect("the worker binary runs")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("3 votes (Cats 2, Dogs 1)"), "{stdout}");
    assert!(stdout.contains("1 ballot waiting in Redis"), "{stdout}");
    assert!(stdout.contains("worker reset: done"), "{stdout}");
    assert!(votes_table(&infra).await.is_empty());
    assert!(tallies_checked(&infra).await.values().all(|&c| c == 0));
    assert_eq!(xlen(&infra, "ballots").await, 0);

    infra.xadd(&voter(5), "a").await;
    drain(&mut w).await;
    let votes = votes_table(&infra).await;
    assert_eq!(votes.len(), 1, "{votes:?}");
    assert_eq!(votes.get(&voter(5)).map(String::as_str), Some("a"));
}
