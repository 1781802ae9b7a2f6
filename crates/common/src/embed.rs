//! One shape for the three services: vote, result and the worker each implement [`Embed`].
//! Each binary runs its service alone with [`run`]; the all-in-one `voting` starts the three
//! from one configuration and puts one router in front of them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::metrics::Registry;
use crate::web::{self, Resp};

/// A service that can run alone behind its own listener or inside another server.
pub trait Embed: Send + Sync + Sized + 'static {
    /// Builds the service from `config` and starts its background work (result's feed, the
    /// worker's loop), inside a tokio runtime. Nothing waits for Redis or PostgreSQL.
    fn start(config: &Config) -> anyhow::Result<Self>;

    /// Answers one request on the service's own routes (the worker's are health and metrics).
    fn handle(self: Arc<Self>, req: Request<Incoming>) -> impl Future<Output = Resp> + Send;

    /// What keeps the service from being ready, one line each (its `/readyz`); empty when
    /// ready.
    fn problems(&self) -> impl Future<Output = Vec<String>> + Send;

    /// Registers the service's metrics, read at each scrape (its `/metrics`, and `voting`'s).
    fn register_metrics(self: &Arc<Self>, registry: &mut Registry);

    /// Ends the background work once the listener has drained: result closes its WebSockets
    /// (waiting up to `grace` for them), the worker finishes its batch.
    fn stop(&self, grace: Duration) -> impl Future<Output = ()> + Send;
}

/// Serves `S` alone on `listener` until `shutdown` completes; then drains the open requests
/// and stops it. This is `vote::run`, `result::run` and `worker::run`.
pub async fn run<S: Embed>(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let service = Arc::new(S::start(&config)?);
    let grace = config.http.shutdown_grace_ms.get();
    let handler = service.clone();
    let served = web::serve(
        listener,
        config.http,
        move |req| handler.clone().handle(req),
        shutdown,
    )
    .await;
    service.stop(grace).await;
    served
}
