//! The `loadgen` binary itself: its summary on stdout (text or JSON), its exit codes, and its
//! refusal of bad arguments.

use crate::helpers::{Stack, run_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_votes_verifies_and_summarizes() {
    let app = Stack::with_worker().await;
    let out = run_binary(&[
        "--url",
        &app.url(),
        "--votes",
        "200",
        "--voters",
        "50",
        "--revote-ratio",
        "0.3",
        "--concurrency",
        "8",
        "--verify",
        app.db_url(),
    ])
    .await;
    assert_eq!(out.code, Some(0), "{out:#?}");
    for line in [
        "accepted   200\n",
        "refused    0\n",
        "errors     0 (connect 0, timeout 0, broken 0)\n",
        "50 voters, 150 re-votes",
        "latency    p50 ",
        "verify     50 of 50 voters hold their last accepted vote: all present\n",
        "drain      ",
        "result     ok\n",
    ] {
        assert!(out.stdout.contains(line), "no {line:?} in\n{}", out.stdout);
    }
    // The database URL's password (none here) and the progress stay out of stdout.
    assert!(!out.stdout.contains("loadgen:"), "{}", out.stdout);

    let out = run_binary(&[
        "--url",
        &app.url(),
        "--votes",
        "50",
        "--json",
        "--verify",
        app.db_url(),
    ])
    .await;
    assert_eq!(out.code, Some(0), "{out:#?}");
    let json: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
    assert_eq!(json["accepted"], 50);
    assert_eq!(json["refused"], 0);
    assert_eq!(json["mode"], "json");
    assert_eq!(json["ok"], true);
    assert_eq!(json["verify"]["missing"], 0);
    assert!(json["latency_ms"]["p99"].as_f64().is_some(), "{json}");
    assert!(json["rate"].as_f64().is_some_and(|r| r > 0.0), "{json}");
}

#[tokio::test]
async fn bad_arguments_exit_2_with_a_message() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "--votes N, --duration D"),
        (&["--votes", "0"], "--votes"),
        (
            &["--votes", "10", "--url", "https://localhost/vote/"],
            "only http://",
        ),
        (&["--votes", "10", "--duration", "forever"], "--duration"),
        (&["--votes", "10", "--mix", "a=60,b"], "--mix"),
        (&["--votes", "10", "--revote-ratio", "2"], "--revote-ratio"),
        (
            &["--votes", "10", "--bogus"],
            "unexpected argument '--bogus'",
        ),
    ];
    for (args, wanted) in cases {
        let out = run_binary(args).await;
        assert_eq!(out.code, Some(2), "{args:?}: {out:#?}");
        assert!(out.stderr.contains(wanted), "{args:?}: {:?}", out.stderr);
        assert!(out.stderr.contains("try '--help'"), "{:?}", out.stderr);
        assert!(out.stdout.is_empty(), "{args:?}: {:?}", out.stdout);
    }
    let out = run_binary(&["--help"]).await;
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.contains("Usage: loadgen"));
}
