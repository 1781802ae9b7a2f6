//! The worker: moves queued votes from the Redis stream into PostgreSQL, in batches, without
//! ever losing one, and serves its health and metrics over HTTP.
//!
//! # Layout
//! - [`step`]: [`Worker::step`], one batch from Redis into PostgreSQL; tests drive it directly.
//! - [`stream`]: the Redis commands (consumer group, claims, acknowledgement, dead letters, the
//!   original app's list).
//! - [`ballot`]: parsing entries into ballots or dead-letter reasons; newest-per-voter.
//! - [`store`]: the batched, version-guarded upsert in one transaction.
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`reset`]: `worker reset` and `voting reset`, a new poll: what it deletes, the
//!   confirmation, the deletion.
#![forbid(unsafe_code)]

pub mod ballot;
pub mod health;
pub mod reset;
pub mod step;
pub mod store;
pub mod stream;

use std::future::Future;
use std::time::Duration;

use common::backoff::{Backoff, Outage};
use common::config::Config;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use step::{StepOutcome, Worker};

/// A failed batch is retried after 100 ms, then twice as long each time, up to 5 s.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Runs the worker until `shutdown` completes, with its health listener on `listener`.
/// Shutdown is observed between batches: a batch in flight is committed and acknowledged (or
/// not at all), never cut in half.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let worker = Worker::new(&config)?;
    tracing::info!(consumer = worker.consumer(), "worker starting");
    let status = worker.status();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let http = tokio::spawn(common::web::serve(
        listener,
        config.http,
        move |req| health::handle(status.clone(), req),
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        },
    ));
    run_loop(worker, shutdown).await;
    let _ = stop_tx.send(true);
    http.await??;
    Ok(())
}

/// Steps `worker` until `shutdown` completes, without an HTTP listener (the all-in-one
/// binary serves the health routes itself, from [`Worker::status`]). A failed step is retried
/// with capped backoff; shutdown is observed between batches.
pub async fn run_loop(mut worker: Worker, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut stopping = false;
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    let mut outage = Outage::default();
    while !stopping {
        let step = worker.step();
        tokio::pin!(step);
        // Poll the shutdown signal while the step runs, without cancelling the step.
        let result = loop {
            tokio::select! {
                result = &mut step => break result,
                _ = &mut shutdown, if !stopping => stopping = true,
            }
        };
        match result {
            Ok(_) => {
                backoff.reset();
                if let Some(failures) = outage.recovered() {
                    tracing::info!(failures, "batches succeed again");
                }
            }
            Err(e) => {
                let wait = backoff.next_wait();
                let reason = common::error::describe(&e);
                if outage.failed(&reason) {
                    tracing::warn!(error = reason, retry_in = ?wait, "batch failed; votes stay queued; retrying with backoff (logged again when the reason changes)");
                } else {
                    tracing::debug!(error = reason, retry_in = ?wait, "the same failure again; still retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = &mut shutdown, if !stopping => stopping = true,
                }
            }
        }
    }
}
