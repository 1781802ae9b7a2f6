//! End to end, in a real browser: headless Chromium ([`testkit::Browser`]) goes through Nginx
//! serving the project's own routes (`nginx/routes.conf`, [`testkit::Nginx`]) to vote, result
//! and the worker, all running in this process on real Redis and PostgreSQL, both services
//! trusting the proxy as they would in production.
//!
//! - Voting marks the choice, and an open results page moves without a reload.
//! - The voting page works without JavaScript.
//! - The results page says it is reconnecting while result is down, and recovers.
//!
//! Conditions are polled with a deadline. When a test fails, a screenshot of each page it
//! opened is saved as `target/tmp/e2e-screenshots/<test>-<page>.png`. A missing Chromium,
//! chromedriver or Nginx fails the test with what to install: these tests never skip.
//!
//! `docs_screenshots` is ignored: run it on demand to refresh the README's pictures.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use common::config::{Config, Service};
use figment::Figment;
use futures_util::FutureExt;
use serde_json::json;
use testkit::fantoccini::wd::WindowHandle;
use testkit::fantoccini::{Client, Locator};
use testkit::{Browser, BrowserOptions, Nginx};
use tokio::net::TcpListener;

use crate::helpers::{App, Infra, eventually, spawn_result_on, spawn_vote, voter};

/// Vote and result believe Nginx's `X-Forwarded-Proto`, as they do in production.
fn behind_nginx(figment: Figment) -> Figment {
    figment.merge(("http.trust_proxy", true))
}

/// The whole app on one origin: Nginx in front of vote, result and the worker.
struct Stack {
    infra: Infra,
    result: App,
    result_config: Config,
    nginx: Nginx,
}

impl Stack {
    async fn start() -> Stack {
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
            result,
            result_config,
            nginx,
        }
    }

    /// The app's URL for `path`, through Nginx.
    fn url(&self, path: &str) -> String {
        self.nginx.url(path)
    }

    /// Stops result the way SIGTERM does: its sockets are closed with 1001.
    async fn stop_result(&mut self) {
        self.result.stop().await.expect("result stops cleanly");
    }

    /// Starts result again on the same port, where Nginx's upstream points.
    async fn restart_result(&mut self) {
        let listener = TcpListener::bind(self.result.addr)
            .await
            .expect("result's port is free again");
        self.result = spawn_result_on(self.result_config.clone(), listener);
    }
}

async fn browser(options: BrowserOptions) -> Browser {
    testkit::init_logging();
    Browser::start_with(options)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Where failing tests leave their screenshots.
fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-screenshots")
}

/// The pages a test opened, to photograph if it fails.
struct Pages<'a> {
    test: &'static str,
    open: Mutex<Vec<(&'static str, &'a Browser, WindowHandle)>>,
}

impl<'a> Pages<'a> {
    fn new(test: &'static str) -> Pages<'a> {
        Pages {
            test,
            open: Mutex::new(Vec::new()),
        }
    }

    /// Remembers `browser`'s current window as page `name`.
    async fn add(&self, name: &'static str, browser: &'a Browser) {
        let window = browser.window().await.expect("the current window");
        self.open.lock().unwrap().push((name, browser, window));
    }

    /// Runs `story`. When it panics, saves a screenshot of every page, then panics the same.
    async fn run(&self, story: impl Future<Output = ()>) {
        if let Err(panic) = AssertUnwindSafe(story).catch_unwind().await {
            let open = self.open.lock().unwrap().clone();
            for (name, browser, window) in open {
                let path = screenshot_dir().join(format!("{}-{name}.png", self.test));
                let saved = tokio::time::timeout(Duration::from_secs(10), async {
                    browser.switch_to_window(window).await?;
                    browser.screenshot(&path).await
                })
                .await;
                match saved {
                    Ok(Ok(())) => eprintln!("screenshot of the {name} page: {}", path.display()),
                    Ok(Err(e)) => eprintln!("no screenshot of the {name} page: {e:#}"),
                    Err(_) => eprintln!("no screenshot of the {name} page: the browser hangs"),
                }
            }
            std::panic::resume_unwind(panic);
        }
    }
}

async fn find(client: &Client, css: &str) -> Option<testkit::fantoccini::elements::Element> {
    client.find(Locator::Css(css)).await.ok()
}

async fn text(client: &Client, css: &str) -> Option<String> {
    find(client, css).await?.text().await.ok()
}

async fn attr(client: &Client, css: &str, name: &str) -> Option<String> {
    find(client, css).await?.attr(name).await.ok()?
}

async fn click(client: &Client, css: &str) {
    let element = find(client, css)
        .await
        .unwrap_or_else(|| panic!("{css} is on the page"));
    element
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

/// Whether the voting page marks option `key` (labelled `label`) as the voter's choice.
async fn marked(client: &Client, key: &str, label: &str) -> bool {
    attr(client, &format!("#option-{key}"), "aria-pressed")
        .await
        .as_deref()
        == Some("true")
        && attr(client, &format!("#option-{key}"), "class")
            .await
            .is_some_and(|c| c.split_whitespace().any(|c| c == "chosen"))
        && text(client, "#status")
            .await
            .is_some_and(|t| t == format!("Your vote: {label}"))
}

/// What the results page shows for option `key`: its count and its bar's width class.
async fn row(client: &Client, key: &str) -> Option<(u64, String)> {
    let count = text(client, &format!("li[data-key=\"{key}\"] .count"))
        .await?
        .parse()
        .ok()?;
    let class = attr(client, &format!("li[data-key=\"{key}\"] .bar"), "class").await?;
    let width = class
        .split_whitespace()
        .find(|c| c.starts_with("w-"))?
        .to_string();
    Some((count, width))
}

/// The connection indicator of the results page: `data-state` and text.
async fn connection(client: &Client) -> Option<(String, String)> {
    let state = attr(client, "#connection", "data-state").await?;
    Some((state, text(client, "#connection").await?))
}

async fn live(client: &Client) -> bool {
    connection(client)
        .await
        .is_some_and(|(state, text)| state == "live" && text == "Live")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_shows_as_chosen_and_moves_an_open_results_page() {
    let stack = Stack::start().await;
    let browser = browser(BrowserOptions::default()).await;
    let pages = Pages::new("a_vote_shows_as_chosen_and_moves_an_open_results_page");
    pages
        .run(async {
            // The root of the site is the voting page.
            browser.goto(&stack.url("/")).await.unwrap();
            assert_eq!(browser.current_url().await.unwrap().path(), "/vote/");
            pages.add("vote", &browser).await;
            let vote_window = browser.window().await.unwrap();
            assert_eq!(text(&browser, "h1").await.as_deref(), Some("Cats vs Dogs!"));

            click(&browser, "#option-a").await;
            eventually("Cats marked as my vote", || async {
                marked(&browser, "a", "Cats").await.then_some(())
            })
            .await;
            assert_eq!(
                attr(&browser, "#option-b", "aria-pressed").await.as_deref(),
                Some("false")
            );

            // A second window on the results page sees the vote.
            let results_window = browser.new_window(false).await.unwrap().handle;
            browser
                .switch_to_window(results_window.clone())
                .await
                .unwrap();
            browser.goto(&stack.url("/result/")).await.unwrap();
            pages.add("result", &browser).await;
            eventually("the results page counts my vote, live", || async {
                let shown = (row(&browser, "a").await?, row(&browser, "b").await?);
                (shown == ((1, "w-100".into()), (0, "w-0".into())) && live(&browser).await)
                    .then_some(())
            })
            .await;
            assert_eq!(text(&browser, "#total").await.as_deref(), Some("1 vote"));
            let marker = "the page loaded once";
            browser
                .execute("window.e2eMarker = arguments[0];", vec![json!(marker)])
                .await
                .unwrap();

            // Voting again from the first window changes the vote...
            browser.switch_to_window(vote_window).await.unwrap();
            click(&browser, "#option-b").await;
            eventually("Dogs marked as my vote", || async {
                marked(&browser, "b", "Dogs").await.then_some(())
            })
            .await;

            // ...and the bars of the results window follow, without a reload.
            browser.switch_to_window(results_window).await.unwrap();
            eventually("the results page moves to Dogs", || async {
                let shown = (row(&browser, "a").await?, row(&browser, "b").await?);
                (shown == ((0, "w-0".into()), (1, "w-100".into()))).then_some(())
            })
            .await;
            assert_eq!(text(&browser, "#total").await.as_deref(), Some("1 vote"));
            let kept = browser
                .execute("return window.e2eMarker || null;", vec![])
                .await
                .unwrap();
            assert_eq!(kept, json!(marker), "the results page was not reloaded");
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voting_page_works_without_javascript() {
    let stack = Stack::start().await;
    let browser = browser(BrowserOptions {
        javascript: false,
        ..BrowserOptions::default()
    })
    .await;
    let pages = Pages::new("the_voting_page_works_without_javascript");
    pages
        .run(async {
            browser.goto(&stack.url("/vote/")).await.unwrap();
            pages.add("vote", &browser).await;
            // Submitting the form is all the page needs.
            let form = browser.form(Locator::Css("form")).await.unwrap();
            form.submit_with(Locator::Css("#option-b")).await.unwrap();
            eventually("Dogs marked as my vote", || async {
                marked(&browser, "b", "Dogs").await.then_some(())
            })
            .await;
            assert_eq!(browser.current_url().await.unwrap().path(), "/vote/");

            // The results page, rendered by the server, counts it; its script did not run
            // (it would have shown the connection indicator).
            browser.goto(&stack.url("/result/")).await.unwrap();
            eventually("the rendered results count my vote", || async {
                if row(&browser, "b").await == Some((1, "w-100".into())) {
                    return Some(());
                }
                browser.refresh().await.ok()?;
                None
            })
            .await;
            let hidden = attr(&browser, "#connection", "hidden").await;
            assert!(
                hidden.is_some(),
                "no script ran: the indicator stays hidden"
            );
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_results_page_says_reconnecting_and_recovers() {
    let mut stack = Stack::start().await;
    let browser = browser(BrowserOptions::default()).await;
    let pages = Pages::new("the_results_page_says_reconnecting_and_recovers");
    pages
        .run(async {
            browser.goto(&stack.url("/result/")).await.unwrap();
            pages.add("result", &browser).await;
            eventually("the results page is live", || async {
                live(&browser).await.then_some(())
            })
            .await;

            stack.stop_result().await;
            eventually("the results page says it is reconnecting", || async {
                let (state, text) = connection(&browser).await?;
                (state == "reconnecting" && text == "Reconnecting\u{2026}").then_some(())
            })
            .await;
            assert_eq!(row(&browser, "a").await, Some((0, "w-0".into())));

            // A vote while result is down is shown once it is back.
            stack.infra.xadd(&voter(1), "a").await;
            stack.restart_result().await;
            eventually("the results page recovers with the vote", || async {
                (live(&browser).await && row(&browser, "a").await? == (1, "w-100".into()))
                    .then_some(())
            })
            .await;
            stack.infra.xadd(&voter(2), "b").await;
            eventually("the new socket is live", || async {
                (row(&browser, "b").await? == (1, "w-50".into())).then_some(())
            })
            .await;
        })
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
        .tally_where("the worker applied the votes", |t| t.total == 12)
        .await;
    let browser = browser(BrowserOptions {
        window: (1000, 700),
        ..BrowserOptions::default()
    })
    .await;
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");

    browser.goto(&stack.url("/vote/")).await.unwrap();
    click(&browser, "#option-a").await;
    eventually("Cats marked as my vote", || async {
        marked(&browser, "a", "Cats").await.then_some(())
    })
    .await;
    let vote_png = docs.join("screenshot-vote.png");
    browser.screenshot(&vote_png).await.unwrap();

    stack
        .result
        .tally_where("the browser's vote applied", |t| t.total == 13)
        .await;
    browser.goto(&stack.url("/result/")).await.unwrap();
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
