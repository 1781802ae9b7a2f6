//! The worker's protocol, driven step by step: batches, replays, claims, dead letters, the
//! original app's list, and two workers at once.

use std::collections::BTreeMap;
use std::time::Duration;

use common::config::Program;
use worker::step::Source;

use crate::helpers::{
    Infra, config, dead_letters, drain, eventually, infra, pending, tallies_checked, voter,
    votes_table, worker, xlen, xrange_last_id,
};

#[tokio::test]
async fn applies_votes_and_newest_per_voter_wins() {
    let infra = infra().await;
    infra.xadd(&voter(1), "a").await;
    infra.xadd(&voter(2), "a").await;
    infra.xadd(&voter(1), "b").await; // voter 1 changes their mind in the same batch
    let mut worker = worker(&infra, "w1");
    assert_eq!(drain(&mut worker).await, 3);

    let votes = votes_table(&infra).await;
    assert_eq!(votes.get(&voter(1)).map(String::as_str), Some("b"));
    assert_eq!(votes.get(&voter(2)).map(String::as_str), Some("a"));
    assert_eq!(votes.len(), 2);
    assert_eq!(
        tallies_checked(&infra).await,
        BTreeMap::from([("a".into(), 1), ("b".into(), 1)])
    );
    assert_eq!(
        xlen(&infra, "ballots").await,
        0,
        "applied entries are deleted"
    );
    assert_eq!(pending(&infra).await, 0, "applied entries are acknowledged");

    // A later batch moves the row, never adds one.
    infra.xadd(&voter(2), "b").await;
    drain(&mut worker).await;
    assert_eq!(votes_table(&infra).await.len(), 2);
    assert_eq!(
        tallies_checked(&infra).await,
        BTreeMap::from([("b".into(), 2)])
    );
}

#[tokio::test]
async fn a_committed_batch_replayed_changes_nothing() {
    let infra = infra().await;
    let mut w = worker(&infra, "crashed");
    w.connect().await.unwrap(); // creates the group and the schema
    let e1 = infra.xadd(&voter(1), "a").await;
    let e2 = infra.xadd(&voter(2), "b").await;
    infra.xadd(&voter(1), "b").await; // voter 1 moves to b
    // Consumer "crashed" reads the batch and commits it, then dies before acknowledging.
    let entries = read_as(&infra, "crashed").await;
    assert_eq!(entries, 3);
    let ballots = vec![
        ballot(1, "b", &xrange_last_id(&infra, &voter(1)).await),
        ballot(2, "b", &e2),
    ];
    let pool = common::pools::pg_pool(&config(&infra, Program::Worker, "x", |f| f).postgres, None)
        .unwrap();
    assert_eq!(worker::store::apply(&pool, &ballots).await.unwrap(), 2);
    let committed = (votes_table(&infra).await, tallies_checked(&infra).await);
    // Replaying the same ballots, or an older one, writes nothing.
    assert_eq!(worker::store::apply(&pool, &ballots).await.unwrap(), 0);
    assert_eq!(
        worker::store::apply(&pool, &[ballot(1, "a", &e1)])
            .await
            .unwrap(),
        0
    );

    // On restart, the consumer re-applies its pending entries: nothing changes.
    drop(w);
    let mut restarted = worker(&infra, "crashed");
    let outcome = restarted.step().await.unwrap();
    assert_eq!(
        (outcome.source, outcome.entries, outcome.rows),
        (Source::OwnPending, 3, 0)
    );
    assert_eq!(
        (votes_table(&infra).await, tallies_checked(&infra).await),
        committed
    );
    assert_eq!(committed.1, BTreeMap::from([("b".into(), 2)]));
    assert_eq!(pending(&infra).await, 0);
}

fn ballot(n: u64, vote: &str, id: &str) -> worker::ballot::Ballot {
    worker::ballot::Ballot {
        voter: voter(n),
        vote: vote.into(),
        version: domain::queue::EntryId::parse(id).unwrap(),
    }
}

/// Reads every new entry as `consumer` without acknowledging; returns how many.
async fn read_as(infra: &Infra, consumer: &str) -> usize {
    let reply: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg(consumer)
        .arg("COUNT")
        .arg(1000)
        .arg("STREAMS")
        .arg("ballots")
        .arg(">")
        .query_async(&mut infra.redis_conn().await)
        .await
        .unwrap();
    match reply {
        redis::Value::Array(streams) => match &streams[0] {
            redis::Value::Array(pair) => match &pair[1] {
                redis::Value::Array(entries) => entries.len(),
                _ => 0,
            },
            _ => 0,
        },
        _ => 0,
    }
}

#[tokio::test]
async fn own_pending_entries_are_applied_first_after_a_restart() {
    let infra = infra().await;
    let mut w = worker(&infra, "restarting");
    w.connect().await.unwrap();
    for n in 0..10 {
        infra
            .xadd(&voter(n), if n % 2 == 0 { "a" } else { "b" })
            .await;
    }
    // The consumer reads the entries (they become its pending entries) and dies.
    assert_eq!(read_as(&infra, "restarting").await, 10);
    assert_eq!(pending(&infra).await, 10);
    drop(w);

    let mut restarted = worker(&infra, "restarting");
    let outcome = restarted.step().await.unwrap();
    assert_eq!(outcome.source, Source::OwnPending);
    assert_eq!(outcome.entries, 10);
    assert_eq!(pending(&infra).await, 0);
    assert_eq!(votes_table(&infra).await.len(), 10);
    assert_eq!(
        tallies_checked(&infra).await,
        BTreeMap::from([("a".into(), 5), ("b".into(), 5)])
    );
}

#[tokio::test]
async fn entries_of_a_dead_consumer_are_claimed() {
    let infra = infra().await;
    // First a survivor that claims nothing (entries must be idle a minute), however slow the
    // machine: it applies the new entry only.
    let mut survivor = worker(&infra, "survivor");
    survivor.connect().await.unwrap();
    infra.xadd(&voter(7), "a").await;
    infra.xadd(&voter(8), "b").await;
    assert_eq!(read_as(&infra, "dead").await, 2);
    assert_eq!(pending(&infra).await, 2);
    // An entry applied meanwhile is acknowledged, but nothing at or above the dead
    // consumer's oldest unacknowledged entry may leave the stream.
    infra.xadd(&voter(9), "a").await;
    let survivor = tokio::sync::Mutex::new(survivor);
    eventually(
        Duration::from_secs(10),
        "the survivor applies the new entry",
        || async {
            let applied = votes_table(&infra).await.contains_key(&voter(9));
            if !applied {
                survivor.lock().await.step().await.unwrap();
            }
            applied.then_some(())
        },
    )
    .await;
    assert_eq!(
        xlen(&infra, "ballots").await,
        3,
        "unacknowledged entries stay in the stream"
    );

    // The same consumer restarted with a short claim_idle_ms: once the entries have been idle
    // that long, a claim step applies them.
    let config = config(&infra, Program::Worker, "survivor", |f| {
        f.merge(("worker.claim_idle_ms", 100))
    });
    let survivor = worker::Worker::new(&config).unwrap();
    let survivor = tokio::sync::Mutex::new(survivor);
    let claimed = eventually(
        Duration::from_secs(10),
        "the survivor claims the entries",
        || async {
            let outcome = survivor.lock().await.step().await.unwrap();
            (outcome.source == Source::Claimed && outcome.entries > 0).then_some(outcome.entries)
        },
    )
    .await;
    assert_eq!(claimed, 2);
    assert_eq!(pending(&infra).await, 0);
    assert_eq!(votes_table(&infra).await.len(), 3);
    assert_eq!(
        xlen(&infra, "ballots").await,
        0,
        "once all are acknowledged, all are removed"
    );
    tallies_checked(&infra).await;
}

#[tokio::test]
async fn invalid_entries_go_to_the_dead_letter_stream_with_a_reason() {
    let infra = infra().await;
    let mut redis = infra.redis_conn().await;
    let xadd = |fields: Vec<(&'static str, &'static str)>| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg("ballots").arg("*");
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
        cmd
    };
    let v = "0123456789abcdef0123456789abcdef";
    for cmd in [
        xadd(vec![("vote", "a")]),
        xadd(vec![("voter_id", v), ("vote", "zebra")]),
        xadd(vec![("voter_id", "' OR 1=1 --"), ("vote", "a")]),
        xadd(vec![("voter_id", v), ("vote", "a")]),
    ] {
        let _: String = cmd.query_async(&mut redis).await.unwrap();
    }
    let mut w = worker(&infra, "w");
    let applied = drain(&mut w).await;
    assert_eq!(applied, 4);
    assert_eq!(
        votes_table(&infra).await.len(),
        1,
        "only the valid vote is applied"
    );
    assert_eq!(xlen(&infra, "ballots").await, 0);
    assert_eq!(pending(&infra).await, 0, "nothing is left pending");

    let dead = dead_letters(&infra).await;
    let reasons: Vec<String> = dead
        .iter()
        .map(|(_, fields)| {
            fields
                .iter()
                .find(|(k, _)| k == "reason")
                .map(|(_, r)| r.clone())
                .unwrap()
        })
        .collect();
    assert_eq!(
        reasons,
        [
            "missing field `voter_id`",
            "unknown option \"zebra\"",
            "malformed voter id"
        ],
        "each invalid entry is dead-lettered once with its reason"
    );
}

#[tokio::test]
async fn the_original_apps_list_is_drained() {
    let infra = infra().await;
    let mut redis = infra.redis_conn().await;
    for item in [
        r#"{"voter_id":"5e1f0a2b3c4d","vote":"a"}"#,
        r#"{"voter_id":"77aa","vote":"b"}"#,
        r#"{"voter_id":"5e1f0a2b3c4d","vote":"b"}"#,
        "not json",
    ] {
        let _: u64 = redis::cmd("RPUSH")
            .arg("votes")
            .arg(item)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    let mut w = worker(&infra, "w");
    drain(&mut w).await;
    let votes = votes_table(&infra).await;
    assert_eq!(
        votes.get("5e1f0a2b3c4d").map(String::as_str),
        Some("b"),
        "the later list entry wins"
    );
    assert_eq!(votes.get("77aa").map(String::as_str), Some("b"));
    assert_eq!(
        tallies_checked(&infra).await,
        BTreeMap::from([("b".into(), 2)])
    );
    let left: u64 = redis::cmd("LLEN")
        .arg("votes")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(left, 0);
    assert_eq!(pending(&infra).await, 0, "moved entries are acknowledged");
    let dead = dead_letters(&infra).await;
    assert_eq!(
        dead.len(),
        1,
        "the malformed item is dead-lettered: {dead:?}"
    );
    assert!(
        dead[0]
            .1
            .contains(&("legacy".to_string(), "not json".to_string())),
        "the dead letter keeps the item as it was: {dead:?}"
    );
}

/// Versions follow the list's order across batches: 2,000 voters push `a` and then `b`, and
/// a worker that applies one entry per batch (so `a` and `b` of a voter are never in the
/// same batch, and many batches fall within one millisecond) leaves every voter on `b`.
#[tokio::test]
async fn the_original_apps_list_keeps_each_voters_last_vote_across_batches() {
    let infra = infra().await;
    let mut redis = infra.redis_conn().await;
    let original_id = |n: u64| format!("{n:x}");
    for vote in ["a", "b"] {
        let mut pipe = redis::pipe();
        for n in 0..2_000u64 {
            let item = serde_json::json!({"voter_id": original_id(n), "vote": vote});
            pipe.cmd("RPUSH")
                .arg("votes")
                .arg(item.to_string())
                .ignore();
        }
        pipe.query_async::<()>(&mut redis).await.unwrap();
    }
    let one_by_one = |f: figment::Figment| f.merge(("worker.batch_size", 1));
    let mut w = worker::Worker::new(&config(&infra, Program::Worker, "w", one_by_one)).unwrap();
    assert_eq!(
        drain(&mut w).await,
        4_000,
        "every list entry is applied once"
    );
    let votes = votes_table(&infra).await;
    let on_a: Vec<&String> = votes
        .iter()
        .filter(|(_, v)| *v == "a")
        .map(|(k, _)| k)
        .collect();
    assert_eq!(votes.len(), 2_000);
    assert!(
        on_a.is_empty(),
        "{} voters kept their earlier vote: {:?}",
        on_a.len(),
        &on_a[..on_a.len().min(5)]
    );
    assert_eq!(
        tallies_checked(&infra).await,
        BTreeMap::from([("b".into(), 2_000)])
    );
}

#[tokio::test]
async fn two_workers_draining_at_once_never_double_count() {
    let infra = infra().await;
    // 300 voters, each voting several times: 3000 entries, the last vote of each decides.
    let mut last = BTreeMap::new();
    let mut redis = infra.redis_conn().await;
    for round in 0..10u64 {
        let mut pipe = redis::pipe();
        for n in 0..300u64 {
            let vote = if (n + round) % 3 == 0 { "a" } else { "b" };
            pipe.cmd("XADD")
                .arg("ballots")
                .arg("*")
                .arg("voter_id")
                .arg(voter(n))
                .arg("vote")
                .arg(vote)
                .ignore();
            last.insert(voter(n), vote.to_string());
        }
        pipe.query_async::<()>(&mut redis).await.unwrap();
    }
    let small = |f: figment::Figment| f.merge(("worker.batch_size", 64));
    let mut one = worker::Worker::new(&config(&infra, Program::Worker, "one", small)).unwrap();
    let mut two = worker::Worker::new(&config(&infra, Program::Worker, "two", small)).unwrap();
    let (a, b) = tokio::join!(drain(&mut one), drain(&mut two));
    assert_eq!(a + b, 3000, "every entry is taken exactly once");
    assert!(a > 0 && b > 0, "both workers took part ({a} and {b})");
    assert_eq!(
        votes_table(&infra).await,
        last,
        "each voter's last vote is stored"
    );
    let tallies = tallies_checked(&infra).await;
    assert_eq!(tallies.values().sum::<i64>(), 300);
    assert_eq!(pending(&infra).await, 0);
}
