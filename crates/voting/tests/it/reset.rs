//! `voting reset`, the real binary against the Redis and PostgreSQL of a running app: it says
//! what it deletes, deletes nothing unless confirmed, and once confirmed (`--yes`, or typing
//! `reset`) empties the poll, which an open WebSocket sees at once (the safety poll is set to
//! an hour, so only the reset's notification can tell it). Votes after it count from zero.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::helpers::{DEADLINE, Infra, Socket, TALLY, Tally, config, infra, vote_form};

/// Runs `voting reset <args>` against `infra` with `input` on its stdin: exit success, stdout,
/// stderr.
async fn reset(infra: &Infra, args: &[&str], input: &str) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_voting"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("VOTING_") {
            command.env_remove(&name);
        }
    }
    let mut child = command
        .arg("reset")
        .args(args)
        .env("VOTING_REDIS__URL", infra.redis().url())
        .env("VOTING_POSTGRES__URL", infra.db_url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the voting binary starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("voting reset ends in time")
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_reset_empties_the_poll_and_open_pages_see_it_at_once() {
    let infra = infra().await;
    let mut config = config(&infra);
    config.result.poll_interval_ms = common::config::Millis::ms(3_600_000);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(voting::run(config, listener, std::future::pending()));
    for key in ["a", "a", "b"] {
        assert_eq!(vote_form(addr, key).await.status, 303);
    }
    Tally::when(addr, TALLY, DEADLINE, "three votes counted", |t| {
        t.total == 3
    })
    .await;
    let mut socket = Socket::open(&format!("ws://{addr}/result/ws"), &[])
        .await
        .expect("the socket opens");
    socket
        .tally_where("the socket has them", |t| t.total == 3)
        .await;

    // Not confirmed: nothing is deleted.
    let (ok, stdout, stderr) = reset(&infra, &[], "no\n").await;
    assert!(!ok, "{stdout}{stderr}");
    assert!(stdout.contains("3 votes (Cats 2, Dogs 1)"), "{stdout}");
    assert!(stdout.contains("Type \"reset\" to delete them"), "{stdout}");
    assert!(
        stderr.contains("not confirmed, nothing was deleted"),
        "{stderr}"
    );
    assert_eq!(Tally::get(addr, TALLY).await.total, 3);

    // Typed confirmation.
    let (ok, stdout, stderr) = reset(&infra, &[], "reset\n").await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("a new poll has started"), "{stdout}");
    let empty = socket
        .tally_where("the socket shows the empty poll", |t| t.total == 0)
        .await;
    assert!(empty.options.iter().all(|o| o.count == 0), "{empty:?}");
    let page = testkit::http::request(addr, hyper::Method::GET, "/result/", &[], "")
        .await
        .body;
    assert!(page.contains("No votes yet"), "{page}");

    // The next vote counts from zero; `--yes` needs no answer.
    assert_eq!(vote_form(addr, "b").await.status, 303);
    socket
        .tally_where("the new vote", |t| t.total == 1 && t.count("b") == 1)
        .await;
    let (ok, stdout, stderr) = reset(&infra, &["--yes"], "").await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("1 vote (Dogs 1)"), "{stdout}");
    assert!(!stdout.contains("Type"), "no question with --yes: {stdout}");
    socket.tally_where("empty again", |t| t.total == 0).await;
}

#[tokio::test]
async fn a_bad_command_line_or_an_unreachable_database_deletes_nothing() {
    let infra = infra().await;
    let (ok, _, stderr) = reset(&infra, &["--now"], "").await;
    assert!(!ok && stderr.contains("--now"), "{stderr}");

    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_voting"));
    let output = command
        .args(["reset", "--yes"])
        .env("VOTING_REDIS__URL", infra.redis().url())
        .env(
            "VOTING_POSTGRES__URL",
            "postgres://postgres@127.0.0.1:1/postgres",
        )
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("connecting to PostgreSQL"), "{stderr}");
}
