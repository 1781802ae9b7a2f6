//! Hostile voter ids and option keys sent through the whole app, and written straight into
//! Redis by another program, reach neither the queue nor PostgreSQL as given: a vote with a
//! forged cookie is queued under a fresh id, a forged option is refused, and an entry that
//! another writer put in the stream is dead-lettered. Afterwards the tables hold only
//! well-formed ids and configured options, and are intact.

use std::collections::BTreeMap;

use hyper::{Method, StatusCode};

use crate::helpers::{DEADLINE, TALLY, Tally, eventually, infra, spawn_app};

/// Ids an attacker might put in the `voter_id` cookie (valid header values all).
const HOSTILE_IDS: [&str; 10] = [
    "'; DROP TABLE votes; --",
    "x' OR '1'='1",
    "0123456789abcdef0123456789abcdef'); DELETE FROM tallies; --",
    "0123456789abcdef0123456789abcdef\" OR 1=1",
    "$1",
    "../../../etc/passwd",
    "*3 $3 SET $1 x $1 y",
    "0123456789ABCDEF0123456789ABCDEF",
    "0123456789abcdef0123456789abcdef0",
    "\u{ff10}123456789abcdef0123456789abcdef",
];

/// Whether `s` is a voter id as the app issues them.
fn well_formed(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[tokio::test]
async fn hostile_ids_and_options_never_reach_redis_or_postgres_as_given() {
    let infra = infra().await;
    let mut app = spawn_app(&infra).await;
    let mut issued = Vec::new();

    for (n, hostile) in HOSTILE_IDS.iter().enumerate() {
        let cookie = format!("voter_id={hostile}");
        let headers_form = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", cookie.as_str()),
        ];
        let headers_json = [
            ("content-type", "application/json"),
            ("cookie", cookie.as_str()),
        ];
        let answer = if n % 2 == 0 {
            testkit::http::request(app.addr, Method::POST, "/vote/", &headers_form, "vote=a").await
        } else {
            let body = r#"{"vote":"b"}"#.to_string();
            testkit::http::request(
                app.addr,
                Method::POST,
                "/vote/api/vote",
                &headers_json,
                body,
            )
            .await
        };
        assert!(
            matches!(answer.status, StatusCode::SEE_OTHER | StatusCode::ACCEPTED),
            "{hostile:?}: {answer:?}"
        );
        let id = answer
            .cookies()
            .split("; ")
            .find_map(|c| c.strip_prefix("voter_id="))
            .unwrap_or_else(|| panic!("{hostile:?}: a fresh id in {answer:?}"))
            .to_string();
        assert!(well_formed(&id) && id != *hostile, "{hostile:?} -> {id:?}");
        issued.push(id);

        // The hostile text as an option key: refused, nothing queued.
        let form = format!("vote={}", percent_encode(hostile));
        let refused =
            testkit::http::request(app.addr, Method::POST, "/vote/", &headers_form, form).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{hostile:?}");
        let json = serde_json::json!({ "vote": hostile }).to_string();
        let refused = testkit::http::request(
            app.addr,
            Method::POST,
            "/vote/api/vote",
            &headers_json,
            json,
        )
        .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{hostile:?}");
    }

    // Another program writes the same ids straight into the stream and the original app's list.
    let mut redis = redis::Client::open(infra.redis().url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for hostile in HOSTILE_IDS {
        let _: String = redis::cmd("XADD")
            .arg("ballots")
            .arg("*")
            .arg("voter_id")
            .arg(hostile)
            .arg("vote")
            .arg("a")
            .query_async(&mut redis)
            .await
            .unwrap();
        let legacy = serde_json::json!({ "voter_id": hostile, "vote": "a" }).to_string();
        let _: u64 = redis::cmd("RPUSH")
            .arg("votes")
            .arg(legacy)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    let _: String = redis::cmd("XADD")
        .arg("ballots")
        .arg("*")
        .arg("voter_id")
        .arg("0123456789abcdef0123456789abcdef")
        .arg("vote")
        .arg("a'; DROP TABLE tallies; --")
        .query_async(&mut redis)
        .await
        .unwrap();

    // Only the votes with the fresh ids count; every hostile entry lands in the dead letters.
    let hostile_entries = 2 * HOSTILE_IDS.len() + 1;
    eventually(
        DEADLINE,
        "the hostile entries are dead-lettered",
        || async {
            let mut redis = redis.clone();
            let dead: u64 = redis::cmd("XLEN")
                .arg("ballots:dead")
                .query_async(&mut redis)
                .await
                .unwrap();
            (dead as usize == hostile_entries).then_some(())
        },
    )
    .await;
    let tally = Tally::when(app.addr, TALLY, DEADLINE, "the accepted votes", |t| {
        t.total == HOSTILE_IDS.len() as u64
    })
    .await;
    assert_eq!(
        tally.count("a") + tally.count("b"),
        HOSTILE_IDS.len() as u64
    );

    let client = testkit::pg_client(infra.db_url()).await.unwrap();
    let votes: BTreeMap<String, String> = client
        .query("SELECT id, vote FROM votes", &[])
        .await
        .expect("votes is intact")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut expected = issued.clone();
    expected.sort();
    assert_eq!(votes.keys().cloned().collect::<Vec<_>>(), expected);
    assert!(votes.values().all(|v| v == "a" || v == "b"), "{votes:?}");
    let tallies: i64 = client
        .query_one("SELECT coalesce(sum(count), 0)::bigint FROM tallies", &[])
        .await
        .expect("tallies is intact")
        .get(0);
    assert_eq!(tallies, HOSTILE_IDS.len() as i64);

    // Redis holds no key named after any of it.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis)
        .await
        .unwrap();
    for key in &keys {
        assert!(
            key == "ballots"
                || key == "ballots:dead"
                || key == "votes"
                || key.starts_with("votes:"),
            "unexpected key {key:?} among {keys:?}"
        );
    }

    app.stop().await.expect("the app stops cleanly");
}

/// `application/x-www-form-urlencoded` encoding of `s`.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
