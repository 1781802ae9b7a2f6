//! Test fixtures: a Redis, a PostgreSQL database and worker configurations on top of them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::config::{Config, Service};
use figment::Figment;
use figment::providers::Serialized;
use testkit::{Postgres, Redis};

pub struct Infra {
    pub redis: Redis,
    pub pg: Postgres,
    pub db_url: String,
}

impl Infra {
    pub async fn start() -> Infra {
        testkit::init_logging();
        let redis = Redis::start().expect("redis-server starts");
        let pg = Postgres::start().expect("PostgreSQL starts");
        let db_url = pg.create_database().await.expect("a fresh database");
        let infra = Infra { redis, pg, db_url };
        // The schema exists before the test looks at the tables (a worker would create it too).
        common::schema::migrate(&mut infra.pg().await)
            .await
            .expect("schema applies");
        infra
    }

    /// A worker configuration named `consumer`; `tweak` may merge more keys.
    pub fn config(
        &self,
        service: Service,
        consumer: &str,
        tweak: impl FnOnce(Figment) -> Figment,
    ) -> Config {
        let figment = Figment::from(Serialized::defaults(Config::defaults(service)))
            .merge(("listen", "127.0.0.1:0"))
            .merge(("redis.url", self.redis.url()))
            .merge(("postgres.url", self.db_url.clone()))
            .merge(("worker.consumer", consumer))
            .merge(("worker.block_ms", 50))
            .merge(("worker.claim_interval_ms", 50))
            .merge(("worker.claim_idle_ms", 60_000));
        Config::from_figment(&tweak(figment)).expect("test configuration is valid")
    }

    pub fn worker(&self, consumer: &str) -> worker::Worker {
        worker::Worker::new(&self.config(Service::Worker, consumer, |f| f)).expect("worker builds")
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connects to Redis")
    }

    pub async fn pg(&self) -> tokio_postgres::Client {
        testkit::pg_client(&self.db_url)
            .await
            .expect("connects to PostgreSQL")
    }

    /// `votes` as voter -> vote.
    pub async fn votes(&self) -> BTreeMap<String, String> {
        let rows = self
            .pg()
            .await
            .query("SELECT id, vote FROM votes", &[])
            .await
            .unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }

    /// Asserts the invariant: `tallies` equals `SELECT vote, count(*) FROM votes GROUP BY vote`
    /// (zero-count tally rows aside), and returns the tallies.
    pub async fn tallies_checked(&self) -> BTreeMap<String, i64> {
        let pg = self.pg().await;
        let tallies: BTreeMap<String, i64> = pg
            .query("SELECT vote, count FROM tallies WHERE count <> 0", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let counted: BTreeMap<String, i64> = pg
            .query("SELECT vote, count(*) FROM votes GROUP BY vote", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(tallies, counted, "tallies must equal the count of votes");
        tallies
    }

    /// Appends a ballot the way the vote service does; returns its entry id.
    pub async fn xadd(&self, voter: &str, vote: &str) -> String {
        redis::cmd("XADD")
            .arg("ballots")
            .arg("*")
            .arg("voter_id")
            .arg(voter)
            .arg("vote")
            .arg(vote)
            .query_async(&mut self.redis().await)
            .await
            .unwrap()
    }

    /// The id of the newest stream entry of `voter`.
    pub async fn xrange_last_id(&self, voter: &str) -> String {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg("ballots")
            .arg("-")
            .arg("+")
            .query_async(&mut self.redis().await)
            .await
            .unwrap();
        entries
            .into_iter()
            .rev()
            .find(|(_, f)| f.iter().any(|(k, v)| k == "voter_id" && v == voter))
            .map(|(id, _)| id)
            .expect("the voter has an entry")
    }

    pub async fn xlen(&self, key: &str) -> u64 {
        redis::cmd("XLEN")
            .arg(key)
            .query_async(&mut self.redis().await)
            .await
            .unwrap()
    }

    /// The dead-letter stream's entries: `(id, fields)`.
    pub async fn dead_letters(&self) -> Vec<(String, Vec<(String, String)>)> {
        redis::cmd("XRANGE")
            .arg("ballots:dead")
            .arg("-")
            .arg("+")
            .query_async(&mut self.redis().await)
            .await
            .unwrap()
    }

    /// Entries pending in the group, on any consumer.
    pub async fn pending(&self) -> u64 {
        let reply: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
            .arg("ballots")
            .arg("workers")
            .query_async(&mut self.redis().await)
            .await
            .unwrap();
        reply.0
    }
}

/// A voter id, distinct per `n`.
pub fn voter(n: u64) -> String {
    format!("{n:032x}")
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

pub use testkit::eventually;

/// A deadline for loops that poll a condition.
pub struct Deadline {
    at: Instant,
    what: &'static str,
}

impl Deadline {
    pub fn new(limit: Duration, what: &'static str) -> Deadline {
        Deadline {
            at: Instant::now() + limit,
            what,
        }
    }

    /// Fails the test when the deadline has passed; otherwise waits a little.
    pub async fn tick(&self) {
        assert!(
            Instant::now() < self.at,
            "timed out waiting for: {}",
            self.what
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
