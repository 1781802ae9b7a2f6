//! The results page as a room sees it, in headless Chromium ([`testkit::Browser`]):
//!
//! - The QR code of a 1920x1080 screenshot, decoded from the PNG, is the voting page's address,
//!   and opening it lands on the voting page (through Nginx with the project's routes).
//! - 2, 4 and 10 options fit one 1280x800 screen and one 390x844 phone screen without
//!   scrolling, with five-digit counts; the QR code shows on the wide screen only.
//! - Live updates group thousands in the page's language, percentages add up to 100, and an
//!   option without votes has an empty bar.
//! - One status line: stale while PostgreSQL is down, never Live at the same time.
//! - Bars animate, except under `prefers-reduced-motion`.
//!
//! Conditions are polled with a deadline; screenshots land in `target/tmp/present/`.

use std::path::PathBuf;

use serde_json::json;
use testkit::BrowserOptions;
use testkit::eventually;
use testkit::story::{self, Pages, text};

use crate::e2e::{Stack, shots};
use crate::helpers::{Infra, spawn_result};

fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("present")
}

/// Every QR code rqrr finds in a PNG, decoded.
fn decode_qr_codes(png: &[u8]) -> Vec<String> {
    let image = image::load_from_memory(png)
        .expect("the screenshot is a PNG")
        .to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(image);
    prepared
        .detect_grids()
        .into_iter()
        .filter_map(|grid| grid.decode().ok().map(|(_, content)| content))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_qr_code_of_a_projected_screenshot_opens_the_voting_page() {
    let stack = Stack::start().await;
    let shots = shots("the_qr_code_of_a_projected_screenshot_opens_the_voting_page");
    let browser = story::browser(BrowserOptions {
        window: (1920, 1080),
        ..BrowserOptions::default()
    })
    .await;
    let pages = Pages::new(&shots);
    pages
        .run(async {
            browser
                .goto(&format!("{}/result/", stack.base()))
                .await
                .unwrap();
            pages.add("result", &browser).await;
            story::until_live(&browser, "the results page is live").await;
            let png = browser.client().screenshot().await.unwrap();
            let path = screenshot_dir().join("result-1920x1080.png");
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &png).unwrap();

            let codes = decode_qr_codes(&png);
            let vote_url = format!("{}/vote/", stack.base());
            assert_eq!(
                codes,
                std::slice::from_ref(&vote_url),
                "screenshot: {}",
                path.display()
            );
            // The address is written out too, for those who type it.
            let short = vote_url.trim_start_matches("http://").trim_end_matches('/');
            assert_eq!(text(&browser, ".join-url a").await.as_deref(), Some(short));

            // Scanning it lands on the voting page, which links back.
            browser.goto(&codes[0]).await.unwrap();
            pages.add("vote", &browser).await;
            assert_eq!(browser.current_url().await.unwrap().as_str(), vote_url);
            assert_eq!(text(&browser, "h1").await.as_deref(), Some("Cats vs Dogs!"));
            assert!(story::find(&browser, "#option-a").await.is_some());
            story::click(&browser, "a[href=\"../result/\"]").await;
            eventually(
                story::DEADLINE,
                "the link goes back to the results",
                || async {
                    let url = browser.current_url().await.ok()?;
                    (url.path() == "/result/").then_some(())
                },
            )
            .await;
        })
        .await;
}

/// `n` options with long and short labels, and five-digit counts.
const LABELS: [&str; 10] = [
    "Cats",
    "Dogs",
    "Birds of every feather",
    "Fish",
    "Rabbits",
    "Hamsters",
    "Turtles",
    "Horses",
    "Snakes",
    "None of these animals",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_to_ten_options_fit_one_screen_and_one_phone() {
    let browser = story::browser(BrowserOptions::default()).await;
    for n in [2, 4, 10] {
        let infra = Infra::database().await.with_schema().await;
        let options: Vec<_> = LABELS[..n]
            .iter()
            .enumerate()
            .map(|(i, label)| json!({ "key": format!("o{i}"), "label": label }))
            .collect();
        let question = "Which animal would you take to a desert island?";
        let app = spawn_result(&infra, |f| {
            f.merge(("options", options)).merge(("question", question))
        })
        .await;
        let values: Vec<String> = (0..n)
            .map(|i| format!("('o{i}', {})", 12_345 * (i + 1) % 99_991))
            .collect();
        infra
            .pg()
            .await
            .batch_execute(&format!(
                "INSERT INTO tallies (vote, count) VALUES {}; NOTIFY tallies",
                values.join(", ")
            ))
            .await
            .unwrap();
        app.tally_where("the counts", |t| t.total > 0).await;
        for (width, height) in [(1280_u32, 800_u32), (390, 844)] {
            browser.size_viewport((width, height)).await.unwrap();
            browser
                .goto(&format!("http://{}/", app.addr))
                .await
                .unwrap();
            story::until_live(&browser, "the page is live").await;
            let png = browser.client().screenshot().await.unwrap();
            let path = screenshot_dir().join(format!("fit-{n}-{width}x{height}.png"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &png).unwrap();
            let measured = browser
                .execute(
                    "const d = document.documentElement; \
                     const qr = document.querySelector('.qr').getBoundingClientRect(); \
                     return [d.scrollWidth, d.scrollHeight, innerWidth, innerHeight, \
                             Math.round(qr.width), Math.round(qr.bottom)];",
                    vec![],
                )
                .await
                .unwrap();
            let m: Vec<i64> = serde_json::from_value(measured).unwrap();
            let [scroll_w, scroll_h, view_w, view_h, qr_width, qr_bottom] = m[..] else {
                panic!("{m:?}");
            };
            let at = format!("{n} options at {width}x{height} ({})", path.display());
            assert_eq!(
                (view_w, view_h),
                (i64::from(width), i64::from(height)),
                "{at}"
            );
            assert!(scroll_h <= view_h, "{at}: {scroll_h} px tall");
            assert!(scroll_w <= view_w, "{at}: {scroll_w} px wide");
            if width >= 1280 {
                assert!(
                    qr_width >= 250 && qr_bottom <= view_h,
                    "{at}: QR {qr_width} px"
                );
            } else {
                assert_eq!(qr_width, 0, "{at}: no QR code on a phone");
                assert!(story::find(&browser, ".join-url a").await.is_some(), "{at}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_updates_group_thousands_and_add_up_to_100() {
    let infra = Infra::database().await.with_schema().await;
    let options = json!([
        { "key": "a", "label": "A" },
        { "key": "b", "label": "B" },
        { "key": "c", "label": "C" },
        { "key": "d", "label": "D" },
    ]);
    let app = spawn_result(&infra, |f| f.merge(("options", options))).await;
    app.tally_where("a fresh tally", |t| !t.stale).await;
    let browser = story::browser(BrowserOptions {
        languages: Some("de-DE,de".into()),
        ..BrowserOptions::default()
    })
    .await;
    browser
        .goto(&format!("http://{}/", app.addr))
        .await
        .unwrap();
    story::until_live(&browser, "the page is live").await;
    assert_eq!(
        text(&browser, "#total").await.as_deref(),
        Some("No votes yet")
    );

    // Three equal shares and one without votes, sent over the socket.
    infra
        .pg()
        .await
        .batch_execute(
            "INSERT INTO tallies (vote, count) VALUES ('a', 1234), ('b', 1234), ('c', 1234); \
             NOTIFY tallies",
        )
        .await
        .unwrap();
    let shown = eventually(story::DEADLINE, "the page shows the new counts", || async {
        let total = text(&browser, "#total").await?;
        (total == "3.702 votes").then_some(())?;
        let mut rows = Vec::new();
        for key in ["a", "b", "c", "d"] {
            let count = text(&browser, &format!("li[data-key=\"{key}\"] .count")).await?;
            let percent = text(&browser, &format!("li[data-key=\"{key}\"] .percent")).await?;
            let bar =
                story::attr(&browser, &format!("li[data-key=\"{key}\"] .bar"), "class").await?;
            rows.push((count, percent, bar));
        }
        Some(rows)
    })
    .await;
    let counts: Vec<&str> = shown.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(counts, ["1.234", "1.234", "1.234", "0"]);
    let percents: Vec<u64> = shown
        .iter()
        .map(|r| r.1.trim_end_matches('%').parse().unwrap())
        .collect();
    assert_eq!(percents, [34, 33, 33, 0]);
    assert_eq!(percents.iter().sum::<u64>(), 100);
    assert_eq!(shown[3].2, "bar w-0 none", "no votes: an empty bar");
    assert_eq!(shown[0].2, "bar w-34");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_status_line_says_stale_never_live_and_stale_at_once() {
    let mut infra = Infra::own_postgres().await.with_schema().await;
    let app = spawn_result(&infra, |f| f).await;
    app.tally_where("a fresh tally", |t| !t.stale).await;
    let browser = story::browser(BrowserOptions::default()).await;
    browser
        .goto(&format!("http://{}/", app.addr))
        .await
        .unwrap();
    story::until_live(&browser, "the page is live").await;

    tokio::task::block_in_place(|| infra.server().stop_immediate()).expect("PostgreSQL stops");
    eventually(
        story::DEADLINE,
        "the page says its results may be stale",
        || async {
            let (state, said) = story::connection(&browser).await?;
            (state == "stale" && said.starts_with("These results may be stale")).then_some(())
        },
    )
    .await;
    let statuses = browser
        .execute(
            "return [document.querySelectorAll('[role=status]').length, \
                     document.body.innerText.includes('Live')];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        statuses,
        json!([1, false]),
        "one status line, and it is not Live"
    );

    tokio::task::block_in_place(|| infra.server().start_again()).expect("PostgreSQL starts again");
    story::until_live(&browser, "the page is live again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bars_animate_unless_the_system_asks_for_less_motion() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| f).await;
    for (reduced_motion, want) in [
        (false, json!(["0.6s", "grow"])),
        (true, json!(["0s", "none"])),
    ] {
        let browser = story::browser(BrowserOptions {
            reduced_motion,
            ..BrowserOptions::default()
        })
        .await;
        browser
            .goto(&format!("http://{}/", app.addr))
            .await
            .unwrap();
        let bar = browser
            .execute(
                "const s = getComputedStyle(document.querySelector('.bar')); \
                 return [s.transitionDuration, s.animationName];",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(bar, want, "prefers-reduced-motion: {reduced_motion}");
        browser.quit().await.unwrap();
    }
}
