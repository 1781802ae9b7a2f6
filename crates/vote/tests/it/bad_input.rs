//! Requests the service must refuse: each asserts the status a client sees AND that nothing
//! was queued. Also votes carrying a voter id that must not be trusted.

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::helpers::{FORM, JSON, TestApp, TestResponse, is_voter_id, spawn_app};

/// Asserts `resp` has `status` and that the stream is still empty.
async fn refused(app: &TestApp, what: &str, resp: &TestResponse, status: StatusCode) {
    assert_eq!(resp.status, status, "{what}: {resp:?}");
    let entries = app.stream_entries().await;
    assert!(entries.is_empty(), "{what} queued {entries:?}");
}

/// After refusals, a good vote still lands: the stream the checks read is the right one.
async fn good_vote_still_lands(app: &TestApp) {
    let resp = app.post_form("vote=a", &[]).await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER, "{resp:?}");
    assert_eq!(app.stream_entries().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_option_is_refused_naming_it() {
    let app = spawn_app(|f| f).await;

    let form = app.post_form("vote=zebra", &[]).await;
    refused(&app, "form zebra", &form, StatusCode::BAD_REQUEST).await;
    // The page speaks to the voter; the JSON answer below names the option for scripts.
    assert!(
        form.body
            .contains("We could not record your vote: that choice is not on this poll."),
        "{}",
        form.body
    );
    assert_eq!(
        form.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    // A refused vote still names the voter, so pressing again is the same voter.
    assert!(is_voter_id(&form.voter_id()), "{form:?}");
    assert_eq!(form.header("vote-outcome"), Some("not-recorded"));

    let json = app.post_json(r#"{"vote":"zebra"}"#, &[]).await;
    refused(&app, "JSON zebra", &json, StatusCode::BAD_REQUEST).await;
    let error = json.json()["error"]
        .as_str()
        .expect("error text")
        .to_string();
    assert!(error.contains("zebra"), "{error}");

    // An option label is not a key.
    let label = app.post_form("vote=Cats", &[]).await;
    refused(&app, "label", &label, StatusCode::BAD_REQUEST).await;

    good_vote_still_lands(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_option_is_never_echoed_as_markup() {
    let app = spawn_app(|f| f).await;

    let resp = app
        .post_form("vote=%3Cscript%3Ealert(1)%3C%2Fscript%3E", &[])
        .await;

    refused(&app, "script", &resp, StatusCode::BAD_REQUEST).await;
    assert!(!resp.body.contains("<script>"), "{}", resp.body);
    assert!(
        resp.body.contains("that choice is not on this poll"),
        "{}",
        resp.body
    );
    let json = app
        .post_json(r#"{"vote":"<script>alert(1)</script>"}"#, &[])
        .await;
    refused(&app, "JSON script", &json, StatusCode::BAD_REQUEST).await;
    assert_eq!(json.header("content-type"), Some("application/json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_form_bodies_are_bad_requests() {
    let app = spawn_app(|f| f).await;
    let cases: [(&str, Bytes); 11] = [
        ("empty vote", Bytes::from_static(b"vote=")),
        (
            "non-UTF-8 escape in another value",
            Bytes::from_static(b"x=%ff&vote=a"),
        ),
        (
            "non-UTF-8 escape in a name",
            Bytes::from_static(b"%ff=1&vote=a"),
        ),
        (
            "broken escape in another field",
            Bytes::from_static(b"x=%zz&vote=a"),
        ),
        ("broken escape at the end", Bytes::from_static(b"vote=a%")),
        ("bare vote", Bytes::from_static(b"vote")),
        ("missing field", Bytes::from_static(b"choice=a")),
        ("empty body", Bytes::new()),
        ("repeated field", Bytes::from_static(b"vote=a&vote=b")),
        ("non-UTF-8 bytes", Bytes::from_static(b"vote=\xff\xfe")),
        ("non-UTF-8 escape", Bytes::from_static(b"vote=%ff")),
    ];
    for (what, body) in cases {
        let resp = app.post_form(body, &[]).await;
        refused(&app, what, &resp, StatusCode::BAD_REQUEST).await;
        assert!(
            resp.body.contains("role=\"alert\""),
            "{what}: {}",
            resp.body
        );
    }
    good_vote_still_lands(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_bodies_are_bad_requests() {
    let app = spawn_app(|f| f).await;
    let cases: [(&str, &[u8]); 11] = [
        ("not JSON", b"vote=a"),
        ("empty body", b""),
        ("number", br#"{"vote":1}"#),
        ("null", br#"{"vote":null}"#),
        ("array", br#"["a"]"#),
        ("string", br#""a""#),
        ("repeated field", br#"{"vote":"a","vote":"b"}"#),
        ("wrong field", br#"{"choice":"a"}"#),
        (
            "extra field",
            br#"{"vote":"a","voter_id":"00000000000000000000000000000000"}"#,
        ),
        ("empty vote", br#"{"vote":""}"#),
        ("non-UTF-8", b"{\"vote\":\"\xff\"}"),
    ];
    for (what, body) in cases {
        let resp = app.post_json(Bytes::from_static(body), &[]).await;
        refused(&app, what, &resp, StatusCode::BAD_REQUEST).await;
        assert!(resp.json()["error"].is_string(), "{what}: {resp:?}");
    }
    good_vote_still_lands(&app).await;
}

/// `vote=a&pad=xxxx…`, `len` bytes long.
fn padded_form(len: usize) -> Vec<u8> {
    let mut body = b"vote=a&pad=".to_vec();
    body.resize(len, b'x');
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_413() {
    let app = spawn_app(|f| f).await;

    let declared = app.post_form(padded_form(4097), &[]).await;
    refused(
        &app,
        "Content-Length 4097",
        &declared,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    let big = app.post_form(padded_form(64 * 1024), &[]).await;
    refused(
        &app,
        "Content-Length 64 KiB",
        &big,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    let json = format!(r#"{{"vote":"a","pad":"{}"}}"#, "x".repeat(5000));
    let json = app.post_json(json, &[]).await;
    refused(
        &app,
        "JSON over the limit",
        &json,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    // Without a length up front, the limit is enforced while reading.
    let body = padded_form(6000);
    let chunks: Vec<Bytes> = body.chunks(1000).map(Bytes::copy_from_slice).collect();
    let chunked = app
        .request_chunked(Method::POST, "/", &[("content-type", FORM)], chunks)
        .await;
    refused(
        &app,
        "chunked over the limit",
        &chunked,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    good_vote_still_lands(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_within_the_limit_is_accepted() {
    let app = spawn_app(|f| f).await;

    let chunks = vec![Bytes::from_static(b"vo"), Bytes::from_static(b"te=b")];
    let resp = app
        .request_chunked(Method::POST, "/", &[("content-type", FORM)], chunks)
        .await;

    assert_eq!(resp.status, StatusCode::SEE_OTHER, "{resp:?}");
    let entries = app.stream_entries().await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].2, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_type_is_415() {
    let app = spawn_app(|f| f).await;

    for content_type in [
        "text/plain",
        FORM,
        "application/jsonx",
        "multipart/form-data",
    ] {
        let resp = app
            .post_json(r#"{"vote":"a"}"#, &[("content-type", content_type)])
            .await;
        refused(
            &app,
            content_type,
            &resp,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
    }
    let form_as_json = app.post_form("vote=a", &[("content-type", JSON)]).await;
    refused(
        &app,
        "form as JSON",
        &form_as_json,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;

    let none = app.request(Method::POST, "/", &[], "vote=a").await;
    refused(
        &app,
        "form without type",
        &none,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    let none = app
        .request(Method::POST, "/api/vote", &[], r#"{"vote":"a"}"#)
        .await;
    refused(
        &app,
        "JSON without type",
        &none,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;

    // Parameters and case do not matter.
    let with_charset = app
        .post_json(
            r#"{"vote":"a"}"#,
            &[("content-type", "Application/JSON; charset=utf-8")],
        )
        .await;
    assert_eq!(
        with_charset.status,
        StatusCode::ACCEPTED,
        "{with_charset:?}"
    );
    assert_eq!(app.stream_entries().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_is_405_with_allow() {
    let app = spawn_app(|f| f).await;
    let cases = [
        (Method::DELETE, "/", ["GET", "POST"].as_slice()),
        (Method::PUT, "/", &["GET", "POST"]),
        (Method::PATCH, "/", &["GET", "POST"]),
        (Method::TRACE, "/", &["GET", "POST"]),
        (Method::OPTIONS, "/api/vote", &["POST"]),
        (
            Method::from_bytes(b"BREW").expect("an extension method"),
            "/",
            &["GET", "POST"],
        ),
        (Method::GET, "/api/vote", &["POST"]),
        (Method::PUT, "/api/vote", &["POST"]),
        (Method::POST, "/static/style.css", &["GET"]),
        (Method::POST, "/healthz", &["GET"]),
        (Method::POST, "/metrics", &["GET"]),
    ];
    for (method, path, allowed) in cases {
        let resp = app
            .request(method.clone(), path, &[("content-type", FORM)], "vote=a")
            .await;
        refused(
            &app,
            &format!("{method} {path}"),
            &resp,
            StatusCode::METHOD_NOT_ALLOWED,
        )
        .await;
        let allow = resp
            .header("allow")
            .unwrap_or_else(|| panic!("{method} {path}: no Allow in {resp:?}"));
        let listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        for m in allowed {
            assert!(
                listed.contains(m),
                "{method} {path}: Allow {allow:?} lacks {m}"
            );
        }
        assert!(
            !listed.contains(&method.as_str()),
            "{method} {path}: Allow {allow:?}"
        );
    }
    let api = app.get("/api/vote", &[]).await;
    assert_eq!(api.header("allow"), Some("POST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_path_is_404() {
    let app = spawn_app(|f| f).await;

    for path in [
        "/nope",
        "/api",
        "/api/vote/",
        "/static/",
        "/static/../Cargo.toml",
        "/index.html",
    ] {
        let resp = app.get(path, &[]).await;
        refused(&app, path, &resp, StatusCode::NOT_FOUND).await;
    }
    let post = app
        .request(Method::POST, "/vote", &[("content-type", FORM)], "vote=a")
        .await;
    refused(&app, "POST /vote", &post, StatusCode::NOT_FOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_votes_are_403() {
    let app = spawn_app(|f| f).await;
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("foreign origin", &[("origin", "https://evil.example")]),
        ("Sec-Fetch-Site", &[("sec-fetch-site", "cross-site")]),
        ("opaque origin", &[("origin", "null")]),
        ("same host, other port", &[("origin", "http://127.0.0.1:1")]),
    ];
    for (what, headers) in cases {
        let form = app.post_form("vote=a", headers).await;
        refused(&app, what, &form, StatusCode::FORBIDDEN).await;
        assert!(form.set_cookie("voter_id").is_none(), "{what}: {form:?}");
        let json = app.post_json(r#"{"vote":"a"}"#, headers).await;
        refused(&app, what, &json, StatusCode::FORBIDDEN).await;
    }

    // A browser on the page itself is welcome.
    let origin = format!("http://{}", app.addr);
    let same = app.post_form("vote=a", &[("origin", &origin)]).await;
    assert_eq!(same.status, StatusCode::SEE_OTHER, "{same:?}");
    assert_eq!(app.stream_entries().await.len(), 1);
}

/// Browsers leave default ports out of `Host` and `Origin` alike: a `Host` without a port is
/// port 80, so a page on port 8080 of the same host is another origin, `Sec-Fetch-Site:
/// same-site` notwithstanding. Its vote is refused and the victim's vote stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_a_port_is_the_default_port() {
    let app = spawn_app(|f| f).await;
    let victim = app
        .post_form(
            "vote=a",
            &[("host", "127.0.0.1"), ("origin", "http://127.0.0.1")],
        )
        .await;
    assert_eq!(victim.status, StatusCode::SEE_OTHER, "{victim:?}");
    let cookies = victim.cookie_header();
    let before = app.stream_entries().await;
    assert_eq!(before.len(), 1);

    let attack = [
        ("host", "127.0.0.1"),
        ("origin", "http://127.0.0.1:8080"),
        ("sec-fetch-site", "same-site"),
        ("cookie", cookies.as_str()),
    ];
    let form = app.post_form("vote=b", &attack).await;
    assert_eq!(form.status, StatusCode::FORBIDDEN, "{form:?}");
    assert!(form.set_cookie("voter_id").is_none(), "{form:?}");
    let json = app.post_json(r#"{"vote":"b"}"#, &attack).await;
    assert_eq!(json.status, StatusCode::FORBIDDEN, "{json:?}");
    let other_way = [
        ("host", "127.0.0.1:8080"),
        ("origin", "http://127.0.0.1"),
        ("cookie", cookies.as_str()),
    ];
    let form = app.post_form("vote=b", &other_way).await;
    assert_eq!(form.status, StatusCode::FORBIDDEN, "{form:?}");
    assert_eq!(app.stream_entries().await, before, "nothing changed");

    // The default port written on one side only is still the same origin.
    for (host, origin) in [
        ("127.0.0.1:80", "http://127.0.0.1"),
        ("127.0.0.1", "http://127.0.0.1:80"),
    ] {
        let resp = app
            .post_form(
                "vote=b",
                &[
                    ("host", host),
                    ("origin", origin),
                    ("cookie", cookies.as_str()),
                ],
            )
            .await;
        assert_eq!(
            resp.status,
            StatusCode::SEE_OTHER,
            "{host} {origin}: {resp:?}"
        );
    }
}

/// Without a trusted proxy the service sees plain HTTP: an `https://` origin is another origin.
/// With one, the proxy's `X-Forwarded-Proto` names the scheme, and its default port is 443.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origins_scheme_is_the_one_the_request_came_over() {
    let app = spawn_app(|f| f).await;
    let secure = [
        ("host", "example.com"),
        ("origin", "https://example.com"),
        ("x-forwarded-proto", "https"),
    ];
    let form = app.post_form("vote=a", &secure).await;
    refused(
        &app,
        "https origin, untrusted proxy",
        &form,
        StatusCode::FORBIDDEN,
    )
    .await;

    let app = spawn_app(|f| f.merge(("http.trust_proxy", true))).await;
    for headers in [
        [
            ("host", "example.com"),
            ("origin", "http://example.com"),
            ("x-forwarded-proto", "https"),
        ],
        [
            ("host", "example.com"),
            ("origin", "https://example.com:8443"),
            ("x-forwarded-proto", "https"),
        ],
        [
            ("host", "example.com:443"),
            ("origin", "https://example.com"),
            ("x-forwarded-proto", "http"),
        ],
    ] {
        let form = app.post_form("vote=a", &headers).await;
        refused(&app, &format!("{headers:?}"), &form, StatusCode::FORBIDDEN).await;
    }
    for headers in [
        secure,
        [
            ("host", "example.com:443"),
            ("origin", "https://example.com"),
            ("x-forwarded-proto", "https"),
        ],
    ] {
        let form = app.post_form("vote=a", &headers).await;
        assert_eq!(form.status, StatusCode::SEE_OTHER, "{headers:?}: {form:?}");
    }
    assert_eq!(app.stream_entries().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_voter_cookie_gets_a_fresh_id() {
    let app = spawn_app(|f| f).await;
    let bad_ids = [
        "../../etc".to_string(),
        "0123456789ABCDEF0123456789ABCDEF".to_string(),
        "a".repeat(17),
        "a".repeat(31),
        "a".repeat(33),
        "' OR 1=1 --".to_string(),
        "0123456789abcdef0123456789abcdeg".to_string(),
        String::new(),
    ];
    for (n, bad) in bad_ids.iter().enumerate() {
        let cookie = format!("voter_id={bad}");
        let resp = if n % 2 == 0 {
            app.post_form("vote=a", &[("cookie", &cookie)]).await
        } else {
            app.post_json(r#"{"vote":"a"}"#, &[("cookie", &cookie)])
                .await
        };
        assert!(
            resp.status == StatusCode::SEE_OTHER || resp.status == StatusCode::ACCEPTED,
            "{bad:?}: {resp:?}"
        );
        let issued = resp.voter_id();
        assert!(is_voter_id(&issued), "{bad:?}: issued {issued:?}");
        assert_ne!(&issued, bad);
        let entries = app.stream_entries().await;
        assert_eq!(entries.len(), n + 1, "{entries:?}");
        let (_, queued, _) = entries.last().unwrap();
        assert_eq!(queued, &issued, "{bad:?}: the ballot carries the new id");
        assert!(
            entries.iter().all(|(_, v, _)| is_voter_id(v)),
            "{bad:?}: {entries:?}"
        );
    }
    let entries = app.stream_entries().await;
    let mut voters: Vec<&str> = entries.iter().map(|(_, v, _)| v.as_str()).collect();
    voters.sort_unstable();
    voters.dedup();
    assert_eq!(voters.len(), bad_ids.len(), "each got its own fresh id");
}

/// A browser that voted in the original example voting app carries its `voter_id` cookie (up
/// to 16 lowercase hex digits): it stays the same voter here, so its vote is not counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_apps_voter_ids_are_kept() {
    let app = spawn_app(|f| f).await;
    for original in ["5e1f0a2b3c4d5e6", "ffffffffffffffff", "7a"] {
        let cookie = format!("voter_id={original}");
        let page = app.get("/", &[("cookie", &cookie)]).await;
        assert!(
            page.set_cookie("voter_id").is_none(),
            "{original}: {page:?}"
        );
        let form = app.post_form("vote=b", &[("cookie", &cookie)]).await;
        assert_eq!(form.status, StatusCode::SEE_OTHER, "{form:?}");
        assert_eq!(form.voter_id(), original);
        let json = app
            .post_json(r#"{"vote":"a"}"#, &[("cookie", &cookie)])
            .await;
        assert_eq!(json.json()["voter_id"], original);
    }
    let entries = app.stream_entries().await;
    assert_eq!(entries.len(), 6, "{entries:?}");
    assert_eq!(entries[0].1, "5e1f0a2b3c4d5e6");
    assert_eq!(entries[5].1, "7a");
}

#[tokio::test]
async fn a_body_that_never_arrives_is_cut_off_with_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = crate::helpers::spawn_app(|f| f.merge(("http.body_timeout_ms", 200))).await;
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // Headers promise 100 bytes; only one arrives.
    let head = "POST /api/vote HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(app.stream_entries().await.is_empty(), "nothing is queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_header_that_is_not_text_gets_a_fresh_id() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(|f| f).await;
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let mut request = b"POST /api/vote HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
        Content-Length: 12\r\nConnection: close\r\nCookie: voter_id=0123456789abcdef\xff\xfe0123456789abcdef\r\n\r\n"
        .to_vec();
    request.extend_from_slice(br#"{"vote":"a"}"#);
    socket.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let entries = app.stream_entries().await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(is_voter_id(&entries[0].1), "{entries:?}");
    assert!(
        answer.contains(&format!("set-cookie: voter_id={};", entries[0].1)),
        "the new id is issued: {answer}"
    );
}
