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

use std::fmt::Write;
use std::future::Future;
use std::sync::Arc;

use ::http::header::{self, HeaderValue};
use ::http::uri::PathAndQuery;
use ::http::{Method, Request, StatusCode, Uri};
use common::config::{Config, HttpConfig};
use common::web::{self, Resp};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::supervise::ChildStats;

/// A supervised server, as `/metrics` shows it.
pub type ChildInfo = (&'static str, Arc<ChildStats>);

/// The services, built and not yet serving.
pub struct App {
    routes: Arc<Routes>,
    result: result::Service,
    worker: worker::Worker,
    http: HttpConfig,
}

/// What the router needs of each service.
struct Routes {
    vote: Arc<vote::routes::State>,
    result: Arc<result::routes::State>,
    worker: Arc<worker::step::Status>,
    children: Vec<ChildInfo>,
}

impl App {
    /// Builds vote, result (its feed starts) and the worker from one configuration; nothing
    /// waits for Redis or PostgreSQL. `children` are the supervised servers, for `/metrics`.
    pub fn start(config: &Config, children: Vec<ChildInfo>) -> anyhow::Result<App> {
        let vote = Arc::new(vote::routes::State::new(config)?.single_process());
        let result = result::Service::start(config)?;
        let worker = worker::Worker::new(config)?;
        tracing::info!(consumer = worker.consumer(), "worker starting");
        let routes = Arc::new(Routes {
            vote,
            result: result.state(),
            worker: worker.status(),
            children,
        });
        Ok(App {
            routes,
            result,
            worker,
            http: config.http,
        })
    }

    /// Serves on `listener` and runs the worker until `shutdown` completes; then drains the
    /// open requests, lets the worker finish its batch, and closes the WebSockets.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let worker = tokio::spawn(worker::run_loop(self.worker, async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }));
        let routes = self.routes;
        let grace = self.http.shutdown_grace_ms.get();
        let stop = &stop_tx;
        let served = common::web::serve(
            listener,
            self.http,
            move |req| handle(routes.clone(), req),
            async move {
                shutdown.await;
                // The worker stops between batches while the requests drain.
                stop.send_replace(true);
            },
        )
        .await;
        stop_tx.send_replace(true);
        if let Err(e) = worker.await {
            tracing::error!(error = %e, "the worker task failed");
        }
        self.result.stop(grace).await;
        served
    }
}

/// Routes one request.
async fn handle(routes: Arc<Routes>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_owned();
    if let Some(rest) = under(&path, "/vote") {
        return match rewrite(req, rest.to_owned()) {
            Ok(req) => vote::routes::handle(routes.vote.clone(), req).await,
            Err(req) => redirect(&req, "/vote/"),
        };
    }
    if let Some(rest) = under(&path, "/result") {
        return match rewrite(req, rest.to_owned()) {
            Ok(req) => result::routes::handle(routes.result.clone(), req).await,
            Err(req) => redirect(&req, "/result/"),
        };
    }
    let mut resp = match (path.as_str(), req.method()) {
        ("/", &Method::GET | &Method::HEAD) => redirect(&req, "/vote/"),
        ("/healthz", &Method::GET | &Method::HEAD) => web::text(StatusCode::OK, "ok"),
        ("/readyz", &Method::GET | &Method::HEAD) => readyz(&routes).await,
        ("/metrics", &Method::GET) => web::metrics(metrics(&routes)),
        ("/" | "/healthz" | "/readyz", _) => web::method_not_allowed("GET, HEAD"),
        ("/metrics", _) => web::method_not_allowed("GET"),
        _ => web::not_found(),
    };
    web::harden(&mut resp);
    resp
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
    let mut resp = if matches!(*req.method(), Method::GET | Method::HEAD) {
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
    };
    web::harden(&mut resp);
    resp
}

async fn readyz(routes: &Routes) -> Resp {
    let (vote, worker) = tokio::join!(
        vote::routes::problems(&routes.vote),
        worker::health::problems(&routes.worker)
    );
    let result = result::routes::problems(&routes.result);
    let problems: Vec<String> = [("vote", vote), ("result", result), ("worker", worker)]
        .into_iter()
        .flat_map(|(service, problems)| {
            problems.into_iter().map(move |p| format!("{service}: {p}"))
        })
        .collect();
    web::readiness(&problems)
}

fn metrics(routes: &Routes) -> String {
    let mut text = vote::routes::metrics(&routes.vote);
    text.push_str(&result::routes::metrics(&routes.result));
    text.push_str(&worker::health::metrics(&routes.worker));
    if !routes.children.is_empty() {
        let families = [
            (
                "voting_daemon_up",
                "1 while the supervised server runs.",
                "gauge",
                (|s: &ChildStats| s.up.get()) as fn(&ChildStats) -> u64,
            ),
            (
                "voting_daemon_restarts_total",
                "Restarts of the supervised server after it died.",
                "counter",
                |s: &ChildStats| s.restarts.get(),
            ),
        ];
        for (name, help, kind, value) in families {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (daemon, stats) in &routes.children {
                let _ = writeln!(text, "{name}{{daemon=\"{daemon}\"}} {}", value(stats));
            }
        }
    }
    text
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
