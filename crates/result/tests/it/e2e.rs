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

use common::config::{Config, Program};
use figment::Figment;
use testkit::eventually;
use testkit::story::{self, Screenshots, click, live, row, until_marked};
use testkit::{BrowserOptions, Nginx};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use crate::helpers::{App, Infra, voter};

/// Vote and result believe Nginx's `X-Forwarded-Proto`, as they do in production.
fn behind_nginx(figment: Figment) -> Figment {
    figment.merge(("http.trust_proxy", true))
}

/// The whole app on one origin: Nginx in front of vote, result and the worker.
pub struct Stack {
    pub infra: Infra,
    _vote: App,
    /// Behind a lock, so that the story can hold the futures that stop and restart it at once.
    pub result: Mutex<App>,
    result_config: Config,
    nginx: Nginx,
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(|f| f).await
    }

    /// The same, with `tweak` merged into the configuration of vote and result.
    pub async fn start_with(tweak: fn(Figment) -> Figment) -> Stack {
        let infra = Infra::database().await.with_schema().await.with_redis();
        let vote = App::spawn(
            vote::run,
            infra.config(Program::Vote, |f| tweak(behind_nginx(f))),
            None,
        )
        .await;
        let result_config = infra.config(Program::Result, |f| tweak(behind_nginx(f)));
        let result = App::spawn(result::run, result_config.clone(), None).await;
        let health = TcpListener::bind("127.0.0.1:0").await.unwrap();
        tokio::spawn(worker::run(
            infra.config(Program::Worker, |f| f),
            health,
            std::future::pending(),
        ));
        let result_addr = result.addr;
        let nginx = tokio::task::block_in_place(|| Nginx::start(vote.addr, result_addr))
            .unwrap_or_else(|e| panic!("{e:#}"));
        Stack {
            infra,
            _vote: vote,
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
        *result = App::spawn(result::run, self.result_config.clone(), Some(listener)).await;
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
        async {
            stack.infra.xadd(&voter(1), "a").await;
        },
        stack.restart_result(),
    )
    .await;
}

/// Refreshes the screenshots of the README, `docs/screenshot-{vote,result}-<width>x<height>-{light,dark}.png`:
/// 2,251 votes (2,252 in dark), the last from the browser, at 1920x1080 (a projector), 1280x800 (a laptop)
/// and 390x844 (a phone), light and dark, motion reduced so that no bar is caught growing;
/// the address shown is `public_url`'s, the app's default one. Then `optipng` shrinks them
/// when installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run on demand: rewrites the screenshots under docs/"]
async fn docs_screenshots() {
    let stack = Stack::start_with(|f| f.merge(("public_url", "http://127.0.0.1:8081/vote/"))).await;
    for n in 0..2250 {
        let key = if n < 1283 { "a" } else { "b" };
        stack.infra.xadd(&voter(10_000 + n), key).await;
    }
    stack
        .result
        .lock()
        .await
        .tally_where("the worker applied the votes", |t| t.total == 2250)
        .await;
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let mut written = Vec::new();
    for (pass, dark) in [false, true].into_iter().enumerate() {
        // Each browser is a new voter: one more vote for Cats per pass.
        let total = 2251 + pass as u64;
        let cats = 1284 + pass as u64;
        let scheme = if dark { "dark" } else { "light" };
        let browser = story::browser(BrowserOptions {
            dark,
            reduced_motion: true,
            ..BrowserOptions::default()
        })
        .await;
        browser
            .goto(&format!("{}/vote/", stack.base()))
            .await
            .unwrap();
        click(&browser, "#option-a").await;
        until_marked(&browser, "a", "Cats").await;
        stack
            .result
            .lock()
            .await
            .tally_where("the browser's vote applied", |t| t.total == total)
            .await;
        for (width, height) in [(1920, 1080), (1280, 800), (390, 844)] {
            browser.size_viewport((width, height)).await.unwrap();
            for page in ["vote", "result"] {
                browser
                    .goto(&format!("{}/{page}/", stack.base()))
                    .await
                    .unwrap();
                if page == "result" {
                    eventually(
                        story::DEADLINE,
                        "the results page shows every vote, live",
                        || async {
                            (live(&browser).await
                                && row(&browser, "a").await? == (cats, "w-57".into()))
                                .then_some(())
                        },
                    )
                    .await;
                }
                let png = docs.join(format!("screenshot-{page}-{width}x{height}-{scheme}.png"));
                browser.screenshot(&png).await.unwrap();
                written.push(png);
            }
        }
        browser.quit().await.unwrap();
    }

    for png in &written {
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
