//! The harness (testkit's): a fresh database on the test process's PostgreSQL (and a Redis
//! when the vote service and the worker take part), the result service on `127.0.0.1:0`, and
//! a real WebSocket client; plus what only these tests need.

use common::config::Program;
use figment::Figment;
pub use testkit::{App, DEADLINE, Infra, Received, Socket, eventually, voter};

/// Starts the result service against `infra`, with `tweak` merged into its configuration.
pub async fn spawn_result(infra: &Infra, tweak: impl FnOnce(Figment) -> Figment) -> App {
    App::spawn(result::run, infra.config(Program::Result, tweak), None).await
}

/// Records `voter`'s vote for `key` as the worker does: upsert, `NOTIFY`, one commit.
pub async fn cast(infra: &Infra, voter: &str, key: &str) {
    let mut client = infra.pg().await;
    let tx = client.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO votes (id, vote) VALUES ($1, $2) \
         ON CONFLICT (id) DO UPDATE SET vote = EXCLUDED.vote",
        &[&voter, &key],
    )
    .await
    .expect("the vote is written");
    tx.batch_execute("NOTIFY tallies").await.unwrap();
    tx.commit().await.expect("the vote commits");
}

/// A worker on `infra` (stepped by the test).
pub fn worker(infra: &Infra, tweak: impl FnOnce(Figment) -> Figment) -> worker::Worker {
    let config = infra.config(Program::Worker, |f| {
        tweak(f.merge(("worker.consumer", "test-worker")))
    });
    worker::Worker::new(&config).expect("the worker builds")
}

/// Steps `worker` until a step finds nothing new to do.
pub async fn drain(worker: &mut worker::Worker) {
    loop {
        let outcome = worker.step().await.expect("the worker step succeeds");
        if outcome.is_idle() && outcome.source == worker::step::Source::New {
            return;
        }
    }
}

/// The value of the Prometheus sample `name` (exactly, labels included) in `text`.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} in:\n{text}"))
}
