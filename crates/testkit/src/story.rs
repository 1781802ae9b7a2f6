//! The browser story of the whole app, written once and told against any deployment of it:
//! vote, result and the worker behind Nginx, or the all-in-one `voting` binary. A story only
//! needs the app's base URL (`http://127.0.0.1:<port>`, serving `/`, `/vote/`, `/result/` and
//! `/result/ws`) and, for the outage, futures that stop and start the side serving `/result/`.
//!
//! - [`vote_and_watch`]: voting marks the choice, and an open results page moves without a
//!   reload.
//! - [`vote_without_javascript`]: the voting page works without JavaScript.
//! - [`reconnecting`]: the results page says it is reconnecting while `/result/` is down, and
//!   recovers; then the voting page works too.
//!
//! Every condition is polled until [`DEADLINE`]; nothing waits with a bare sleep. When a story
//! fails, [`Pages`] saves a screenshot of each page it opened to [`Screenshots`] (the tests
//! pass their `CARGO_TARGET_TMPDIR`), then fails the same. The page helpers ([`click`],
//! [`marked`], [`row`], [`live`], …) are public for tests that write their own steps.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::wd::WindowHandle;
use fantoccini::{Client, Locator};
use futures_util::FutureExt as _;
use serde_json::json;

use crate::{Browser, BrowserOptions, eventually};

/// How long a condition on a page may take before the story fails instead of hanging. Generous:
/// after an outage the page retries with a backoff capped at 10 s.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// How long saving one screenshot may take (the browser may be what hangs).
const SCREENSHOT_DEADLINE: Duration = Duration::from_secs(10);

/// Where a failing test leaves its screenshots: `<dir>/<test>-<page>.png`.
#[derive(Clone, Debug)]
pub struct Screenshots {
    dir: PathBuf,
    test: String,
}

impl Screenshots {
    /// Screenshots of `test` under `<target_tmpdir>/e2e-screenshots/`; a test passes
    /// `env!("CARGO_TARGET_TMPDIR")` (`target/tmp`), which only it can read.
    pub fn new(target_tmpdir: impl AsRef<Path>, test: impl Into<String>) -> Screenshots {
        Screenshots {
            dir: target_tmpdir.as_ref().join("e2e-screenshots"),
            test: test.into(),
        }
    }

    /// The file for the screenshot of `page`.
    #[must_use]
    pub fn path(&self, page: &str) -> PathBuf {
        self.dir.join(format!("{}-{page}.png", self.test))
    }
}

/// The pages a story opened, to photograph if it fails.
pub struct Pages<'a> {
    shots: &'a Screenshots,
    open: Mutex<Vec<(&'static str, &'a Browser, WindowHandle)>>,
}

impl<'a> Pages<'a> {
    #[must_use]
    pub fn new(shots: &'a Screenshots) -> Pages<'a> {
        Pages {
            shots,
            open: Mutex::new(Vec::new()),
        }
    }

    /// Remembers `browser`'s current window as page `name`.
    ///
    /// # Panics
    ///
    /// When the browser does not say which window is current.
    pub async fn add(&self, name: &'static str, browser: &'a Browser) {
        let window = browser.window().await.expect("the current window");
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, browser, window));
    }

    /// Runs `story`. When it panics, saves a screenshot of every page, then panics the same.
    pub async fn run(&self, story: impl Future<Output = ()>) {
        if let Err(panic) = AssertUnwindSafe(story).catch_unwind().await {
            let open = self.open.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for (name, browser, window) in open {
                let path = self.shots.path(name);
                let saved = tokio::time::timeout(SCREENSHOT_DEADLINE, async {
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

/// A browser set up as `options` says (test logging on when `TEST_LOG` is set).
///
/// # Panics
///
/// When Chromium or chromedriver is missing (the message says what to install) or does not
/// start: these tests never skip.
pub async fn browser(options: BrowserOptions) -> Browser {
    crate::init_logging();
    Browser::start_with(options)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The first element matching `css`, if any.
pub async fn find(client: &Client, css: &str) -> Option<Element> {
    client.find(Locator::Css(css)).await.ok()
}

/// The text of the first element matching `css`.
pub async fn text(client: &Client, css: &str) -> Option<String> {
    find(client, css).await?.text().await.ok()
}

/// Attribute `name` of the first element matching `css`.
pub async fn attr(client: &Client, css: &str, name: &str) -> Option<String> {
    find(client, css).await?.attr(name).await.ok()?
}

/// Clicks the first element matching `css`.
///
/// # Panics
///
/// When there is none, or the click fails.
pub async fn click(client: &Client, css: &str) {
    let element = find(client, css)
        .await
        .unwrap_or_else(|| panic!("{css} is on the page"));
    element
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

/// Whether the voting page marks option `key` (labelled `label`) as the voter's choice.
pub async fn marked(client: &Client, key: &str, label: &str) -> bool {
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

/// Waits until the voting page marks option `key` (labelled `label`) as the voter's choice.
pub async fn until_marked(client: &Client, key: &str, label: &str) {
    eventually(DEADLINE, &format!("{label} marked as my vote"), || async {
        marked(client, key, label).await.then_some(())
    })
    .await;
}

/// What the results page shows for option `key`: its count (thousands separators dropped)
/// and its bar's width class.
pub async fn row(client: &Client, key: &str) -> Option<(u64, String)> {
    let count = text(client, &format!("li[data-key=\"{key}\"] .count"))
        .await?
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
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
pub async fn connection(client: &Client) -> Option<(String, String)> {
    let state = attr(client, "#connection", "data-state").await?;
    Some((state, text(client, "#connection").await?))
}

/// Whether the results page says its socket is live.
pub async fn live(client: &Client) -> bool {
    connection(client)
        .await
        .is_some_and(|(state, text)| state == "live" && text == "Live")
}

/// Waits until the results page in `client` says Live; `what` names the wait in a failure.
pub async fn until_live(client: &Client, what: &str) {
    eventually(DEADLINE, what, || async {
        live(client).await.then_some(())
    })
    .await;
}

/// Opens `/` (it is the voting page), votes Cats, and sees it marked; a second window on
/// `/result/` counts the vote, live; voting Dogs from the first window moves the second
/// window's bars without a reload. The app starts with no votes.
pub async fn vote_and_watch(base: &str, shots: &Screenshots) {
    let browser = browser(BrowserOptions::default()).await;
    let pages = Pages::new(shots);
    pages
        .run(async {
            // The root of the site is the voting page.
            browser.goto(&format!("{base}/")).await.unwrap();
            assert_eq!(browser.current_url().await.unwrap().path(), "/vote/");
            pages.add("vote", &browser).await;
            let vote_window = browser.window().await.unwrap();
            assert_eq!(text(&browser, "h1").await.as_deref(), Some("Cats vs Dogs!"));

            click(&browser, "#option-a").await;
            until_marked(&browser, "a", "Cats").await;
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
            browser.goto(&format!("{base}/result/")).await.unwrap();
            pages.add("result", &browser).await;
            eventually(
                DEADLINE,
                "the results page counts my vote, live",
                || async {
                    let shown = (row(&browser, "a").await?, row(&browser, "b").await?);
                    (shown == ((1, "w-100".into()), (0, "w-0".into())) && live(&browser).await)
                        .then_some(())
                },
            )
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
            until_marked(&browser, "b", "Dogs").await;

            // ...and the bars of the results window follow, without a reload.
            browser.switch_to_window(results_window).await.unwrap();
            eventually(DEADLINE, "the results page moves to Dogs", || async {
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

/// Without JavaScript: submitting the form of `/vote/` votes Dogs and marks it, and the
/// results page rendered by the server counts it while its script stays off. The app starts
/// with no votes.
pub async fn vote_without_javascript(base: &str, shots: &Screenshots) {
    let browser = browser(BrowserOptions {
        javascript: false,
        ..BrowserOptions::default()
    })
    .await;
    let pages = Pages::new(shots);
    pages
        .run(async {
            browser.goto(&format!("{base}/vote/")).await.unwrap();
            pages.add("vote", &browser).await;
            // Submitting the form is all the page needs.
            let form = browser.form(Locator::Css("form")).await.unwrap();
            form.submit_with(Locator::Css("#option-b")).await.unwrap();
            until_marked(&browser, "b", "Dogs").await;
            assert_eq!(browser.current_url().await.unwrap().path(), "/vote/");

            // The results page, rendered by the server, counts it; its script did not run
            // (it would have shown the connection indicator).
            browser.goto(&format!("{base}/result/")).await.unwrap();
            eventually(DEADLINE, "the rendered results count my vote", || async {
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

/// The results page is live; `stop` takes `/result/` down (its sockets close), and the page
/// says it is reconnecting, still showing no votes; `vote_a_while_down` queues one vote for
/// option `a` from a new voter (straight into the queue: the voting page may be down too);
/// `start` serves `/result/` again at the same address, and the page recovers by itself with
/// that vote. Then a vote for `b` on the voting page, in a second window, reaches it too. The
/// app starts with no votes.
pub async fn reconnecting(
    base: &str,
    shots: &Screenshots,
    stop: impl Future<Output = ()>,
    vote_a_while_down: impl Future<Output = ()>,
    start: impl Future<Output = ()>,
) {
    let browser = browser(BrowserOptions::default()).await;
    let pages = Pages::new(shots);
    pages
        .run(async {
            browser.goto(&format!("{base}/result/")).await.unwrap();
            pages.add("result", &browser).await;
            let results_window = browser.window().await.unwrap();
            until_live(&browser, "the results page is live").await;

            stop.await;
            eventually(
                DEADLINE,
                "the results page says it is reconnecting",
                || async {
                    let (state, text) = connection(&browser).await?;
                    (state == "reconnecting" && text == "Reconnecting\u{2026}").then_some(())
                },
            )
            .await;
            assert_eq!(row(&browser, "a").await, Some((0, "w-0".into())));

            // A vote while result is down is shown once it is back.
            vote_a_while_down.await;
            start.await;
            eventually(
                DEADLINE,
                "the results page recovers with the vote",
                || async {
                    (live(&browser).await && row(&browser, "a").await? == (1, "w-100".into()))
                        .then_some(())
                },
            )
            .await;

            // The voting page works, and the new socket follows.
            let vote_window = browser.new_window(false).await.unwrap().handle;
            browser.switch_to_window(vote_window).await.unwrap();
            browser.goto(&format!("{base}/vote/")).await.unwrap();
            pages.add("vote", &browser).await;
            click(&browser, "#option-b").await;
            until_marked(&browser, "b", "Dogs").await;
            browser.switch_to_window(results_window).await.unwrap();
            eventually(DEADLINE, "the new socket is live", || async {
                (row(&browser, "b").await? == (1, "w-50".into())).then_some(())
            })
            .await;
        })
        .await;
}
