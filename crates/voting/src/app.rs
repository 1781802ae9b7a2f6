//! The three services in one process, behind the routes Nginx has.
//!
//! | method    | path          | answer |
//! |-----------|---------------|--------|
//! | any       | `/vote/…`     | the vote service's router, with `/vote` taken off the path |
//! | any       | `/result/…`   | the result service's router, with `/result` taken off (the WebSocket `/result/ws` too) |
//! | GET, HEAD | `/`, `/vote`  | `302` to `/vote/` |
//! | GET, HEAD | `/result`     | `302` to `/result/` |
//! | GET, HEAD | `/healthz`    | `200` while the process serves |
//! | GET, HEAD | `/readyz`     | `200` when vote, result and the worker are all ready, else `503` naming why |
//! | GET       | `/metrics`    | the three services' Prometheus text, then the supervised servers' |
//!
//! Anything else is `404`, or `405` with `Allow` on a known path. A rewritten request keeps its
//! method, headers, body, query and extensions (hyper's upgrade among them, so the result
//! service answers the WebSocket handshake itself).

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use ::http::header::{self, HeaderValue};
use ::http::uri::PathAndQuery;
use ::http::{Method, Request, StatusCode, Uri};
use common::config::{Config, HttpConfig};
use common::embed::Embed;
use common::metrics::{self, Families};
use common::web::{self, Resp};
use hyper::body::Incoming;
use servers::ChildStats;
use tokio::net::TcpListener;

/// A supervised server, as `/metrics` shows it.
pub type ChildInfo = (&'static str, Arc<ChildStats>);

/// The services, started and not yet serving.
pub struct App {
    services: Arc<Services>,
    http: HttpConfig,
}

/// The three services, each a [`common::embed::Embed`], and the supervised servers.
struct Services {
    vote: Arc<vote::routes::State>,
    result: Arc<result::routes::State>,
    worker: Arc<worker::Loop>,
    children: Arc<[ChildInfo]>,
}

impl App {
    /// Starts vote, result (its feed) and the worker (its loop) from one configuration;
    /// nothing waits for Redis or PostgreSQL. `children` are the supervised servers, for
    /// `/metrics`.
    pub fn start(config: &Config, children: Vec<ChildInfo>) -> anyhow::Result<App> {
        let services = Services {
            vote: Arc::new(vote::routes::State::start(config)?.single_process()),
            result: Arc::new(result::routes::State::start(config)?),
            worker: Arc::new(worker::Loop::start(config)?),
            children: children.into(),
        };
        Ok(App {
            services: Arc::new(services),
            http: config.http,
        })
    }

    /// Serves on `listener` until `shutdown` completes; then drains the open requests, lets
    /// the worker finish its batch, and closes the WebSockets.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let services = self.services;
        let grace = self.http.shutdown_grace_ms.get();
        let handler = services.clone();
        let served = web::serve(
            listener,
            self.http,
            move |req| handle(handler.clone(), req),
            shutdown,
        )
        .await;
        tokio::join!(
            services.vote.stop(grace),
            services.result.stop(grace),
            services.worker.stop(grace)
        );
        served
    }
}

/// Routes one request.
async fn handle(services: Arc<Services>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_owned();
    if let Some(rest) = under(&path, "/vote") {
        return match rewrite(req, rest.to_owned()) {
            Ok(req) => services.vote.clone().handle(req).await,
            Err(req) => redirect(&req, "/vote/"),
        };
    }
    if let Some(rest) = under(&path, "/result") {
        return match rewrite(req, rest.to_owned()) {
            Ok(req) => services.result.clone().handle(req).await,
            Err(req) => redirect(&req, "/result/"),
        };
    }
    match (path.as_str(), req.method()) {
        ("/", &Method::GET | &Method::HEAD) => redirect(&req, "/vote/"),
        ("/healthz", &Method::GET | &Method::HEAD) => web::text(StatusCode::OK, "ok"),
        ("/readyz", &Method::GET | &Method::HEAD) => readyz(&services).await,
        ("/metrics", &Method::GET) => web::metrics(|registry| {
            services.vote.register_metrics(registry);
            services.result.register_metrics(registry);
            services.worker.register_metrics(registry);
            metrics::register(registry, services.children.clone(), write_children);
        }),
        ("/" | "/healthz" | "/readyz", _) => web::method_not_allowed("GET, HEAD"),
        ("/metrics", _) => web::method_not_allowed("GET"),
        _ => web::not_found(),
    }
}

/// The rest of `path` below `prefix` (`""` for the prefix itself, `"/…"` below it).
fn under<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// The same request with the path `rest` (and the query it had); the request itself back when
/// `rest` is empty (the prefix without its slash: a redirect).
#[allow(clippy::result_large_err)] // the request is handed back, not an error
fn rewrite(req: Request<Incoming>, rest: String) -> Result<Request<Incoming>, Request<Incoming>> {
    if rest.is_empty() {
        return Err(req);
    }
    let (mut parts, body) = req.into_parts();
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest,
    };
    let mut uri = parts.uri.clone().into_parts();
    uri.path_and_query = Some(
        PathAndQuery::try_from(path_and_query)
            .expect("a suffix of a valid path, with its valid query, is a valid path and query"),
    );
    parts.uri = Uri::from_parts(uri).expect("only the path of a valid URI changed");
    Ok(Request::from_parts(parts, body))
}

/// `302 Found` to `to` (with the request's query) for GET and HEAD; `405` for anything else.
fn redirect(req: &Request<Incoming>, to: &'static str) -> Resp {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        let location = match req.uri().query() {
            Some(query) => format!("{to}?{query}"),
            None => to.to_string(),
        };
        let mut resp = web::text(StatusCode::FOUND, format!("see {location}"));
        resp.headers_mut().insert(
            header::LOCATION,
            HeaderValue::try_from(location).expect("a path and a valid query make a header value"),
        );
        resp
    } else {
        web::method_not_allowed("GET, HEAD")
    }
}

async fn readyz(services: &Services) -> Resp {
    let (vote, result, worker) = tokio::join!(
        services.vote.problems(),
        services.result.problems(),
        services.worker.problems()
    );
    let problems: Vec<String> = [("vote", vote), ("result", result), ("worker", worker)]
        .into_iter()
        .flat_map(|(service, problems)| {
            problems.into_iter().map(move |p| format!("{service}: {p}"))
        })
        .collect();
    web::readiness(&problems)
}

/// The supervised servers' metrics (none when `voting` started none).
fn write_children(children: &Arc<[ChildInfo]>, f: &mut Families<'_>) -> fmt::Result {
    if children.is_empty() {
        return Ok(());
    }
    let each = |value: fn(&ChildStats) -> u64| -> Vec<(&str, u64)> {
        children.iter().map(|(name, s)| (*name, value(s))).collect()
    };
    f.labeled_gauge(
        "voting_daemon_up",
        "1 while the supervised server runs.",
        "daemon",
        &each(|s| s.up()),
    )?;
    f.labeled_counter(
        "voting_daemon_restarts_total",
        "Restarts of the supervised server after it died.",
        "daemon",
        &each(|s| s.restarts()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(under("/vote", "/vote"), Some(""));
        assert_eq!(under("/vote/", "/vote"), Some("/"));
        assert_eq!(under("/vote/api/vote", "/vote"), Some("/api/vote"));
        assert_eq!(under("/voter", "/vote"), None);
        assert_eq!(under("/result/ws", "/result"), Some("/ws"));
        assert_eq!(under("/", "/vote"), None);
    }
}
