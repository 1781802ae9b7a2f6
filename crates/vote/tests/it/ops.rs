//! What operators and browsers rely on besides voting: health, readiness, metrics, and the
//! hardening headers on every answer.

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::helpers::{FORM, JSON, assert_hardened, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_follow_redis() {
    let mut app = spawn_app(|f| f).await;

    let health = app.get("/healthz", &[]).await;
    assert_eq!(health.status, StatusCode::OK, "{health:?}");
    let ready = app.get("/readyz", &[]).await;
    assert_eq!(ready.status, StatusCode::OK, "{ready:?}");

    app.infra.redis_mut().kill();

    let ready = app.get("/readyz", &[]).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{ready:?}");
    assert!(
        ready.body.to_lowercase().contains("redis"),
        "{}",
        ready.body
    );
    // Liveness does not depend on Redis: restarting the process would not help.
    assert_eq!(app.get("/healthz", &[]).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_accepted_and_refused_votes() {
    let app = spawn_app(|f| f).await;

    let before = app.get("/metrics", &[]).await;
    assert_eq!(before.status, StatusCode::OK);
    assert!(
        before.body.contains("vote_votes_accepted_total 0\n"),
        "{}",
        before.body
    );

    assert_eq!(
        app.post_form("vote=a", &[]).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        app.post_form("vote=nope", &[]).await.status,
        StatusCode::BAD_REQUEST
    );

    let resp = app.get("/metrics", &[]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{resp:?}"
    );
    let text = &resp.body;
    assert!(
        text.contains("# TYPE vote_votes_accepted_total counter\n"),
        "{text}"
    );
    assert!(text.contains("\nvote_votes_accepted_total 1\n"), "{text}");
    assert!(
        text.contains("\nvote_votes_refused_total{reason=\"bad_request\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("\nvote_votes_refused_total{reason=\"cross_site\"} 0\n"),
        "{text}"
    );
    // Every sample line is `name[{labels}] value`: vote's own, and the process's open files.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').expect("name and value");
        assert!(value.parse::<u64>().is_ok(), "{line}");
        assert!(
            name.starts_with("vote_") || ["process_max_fds", "process_open_fds"].contains(&name),
            "{line}"
        );
    }
    assert!(text.contains("\nprocess_max_fds "), "{text}");
}

/// `(what, method, path, headers, body)` of one request.
type Case<'a> = (&'a str, Method, &'a str, Vec<(&'a str, &'a str)>, Bytes);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_hardening_headers() {
    let app = spawn_app(|f| f).await;
    let no_body = Bytes::new();
    let requests: Vec<Case<'_>> = vec![
        ("page", Method::GET, "/", vec![], no_body.clone()),
        ("page HEAD", Method::HEAD, "/", vec![], no_body.clone()),
        (
            "css",
            Method::GET,
            "/static/style.css",
            vec![],
            no_body.clone(),
        ),
        ("healthz", Method::GET, "/healthz", vec![], no_body.clone()),
        ("readyz", Method::GET, "/readyz", vec![], no_body.clone()),
        ("metrics", Method::GET, "/metrics", vec![], no_body.clone()),
        ("404", Method::GET, "/missing", vec![], no_body.clone()),
        ("405", Method::DELETE, "/", vec![], no_body.clone()),
        (
            "form 303",
            Method::POST,
            "/",
            vec![("content-type", FORM)],
            Bytes::from("vote=a"),
        ),
        (
            "form 400",
            Method::POST,
            "/",
            vec![("content-type", FORM)],
            Bytes::from("vote="),
        ),
        (
            "form 415",
            Method::POST,
            "/",
            vec![("content-type", JSON)],
            Bytes::from("vote=a"),
        ),
        (
            "form 403",
            Method::POST,
            "/",
            vec![("content-type", FORM), ("origin", "https://evil.example")],
            Bytes::from("vote=a"),
        ),
        (
            "form 413",
            Method::POST,
            "/",
            vec![("content-type", FORM)],
            Bytes::from(vec![b'x'; 5000]),
        ),
        (
            "api 202",
            Method::POST,
            "/api/vote",
            vec![("content-type", JSON)],
            Bytes::from(r#"{"vote":"b"}"#),
        ),
        (
            "api 400",
            Method::POST,
            "/api/vote",
            vec![("content-type", JSON)],
            Bytes::from("{}"),
        ),
        (
            "api 415",
            Method::POST,
            "/api/vote",
            vec![("content-type", "text/plain")],
            Bytes::from(r#"{"vote":"b"}"#),
        ),
        ("api 405", Method::GET, "/api/vote", vec![], no_body.clone()),
    ];
    for (what, method, path, headers, body) in requests {
        let resp = app.request(method, path, &headers, body).await;
        assert_hardened(what, &resp);
    }
}
