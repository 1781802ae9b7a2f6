//! The routes Nginx has, served by one process: `/` and the bare prefixes redirect, each
//! prefix reaches its service with the prefix taken off (query kept), anything else is 404.

use hyper::{Method, StatusCode};

use crate::helpers::{DEADLINE, eventually, infra, spawn_app};

#[tokio::test]
async fn the_routes_of_nginx() {
    let infra = infra().await;
    let mut app = spawn_app(&infra).await;

    for (path, to) in [
        ("/", "/vote/"),
        ("/vote", "/vote/"),
        ("/result", "/result/"),
        ("/vote?lang=en", "/vote/?lang=en"),
    ] {
        let answer = app.get(path).await;
        assert!(
            matches!(answer.status, StatusCode::FOUND | StatusCode::SEE_OTHER),
            "GET {path}: {}",
            answer.status
        );
        assert_eq!(answer.header("location"), to, "GET {path}");
        testkit::http::assert_hardened(path, &answer.headers);
    }

    let page = app.get("/vote/").await;
    assert_eq!(page.status, StatusCode::OK);
    testkit::http::assert_hardened("/vote/", &page.headers);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(
        page.body.contains("Cats") && page.body.contains("Dogs"),
        "{}",
        page.body
    );
    // One process serves every page: no replica to name.
    assert!(!page.body.contains("Processed by"), "{}", page.body);
    for icon in ["/vote/static/favicon.svg", "/result/static/favicon.svg"] {
        assert_eq!(app.get(icon).await.status, StatusCode::OK, "{icon}");
    }
    let css = app.get("/vote/static/style.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.header("content-type").starts_with("text/css"));

    let results = app.get("/result/").await;
    assert_eq!(results.status, StatusCode::OK);
    assert!(results.body.contains("Cats"), "{}", results.body);
    // The voting page's address, as this process is reached.
    let vote_url = format!("http://{}/vote/", app.addr);
    assert!(
        results.body.contains(&format!("<a href=\"{vote_url}\">")),
        "{}",
        results.body
    );
    assert_eq!(
        app.get("/result/static/result.js").await.status,
        StatusCode::OK
    );
    let with_query = app.get("/result/api/tally?fresh=1").await;
    assert_eq!(with_query.status, StatusCode::OK, "the query rides along");
    assert!(with_query.body.contains("\"total\""), "{}", with_query.body);

    for path in [
        "/nope",
        "/voter",
        "/results/",
        "/ws",
        "/api/tally",
        "/static/style.css",
    ] {
        let answer = app.get(path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "GET {path}");
        testkit::http::assert_hardened(path, &answer.headers);
    }
    assert_eq!(app.get("/vote/nope").await.status, StatusCode::NOT_FOUND);

    let post_root = testkit::http::request(app.addr, Method::POST, "/", &[], "").await;
    assert_eq!(post_root.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post_root.header("allow"), "GET, HEAD");
    testkit::http::assert_hardened("POST /", &post_root.headers);
    let delete_vote = testkit::http::request(app.addr, Method::DELETE, "/vote/", &[], "").await;
    assert_eq!(
        delete_vote.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "vote's own 405"
    );

    let health = app.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    testkit::http::assert_hardened("/healthz", &health.headers);
    eventually(DEADLINE, "/readyz answers 200", || async {
        (app.get("/readyz").await.status == StatusCode::OK).then_some(())
    })
    .await;
    // Each service's own health routes stay reachable under its prefix.
    assert_eq!(app.get("/vote/healthz").await.status, StatusCode::OK);
    assert_eq!(app.get("/result/readyz").await.status, StatusCode::OK);

    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    for family in [
        "vote_pages_total",
        "result_sockets_open",
        "worker_batches_total",
    ] {
        assert!(
            metrics.body.contains(family),
            "{family} in:\n{}",
            metrics.body
        );
    }

    app.stop().await.expect("the app stops cleanly");
}

#[tokio::test]
async fn readyz_names_what_is_down() {
    let mut infra = infra().await;
    let mut app = spawn_app(&infra).await;
    eventually(DEADLINE, "/readyz answers 200", || async {
        (app.get("/readyz").await.status == StatusCode::OK).then_some(())
    })
    .await;
    infra.redis_mut().kill();
    let answer = eventually(DEADLINE, "/readyz answers 503", || async {
        let answer = app.get("/readyz").await;
        (answer.status == StatusCode::SERVICE_UNAVAILABLE).then_some(answer)
    })
    .await;
    assert!(answer.body.contains("vote: redis"), "{}", answer.body);
    assert!(answer.body.contains("worker: redis"), "{}", answer.body);
    app.stop().await.expect("the app stops cleanly");
}
