//! The page is right without JavaScript: the server renders every count, percentage and the
//! total in the original app's words; labels come from the configuration.

use hyper::StatusCode;

use crate::helpers::{Infra, spawn_result, voter};

#[tokio::test]
async fn no_votes_yet_then_1_vote_then_2_votes() {
    let infra = Infra::start().await;
    let app = spawn_result(&infra, |f| f).await;
    app.tally_where("a fresh tally", |t| !t.stale).await;

    let page = app.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(page.body.contains("No votes yet"), "{}", page.body);
    assert_eq!(
        page.body.matches("class=\"bar w-0\"").count(),
        2,
        "level bars"
    );
    assert!(page.body.contains("Cats") && page.body.contains("Dogs"));
    assert!(
        page.body.contains(" hidden>These results may be stale"),
        "not stale"
    );

    infra.cast(&voter(1), "a").await;
    app.tally_where("one vote", |t| t.total == 1).await;
    let page = app.get("/").await.body;
    assert!(page.contains("1 vote<"), "{page}");
    assert!(page.contains("class=\"bar w-100\"") && page.contains(">100%<"));

    infra.cast(&voter(2), "b").await;
    app.tally_where("two votes", |t| t.total == 2).await;
    let page = app.get("/").await.body;
    assert!(page.contains("2 votes<"), "{page}");
    assert_eq!(page.matches("class=\"bar w-50\"").count(), 2);
}

#[tokio::test]
async fn labels_come_from_the_configuration() {
    let infra = Infra::start().await;
    let options = serde_json::json!([
        { "key": "tabs", "label": "Tabs" },
        { "key": "spaces", "label": "Spaces" },
        { "key": "both", "label": "Both <b>& neither</b>" },
    ]);
    let app = spawn_result(&infra, |f| f.merge(("options", options))).await;
    let tally = app.tally_where("a fresh tally", |t| !t.stale).await;
    let labels: Vec<(&str, &str)> = tally
        .options
        .iter()
        .map(|o| (o.key.as_str(), o.label.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("tabs", "Tabs"),
            ("spaces", "Spaces"),
            ("both", "Both <b>& neither</b>")
        ]
    );

    infra.cast(&voter(1), "both").await;
    // A row for a key that is not configured (the default poll's `a`) is not shown.
    infra.cast(&voter(2), "a").await;
    app.tally_where("the vote for both", |t| t.count("both") == 1)
        .await;
    let page = app.get("/").await.body;
    assert!(!page.contains("Cats") && !page.contains("Dogs"), "{page}");
    assert!(page.contains("Tabs vs Spaces vs Both"));
    assert!(!page.contains("<b>&"), "labels are escaped: {page}");
    assert_eq!(page.matches("<li class=\"option").count(), 3);
    assert!(page.contains("1 vote<"), "{page}");
    assert_eq!(app.tally().await.total, 1);
}

#[tokio::test]
async fn assets_are_separate_files_at_relative_urls() {
    let infra = Infra::start().await;
    let app = spawn_result(&infra, |f| f).await;
    let page = app.get("/").await;
    assert!(page.body.contains("href=\"static/result.css\""));
    assert!(page.body.contains("src=\"static/result.js\""));
    assert!(
        !page.body.contains("=\"/"),
        "no absolute URL: {}",
        page.body
    );
    assert!(!page.body.contains("style="), "no inline style");
    assert!(!page.body.contains("<script>"), "no inline script");
    assert!(!page.body.contains("http://") && !page.body.contains("https://"));
    assert!(
        page.header("content-security-policy")
            .contains("script-src 'self'")
    );
    assert_eq!(page.header("cache-control"), "no-store");

    let css = app.get("/static/result.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.header("content-type").starts_with("text/css"));
    assert!(css.body.contains(".w-37 { width: 37%; }"));
    let js = app.get("/static/result.js").await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.header("content-type").starts_with("text/javascript"));
    assert!(js.body.contains("new URL('ws', window.location.href)"));
    assert_eq!(
        app.get("/static/other.js").await.status,
        StatusCode::NOT_FOUND
    );
}
