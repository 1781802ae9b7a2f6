//! The result service: the live results page. Tallies are read from PostgreSQL by one feed
//! connection and pushed to every open browser over a WebSocket within milliseconds of the
//! worker's commit. It never writes to PostgreSQL (except applying the schema at start).
//!
//! # Layout
//! - [`routes`]: the router (every route is listed at its top) and the plain handlers.
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
use std::sync::Arc;
use std::time::Duration;

use common::config::Config;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::feed::{Feed, FeedStats};
use crate::socket::Hub;

/// Serves the result service on `listener` until `shutdown` completes; then closes every
/// socket (1001) and stops the feed.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let service = Service::start(&config)?;
    let state = service.state();
    let grace = config.http.shutdown_grace_ms.get();
    let served = common::web::serve(
        listener,
        config.http,
        move |req| routes::handle(state.clone(), req),
        shutdown,
    )
    .await;
    service.stop(grace).await;
    served
}

/// The result service without a listener: the feed, the sockets' hub and the routes' state,
/// so that another server (the all-in-one `voting` binary) can serve [`routes::handle`].
pub struct Service {
    state: Arc<routes::State>,
    hub: Arc<Hub>,
    feed: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
}

impl Service {
    /// Starts the feed and the sockets' heartbeat (inside a tokio runtime); nothing connects
    /// before the feed's first attempt.
    pub fn start(config: &Config) -> anyhow::Result<Service> {
        let stats = Arc::new(FeedStats::default());
        let (feed, snapshots) = Feed::new(config, stats.clone())?;
        let hub = Arc::new(Hub::new(config.result.max_sockets.get()));
        let feed = tokio::spawn(feed.run(hub.stop_signal()));
        let heartbeat = tokio::spawn({
            let hub = hub.clone();
            let mut stop = hub.stop_signal();
            async move {
                let start = tokio::time::Instant::now() + socket::PING_INTERVAL;
                let mut ticks = tokio::time::interval_at(start, socket::PING_INTERVAL);
                loop {
                    tokio::select! {
                        _ = ticks.tick() => hub.beat(),
                        _ = socket::stopped(&mut stop) => return,
                    }
                }
            }
        });
        let state = Arc::new(routes::State::new(config, snapshots, hub.clone(), stats));
        Ok(Service {
            state,
            hub,
            feed,
            heartbeat,
        })
    }

    /// What [`routes::handle`] needs.
    pub fn state(&self) -> Arc<routes::State> {
        self.state.clone()
    }

    /// Closes every socket (1001, waiting up to `grace` for them) and stops the feed.
    pub async fn stop(self, grace: Duration) {
        self.hub.shut_down(grace).await;
        self.feed.abort();
        self.heartbeat.abort();
    }
}
