//! The result service: the live results page. Tallies are read from PostgreSQL by one feed
//! connection and pushed to every open browser over a WebSocket within milliseconds of the
//! worker's commit. It never writes to PostgreSQL (except applying the schema at start).
//!
//! # Layout
//! - [`routes`]: the router (every route is listed at its top) and the plain handlers; its
//!   `State` is the service (the feed, the sockets' hub, the handlers' state), as
//!   `common::embed::Embed` shapes it.
//! - [`feed`]: the dedicated `LISTEN` connection that reads `tallies` and publishes snapshots
//!   through a `tokio::sync::watch` channel.
//! - [`snapshot`]: one tally and its JSON, serialized once for every socket.
//! - [`socket`]: the WebSocket handshake and the per-socket task.
//! - [`page`]: the askama template of the page, its stylesheet and script.
//! - [`numbers`]: percentages that add up to 100, thousands separators by language.
//! - [`join`]: the voting page's address and its QR code, for the page.
#![forbid(unsafe_code)]

pub mod feed;
pub mod join;
pub mod numbers;
pub mod page;
pub mod routes;
pub mod snapshot;
pub mod socket;

use std::future::Future;

use common::config::Config;
use tokio::net::TcpListener;

/// Serves the result service on `listener` until `shutdown` completes; then closes every
/// socket (1001) and stops the feed.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    common::embed::run::<routes::State>(config, listener, shutdown).await
}
