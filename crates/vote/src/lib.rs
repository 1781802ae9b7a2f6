//! The vote service: a page to pick an option, and an API; each vote is appended to a Redis
//! stream for the worker. It never talks to PostgreSQL.
//!
//! # Layout
//! - [`routes`]: the router (every route is listed at its top) and the handlers.
//! - [`input`]: parsing of what a client sends: form body, JSON body, cookies, cross-site checks.
//! - [`queue`]: appending a ballot to the stream, refusing when the backlog is over its bound.
//! - [`page`]: the askama template of the page.
#![forbid(unsafe_code)]

pub mod input;
pub mod page;
pub mod queue;
pub mod routes;

use std::future::Future;
use std::sync::Arc;

use common::config::Config;
use tokio::net::TcpListener;

/// Serves the vote service on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let state = Arc::new(routes::State::new(&config)?);
    common::web::serve(
        listener,
        config.http,
        move |req| routes::handle(state.clone(), req),
        shutdown,
    )
    .await
}
