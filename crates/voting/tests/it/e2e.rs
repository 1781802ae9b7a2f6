//! End to end, in a real browser, against the `voting` binary alone: no Nginx, headless
//! Chromium talks to the one process that serves `/vote/`, `/result/` and `/result/ws` and runs
//! the worker. The story is [`testkit::story`]'s, the same one `crates/result/tests/it/e2e.rs`
//! tells vote, result and the worker behind Nginx:
//!
//! - Voting marks the choice, and an open results page moves without a reload.
//! - The voting page works without JavaScript.
//! - The results page says it is reconnecting while the binary is stopped (SIGTERM), and
//!   recovers when it is started again on the same port; then the voting page works too.
//!
//! The binary uses testkit's Redis and PostgreSQL (a fresh database per test) rather than
//! supervising its own: their URLs are named, so it starts nothing (and
//! `voting.supervise=false` says so twice). That is faster, with no `initdb` and
//! no server start per test, and more reliable: stopping the binary for the outage leaves the
//! data servers up, so the restart is only the binary's, and a vote can be queued while it is
//! down. Supervision itself is covered by `supervised.rs`.
//!
//! When a test fails, a screenshot of each page it opened is saved as
//! `target/tmp/e2e-screenshots/voting-<test>-<page>.png`. A missing Chromium or chromedriver
//! fails the test with what to install: these tests never skip.

use std::path::PathBuf;

use domain::options::OptionKey;
use domain::voter::VoterId;
use tempfile::TempDir;
use testkit::free_port;
use testkit::story::{self, Screenshots};
use tokio::sync::Mutex;

use crate::helpers::{Binary, Infra, config, infra, traversable_tempdir};

/// The `voting` binary on a fixed free port, against testkit's Redis and PostgreSQL.
struct Running {
    infra: Infra,
    port: u16,
    /// `None` while stopped; behind a lock, so that the story can hold the futures that stop and
    /// start it at once.
    binary: Mutex<Option<Binary>>,
    /// Holds the logs of its runs.
    dir: TempDir,
}

impl Running {
    async fn start() -> Running {
        let running = Running {
            infra: infra().await,
            port: free_port(),
            binary: Mutex::new(None),
            dir: traversable_tempdir(),
        };
        running.start_again().await;
        running
    }

    /// `http://127.0.0.1:<port>`.
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the binary on the port, and waits until it prints its two URLs.
    async fn start_again(&self) {
        let mut binary = self.binary.lock().await;
        assert!(binary.is_none(), "the binary is stopped");
        let env = [
            ("VOTING_LISTEN", format!("127.0.0.1:{}", self.port)),
            ("VOTING_REDIS__URL", self.infra.redis().url()),
            ("VOTING_POSTGRES__URL", self.infra.db_url().to_string()),
            ("VOTING_VOTING__SUPERVISE", "false".to_string()),
        ];
        let log = self.log();
        let started = binary.insert(Binary::spawn(&env, &log));
        let base = self.base();
        started
            .line_with(&[&format!("{base}/vote/"), &format!("{base}/result/")])
            .await;
    }

    /// Stops the binary with SIGTERM and waits for a clean exit.
    async fn stop(&self) {
        let mut binary = self.binary.lock().await;
        let mut stopped = binary.take().expect("the binary is running");
        stopped.signal("TERM");
        let status = stopped.exit().await;
        assert!(status.success(), "{status}\n{}", stopped.stderr_text());
    }

    /// Queues a vote for `key` from a new voter the way the voting page does, straight into
    /// Redis (the binary may be stopped).
    async fn queue_vote(&self, key: &str) {
        let queue = vote::queue::Queue::new(&config(&self.infra)).expect("a queue");
        let key = OptionKey::parse(key).expect("a valid option key");
        queue
            .append(&VoterId::random(), &key)
            .await
            .expect("the vote is queued");
    }

    /// A new file for the stderr of the next run.
    fn log(&self) -> PathBuf {
        (1..)
            .map(|n| self.dir.path().join(format!("run-{n}.log")))
            .find(|path| !path.exists())
            .expect("a free name")
    }
}

/// Where the test `test` leaves its screenshots when it fails (named apart from result's).
fn shots(test: &str) -> Screenshots {
    Screenshots::new(env!("CARGO_TARGET_TMPDIR"), format!("voting-{test}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_shows_as_chosen_and_moves_an_open_results_page() {
    let running = Running::start().await;
    let shots = shots("a_vote_shows_as_chosen_and_moves_an_open_results_page");
    story::vote_and_watch(&running.base(), &shots).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voting_page_works_without_javascript() {
    let running = Running::start().await;
    let shots = shots("the_voting_page_works_without_javascript");
    story::vote_without_javascript(&running.base(), &shots).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_results_page_says_reconnecting_and_recovers() {
    let running = Running::start().await;
    story::reconnecting(
        &running.base(),
        &shots("the_results_page_says_reconnecting_and_recovers"),
        running.stop(),
        running.queue_vote("a"),
        running.start_again(),
    )
    .await;
}
