//! The result service's router.
//!
//! | method     | path                 | answer |
//! |------------|----------------------|--------|
//! | GET, HEAD  | `/`                  | the results page, rendered with the current tally (`?qr=0`: without the QR code) |
//! | GET        | `/ws`                | WebSocket: the current snapshot, then every new one |
//! | GET, HEAD  | `/api/tally`         | the current snapshot as JSON |
//! | GET, HEAD  | `/static/result.css` | the stylesheet |
//! | GET, HEAD  | `/static/result.js`  | the page's script |
//! | GET, HEAD  | `/static/favicon.svg` | the icon |
//! | GET, HEAD  | `/healthz`           | `200` while the process serves |
//! | GET, HEAD  | `/readyz`            | `200` when the feed holds a fresh tally, else `503` naming why |
//! | GET        | `/metrics`           | Prometheus text |
//!
//! Anything else is `404`, or `405` with `Allow` on a known path. Nothing here touches
//! PostgreSQL: every answer reads the feed's latest snapshot.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::http::header::{self, HeaderValue};
use ::http::{Method, Request, StatusCode};
use askama::Template;
use bytes::Bytes;
use common::config::Config;
use common::embed::Embed;
use common::metrics::{self, Counter, Families, Registry};
use common::web::{self, Resp};
use domain::options::Options;
use hyper::body::Incoming;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::feed::{Feed, FeedStats};
use crate::join;
use crate::numbers;
use crate::page::{Join, ResultPage, SCRIPT_JS, STYLE_CSS};
use crate::snapshot::Snapshot;
use crate::socket::{self, Hub};

/// The result service: the feed, the sockets' hub and everything the handlers share
/// ([`Embed`] builds it).
pub struct State {
    options: Options,
    question: String,
    /// `public_url`: the voting page's address, when configured.
    public_url: String,
    /// `result.show_qr`.
    show_qr: bool,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    hub: Arc<Hub>,
    feed: Arc<FeedStats>,
    /// Believe `X-Forwarded-Proto` (`http.trust_proxy`).
    trust_proxy: bool,
    pages: Counter,
    api: Counter,
    /// The feed's task and the sockets' heartbeat.
    tasks: [JoinHandle<()>; 2],
}

impl Embed for State {
    /// Starts the feed and the sockets' heartbeat; nothing connects before the feed's first
    /// attempt.
    fn start(config: &Config) -> anyhow::Result<State> {
        let stats = Arc::new(FeedStats::default());
        let (feed, snapshots) = Feed::new(config, stats.clone())?;
        let hub = Arc::new(Hub::new(config.result.max_sockets.get()));
        let feed_task = tokio::spawn(feed.run(hub.stop_signal()));
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
        Ok(State {
            options: config.options().clone(),
            question: config.question(),
            public_url: config.public_url.clone(),
            show_qr: config.result.show_qr,
            snapshots,
            hub,
            feed: stats,
            trust_proxy: config.http.trust_proxy,
            pages: Counter::default(),
            api: Counter::default(),
            tasks: [feed_task, heartbeat],
        })
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        route(&self, req).await
    }

    /// Not ready without a fresh tally from PostgreSQL.
    async fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.snapshot().stale {
            let why = self
                .feed
                .error()
                .unwrap_or_else(|| "no tally read yet".to_string());
            problems.push(format!("postgres: {why}"));
        }
        problems
    }

    fn register_metrics(self: &Arc<Self>, registry: &mut Registry) {
        metrics::register(registry, self.clone(), write_metrics);
    }

    /// Closes every socket (1001, waiting up to `grace` for them) and stops the feed.
    async fn stop(&self, grace: Duration) {
        self.hub.shut_down(grace).await;
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl State {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }
}

async fn route(state: &Arc<State>, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    match (req.uri().path(), method) {
        ("/", Method::GET | Method::HEAD) => page(state, &req),
        ("/ws", Method::GET) => {
            socket::upgrade(&state.hub, &state.snapshots, state.trust_proxy, req)
        }
        ("/api/tally", Method::GET | Method::HEAD) => tally(state),
        ("/static/result.css", Method::GET | Method::HEAD) => {
            web::asset("text/css; charset=utf-8", STYLE_CSS)
        }
        ("/static/result.js", Method::GET | Method::HEAD) => {
            web::asset("text/javascript; charset=utf-8", SCRIPT_JS)
        }
        ("/static/favicon.svg", Method::GET | Method::HEAD) => {
            web::asset("image/svg+xml", common::FAVICON_SVG)
        }
        ("/healthz", Method::GET | Method::HEAD) => web::text(StatusCode::OK, "ok"),
        ("/readyz", Method::GET | Method::HEAD) => web::readiness(&state.problems().await),
        ("/metrics", Method::GET) => web::metrics(|registry| state.register_metrics(registry)),
        ("/ws" | "/metrics", _) => web::method_not_allowed("GET"),
        (
            "/"
            | "/api/tally"
            | "/static/result.css"
            | "/static/result.js"
            | "/static/favicon.svg"
            | "/healthz"
            | "/readyz",
            _,
        ) => web::method_not_allowed("GET, HEAD"),
        _ => web::not_found(),
    }
}

fn no_store(mut resp: Resp) -> Resp {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn page(state: &State, req: &Request<Incoming>) -> Resp {
    state.pages.inc();
    let snapshot = state.snapshot();
    let headers = req.headers();
    let language = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    let join = (state.show_qr && !qr_hidden(req.uri().query()))
        .then(|| join::vote_url(&state.public_url, state.trust_proxy, headers))
        .flatten()
        .and_then(Join::new);
    let page = ResultPage::new(
        &state.question,
        &state.options,
        &snapshot,
        numbers::grouping(language),
        join,
    );
    match page.render() {
        Ok(body) => no_store(web::html(StatusCode::OK, body)),
        Err(e) => {
            tracing::error!(error = %e, "rendering the results page failed");
            web::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
        }
    }
}

/// Whether the page's query hides the QR code: `qr=0` (or `off`, `false`, `no`).
fn qr_hidden(query: Option<&str>) -> bool {
    query.unwrap_or_default().split('&').any(|pair| {
        matches!(
            pair.split_once('='),
            Some(("qr", "0" | "off" | "false" | "no"))
        )
    })
}

fn tally(state: &State) -> Resp {
    state.api.inc();
    let json = Bytes::from(state.snapshot().json().clone());
    no_store(web::respond(StatusCode::OK, "application/json", json))
}

/// Microseconds as seconds, Prometheus' base unit.
fn seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// The service's metrics, read at each scrape.
fn write_metrics(state: &Arc<State>, f: &mut Families<'_>) -> fmt::Result {
    let hub = &state.hub;
    let feed = &state.feed;
    let snapshot = state.snapshot();
    f.gauge(
        "result_sockets_open",
        "WebSockets open now.",
        hub.open() as u64,
    )?;
    f.counter(
        "result_sockets_opened_total",
        "WebSockets opened.",
        hub.opened.get(),
    )?;
    f.labeled_counter(
        "result_sockets_refused_total",
        "WebSocket requests refused before upgrading, by reason.",
        "reason",
        &[
            ("full", hub.refused_full.get()),
            ("cross_origin", hub.refused_cross_origin.get()),
            ("not_websocket", hub.refused_not_websocket.get()),
        ],
    )?;
    f.labeled_counter(
        "result_sockets_dropped_total",
        "WebSockets ended by the server, by reason.",
        "reason",
        &[
            ("slow", hub.dropped_slow.get()),
            ("no_pong", hub.dropped_dead.get()),
            ("too_large", hub.closed_too_large.get()),
            ("protocol", hub.closed_protocol.get()),
        ],
    )?;
    f.counter(
        "result_frames_sent_total",
        "Snapshot frames sent to sockets.",
        hub.frames.get(),
    )?;
    f.counter(
        "result_snapshots_published_total",
        "Snapshots published to the sockets.",
        feed.published.get(),
    )?;
    f.gauge(
        "result_snapshot_version",
        "Version of the current snapshot.",
        snapshot.version,
    )?;
    f.gauge(
        "result_snapshot_stale",
        "1 while the current snapshot could not be confirmed with PostgreSQL.",
        u64::from(snapshot.stale),
    )?;
    f.gauge(
        "result_snapshot_votes",
        "Votes in the current snapshot.",
        snapshot.total,
    )?;
    f.counter(
        "result_notifications_received_total",
        "NOTIFY messages received from the worker.",
        feed.notifications.get(),
    )?;
    f.labeled_counter(
        "result_refreshes_total",
        "Reads of the tallies table, by trigger.",
        "trigger",
        &[
            ("notify", feed.refreshes_notify.get()),
            ("poll", feed.refreshes_poll.get()),
            ("connect", feed.refreshes_connect.get()),
        ],
    )?;
    f.sum_and_count(
        "result_notify_lag_seconds",
        "Delays from a notification's arrival to the publication of its snapshot.",
        seconds(feed.lag_sum_us.get()),
        feed.lag_count.get(),
    )?;
    f.gauge(
        "result_notify_lag_last_seconds",
        "The last notification-to-publication delay.",
        seconds(feed.lag_last_us.get()),
    )?;
    f.gauge(
        "result_notify_lag_max_seconds",
        "The largest notification-to-publication delay.",
        seconds(feed.lag_max_us.get()),
    )?;
    f.counter(
        "result_feed_connects_total",
        "Connections of the feed to PostgreSQL.",
        feed.connects.get(),
    )?;
    f.counter(
        "result_feed_failures_total",
        "Feed connections lost or failed.",
        feed.failures.get(),
    )?;
    f.counter(
        "result_pages_total",
        "Results pages served.",
        state.pages.get(),
    )?;
    f.counter(
        "result_api_requests_total",
        "GET /api/tally answered.",
        state.api.get(),
    )?;
    f.counter(
        "result_connections_write_timeout_total",
        "Connections closed because the client took none of its answer within http.write_timeout_ms (this process).",
        web::WRITE_TIMEOUTS.get(),
    )
}
