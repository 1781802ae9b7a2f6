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
//! - [`Loop`]: the worker as a service (`common::embed::Embed`): the loop in a task, its
//!   health routes, its stop between batches.
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
use std::sync::Arc;
use std::time::Duration;

use common::backoff::{Backoff, Outage};
use common::config::Config;
use common::embed::Embed;
use common::metrics::Registry;
use common::web::Resp;
use http::Request;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use step::{Status, StepOutcome, Worker};

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
    common::embed::run::<Loop>(config, listener, shutdown).await
}

/// The worker as a service: [`Worker`] stepping in a task of its own, and the [`Status`] its
/// health routes read.
pub struct Loop {
    status: Arc<Status>,
    /// Turns true to stop the loop; closed once the loop has ended.
    stop: watch::Sender<bool>,
}

impl Embed for Loop {
    fn start(config: &Config) -> anyhow::Result<Loop> {
        let worker = Worker::new(config)?;
        tracing::info!(consumer = worker.consumer(), "worker starting");
        let status = worker.status();
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(run_loop(worker, stop_rx));
        Ok(Loop { status, stop })
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        health::handle(self.status.clone(), req).await
    }

    async fn problems(&self) -> Vec<String> {
        health::problems(&self.status).await
    }

    fn register_metrics(self: &Arc<Self>, registry: &mut Registry) {
        health::register_metrics(&self.status, registry);
    }

    /// Waits for the batch in flight, then ends the loop.
    async fn stop(&self, _grace: Duration) {
        self.stop.send_replace(true);
        // The loop's receiver is dropped when it ends (or panics).
        self.stop.closed().await;
    }
}

/// Steps `worker` until `stop` turns true. A failed step is retried with capped backoff; the
/// stop is observed between batches. `stop` is held until the loop has ended, so its sender's
/// `closed()` says the batch in flight is over (not merely that the stop was seen).
async fn run_loop(mut worker: Worker, mut stop: watch::Receiver<bool>) {
    let shutdown = async {
        let _ = stop.wait_for(|stop| *stop).await;
    };
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
