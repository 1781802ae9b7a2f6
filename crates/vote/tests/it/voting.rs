//! Votes that are accepted: the form, the JSON API, re-votes, many voters at once, and what
//! lands in the Redis stream each time.

use std::collections::HashSet;

use domain::queue::EntryId;
use http::StatusCode;
use tokio::task::JoinSet;

use crate::helpers::{TestResponse, is_voter_id, spawn_app};

const YEAR_SECONDS: u32 = 365 * 24 * 3600;

/// Checks the attributes of the `Set-Cookie` line of cookie `name`.
fn assert_cookie_attributes(resp: &TestResponse, name: &str, secure: bool) {
    let line = resp
        .set_cookie(name)
        .unwrap_or_else(|| panic!("no {name} cookie in {resp:?}"));
    let attributes: HashSet<String> = line
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    for expected in [
        "httponly".to_string(),
        "samesite=lax".to_string(),
        "path=/".to_string(),
        format!("max-age={YEAR_SECONDS}"),
    ] {
        assert!(attributes.contains(&expected), "{expected} in {line:?}");
    }
    assert_eq!(attributes.contains("secure"), secure, "{line:?}");
}

fn entry_id(id: &str) -> EntryId {
    EntryId::parse(id).unwrap_or_else(|| panic!("{id:?} is a stream entry id"))
}

/// A visitor has a voter id before the first vote: the page gives one to whoever has none,
/// and the vote then carries it, so a retry of that first vote is the same voter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_issues_a_voter_id_before_the_first_vote() {
    let app = spawn_app(|f| f).await;
    let page = app.get("/", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    let voter = page.voter_id();
    assert!(is_voter_id(&voter), "{voter:?}");
    assert_cookie_attributes(&page, "voter_id", false);
    assert!(page.set_cookie("vote_choice").is_none(), "{page:?}");

    let cookie = page.cookie_header();
    let again = app.get("/", &[("cookie", &cookie)]).await;
    assert!(
        again.set_cookie("voter_id").is_none(),
        "kept, not replaced: {again:?}"
    );
    let bad = app.get("/", &[("cookie", "voter_id=not-an-id")]).await;
    assert!(
        is_voter_id(&bad.voter_id()),
        "a malformed id is replaced: {bad:?}"
    );

    let vote = app.post_form("vote=b", &[("cookie", &cookie)]).await;
    assert_eq!(vote.status, StatusCode::SEE_OTHER, "{vote:?}");
    assert_eq!(vote.header("vote-outcome"), Some("recorded"));
    assert_eq!(vote.voter_id(), voter);
    let entries = app.stream_entries().await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        entries[0].1, voter,
        "the ballot carries the page's voter id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_vote_redirects_sets_cookie_and_queues_one_ballot() {
    let app = spawn_app(|f| f).await;

    let resp = app.post_form("vote=a", &[]).await;

    assert_eq!(resp.status, StatusCode::SEE_OTHER, "{resp:?}");
    assert_eq!(resp.header("location"), Some("./"));
    let voter = resp.voter_id();
    assert!(is_voter_id(&voter), "{voter:?}");
    assert_cookie_attributes(&resp, "voter_id", false);
    let entries = app.stream_entries().await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let (id, queued_voter, vote) = &entries[0];
    entry_id(id);
    assert_eq!(queued_voter, &voter);
    assert_eq!(vote, "a");

    // Back on the page, with the cookies the browser now holds, `a` is marked as chosen.
    let cookies = resp.cookie_header();
    let page = app.get("/", &[("cookie", &cookies)]).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = &page.body;
    let chosen = html.find("id=\"option-a\"").expect("button a");
    let other = html.find("id=\"option-b\"").expect("button b");
    let tag_a = &html[chosen..chosen + html[chosen..].find('>').unwrap()];
    let tag_b = &html[other..other + html[other..].find('>').unwrap()];
    assert!(tag_a.contains("aria-pressed=\"true\""), "{tag_a}");
    assert!(tag_b.contains("aria-pressed=\"false\""), "{tag_b}");
    assert!(html.contains("Your vote: <strong>Cats</strong>"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_cookie_setting_adds_secure() {
    let app = spawn_app(|f| f.merge(("vote.secure_cookie", true))).await;

    let resp = app.post_form("vote=b", &[]).await;

    assert_eq!(resp.status, StatusCode::SEE_OTHER, "{resp:?}");
    assert_cookie_attributes(&resp, "voter_id", true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_saying_https_adds_secure() {
    let app = spawn_app(|f| f.merge(("http.trust_proxy", true))).await;

    let https = [("x-forwarded-proto", "https")];
    let form = app.post_form("vote=a", &https).await;
    assert_eq!(form.status, StatusCode::SEE_OTHER, "{form:?}");
    assert_cookie_attributes(&form, "voter_id", true);
    assert_cookie_attributes(&form, "vote_choice", true);
    let json = app.post_json(r#"{"vote":"b"}"#, &https).await;
    assert_eq!(json.status, StatusCode::ACCEPTED, "{json:?}");
    assert_cookie_attributes(&json, "voter_id", true);

    // The proxy says plain HTTP, or says nothing: no Secure.
    let http = app
        .post_form("vote=a", &[("x-forwarded-proto", "http")])
        .await;
    assert_cookie_attributes(&http, "voter_id", false);
    let direct = app.post_form("vote=a", &[]).await;
    assert_cookie_attributes(&direct, "voter_id", false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_proto_is_ignored_unless_the_proxy_is_trusted() {
    let app = spawn_app(|f| f).await;

    let resp = app
        .post_form("vote=a", &[("x-forwarded-proto", "https")])
        .await;

    assert_eq!(resp.status, StatusCode::SEE_OTHER, "{resp:?}");
    assert_cookie_attributes(&resp, "voter_id", false);
    assert_cookie_attributes(&resp, "vote_choice", false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_vote_is_accepted_with_its_ballot_id() {
    let app = spawn_app(|f| f).await;

    let resp = app.post_json(r#"{"vote":"b"}"#, &[]).await;

    assert_eq!(resp.status, StatusCode::ACCEPTED, "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let answer = resp.json();
    let voter = answer["voter_id"].as_str().expect("voter_id is a string");
    assert!(is_voter_id(voter), "{voter:?}");
    assert_eq!(answer["vote"], "b");
    let ballot = answer["ballot"].as_str().expect("ballot is a string");
    assert_eq!(resp.voter_id(), voter, "the cookie names the same voter");
    assert_cookie_attributes(&resp, "voter_id", false);

    let entries = app.stream_entries().await;
    assert_eq!(
        entries,
        vec![(ballot.to_string(), voter.to_string(), "b".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revote_with_the_cookie_keeps_the_voter_and_queues_the_new_choice() {
    let app = spawn_app(|f| f).await;

    let first = app.post_form("vote=a", &[]).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{first:?}");
    let voter = first.voter_id();
    let cookies = first.cookie_header();

    let second = app.post_form("vote=b", &[("cookie", &cookies)]).await;
    assert_eq!(second.status, StatusCode::SEE_OTHER, "{second:?}");
    assert_eq!(second.voter_id(), voter, "the same voter keeps its id");

    // The JSON API recognises the same cookie.
    let third = app
        .post_json(r#"{"vote":"a"}"#, &[("cookie", &second.cookie_header())])
        .await;
    assert_eq!(third.status, StatusCode::ACCEPTED, "{third:?}");
    assert_eq!(third.json()["voter_id"], voter.as_str());

    let entries = app.stream_entries().await;
    let votes: Vec<(&str, &str)> = entries
        .iter()
        .map(|(_, v, c)| (v.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        votes,
        vec![
            (voter.as_str(), "a"),
            (voter.as_str(), "b"),
            (voter.as_str(), "a")
        ]
    );
    let ids: Vec<EntryId> = entries.iter().map(|(id, _, _)| entry_id(id)).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    assert_eq!(third.json()["ballot"], entries[2].0.as_str());

    // The page shows the latest choice.
    let page = app.get("/", &[("cookie", &second.cookie_header())]).await;
    assert!(
        page.body.contains("Your vote: <strong>Dogs</strong>"),
        "{}",
        page.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_ignores_a_choice_cookie_naming_no_option() {
    let app = spawn_app(|f| f).await;

    let page = app
        .get("/", &[("cookie", "vote_choice=<script>; voter_id=x")])
        .await;

    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("Your vote:"), "{}", page.body);
    assert!(
        !page.body.contains("aria-pressed=\"true\""),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>"), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_voters_at_once_are_all_queued() {
    let app = spawn_app(|f| f).await;
    let app = std::sync::Arc::new(app);
    // Half come back with an id of their own, half are new; half use the form, half JSON.
    let known: Vec<String> = (0..25)
        .map(|i| format!("{:032x}", 0xfeed_0000_u128 + i))
        .collect();

    let mut tasks = JoinSet::new();
    for i in 0..50_usize {
        let app = app.clone();
        let cookie = known.get(i / 2).filter(|_| i % 2 == 0).cloned();
        tasks.spawn(async move {
            let cookie = cookie.map(|id| format!("voter_id={id}"));
            let headers: Vec<(&str, &str)> = cookie
                .as_deref()
                .map(|c| vec![("cookie", c)])
                .unwrap_or_default();
            let vote = if i % 3 == 0 { "a" } else { "b" };
            let resp = if i % 4 < 2 {
                app.post_form(format!("vote={vote}"), &headers).await
            } else {
                app.post_json(format!(r#"{{"vote":"{vote}"}}"#), &headers)
                    .await
            };
            assert!(
                resp.status == StatusCode::SEE_OTHER || resp.status == StatusCode::ACCEPTED,
                "request {i}: {resp:?}"
            );
            (resp.voter_id(), vote)
        });
    }
    let mut answered = Vec::new();
    while let Some(done) = tasks.join_next().await {
        answered.push(done.expect("a request task"));
    }

    let entries = app.stream_entries().await;
    assert_eq!(entries.len(), 50, "{entries:?}");
    let voters: HashSet<&str> = entries.iter().map(|(_, v, _)| v.as_str()).collect();
    assert_eq!(voters.len(), 50, "distinct voters");
    for id in &known {
        assert!(voters.contains(id.as_str()), "known voter {id} kept its id");
    }
    let mut queued: Vec<(String, String)> = entries
        .iter()
        .map(|(_, v, c)| (v.clone(), c.clone()))
        .collect();
    let mut expected: Vec<(String, String)> = answered
        .into_iter()
        .map(|(v, c)| (v, c.to_string()))
        .collect();
    queued.sort();
    expected.sort();
    assert_eq!(queued, expected, "each answer matches its queued ballot");
    let ids: HashSet<&str> = entries.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_of_exactly_the_limit_is_accepted() {
    let app = spawn_app(|f| f).await;
    let mut body = String::from("vote=a&pad=");
    body.push_str(&"x".repeat(4096 - body.len()));
    assert_eq!(body.len(), 4096);

    let resp = app.post_form(body, &[]).await;

    assert_eq!(resp.status, StatusCode::SEE_OTHER, "{resp:?}");
    assert_eq!(app.stream_entries().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_origin_browser_vote_is_accepted() {
    let app = spawn_app(|f| f).await;
    let origin = format!("http://{}", app.addr);

    let resp = app
        .post_form(
            "vote=a",
            &[("origin", &origin), ("sec-fetch-site", "same-origin")],
        )
        .await;

    assert_eq!(resp.status, StatusCode::SEE_OTHER, "{resp:?}");
    assert_eq!(app.stream_entries().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_stops_on_shutdown() {
    let mut app = spawn_app(|f| f).await;
    assert_eq!(app.get("/healthz", &[]).await.status, StatusCode::OK);

    app.stop().await.expect("run returns Ok");

    assert!(
        tokio::net::TcpStream::connect(app.addr).await.is_err(),
        "the listener is closed"
    );
}
