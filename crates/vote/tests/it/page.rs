//! The voting page and its stylesheet, as a browser gets them.

use figment::providers::{Format, Toml};
use http::{Method, StatusCode};

use crate::helpers::spawn_app;

/// The opening tag of the button of option `key`.
fn button<'a>(html: &'a str, key: &str) -> &'a str {
    let id = format!("id=\"option-{key}\"");
    let at = html
        .find(&id)
        .unwrap_or_else(|| panic!("no button {id} in {html}"));
    let start = html[..at].rfind("<button").expect("the id is on a button");
    let end = at + html[at..].find('>').expect("the tag ends");
    &html[start..=end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_shows_default_options_host_and_hint() {
    let app = spawn_app(|f| f).await;

    let resp = app.get("/", &[]).await;

    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = &resp.body;
    assert!(html.contains("<title>Cats vs Dogs!</title>"), "{html}");
    for (key, label) in [("a", "Cats"), ("b", "Dogs")] {
        assert!(
            html.contains(&format!(">{label}<")),
            "label {label}: {html}"
        );
        let tag = button(html, key);
        assert!(tag.contains(&format!("value=\"{key}\"")), "{tag}");
        assert!(tag.contains("aria-pressed=\"false\""), "{tag}");
    }
    // The replica is named only where there are replicas (a container, a pod).
    match common::replica_name() {
        Some(name) => assert!(html.contains(&format!(">{name}</span></footer>")), "{html}"),
        None => assert!(!html.contains("Processed by"), "no replica to name: {html}"),
    }
    assert!(
        html.contains("<h1 id=\"question\">Cats vs Dogs!</h1>"),
        "{html}"
    );
    assert!(
        html.contains("<a href=\"../result/\">"),
        "links to the results: {html}"
    );
    assert!(html.contains("<meta name=\"description\""), "{html}");
    assert!(html.contains("(Tip: you can change your vote)"), "{html}");
    assert!(!html.contains("Your vote:"), "nobody has voted yet: {html}");
    // Relative links only, so the page works behind a path-prefix proxy.
    assert!(!html.contains("href=\"/"), "{html}");
    assert!(!html.contains("action=\"/"), "{html}");
    assert!(!html.contains("src=\"/"), "{html}");
    assert!(html.contains("href=\"static/style.css\""), "{html}");
    assert!(html.contains("action=\"./\""), "{html}");
    assert_eq!(resp.header("cache-control"), Some("no-store"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_shows_configured_options_in_order() {
    let app = spawn_app(|f| {
        f.merge(Toml::string(
            r#"
            options = [
                { key = "tabs", label = "Tabs" },
                { key = "spaces", label = "Spaces" },
                { key = "both", label = "Rock & <b>Roll</b>" },
            ]
            "#,
        ))
    })
    .await;

    let resp = app.get("/", &[]).await;

    assert_eq!(resp.status, StatusCode::OK);
    let html = &resp.body;
    let tabs = html.find(">Tabs<").expect("Tabs shown");
    let spaces = html.find(">Spaces<").expect("Spaces shown");
    // Labels are text, never markup.
    let both = html
        .find(">Rock &amp; &lt;b&gt;Roll&lt;/b&gt;<")
        .or_else(|| html.find(">Rock &#38; &#60;b&#62;Roll&#60;/b&#62;<"))
        .unwrap_or_else(|| panic!("the third label, escaped: {html}"));
    assert!(tabs < spaces && spaces < both, "display order: {html}");
    assert!(!html.contains("<b>Roll"), "{html}");
    for key in ["tabs", "spaces", "both"] {
        button(html, key);
    }
    assert!(
        !html.contains(">Cats<") && !html.contains(">Dogs<"),
        "{html}"
    );
    assert!(html.contains("(Tip: you can change your vote)"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_takes_three_options_from_a_merged_list() {
    let options = vec![
        serde_json::json!({ "key": "x", "label": "Xylophone" }),
        serde_json::json!({ "key": "y", "label": "Yodel" }),
        serde_json::json!({ "key": "z", "label": "Zither" }),
    ];
    let app = spawn_app(|f| f.merge(("options", options))).await;

    let resp = app.get("/", &[]).await;

    assert_eq!(resp.status, StatusCode::OK);
    for label in ["Xylophone", "Yodel", "Zither"] {
        assert!(resp.body.contains(label), "{label}: {}", resp.body);
    }

    // And the page's options are the ones a vote may name.
    let vote = app.post_form("vote=z", &[]).await;
    assert_eq!(vote.status, StatusCode::SEE_OTHER, "{vote:?}");
    let entries = app.stream_entries().await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].2, "z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_question_is_configured_and_escaped() {
    let app = spawn_app(|f| f.merge(("question", "Tabs <or> \"spaces\" & why?"))).await;

    let html = app.get("/", &[]).await.body;

    assert!(
        !html.contains("<or>") && !html.contains("\"spaces\""),
        "{html}"
    );
    let escaped = [
        "Tabs &#60;or&#62; &#34;spaces&#34; &#38; why?",
        "Tabs &lt;or&gt; &quot;spaces&quot; &amp; why?",
    ];
    let shown = escaped
        .iter()
        .find(|e| html.contains(&format!("<title>{e}</title>")))
        .unwrap_or_else(|| panic!("the escaped question as the title: {html}"));
    assert!(
        html.contains(&format!("<h1 id=\"question\">{shown}</h1>")),
        "{html}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_icon_is_served() {
    let app = spawn_app(|f| f).await;

    let resp = app.get("/static/favicon.svg", &[]).await;

    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header("content-type"), Some("image/svg+xml"));
    assert!(resp.body.starts_with("<svg"), "{}", resp.body);
    let html = app.get("/", &[]).await.body;
    assert!(
        html.contains("<link rel=\"icon\" href=\"static/favicon.svg\""),
        "{html}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_of_page_has_no_body() {
    let app = spawn_app(|f| f).await;

    let resp = app.request(Method::HEAD, "/", &[], "").await;

    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(resp.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stylesheet_is_served_as_css() {
    let app = spawn_app(|f| f).await;

    let resp = app.get("/static/style.css", &[]).await;

    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header("content-type"), Some("text/css; charset=utf-8"));
    assert!(!resp.body.is_empty());
    assert!(!resp.body.contains("<html"), "{}", resp.body);
}
