//! The page is right without JavaScript: the server renders every count, percentage and the
//! total in the original app's words; labels come from the configuration.

use hyper::{Method, StatusCode};

use crate::helpers::{Infra, cast, spawn_result, voter};

#[tokio::test]
async fn no_votes_yet_then_1_vote_then_2_votes() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| f).await;
    app.tally_where("a fresh tally", |t| !t.stale).await;

    let page = app.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(page.body.contains("No votes yet"), "{}", page.body);
    assert_eq!(
        page.body.matches("class=\"bar w-0 none\"").count(),
        2,
        "empty bars"
    );
    assert!(page.body.contains("Cats") && page.body.contains("Dogs"));
    assert!(
        !page.body.contains("These results may be stale"),
        "not stale: {}",
        page.body
    );

    cast(&infra, &voter(1), "a").await;
    app.tally_where("one vote", |t| t.total == 1).await;
    let page = app.get("/").await.body;
    assert!(page.contains("1 vote<"), "{page}");
    assert!(page.contains("class=\"bar w-100\"") && page.contains(">100%<"));

    cast(&infra, &voter(2), "b").await;
    app.tally_where("two votes", |t| t.total == 2).await;
    let page = app.get("/").await.body;
    assert!(page.contains("2 votes<"), "{page}");
    assert_eq!(page.matches("class=\"bar w-50\"").count(), 2);
}

#[tokio::test]
async fn labels_come_from_the_configuration() {
    let infra = Infra::database().await.with_schema().await;
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

    cast(&infra, &voter(1), "both").await;
    // A row for a key that is not configured (the default poll's `a`) is not shown.
    cast(&infra, &voter(2), "a").await;
    app.tally_where("the vote for both", |t| t.count("both") == 1)
        .await;
    let page = app.get("/").await.body;
    assert!(!page.contains("Cats") && !page.contains("Dogs"), "{page}");
    assert!(
        page.contains("<title>Results: Tabs vs Spaces vs Both &"),
        "without a question, the labels make it: {page}"
    );
    assert!(!page.contains("<b>&"), "labels are escaped: {page}");
    assert_eq!(page.matches("<li class=\"option").count(), 3);
    assert!(page.contains("1 vote<"), "{page}");
    assert_eq!(app.tally().await.total, 1);
}

#[tokio::test]
async fn assets_are_separate_files_at_relative_urls() {
    let infra = Infra::database().await.with_schema().await;
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
    // One absolute URL only: the voting page's, for the room (link and QR code).
    let host = app.addr.to_string();
    let vote_url = format!("http://{host}/vote/");
    assert_eq!(page.body.matches("http://").count(), 2, "{}", page.body);
    assert!(
        page.body
            .contains(&format!("<a href=\"{vote_url}\">{host}/vote</a>")),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains(&format!("aria-label=\"QR code of {vote_url}\"")),
        "{}",
        page.body
    );
    assert!(!page.body.contains("https://"));
    assert!(
        page.header("content-security-policy")
            .contains("script-src 'self'")
    );
    assert_eq!(page.header("cache-control"), "no-store");

    let css = app.get("/static/result.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.header("content-type").starts_with("text/css"));
    assert!(css.body.contains(".w-37 { width: 37%; }"));
    let icon = app.get("/static/favicon.svg").await;
    assert_eq!(icon.status, StatusCode::OK);
    assert_eq!(icon.header("content-type"), "image/svg+xml");
    assert!(icon.body.starts_with("<svg"), "{}", icon.body);
    let js = app.get("/static/result.js").await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.header("content-type").starts_with("text/javascript"));
    assert!(js.body.contains("new URL('ws', window.location.href)"));
    assert_eq!(
        app.get("/static/other.js").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_question_heads_the_page_escaped() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| f.merge(("question", "Tabs <or> spaces & why?"))).await;
    let page = app.get("/").await.body;
    assert!(!page.contains("<or>"), "{page}");
    let title = page
        .split("<title>Results: ")
        .nth(1)
        .and_then(|rest| rest.split("</title>").next())
        .unwrap_or_else(|| panic!("a title: {page}"));
    assert!(
        title.starts_with("Tabs &") && title.ends_with(" why?"),
        "{title}"
    );
    assert!(
        page.contains(&format!("<h1 id=\"question\">{title}</h1>")),
        "{page}"
    );
}

#[tokio::test]
async fn the_voting_address_follows_public_url_and_hides_on_request() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| {
        f.merge(("public_url", "https://poll.example.org/vote/"))
    })
    .await;
    let page = app.get("/").await.body;
    assert!(
        page.contains("<a href=\"https://poll.example.org/vote/\">poll.example.org/vote</a>"),
        "{page}"
    );
    assert!(page.contains("<svg class=\"qr\""), "{page}");

    for query in ["/?qr=0", "/?lang=en&qr=off"] {
        let hidden = app.get(query).await.body;
        assert!(
            !hidden.contains("<svg") && !hidden.contains("poll.example.org"),
            "{hidden}"
        );
        assert!(hidden.contains("<a href=\"../vote/\">Vote</a>"), "{hidden}");
    }

    let off = spawn_result(&infra, |f| f.merge(("result.show_qr", false))).await;
    let page = off.get("/").await.body;
    assert!(
        !page.contains("<svg") && page.contains("href=\"../vote/\""),
        "{page}"
    );
}

#[tokio::test]
async fn counts_are_grouped_in_the_browsers_language() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| f).await;
    let client = infra.pg().await;
    client
        .batch_execute(
            "INSERT INTO tallies (vote, count) VALUES ('a', 8551), ('b', 1200) \
             ON CONFLICT (vote) DO UPDATE SET count = EXCLUDED.count; NOTIFY tallies",
        )
        .await
        .unwrap();
    app.tally_where("the counts", |t| t.total == 9751).await;
    let english = app.get("/").await.body;
    assert!(
        english.contains(">8,551<") && english.contains("9,751 votes"),
        "{english}"
    );
    assert!(
        english.contains(">88%<") && english.contains(">12%<"),
        "{english}"
    );
    let german = app
        .send(
            Method::GET,
            "/",
            &[("accept-language", "de-DE,de;q=0.9,en;q=0.5")],
        )
        .await
        .body;
    assert!(
        german.contains(">8.551<") && german.contains("9.751 votes"),
        "{german}"
    );
    assert!(
        german.contains("data-group=\".\""),
        "the script groups the same: {german}"
    );
}
