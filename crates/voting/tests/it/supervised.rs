//! The `voting` binary with no Redis or PostgreSQL URL named: it starts both itself, on Unix
//! sockets in its data directory, and never uses the servers at the default URLs, even when
//! they answer; it restarts Redis after a crash, stops everything it started on SIGTERM,
//! keeps the votes across runs, refuses a second `voting` on the same data directory, and
//! names what to install when a program is missing.

use std::path::Path;

use common::system::is_running;
use hyper::StatusCode;
use testkit::free_port;

use crate::helpers::{
    Binary, DEADLINE, TALLY, Tally, eventually, own_redis_url, parent_of, postmaster_pid,
    process_exists, redis_pid, traversable_tempdir, vote_form, voting_command,
};

/// The environment of a run on a fresh port with no server URL named, its data in
/// `data_dir`; the URL of its own Redis.
fn settings(data_dir: &Path) -> (Vec<(&'static str, String)>, u16, String) {
    let http = free_port();
    let env = vec![
        ("VOTING_LISTEN", format!("127.0.0.1:{http}")),
        ("VOTING_VOTING__DATA_DIR", data_dir.display().to_string()),
        ("VOTING_WORKER__BLOCK_MS", "100".to_string()),
    ];
    (env, http, own_redis_url(data_dir))
}

/// Waits for the line with both URLs; returns the HTTP address.
async fn ready(binary: &mut Binary, port: u16) -> std::net::SocketAddr {
    let vote = format!("http://127.0.0.1:{port}/vote/");
    let result = format!("http://127.0.0.1:{port}/result/");
    binary.line_with(&[&vote, &result]).await;
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// Starts `voting` on `data_dir` and waits until it serves; returns it, its address and the
/// URL of its own Redis.
async fn start(data_dir: &Path, log: &Path) -> (Binary, std::net::SocketAddr, String) {
    let (env, port, redis_url) = settings(data_dir);
    let mut binary = Binary::spawn(&env, log);
    let addr = ready(&mut binary, port).await;
    (binary, addr, redis_url)
}

/// Votes as a new voter until the vote is queued (Redis may be coming back).
async fn vote_until_queued(addr: std::net::SocketAddr, key: &str) {
    eventually(DEADLINE, "a vote is queued", || async {
        (vote_form(addr, key).await.status == StatusCode::SEE_OTHER).then_some(())
    })
    .await;
}

// The quick start, with the test's build of the binary and its own data directory:
// README: cargo run --release -p voting
#[tokio::test]
async fn it_runs_its_own_servers_restarts_them_and_leaves_nothing_behind() {
    testkit::init_logging();
    let dir = traversable_tempdir();
    let data_dir = dir.path().join("data");
    let cluster = data_dir.join("postgres");

    // First run: initdb, both servers, a vote.
    let (mut binary, addr, redis_url) = start(&data_dir, &dir.path().join("first.log")).await;
    assert!(
        cluster.join("PG_VERSION").is_file(),
        "initdb ran in the data dir"
    );
    assert!(data_dir.join("redis").is_dir());

    let answer = vote_form(addr, "a").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    Tally::when(addr, TALLY, DEADLINE, "the first vote counted", |t| {
        t.total == 1 && !t.stale
    })
    .await;

    // Its servers are its children.
    let first_redis = redis_pid(&redis_url).await.expect("its Redis answers INFO");
    assert_eq!(
        parent_of(first_redis),
        Some(binary.pid()),
        "Redis is its child"
    );
    let postgres = postmaster_pid(&cluster).expect("PostgreSQL wrote its pid");
    assert_eq!(
        parent_of(postgres),
        Some(binary.pid()),
        "PostgreSQL is its child"
    );

    // Redis crashes: it is started again, on the same socket, and votes are queued again.
    testkit::signal(first_redis, "KILL").expect("kill runs");
    let second_redis = eventually(
        DEADLINE,
        "Redis answers again, as a new process",
        || async {
            redis_pid(&redis_url)
                .await
                .filter(|pid| *pid != first_redis)
        },
    )
    .await;
    assert_eq!(parent_of(second_redis), Some(binary.pid()));
    vote_until_queued(addr, "b").await;
    let tally = Tally::when(addr, TALLY, DEADLINE, "both votes counted", |t| {
        t.total == 2
    })
    .await;
    assert_eq!((tally.count("a"), tally.count("b")), (1, 1));
    // `/metrics` shows both servers up, and the one restart.
    eventually(DEADLINE, "the restart in /metrics", || async {
        let text = testkit::http::get(addr, "/metrics").await.ok()?.body;
        [
            "\nvoting_daemon_up{daemon=\"redis-server\"} 1\n",
            "\nvoting_daemon_up{daemon=\"postgres\"} 1\n",
            "\nvoting_daemon_restarts_total{daemon=\"redis-server\"} 1\n",
            "\nvoting_daemon_restarts_total{daemon=\"postgres\"} 0\n",
        ]
        .iter()
        .all(|sample| text.contains(sample))
        .then_some(())
    })
    .await;

    // SIGTERM: a clean exit, and nothing it started is left.
    binary.signal("TERM");
    let status = binary.exit().await;
    assert!(status.success(), "{status}\n{}", binary.stderr_text());
    for (what, pid) in [
        ("the first Redis", first_redis),
        ("the restarted Redis", second_redis),
        ("PostgreSQL", postgres),
    ] {
        assert!(!process_exists(pid), "{what} (pid {pid}) is still there");
    }
    let log = binary.stderr_text();
    assert!(
        log.contains("exited unexpectedly"),
        "the crash is logged:\n{log}"
    );
    // The worker's batch ends before the servers stop: nothing fails on the way out.
    let stopping = log
        .split("SIGTERM received")
        .nth(1)
        .expect("the stop is logged");
    assert!(
        !stopping.contains("batch failed"),
        "a batch failed after SIGTERM:\n{log}"
    );
    drop(binary);

    // Second run on the same data directory: the votes are still there.
    let (mut binary, addr, redis_url) = start(&data_dir, &dir.path().join("second.log")).await;
    let tally = Tally::when(addr, TALLY, DEADLINE, "the earlier votes", |t| {
        t.total == 2 && !t.stale
    })
    .await;
    assert_eq!((tally.count("a"), tally.count("b")), (1, 1));
    let redis = redis_pid(&redis_url).await.expect("its Redis answers INFO");
    let postgres = postmaster_pid(&cluster).expect("PostgreSQL wrote its pid");

    // A second `voting` on the same data directory stops at once, naming it, and leaves the
    // first one's servers alone.
    let (env, _, _) = settings(&data_dir);
    let mut second = Binary::spawn(&env, &dir.path().join("third.log"));
    let status = second.exit().await;
    assert_eq!(status.code(), Some(1), "{}", second.stderr_text());
    let log = second.stderr_text();
    assert!(
        log.contains("another voting process uses the data directory"),
        "{log}"
    );
    assert_eq!(
        redis_pid(&redis_url).await,
        Some(redis),
        "its Redis still answers"
    );
    Tally::when(addr, TALLY, DEADLINE, "the first one still serves", |t| {
        t.total == 2
    })
    .await;

    binary.signal("INT");
    let status = binary.exit().await;
    assert!(status.success(), "{status}\n{}", binary.stderr_text());
    assert!(!process_exists(redis) && !process_exists(postgres));
}

#[tokio::test]
async fn a_missing_program_is_named_in_one_line() {
    let dir = traversable_tempdir();
    let empty = dir.path().join("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    let (mut env, _, _) = settings(&dir.path().join("data"));
    env.push(("PATH", empty.display().to_string()));
    let mut binary = Binary::spawn(&env, &dir.path().join("stderr.log"));
    let status = binary.exit().await;
    assert!(!status.success(), "{status}");
    let stderr = binary.stderr_text();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line:\n{stderr}");
    assert!(lines[0].contains("redis-server not found"), "{stderr}");
    assert!(
        lines[0].contains("apt-get install redis-server postgresql"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing was created before the check"
    );
}

// README: voting --help
#[test]
fn answers_help_and_version() {
    testkit::child::assert_help_and_version(env!("CARGO_BIN_EXE_voting").as_ref(), "voting");
}

/// Passwords given as query parameters (`postgres://…?password=`, tokio-postgres's form, and
/// Redis' `unix://…?pass=`) are redacted like user-info passwords: in the start line, in every
/// log line of the worker failing to reach PostgreSQL, and in `/readyz`.
#[tokio::test]
async fn passwords_in_query_strings_never_show() {
    let (redis_secret, pg_secret) = ("qs-redis-pw-51d0", "qs-pg-pw-7e2a");
    let dir = traversable_tempdir();
    let (http, pg) = (free_port(), free_port());
    let env = vec![
        ("RUST_LOG", "debug".to_string()),
        ("VOTING_LISTEN", format!("127.0.0.1:{http}")),
        ("VOTING_VOTING__SUPERVISE", "false".to_string()),
        (
            "VOTING_REDIS__URL",
            format!(
                "unix://{}/redis.sock?db=0&pass={redis_secret}",
                dir.path().display()
            ),
        ),
        (
            "VOTING_POSTGRES__URL",
            format!("postgres://app@127.0.0.1:{pg}/votes?password={pg_secret}"),
        ),
        (
            "VOTING_VOTING__DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
    ];
    // Neither server answers: `voting` names both URLs as it starts, then stops with exit 1
    // and one line naming the one it could not use.
    let (code, stdout, log) = run_to_exit(&env);
    assert_eq!(code, Some(1), "{stdout}\n{log}");
    assert!(
        log.contains("pass=***") && log.contains("password=***"),
        "the start lines name both URLs, redacted:\n{log}"
    );
    assert!(log.contains("cannot use Redis at unix://"), "{log}");
    for secret in [redis_secret, pg_secret] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
    }
}

/// Runs the binary on servers it must not start (`voting.supervise=false`) until it exits;
/// returns its exit code, stdout and stderr.
fn run_to_exit(env: &[(&str, String)]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_voting"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("VOTING_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("VOTING_VOTING__SUPERVISE", "false")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("the voting binary runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// "Ready" means a vote can be counted: servers that refuse the configured credentials, or a
/// database that does not exist, stop `voting` at start with exit code 1 and one line naming
/// the URL and what to fix, never "voting is ready".
#[tokio::test]
async fn servers_that_refuse_it_stop_it_at_start_with_one_clear_line() {
    let infra = crate::helpers::infra().await;
    let (redis_url, db_url) = (infra.redis().url(), infra.db_url().to_string());

    infra
        .redis()
        .require_password("s3cret-redis")
        .expect("Redis now asks for a password");
    let (code, stdout, stderr) = run_to_exit(&[
        ("VOTING_REDIS__URL", redis_url.clone()),
        ("VOTING_POSTGRES__URL", db_url.clone()),
    ]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(!stdout.contains("ready"), "{stdout}");
    let line = stderr
        .lines()
        .find(|l| l.contains("cannot use Redis"))
        .unwrap_or_else(|| panic!("no line names Redis:\n{stderr}"));
    assert!(
        line.contains(&redis_url) && line.contains("password"),
        "{line}"
    );

    let with_password = redis_url.replacen("redis://", "redis://:s3cret-redis@", 1);
    let missing_db = format!("{}_missing", db_url);
    let (code, stdout, stderr) = run_to_exit(&[
        ("VOTING_REDIS__URL", with_password),
        ("VOTING_POSTGRES__URL", missing_db),
    ]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(!stdout.contains("ready"), "{stdout}");
    let line = stderr
        .lines()
        .find(|l| l.contains("cannot use PostgreSQL"))
        .unwrap_or_else(|| panic!("no line names PostgreSQL:\n{stderr}"));
    assert!(
        line.contains("_missing") && line.contains("database"),
        "{line}"
    );
    assert!(
        !stderr.contains("s3cret-redis"),
        "no password in the output: {stderr}"
    );
}

/// The case of a stock Debian machine: a password-protected PostgreSQL and a Redis with
/// `requirepass` answer where the default URLs point (`REDIS_PORT` and `POSTGRES_PORT` move
/// the defaults onto them here, since a test cannot take 6379 and 5432). `voting`, with no URL
/// named, never connects to them: it starts its own servers on Unix sockets, counts a vote
/// from the form to the tally, says how to look inside, and the two foreign servers saw no
/// connection, no new key, no new database and no new table.
#[tokio::test]
async fn it_never_adopts_the_servers_at_the_default_urls() {
    testkit::init_logging();
    let (redis_pw, pg_pw) = ("foreign-redis-pw", "foreign-pg-pw");
    let foreign_redis = testkit::Redis::start().expect("redis-server starts");
    foreign_redis.require_password(redis_pw).unwrap();
    let foreign_pg = testkit::Postgres::start().expect("PostgreSQL starts");
    foreign_pg.require_password(pg_pw).await.unwrap();
    let pg_url = format!(
        "postgres://postgres:{pg_pw}@127.0.0.1:{}/postgres",
        foreign_pg.port()
    );
    let pg = testkit::pg_client(&pg_url).await.unwrap();
    for statement in [
        "ALTER SYSTEM SET log_connections = on",
        "SELECT pg_reload_conf()",
    ] {
        pg.batch_execute(statement).await.unwrap();
    }
    let redis_url = format!("redis://:{redis_pw}@127.0.0.1:{}", foreign_redis.port());
    let mut redis = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("foreign:marker")
        .arg("1")
        .query_async(&mut redis)
        .await
        .unwrap();

    // What the foreign servers look like before, through connections opened before `voting`.
    let databases = "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database";
    let tables = "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace";
    let pg_state = || async {
        let dbs: String = pg.query_one(databases, &[]).await.unwrap().get(0);
        let tables: i64 = pg.query_one(tables, &[]).await.unwrap().get(0);
        (dbs, tables)
    };
    let redis_state = |mut conn: redis::aio::MultiplexedConnection| async move {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .unwrap();
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut conn)
            .await
            .unwrap();
        let connections = info
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .unwrap()
            .trim()
            .to_string();
        (keys, connections)
    };
    let pg_before = pg_state().await;
    let redis_before = redis_state(redis.clone()).await;
    let connections = |log: &str| log.matches("connection received").count();
    let pg_connections_before = eventually(DEADLINE, "log_connections is on", || async {
        // Reloading the configuration takes a moment; a new connection shows when it is on.
        let _probe = testkit::pg_client(&pg_url).await.unwrap();
        let n = connections(&foreign_pg.log());
        (n > 0).then_some(n)
    })
    .await;

    let dir = traversable_tempdir();
    let data_dir = dir.path().join("data");
    let (mut env, port, _) = settings(&data_dir);
    env.push(("REDIS_PORT", foreign_redis.port().to_string()));
    env.push(("POSTGRES_PORT", foreign_pg.port().to_string()));
    let mut binary = Binary::spawn(&env, &dir.path().join("stderr.log"));
    let addr = ready(&mut binary, port).await;
    let psql_line = binary.line_with(&["look inside: voting psql"]).await;
    assert!(
        psql_line.contains(&format!("psql -h {}/postgres", data_dir.display())),
        "{psql_line}"
    );
    let redis_line = binary.line_with(&["look inside: voting redis-cli"]).await;
    assert!(
        redis_line.contains(&format!(
            "redis-cli -s {}/redis/redis.sock",
            data_dir.display()
        )),
        "{redis_line}"
    );

    let answer = vote_form(addr, "b").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let tally = Tally::when(addr, TALLY, DEADLINE, "the vote counted", |t| {
        t.total == 1 && !t.stale
    })
    .await;
    assert_eq!(tally.count("b"), 1);

    // `voting psql` reaches the database that counted it.
    // README: voting psql
    // README: cargo run --release -p voting -- psql
    let out = voting_command()
        .args(["psql", "-At", "-c", "SELECT vote FROM votes"])
        .env("VOTING_VOTING__DATA_DIR", &data_dir)
        .output()
        .expect("voting psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "b");
    // And `voting redis-cli` the Redis that queued it (the stream of votes).
    // README: voting redis-cli
    let out = voting_command()
        .args(["redis-cli", "TYPE", "ballots"])
        .env("VOTING_VOTING__DATA_DIR", &data_dir)
        .output()
        .expect("voting redis-cli runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "stream");
    // `voting reset` starts a new poll on the same servers, never on the foreign ones at the
    // default ports; the open app sees the empty poll.
    // README: voting reset
    let out = voting_command()
        .args(["reset", "--yes"])
        .env("VOTING_VOTING__DATA_DIR", &data_dir)
        .env("REDIS_PORT", foreign_redis.port().to_string())
        .env("POSTGRES_PORT", foreign_pg.port().to_string())
        .output()
        .expect("voting reset runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Tally::when(
        addr,
        TALLY,
        DEADLINE,
        "the poll emptied by the reset",
        |t| t.total == 0 && !t.stale,
    )
    .await;

    binary.signal("TERM");
    let status = binary.exit().await;
    assert!(status.success(), "{status}\n{}", binary.stderr_text());

    assert_eq!(pg_state().await, pg_before, "no new database or table");
    assert_eq!(
        connections(&foreign_pg.log()),
        pg_connections_before,
        "no connection to the foreign PostgreSQL:\n{}",
        foreign_pg.log()
    );
    assert_eq!(
        redis_state(redis.clone()).await,
        redis_before,
        "no new key in the foreign Redis, and no connection to it"
    );

    // The defaults did point at them: without supervision, `voting` uses the default URLs
    // and is refused.
    let out = voting_command()
        .env("VOTING_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("VOTING_VOTING__SUPERVISE", "false")
        .env("REDIS_PORT", foreign_redis.port().to_string())
        .env("POSTGRES_PORT", foreign_pg.port().to_string())
        .env("NO_COLOR", "1")
        .output()
        .expect("voting runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot use Redis at redis://127.0.0.1:{}",
            foreign_redis.port()
        )),
        "{stderr}"
    );
}

/// `voting` killed with SIGKILL leaves its servers running (they outlive it). The next start
/// stops them and starts its own on the same data, so two servers never share one directory:
/// the vote counted before is still counted, and the leftovers are gone.
#[tokio::test]
async fn after_a_sigkill_the_next_start_replaces_the_servers_left_behind() {
    testkit::init_logging();
    let dir = traversable_tempdir();
    let data_dir = dir.path().join("data");
    let cluster = data_dir.join("postgres");

    let (mut binary, addr, redis_url) = start(&data_dir, &dir.path().join("first.log")).await;
    vote_until_queued(addr, "a").await;
    Tally::when(addr, TALLY, DEADLINE, "the vote counted", |t| {
        t.total == 1 && !t.stale
    })
    .await;
    let old_redis = redis_pid(&redis_url).await.expect("its Redis answers INFO");
    let old_postgres = postmaster_pid(&cluster).expect("PostgreSQL wrote its pid");
    binary.signal("KILL");
    binary.exit().await;
    assert!(
        process_exists(old_redis) && process_exists(old_postgres),
        "its servers outlive a SIGKILL"
    );
    drop(binary);

    let (mut binary, addr, redis_url) = start(&data_dir, &dir.path().join("second.log")).await;
    let tally = Tally::when(addr, TALLY, DEADLINE, "the earlier vote", |t| {
        t.total == 1 && !t.stale
    })
    .await;
    assert_eq!(tally.count("a"), 1);
    // Gone: exited (what is left may be a zombie until init, which may never, reaps it).
    assert!(!is_running(old_redis), "the old Redis was stopped");
    assert!(!is_running(old_postgres), "the old PostgreSQL was stopped");
    let new_redis = redis_pid(&redis_url).await.expect("its new Redis answers");
    assert_ne!(new_redis, old_redis);
    assert_eq!(parent_of(new_redis), Some(binary.pid()));
    binary.signal("TERM");
    assert!(binary.exit().await.success(), "{}", binary.stderr_text());
}
