//! The harness: a vote service (and optionally a worker) in-process on port 0, over a
//! throwaway Redis (and PostgreSQL), configured with figment from the built-in defaults so
//! nothing reads the process environment; and loadgen runs through the library entry.

use std::future::Future;
use std::net::SocketAddr;

use common::config::{Config, Service};
use figment::Figment;
use figment::providers::Serialized;
use loadgen::{Command, Report};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A vote service, the Redis behind it, and with [`App::start_worker`] a worker and its
/// PostgreSQL. Dropping it stops the services and the servers.
pub struct App {
    pub addr: SocketAddr,
    pub redis: testkit::Redis,
    pub pg: Option<testkit::Postgres>,
    pub db_url: Option<String>,
    stops: Vec<oneshot::Sender<()>>,
}

impl App {
    /// Redis and the vote service.
    pub async fn vote_only() -> App {
        testkit::init_logging();
        let redis = testkit::Redis::start().expect("redis-server starts");
        let mut app = App {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            redis,
            pg: None,
            db_url: None,
            stops: Vec::new(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        app.addr = listener.local_addr().expect("bound address");
        let config = app.config(Service::Vote);
        let stop = app.stopper();
        tokio::spawn(vote::run(config, listener, stop));
        app
    }

    /// Redis, PostgreSQL (a fresh database), the vote service and a worker.
    pub async fn with_worker() -> App {
        let mut app = App::with_database().await;
        app.start_worker().await;
        app
    }

    /// Redis, PostgreSQL (a fresh database, no schema yet) and the vote service; no worker.
    pub async fn with_database() -> App {
        let mut app = App::vote_only().await;
        let pg = testkit::Postgres::start().expect("PostgreSQL starts");
        app.db_url = Some(pg.create_database().await.expect("a fresh database"));
        app.pg = Some(pg);
        app
    }

    pub async fn start_worker(&mut self) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let config = self.config(Service::Worker);
        let stop = self.stopper();
        tokio::spawn(worker::run(config, listener, stop));
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn db_url(&self) -> &str {
        self.db_url.as_deref().expect("the app has a database")
    }

    pub async fn pg(&self) -> tokio_postgres::Client {
        testkit::pg_client(self.db_url())
            .await
            .expect("connects to PostgreSQL")
    }

    fn config(&self, service: Service) -> Config {
        let mut figment = Figment::from(Serialized::defaults(Config::defaults(service)))
            .merge(("listen", "127.0.0.1:0"))
            .merge(("redis.url", self.redis.url()))
            .merge(("worker.block_ms", 50));
        if let Some(db) = &self.db_url {
            figment = figment.merge(("postgres.url", db.clone()));
        }
        Config::from_figment(&figment).expect("the test configuration is valid")
    }

    fn stopper(&mut self) -> impl Future<Output = ()> + use<> {
        let (tx, rx) = oneshot::channel::<()>();
        self.stops.push(tx);
        async move {
            let _ = rx.await;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

/// Parses a loadgen command line; panics unless it is a run.
pub fn config(args: &[&str]) -> loadgen::Config {
    match loadgen::args::parse(args.iter().copied()) {
        Ok(Command::Run(config)) => *config,
        other => panic!("{args:?}: {other:?}"),
    }
}

/// Runs loadgen (quietly) to the end, through the library entry.
pub async fn run(args: &[&str]) -> Report {
    let mut args = args.to_vec();
    args.push("--quiet");
    loadgen::run(&config(&args), std::future::pending())
        .await
        .expect("the run completes")
}

/// What the loadgen binary did.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the loadgen binary with `args`.
pub async fn run_binary(args: &[&str]) -> Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output()
        .await
        .expect("the loadgen binary runs");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
