//! When a vote cannot be queued (Redis down, stalled, backlog full), the voter is told so with
//! a 503, never a success: "not recorded" when nothing was queued, "could not confirm" when
//! Redis may still apply it. Every such answer names the voter, so voting again replaces that
//! voter's ballot instead of adding one. The service recovers on its own once Redis is back.

use std::time::Duration;

use http::StatusCode;

use crate::helpers::{assert_hardened, eventually, is_voter_id, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_503_and_the_service_heals_after_restart() {
    let mut app = spawn_app(|f| f).await;
    // A first vote, so the pool holds a connection that is about to die.
    let before = app.post_form("vote=a", &[]).await;
    assert_eq!(before.status, StatusCode::SEE_OTHER, "{before:?}");

    app.infra.redis_mut().kill();

    for attempt in 0..3 {
        let form = app.post_form("vote=b", &[]).await;
        assert_eq!(
            form.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "form {attempt}: {form:?}"
        );
        // The first vote may have been written to the dying connection: "unconfirmed".
        let outcome = form.header("vote-outcome").expect("an outcome").to_string();
        let said = if outcome == "unconfirmed" {
            "We could not confirm your vote. Voting again is safe"
        } else {
            "We could not record your vote"
        };
        assert!(form.body.contains(said), "form {attempt}: {}", form.body);
        assert!(is_voter_id(&form.voter_id()), "{form:?}");
        assert_eq!(form.header("retry-after"), Some("1"));
        assert_hardened("form 503", &form);

        let json = app.post_json(r#"{"vote":"b"}"#, &[]).await;
        assert_eq!(
            json.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "JSON {attempt}: {json:?}"
        );
        let body = json.json();
        let error = body["error"].as_str().expect("error text");
        assert!(error.starts_with("We could not"), "{error}");
        assert_eq!(body["outcome"], json.header("vote-outcome").unwrap());
        assert_eq!(body["voter_id"], json.voter_id().as_str());
        assert_eq!(json.header("retry-after"), Some("1"));
    }
    // Once the dead connection is known, nothing more is sent: known not recorded.
    let form = app.post_form("vote=b", &[]).await;
    assert_eq!(
        form.header("vote-outcome"),
        Some("not-recorded"),
        "{form:?}"
    );

    app.infra.redis_mut().restart().expect("redis restarts");

    // The pooled connection is dead; the service must replace it without a restart. Allow a
    // failed attempt or two while it does, but never anything but 303 or 503.
    let voter = eventually(Duration::from_secs(10), "a vote succeeds again", || async {
        let resp = app.post_form("vote=b", &[]).await;
        match resp.status {
            StatusCode::SEE_OTHER => Some(resp.voter_id()),
            StatusCode::SERVICE_UNAVAILABLE => None,
            other => panic!("after restart: {other} {resp:?}"),
        }
    })
    .await;

    let entries = app.stream_entries().await;
    let (_, last_voter, last_vote) = entries.last().expect("the vote was queued");
    assert_eq!(last_voter, &voter);
    assert_eq!(last_vote, "b");

    // And it keeps working, through the JSON API too.
    let json = app.post_json(r#"{"vote":"a"}"#, &[]).await;
    assert_eq!(json.status, StatusCode::ACCEPTED, "{json:?}");
    let ballot = json.json()["ballot"].as_str().unwrap().to_string();
    assert_eq!(app.stream_entries().await.last().unwrap().0, ballot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_from_the_start_is_503() {
    let mut app = spawn_app(|f| f).await;
    app.infra.redis_mut().kill();

    let form = app.post_form("vote=a", &[]).await;
    assert_eq!(form.status, StatusCode::SERVICE_UNAVAILABLE, "{form:?}");
    assert_eq!(form.header("vote-outcome"), Some("not-recorded"));
    assert!(
        form.body
            .contains("We could not record your vote: the vote store is unreachable."),
        "{}",
        form.body
    );

    // The page itself does not need Redis.
    assert_eq!(app.get("/", &[]).await.status, StatusCode::OK);
    assert_eq!(app.get("/healthz", &[]).await.status, StatusCode::OK);

    app.infra.redis_mut().restart().expect("redis restarts");
    eventually(Duration::from_secs(10), "a vote succeeds", || async {
        let resp = app.post_json(r#"{"vote":"a"}"#, &[]).await;
        match resp.status {
            StatusCode::ACCEPTED => Some(()),
            StatusCode::SERVICE_UNAVAILABLE => None,
            other => panic!("after restart: {other} {resp:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_over_the_bound_is_refused() {
    let app = spawn_app(|f| f.merge(("queue.max_backlog", 3))).await;

    for n in 0..3 {
        let resp = app.post_form("vote=a", &[]).await;
        assert_eq!(resp.status, StatusCode::SEE_OTHER, "vote {n}: {resp:?}");
    }

    let form = app.post_form("vote=b", &[]).await;
    assert_eq!(form.status, StatusCode::SERVICE_UNAVAILABLE, "{form:?}");
    assert!(
        form.body
            .contains("We could not record your vote: too many votes are waiting to be counted."),
        "{}",
        form.body
    );
    assert_eq!(form.header("vote-outcome"), Some("not-recorded"));
    assert_eq!(form.header("retry-after"), Some("1"));

    let json = app.post_json(r#"{"vote":"b"}"#, &[]).await;
    assert_eq!(json.status, StatusCode::SERVICE_UNAVAILABLE, "{json:?}");
    assert_eq!(json.header("retry-after"), Some("1"));
    assert_eq!(json.json()["outcome"], "not-recorded");

    let entries = app.stream_entries().await;
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert!(
        entries.iter().all(|(_, _, vote)| vote == "a"),
        "{entries:?}"
    );

    let metrics = app.get("/metrics", &[]).await.body;
    assert!(
        metrics.contains("vote_votes_accepted_total 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vote_votes_refused_total{reason=\"queue_full\"} 2\n"),
        "{metrics}"
    );
}

/// Redis stalls (SIGSTOP) with a vote already written to it: vote answers 503 "could not
/// confirm" once its timeout passes, and Redis applies that vote when it resumes. The voter,
/// named by the 503, votes again: both entries carry the same voter id, so the worker keeps
/// one row. A first-time JSON client with no cookie learns its id from the 503's body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_gives_unconfirmed_answers_and_a_retry_is_the_same_voter() {
    let app = spawn_app(|f| f).await;
    // A vote first, so the pool holds a live connection: the next vote is written to it.
    let warm = app.post_json(r#"{"vote":"a"}"#, &[]).await;
    assert_eq!(warm.status, StatusCode::ACCEPTED, "{warm:?}");

    app.infra.redis().pause().expect("SIGSTOP redis-server");
    let stalled = app.post_json(r#"{"vote":"b"}"#, &[]).await;
    app.infra.redis().resume().expect("SIGCONT redis-server");

    assert_eq!(
        stalled.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{stalled:?}"
    );
    assert_eq!(stalled.header("vote-outcome"), Some("unconfirmed"));
    assert_eq!(stalled.header("retry-after"), Some("1"));
    let body = stalled.json();
    assert_eq!(body["outcome"], "unconfirmed");
    assert_eq!(
        body["error"],
        "We could not confirm your vote. Voting again is safe: it will not count twice."
    );
    let voter = body["voter_id"]
        .as_str()
        .expect("the 503 names the voter")
        .to_string();
    assert!(is_voter_id(&voter), "{voter:?}");
    assert_eq!(stalled.voter_id(), voter, "and sets it as a cookie");

    // The stalled vote was applied when Redis resumed.
    let entries = eventually(
        Duration::from_secs(10),
        "the stalled vote lands",
        || async {
            let entries = app.stream_entries().await;
            (entries.len() == 2).then_some(entries)
        },
    )
    .await;
    assert_eq!(
        (entries[1].1.as_str(), entries[1].2.as_str()),
        (voter.as_str(), "b")
    );

    // Pressing again, with the cookie the 503 gave: the same voter, not a new one.
    let cookie = stalled.cookie_header();
    let retry = eventually(Duration::from_secs(10), "the retry is accepted", || async {
        let resp = app
            .post_json(r#"{"vote":"b"}"#, &[("cookie", &cookie)])
            .await;
        (resp.status == StatusCode::ACCEPTED).then_some(resp)
    })
    .await;
    assert_eq!(retry.json()["voter_id"], voter.as_str());
    let entries = app.stream_entries().await;
    let of_voter: Vec<_> = entries.iter().filter(|e| e.1 == voter).collect();
    assert!(of_voter.len() >= 2, "{entries:?}");
    assert!(of_voter.iter().all(|e| e.2 == "b"), "{entries:?}");

    let metrics = app.get("/metrics", &[]).await.body;
    assert!(
        !metrics.contains("vote_votes_unconfirmed_total 0\n"),
        "{metrics}"
    );
}
