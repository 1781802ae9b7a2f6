//! Votes travel the whole way (vote service -> Redis -> worker -> PostgreSQL -> NOTIFY ->
//! feed -> socket), and what the result service shows always equals the votes table.

use std::collections::BTreeMap;

use common::config::Program;
use hyper::{Method, StatusCode};
use testkit::http::send;

use crate::helpers::{App, Infra, drain, spawn_result, voter, worker};

#[tokio::test]
async fn a_vote_reaches_an_open_socket_and_the_page() {
    let infra = Infra::database().await.with_schema().await.with_redis();
    let app = spawn_result(&infra, |f| f).await;
    let vote = App::spawn(vote::run, infra.config(Program::Vote, |f| f), None).await;
    let mut worker = worker(&infra, |f| f);

    let mut socket = app.socket().await;
    let before = socket.tally_where("a fresh tally", |t| !t.stale).await;
    assert_eq!(before.total, 0);

    let answer = send(
        vote.addr,
        Method::POST,
        "/api/vote",
        &[("content-type", "application/json")],
        r#"{"vote":"b"}"#,
    )
    .await
    .unwrap();
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    drain(&mut worker).await;

    let after = socket.tally_where("the vote", |t| t.total == 1).await;
    assert_eq!(after.count("b"), 1);
    assert_eq!(after.count("a"), 0);
    assert!(after.version > before.version);
    assert!(!after.stale);

    let page = app.get("/").await.body;
    assert!(page.contains("1 vote<"), "{page}");
    assert_eq!(
        app.tally().await,
        after,
        "/api/tally is the socket's snapshot"
    );
}

#[tokio::test]
async fn tallies_shown_equal_the_count_of_votes() {
    let infra = Infra::database().await.with_schema().await.with_redis();
    let options = serde_json::json!([
        { "key": "a", "label": "Alpha" },
        { "key": "b", "label": "Bravo" },
        { "key": "c", "label": "Charlie" },
    ]);
    let app = spawn_result(&infra, |f| f.merge(("options", options.clone()))).await;
    let mut worker = worker(&infra, |f| f.merge(("options", options)));
    let mut socket = app.socket().await;
    let mut last = socket.tally_where("a fresh tally", |t| !t.stale).await;

    // Rounds of new voters and changed minds, from a fixed pseudo-random sequence.
    let keys = ["a", "b", "c"];
    let mut seed: u64 = 0x5eed;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    for round in 0..6 {
        for _ in 0..(20 + round * 7) {
            let who = voter(next(60));
            infra.xadd(&who, keys[next(3) as usize]).await;
        }
        drain(&mut worker).await;
        let counted = infra.counted().await;
        // A round that happens to change no count publishes nothing new.
        if last.counts() != counted {
            last = socket
                .tally_where("the socket shows the votes table", |t| {
                    t.counts() == counted
                })
                .await;
        }
        let shown = &last;
        assert_eq!(shown.total, counted.values().sum::<u64>());
        assert_eq!(app.tally().await.counts(), counted, "round {round}");
        let page = app.get("/").await.body;
        for (key, count) in &counted {
            let needle = format!("data-key=\"{key}\">");
            let row = &page[page.find(&needle).expect("the option's row")..];
            assert!(
                row.contains(&format!("<span class=\"count\">{count}</span>")),
                "round {round}: {key} shows {count}"
            );
        }
    }
}

#[tokio::test]
async fn result_uses_the_same_options_as_vote() {
    let infra = Infra::database().await.with_schema().await.with_redis();
    let options = serde_json::json!([
        { "key": "tea", "label": "Tea" },
        { "key": "coffee", "label": "Coffee" },
        { "key": "mate", "label": "Mate" },
    ]);
    let result_config = infra.config(Program::Result, |f| f.merge(("options", options.clone())));
    let vote_config = infra.config(Program::Vote, |f| f.merge(("options", options.clone())));
    assert_eq!(result_config.options(), vote_config.options());

    let app = App::spawn(result::run, result_config, None).await;
    let vote = App::spawn(
        vote::run,
        infra.config(Program::Vote, |f| f.merge(("options", options.clone()))),
        None,
    )
    .await;
    let mut worker = worker(&infra, |f| f.merge(("options", options)));

    let vote_page = testkit::http::get(vote.addr, "/").await.unwrap().body;
    let tally = app.tally_where("a fresh tally", |t| !t.stale).await;
    for option in &tally.options {
        assert!(
            vote_page.contains(&format!("value=\"{}\"", option.key)),
            "vote offers {}",
            option.key
        );
        assert!(
            vote_page.contains(&option.label),
            "vote shows {}",
            option.label
        );
    }

    let answer = send(
        vote.addr,
        Method::POST,
        "/api/vote",
        &[("content-type", "application/json")],
        r#"{"vote":"mate"}"#,
    )
    .await
    .unwrap();
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    drain(&mut worker).await;
    let tally = app.tally_where("the vote for mate", |t| t.total == 1).await;
    assert_eq!(tally.counts(), BTreeMap::from([("mate".to_string(), 1)]));
}
