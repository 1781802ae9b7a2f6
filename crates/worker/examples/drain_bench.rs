//! Benchmark: how fast the worker drains a backlog of queued votes into PostgreSQL.
//!
//! `cargo run --release -p worker --example drain_bench -- [VOTES] [BATCH]` (defaults 100000
//! and the configured default of `worker.batch_size`). Starts a throwaway redis-server and PostgreSQL (testkit) on 127.0.0.1, queues
//! VOTES ballots from distinct voters, then times a worker draining them, step by step as in
//! production. The reference is one `INSERT … SELECT unnest` of the same rows into a plain
//! table on the same server: the ratio is what the worker's Redis round trips, parsing,
//! dedupe, version guard, tally triggers and acknowledgements cost on top of the bare insert.

use std::time::Instant;

use common::config::{Config, Service};
use figment::Figment;
use figment::providers::Serialized;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let votes: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let batch: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(Config::defaults(Service::Worker).worker.batch_size);

    let redis = testkit::Redis::start()?;
    let pg = testkit::Postgres::start()?;
    let db = pg.create_database().await?;
    let config = Config::from_figment(
        &Figment::from(Serialized::defaults(Config::defaults(Service::Worker)))
            .merge(("redis.url", redis.url()))
            .merge(("postgres.url", db.clone()))
            .merge(("worker.batch_size", batch))
            .merge(("worker.block_ms", 10)),
    )?;
    let mut worker = worker::Worker::new(&config)?;
    worker.connect().await?;

    // Queue the backlog (pipelined, 10,000 entries a round trip).
    let mut conn = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let voter = |n: u64| format!("{n:032x}");
    for chunk in (0..votes).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for n in chunk {
            let vote = if n % 3 == 0 { "a" } else { "b" };
            pipe.cmd("XADD")
                .arg("ballots")
                .arg("*")
                .arg("voter_id")
                .arg(voter(*n))
                .arg("vote")
                .arg(vote)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }

    let started = Instant::now();
    let mut drained = 0u64;
    while drained < votes {
        let outcome = worker.step().await?;
        drained += outcome.entries as u64;
    }
    let worker_secs = started.elapsed().as_secs_f64();

    // Reference: the same rows in one statement.
    let (client, connection) = tokio_postgres::connect(&db, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE votes_ref (id text PRIMARY KEY, vote text NOT NULL)")
        .await?;
    let ids: Vec<String> = (0..votes).map(voter).collect();
    let choices: Vec<&str> = (0..votes)
        .map(|n| if n % 3 == 0 { "a" } else { "b" })
        .collect();
    let started = Instant::now();
    client
        .execute(
            "INSERT INTO votes_ref (id, vote) SELECT * FROM unnest($1::text[], $2::text[])",
            &[&ids, &choices],
        )
        .await?;
    let reference_secs = started.elapsed().as_secs_f64();

    let stored: i64 = client
        .query_one("SELECT count(*) FROM votes", &[])
        .await?
        .get(0);
    let tallied: i64 = client
        .query_one("SELECT coalesce(sum(count), 0)::bigint FROM tallies", &[])
        .await?
        .get(0);
    anyhow::ensure!(
        stored as u64 == votes && tallied as u64 == votes,
        "lost votes: {stored} stored, {tallied} tallied"
    );

    let rate = votes as f64 / worker_secs;
    let reference = votes as f64 / reference_secs;
    println!("votes           {votes}");
    println!("batch size      {batch}");
    println!("worker drain    {worker_secs:.3} s  {rate:.0} votes/s");
    println!(
        "reference       {reference_secs:.3} s  {reference:.0} rows/s (one INSERT ... SELECT unnest)"
    );
    println!(
        "ratio           {:.0}% of the reference",
        100.0 * rate / reference
    );
    Ok(())
}
