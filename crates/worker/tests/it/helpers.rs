//! The harness (testkit's): a Redis and a fresh PostgreSQL database, worker configurations on
//! top of them, and the queries these tests check the stream and the tables with.

use std::collections::BTreeMap;

use common::config::{Config, Program};
use figment::Figment;
pub use testkit::{Infra, eventually, voter};

/// Redis and a fresh database with the schema, so tests can look at the tables at once (a
/// worker would create it too).
pub async fn infra() -> Infra {
    Infra::database().await.with_schema().await.with_redis()
}

/// [`infra`] on a PostgreSQL server of the test's own, which it may stop or reconfigure.
pub async fn own_infra() -> Infra {
    Infra::own_postgres().await.with_schema().await.with_redis()
}

/// A configuration of `service` whose worker is named `consumer`; `tweak` may merge more keys.
pub fn config(
    infra: &Infra,
    service: Program,
    consumer: &str,
    tweak: impl FnOnce(Figment) -> Figment,
) -> Config {
    infra.config(service, |f| {
        tweak(
            f.merge(("worker.consumer", consumer))
                .merge(("worker.claim_interval_ms", 50))
                .merge(("worker.claim_idle_ms", 60_000)),
        )
    })
}

pub fn worker(infra: &Infra, consumer: &str) -> worker::Worker {
    worker::Worker::new(&config(infra, Program::Worker, consumer, |f| f)).expect("worker builds")
}

/// `votes` as voter -> vote.
pub async fn votes_table(infra: &Infra) -> BTreeMap<String, String> {
    let rows = infra
        .pg()
        .await
        .query("SELECT id, vote FROM votes", &[])
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Asserts the invariant: `tallies` equals `SELECT vote, count(*) FROM votes GROUP BY vote`
/// (zero-count tally rows aside), and returns the tallies.
pub async fn tallies_checked(infra: &Infra) -> BTreeMap<String, i64> {
    let tallies: BTreeMap<String, i64> = infra
        .pg()
        .await
        .query("SELECT vote, count FROM tallies WHERE count <> 0", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let counted = infra.counted().await;
    let counted: BTreeMap<String, i64> = counted.into_iter().map(|(k, n)| (k, n as i64)).collect();
    assert_eq!(tallies, counted, "tallies must equal the count of votes");
    tallies
}

/// The id of the newest stream entry of `voter`.
pub async fn xrange_last_id(infra: &Infra, voter: &str) -> String {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("ballots")
        .arg("-")
        .arg("+")
        .query_async(&mut infra.redis_conn().await)
        .await
        .unwrap();
    entries
        .into_iter()
        .rev()
        .find(|(_, f)| f.iter().any(|(k, v)| k == "voter_id" && v == voter))
        .map(|(id, _)| id)
        .expect("the voter has an entry")
}

pub async fn xlen(infra: &Infra, key: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(key)
        .query_async(&mut infra.redis_conn().await)
        .await
        .unwrap()
}

/// The dead-letter stream's entries: `(id, fields)`.
pub async fn dead_letters(infra: &Infra) -> Vec<(String, Vec<(String, String)>)> {
    redis::cmd("XRANGE")
        .arg("ballots:dead")
        .arg("-")
        .arg("+")
        .query_async(&mut infra.redis_conn().await)
        .await
        .unwrap()
}

/// Entries pending in the group, on any consumer.
pub async fn pending(infra: &Infra) -> u64 {
    let reply: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg("ballots")
        .arg("workers")
        .query_async(&mut infra.redis_conn().await)
        .await
        .unwrap();
    reply.0
}

/// Steps `worker` until a step finds nothing to do; returns the stream entries it took
/// (entries moved from the original app's list included).
pub async fn drain(worker: &mut worker::Worker) -> u64 {
    let mut entries = 0;
    loop {
        let outcome = worker.step().await.expect("step succeeds");
        entries += outcome.entries as u64;
        if outcome.is_idle() && outcome.source == worker::step::Source::New {
            return entries;
        }
    }
}
