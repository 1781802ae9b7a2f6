//! The worker's small HTTP listener.
//!
//! | method    | path       | answer |
//! |-----------|------------|--------|
//! | GET, HEAD | `/healthz` | `200` while the process runs |
//! | GET, HEAD | `/readyz`  | `200` when Redis and PostgreSQL answer with the configured credentials, the schema is applied and the last step succeeded, else `503` naming why in one line each |
//! | GET       | `/metrics` | Prometheus text |

use std::fmt;
use std::sync::Arc;

use common::metrics::{self, Families, Registry};
use common::web::{self, Resp};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use crate::step::Status;

pub async fn handle(status: Arc<Status>, req: Request<Incoming>) -> Resp {
    match (req.uri().path(), req.method()) {
        ("/healthz", &Method::GET | &Method::HEAD) => web::text(StatusCode::OK, "ok"),
        ("/readyz", &Method::GET | &Method::HEAD) => web::readiness(&problems(&status).await),
        ("/metrics", &Method::GET) => web::metrics(|registry| register_metrics(&status, registry)),
        ("/healthz" | "/readyz", _) => web::method_not_allowed("GET, HEAD"),
        ("/metrics", _) => web::method_not_allowed("GET"),
        _ => web::not_found(),
    }
}

/// What keeps the worker from being ready (Redis or PostgreSQL not answering, the schema not
/// applied, the last step failed); empty when ready.
pub async fn problems(status: &Status) -> Vec<String> {
    let (redis, pg) = tokio::join!(status.redis.ping(), common::pools::pg_ping(&status.pg));
    let mut problems = Vec::new();
    if let Err(e) = redis {
        problems.push(format!("redis: {}", common::error::describe(&e)));
    }
    if let Err(e) = pg {
        problems.push(format!("postgres: {}", common::error::describe(&e)));
    }
    let last_error = status.last_error.lock().expect("not poisoned").clone();
    if let Some(e) = last_error {
        problems.push(format!("last batch failed: {e}"));
    } else if !status
        .schema_ready
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        problems.push("postgres: the schema is not applied yet".to_string());
    }
    problems
}

/// Registers the worker's metrics, read at each scrape.
pub fn register_metrics(status: &Arc<Status>, registry: &mut Registry) {
    metrics::register(registry, status.clone(), write_metrics);
}

fn write_metrics(status: &Arc<Status>, f: &mut Families<'_>) -> fmt::Result {
    let m = &status.metrics;
    f.counter(
        "worker_batches_total",
        "Batches committed to PostgreSQL.",
        m.batches.get(),
    )?;
    f.counter(
        "worker_entries_total",
        "Stream entries applied and acknowledged.",
        m.entries.get(),
    )?;
    f.counter(
        "worker_rows_upserted_total",
        "Rows of `votes` inserted or changed.",
        m.rows.get(),
    )?;
    f.counter(
        "worker_dead_lettered_total",
        "Entries moved to the dead-letter stream.",
        m.dead.get(),
    )?;
    f.counter(
        "worker_claimed_total",
        "Entries claimed from idle consumers.",
        m.claimed.get(),
    )?;
    f.counter(
        "worker_legacy_entries_total",
        "Entries moved from the original app's list into the stream.",
        m.legacy.get(),
    )?;
    f.counter(
        "worker_failures_total",
        "Steps that failed (and will be retried).",
        m.failures.get(),
    )?;
    f.gauge(
        "worker_last_batch_size",
        "Entries in the last batch.",
        m.last_batch.get(),
    )?;
    f.gauge(
        "worker_queue_backlog",
        "Entries in the stream at the last check.",
        m.backlog.get(),
    )
}
