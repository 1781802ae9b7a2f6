//! Votes sent to the real vote service over HTTP, moved by the worker into PostgreSQL.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use common::config::Program;
use hyper::{Method, StatusCode};
use testkit::App;
use testkit::http::{Answer, send};

use crate::helpers::{drain, infra, tallies_checked, votes_table, worker};

async fn form_vote(addr: SocketAddr, vote: &str, cookie: &str) -> Answer {
    let headers = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("cookie", cookie),
    ];
    send(addr, Method::POST, "/", &headers, format!("vote={vote}"))
        .await
        .unwrap()
}

async fn json_vote(addr: SocketAddr, vote: &str, cookie: &str) -> Answer {
    let headers = [("content-type", "application/json"), ("cookie", cookie)];
    send(
        addr,
        Method::POST,
        "/api/vote",
        &headers,
        format!(r#"{{"vote":"{vote}"}}"#),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn form_and_json_votes_each_land_once_and_a_revote_moves_the_row() {
    let infra = infra().await;
    let vote = App::spawn(vote::run, infra.config(Program::Vote, |f| f), None).await;
    let addr = vote.addr;
    let mut worker = worker(&infra, "w");

    let form = form_vote(addr, "a", "").await;
    assert_eq!(form.status, StatusCode::SEE_OTHER);
    let form_cookie = form.cookies();
    let json = json_vote(addr, "b", "").await;
    assert_eq!(json.status, StatusCode::ACCEPTED);
    let json_voter: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    let json_voter = json_voter["voter_id"].as_str().unwrap().to_string();

    drain(&mut worker).await;
    let votes = votes_table(&infra).await;
    assert_eq!(votes.len(), 2, "one row per voter: {votes:?}");
    assert_eq!(votes.get(&json_voter).map(String::as_str), Some("b"));
    assert_eq!(
        tallies_checked(&infra).await,
        BTreeMap::from([("a".into(), 1), ("b".into(), 1)])
    );

    // The form voter changes their mind: the row moves, no row is added.
    assert_eq!(
        form_vote(addr, "b", &form_cookie).await.status,
        StatusCode::SEE_OTHER
    );
    drain(&mut worker).await;
    assert_eq!(votes_table(&infra).await.len(), 2);
    assert_eq!(
        tallies_checked(&infra).await,
        BTreeMap::from([("b".into(), 2)])
    );
}

#[tokio::test]
async fn many_voters_at_once_all_land() {
    let infra = infra().await;
    let vote = App::spawn(vote::run, infra.config(Program::Vote, |f| f), None).await;
    let addr = vote.addr;
    let mut worker = worker(&infra, "w");
    let answers = futures_join((0..40).map(|n| async move {
        if n % 2 == 0 {
            form_vote(addr, "a", "").await
        } else {
            json_vote(addr, "b", "").await
        }
    }))
    .await;
    assert!(
        answers
            .iter()
            .all(|a| a.status.is_success() || a.status == StatusCode::SEE_OTHER)
    );
    drain(&mut worker).await;
    assert_eq!(votes_table(&infra).await.len(), 40);
    assert_eq!(
        tallies_checked(&infra).await,
        BTreeMap::from([("a".into(), 20), ("b".into(), 20)])
    );
}

/// Runs the futures concurrently on the test's runtime and collects their outputs in order.
async fn futures_join<F: std::future::Future<Output = Answer> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<Answer> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
