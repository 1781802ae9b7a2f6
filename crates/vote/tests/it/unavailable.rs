//! When a vote cannot be queued (Redis down, backlog full), the voter is told so with a 503,
//! never a success, and the service recovers on its own once Redis is back.

use std::time::Duration;

use http::StatusCode;

use crate::helpers::{assert_hardened, eventually, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_503_and_the_service_heals_after_restart() {
    let mut app = spawn_app().await;
    // A first vote, so the pool holds a connection that is about to die.
    let before = app.post_form("vote=a", &[]).await;
    assert_eq!(before.status, StatusCode::SEE_OTHER, "{before:?}");

    app.redis.kill();

    for attempt in 0..3 {
        let form = app.post_form("vote=b", &[]).await;
        assert_eq!(
            form.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "form {attempt}: {form:?}"
        );
        assert!(
            form.body.contains("your vote was not recorded"),
            "form {attempt}: {}",
            form.body
        );
        assert!(form.set_cookie("voter_id").is_none(), "{form:?}");
        assert_hardened("form 503", &form);

        let json = app.post_json(r#"{"vote":"b"}"#, &[]).await;
        assert_eq!(
            json.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "JSON {attempt}: {json:?}"
        );
        let error = json.json()["error"]
            .as_str()
            .expect("error text")
            .to_string();
        assert!(error.contains("your vote was not recorded"), "{error}");
        assert_eq!(json.header("retry-after"), Some("1"));
    }

    app.redis.restart().expect("redis restarts");

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
    let mut app = spawn_app().await;
    app.redis.kill();

    let form = app.post_form("vote=a", &[]).await;
    assert_eq!(form.status, StatusCode::SERVICE_UNAVAILABLE, "{form:?}");
    assert!(
        form.body.contains("your vote was not recorded"),
        "{}",
        form.body
    );

    // The page itself does not need Redis.
    assert_eq!(app.get("/", &[]).await.status, StatusCode::OK);
    assert_eq!(app.get("/healthz", &[]).await.status, StatusCode::OK);

    app.redis.restart().expect("redis restarts");
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
    let app = spawn_app_with(|f| f.merge(("queue.max_backlog", 3))).await;

    for n in 0..3 {
        let resp = app.post_form("vote=a", &[]).await;
        assert_eq!(resp.status, StatusCode::SEE_OTHER, "vote {n}: {resp:?}");
    }

    let form = app.post_form("vote=b", &[]).await;
    assert_eq!(form.status, StatusCode::SERVICE_UNAVAILABLE, "{form:?}");
    assert!(
        form.body.contains("your vote was not recorded"),
        "{}",
        form.body
    );
    assert!(form.set_cookie("voter_id").is_none(), "{form:?}");

    let json = app.post_json(r#"{"vote":"b"}"#, &[]).await;
    assert_eq!(json.status, StatusCode::SERVICE_UNAVAILABLE, "{json:?}");
    assert_eq!(json.header("retry-after"), Some("1"));

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
