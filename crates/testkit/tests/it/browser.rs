//! `Browser`: headless Chromium over WebDriver, with and without JavaScript; screenshots;
//! nothing left running after drop.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use testkit::fantoccini::Locator;
use testkit::{Browser, BrowserOptions};
use tokio::net::TcpListener;

/// A page whose script retitles it, so a test can tell whether scripts ran.
const PAGE: &str = "<!DOCTYPE html><html><head><title>plain</title></head>\
    <body><h1 id=\"greeting\">hello</h1>\
    <script>document.title = 'scripted';</script></body></html>";

async fn serve_page() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler =
                hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                    let resp = Response::builder()
                        .header("content-type", "text/html; charset=utf-8")
                        .body(Full::new(Bytes::from_static(PAGE.as_bytes())))
                        .unwrap();
                    Ok::<_, Infallible>(resp)
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), handler),
            );
        }
    });
    addr
}

/// Waits until the page's title is `expected`.
async fn title_becomes(browser: &Browser, expected: &str) {
    testkit::eventually(
        testkit::DEADLINE,
        &format!("the title {expected:?}"),
        || async { (browser.title().await.unwrap() == expected).then_some(()) },
    )
    .await;
}

/// Every process whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!(
                    "{}: {cmdline}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_scripts_and_takes_screenshots_then_leaves_nothing_behind() {
    testkit::init_logging();
    let page = serve_page().await;
    let browser = Browser::start().await.expect("the browser starts");
    browser.goto(&format!("http://{page}/")).await.unwrap();
    title_becomes(&browser, "scripted").await;
    let greeting = browser.find(Locator::Id("greeting")).await.unwrap();
    assert_eq!(greeting.text().await.unwrap(), "hello");

    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("nested").join("page.png");
    browser.screenshot(&shot).await.unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!(
        (width, height),
        (1280, 900),
        "the page's viewport, frame excluded"
    );

    let profile = browser
        .capabilities()
        .and_then(|c| c.get("chrome")?.get("userDataDir")?.as_str())
        .expect("chromedriver names the profile")
        .to_string();
    assert!(!processes_mentioning(&profile).is_empty(), "Chromium runs");
    drop(browser);
    let left = processes_mentioning(&profile);
    assert!(left.is_empty(), "left running: {left:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_javascript_the_page_is_as_served() {
    testkit::init_logging();
    let page = serve_page().await;
    let browser = Browser::start_with(BrowserOptions {
        javascript: false,
        ..BrowserOptions::default()
    })
    .await
    .expect("the browser starts");
    browser.goto(&format!("http://{page}/")).await.unwrap();
    let greeting = browser.find(Locator::Id("greeting")).await.unwrap();
    assert_eq!(greeting.text().await.unwrap(), "hello", "the page loaded");
    assert_eq!(
        browser.title().await.unwrap(),
        "plain",
        "its script did not run"
    );
    browser.quit().await.unwrap();
}
