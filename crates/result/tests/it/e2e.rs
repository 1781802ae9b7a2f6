//! End to end, in a real browser: headless Chromium ([`testkit::Browser`]) goes through Nginx
//! serving the project's own routes (`nginx/routes.conf`, [`testkit::Nginx`]) to vote, result
//! and the worker, all running in this process on real Redis and PostgreSQL, both services
//! trusting the proxy as they would in production.
//!
//! The story is [`testkit::story`]'s, the same one `crates/voting/tests/it/e2e.rs` tells the
//! all-in-one binary:
//!
//! - Voting marks the choice, and an open results page moves without a reload.
//! - The voting page works without JavaScript.
//! - The results page says it is reconnecting while result is down, and recovers; then the
//!   voting page works too.
//!
//! Conditions are polled with a deadline. When a test fails, a screenshot of each page it
//! opened is saved as `target/tmp/e2e-screenshots/<test>-<page>.png`. A missing Chromium,
//! chromedriver or Nginx fails the test with what to install: these tests never skip.
//!
//! `docs_screenshots` is ignored: run it on demand to refresh the README's pictures.

use std::path::Path;

use common::config::{Config, Service};
use figment::Figment;
use testkit::story::{self, Screenshots, click, eventually, live, row, until_marked};
use testkit::{BrowserOptions, Nginx};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use crate::helpers::{App, Infra, spawn_result_on, spawn_vote, voter};

/// Vote and result believe Nginx's `X-Forwarded-Proto`, as they do in production.
fn behind_nginx(figment: Figment) -> Figment {
    figment.merge(("http.trust_proxy", true))
}

/// The whole app on one origin: Nginx in front of vote, result and the worker.
pub struct Stack {
    pub infra: Infra,
    /// Behind a lock, so that the story can hold the futures that stop and restart it at once.
    pub result: Mutex<App>,
    result_config: Config,
    nginx: Nginx,
}

impl Stack {
    pub async fn start() -> Stack {
        let infra = Infra::with_redis().await;
        let vote = spawn_vote(&infra, behind_nginx).await;
        let result_config = infra.config(Service::Result, behind_nginx);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let result = spawn_result_on(result_config.clone(), listener);
        let health = TcpListener::bind("127.0.0.1:0").await.unwrap();
        tokio::spawn(worker::run(
            infra.config(Service::Worker, |f| f),
            health,
            std::future::pending(),
        ));
        let result_addr = result.addr;
        let nginx = tokio::task::block_in_place(|| Nginx::start(vote, result_addr))
            .unwrap_or_else(|e| panic!("{e:#}"));
        Stack {
            infra,
            result: Mutex::new(result),
            result_config,
            nginx,
        }
    }

    /// The app's base URL, through Nginx: `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        self.nginx.url("")
    }

    /// Stops result the way SIGTERM does: its sockets are closed with 1001.
    async fn stop_result(&self) {
        let mut result = self.result.lock().await;
        result.stop().await.expect("result stops cleanly");
    }

    /// Starts result again on the same port, where Nginx's upstream points.
    async fn restart_result(&self) {
        let mut result = self.result.lock().await;
        let listener = TcpListener::bind(result.addr)
            .await
            .expect("result's port is free again");
        *result = spawn_result_on(self.result_config.clone(), listener);
    }
}

/// Where the test `test` leaves its screenshots when it fails.
pub fn shots(test: &str) -> Screenshots {
    Screenshots::new(env!("CARGO_TARGET_TMPDIR"), test)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_shows_as_chosen_and_moves_an_open_results_page() {
    let stack = Stack::start().await;
    let shots = shots("a_vote_shows_as_chosen_and_moves_an_open_results_page");
    story::vote_and_watch(&stack.base(), &shots).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voting_page_works_without_javascript() {
    let stack = Stack::start().await;
    let shots = shots("the_voting_page_works_without_javascript");
    story::vote_without_javascript(&stack.base(), &shots).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_results_page_says_reconnecting_and_recovers() {
    let stack = Stack::start().await;
    story::reconnecting(
        &stack.base(),
        &shots("the_results_page_says_reconnecting_and_recovers"),
        stack.stop_result(),
        stack.infra.xadd(&voter(1), "a"),
        stack.restart_result(),
    )
    .await;
}

/// Refreshes `docs/screenshot-vote.png` and `docs/screenshot-result.png`: some votes, one of
/// them from the browser, in a 1000x700 window; then `optipng` shrinks them when installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run on demand: rewrites the screenshots under docs/"]
async fn docs_screenshots() {
    let stack = Stack::start().await;
    for n in 0..12 {
        let key = if n < 7 { "a" } else { "b" };
        stack.infra.xadd(&voter(1000 + n), key).await;
    }
    stack
        .result
        .lock()
        .await
        .tally_where("the worker applied the votes", |t| t.total == 12)
        .await;
    let browser = story::browser(BrowserOptions {
        window: (1000, 700),
        ..BrowserOptions::default()
    })
    .await;
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");

    browser
        .goto(&format!("{}/vote/", stack.base()))
        .await
        .unwrap();
    click(&browser, "#option-a").await;
    until_marked(&browser, "a", "Cats").await;
    let vote_png = docs.join("screenshot-vote.png");
    browser.screenshot(&vote_png).await.unwrap();

    stack
        .result
        .lock()
        .await
        .tally_where("the browser's vote applied", |t| t.total == 13)
        .await;
    browser
        .goto(&format!("{}/result/", stack.base()))
        .await
        .unwrap();
    eventually("the results page shows 13 votes, live", || async {
        (live(&browser).await && row(&browser, "a").await? == (8, "w-62".into())).then_some(())
    })
    .await;
    let result_png = docs.join("screenshot-result.png");
    browser.screenshot(&result_png).await.unwrap();

    for png in [&vote_png, &result_png] {
        match testkit::find_binary("optipng") {
            Ok(optipng) => {
                let status = std::process::Command::new(optipng)
                    .args(["-quiet", "-o5", "-strip", "all"])
                    .arg(png)
                    .status()
                    .unwrap();
                assert!(status.success(), "optipng {}", png.display());
            }
            Err(e) => eprintln!("not optimised: {e}"),
        }
        let size = std::fs::metadata(png).unwrap().len();
        println!("{}: {size} bytes", png.canonicalize().unwrap().display());
    }
}
