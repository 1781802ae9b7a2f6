//! The whole voting app in one process: vote, result and the worker behind the routes Nginx
//! has (`/vote/`, `/result/`, `/result/ws`, `/` -> `/vote/`), with its own private Redis and
//! PostgreSQL (on Unix sockets in its data directory) for each URL the user did not name.
//!
//! # Layout
//! - [`app`]: the three services built from one configuration, one router in front of them,
//!   the worker's loop beside it; composite `/healthz`, `/readyz`, `/metrics`.
//! - [`plan`]: before anything is logged or bound, which servers to start, and the programs,
//!   data directory and system user that takes; a missing program stops the binary there.
//! - [`daemons`]: where its Redis and PostgreSQL live (sockets and logs in the data
//!   directory), the lock on it, the servers an earlier run left behind.
//! - The `servers` crate, shared with testkit: starting them, readiness, restart with capped
//!   backoff, stop with a deadline and then SIGKILL, never leaving a child behind.
//! - [`tools`]: `voting psql`, `voting redis-cli` and `voting reset`, on the servers it uses.
//!
//! # Entry points
//! - [`run`]: the app alone, against whatever Redis and PostgreSQL the configuration names
//!   (what the tests call, on port 0).
//! - [`preflight`] then [`run_supervised`]: what the binary does. Order of start: Redis and
//!   PostgreSQL (side by side, each until ready), then the services, then the two URLs are
//!   printed, and the `psql` and `redis-cli` lines that reach its own servers. Order of
//!   stop: the services (requests drain, the worker ends between batches, sockets close),
//!   then PostgreSQL, then Redis.
#![forbid(unsafe_code)]

pub mod app;
pub mod daemons;
pub mod plan;
pub mod tools;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use common::config::Config;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use app::App;
pub use plan::Plan;

use servers::{Server, Supervised};

/// Serves the whole app on `listener` until `shutdown` completes, using the Redis and
/// PostgreSQL the configuration names as they are (nothing is started).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    App::start(&config, Vec::new())?
        .serve(listener, shutdown)
        .await
}

/// What the binary checks before it logs or binds anything: see [`plan::plan`]. The error is
/// one line for the user, e.g. `redis-server not found: install it (apt-get install
/// redis-server postgresql, or nix develop)`.
pub fn preflight(config: &Config) -> Result<Plan, String> {
    plan::plan(config)
}

/// Starts the servers of `plan` and waits until they are ready, then serves the whole app on
/// `listener` and prints the URLs to open. When `shutdown` completes (even during the start),
/// stops the services, then PostgreSQL, then Redis.
pub async fn run_supervised(
    config: Config,
    plan: Plan,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (cancel_tx, cancel) = watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown.await;
        let _ = cancel_tx.send(true);
    });
    let served = supervised(&config, &plan, listener, cancel).await;
    signal.abort();
    served
}

async fn supervised(
    config: &Config,
    plan: &Plan,
    listener: TcpListener,
    mut cancel: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Some(daemons) = Daemons::start(config, plan, &mut cancel).await? else {
        return Ok(());
    };
    let config = &plan.apply(config.clone());
    if let Err(e) = check_servers(config).await {
        daemons.stop().await;
        return Err(e);
    }
    let app = match App::start(config, daemons.infos()) {
        Ok(app) => app,
        Err(e) => {
            daemons.stop().await;
            return Err(e);
        }
    };
    announce(listener.local_addr()?, plan);
    let served = app
        .serve(listener, async move {
            let _ = cancel.wait_for(|stop| *stop).await;
        })
        .await;
    daemons.stop().await;
    served
}

/// "Ready" means a vote can be counted: Redis answers `PING` with the configured credentials,
/// and PostgreSQL accepts them and has the schema (applied here if missing). Otherwise the
/// start fails with one line naming the URL (password hidden) and what to fix; the split
/// services retry instead, since an operator may fix it while they run.
async fn check_servers(config: &Config) -> anyhow::Result<()> {
    let redis_url = &config.redis.url;
    let redis = async {
        let client = redis::Client::open(redis_url.0.expose())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    if let Err(e) = redis.await {
        let e = common::error::describe_error(&e);
        anyhow::bail!(
            "cannot use Redis at {redis_url}: {e}; check redis.url (VOTING_REDIS__URL), its \
             password (redis.password_file) and that the server runs"
        );
    }
    let pg_url = &config.postgres.url;
    let postgres = async {
        let mut client = common::pools::pg_connect(&config.postgres).await?;
        common::schema::migrate(&mut client).await
    };
    if let Err(e) = postgres.await {
        let cause = e.root_cause();
        anyhow::bail!(
            "cannot use PostgreSQL at {pg_url}: {cause}; check postgres.url \
             (VOTING_POSTGRES__URL): the server, the user, its password \
             (postgres.password_file) and the database"
        );
    }
    Ok(())
}

/// Prints the two URLs to open (a listener on every address is shown as loopback), then the
/// commands that open a shell on the servers started here.
fn announce(addr: SocketAddr, plan: &Plan) {
    let shown = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    tracing::info!(vote = %format!("http://{shown}/vote/"), result = %format!("http://{shown}/result/"), "ready");
    println!(
        "voting is ready: open http://{shown}/vote/ to vote and http://{shown}/result/ for the results"
    );
    for (program, args) in daemons::inspect_commands(plan) {
        println!(
            "look inside: voting {program} (or {})",
            daemons::shell_line(&program, &args)
        );
    }
}

/// The servers this process started.
#[derive(Default)]
struct Daemons {
    redis: Option<Supervised>,
    postgres: Option<Supervised>,
    /// The lock on the data directory, held while they run.
    _lock: Option<std::fs::File>,
}

impl Daemons {
    /// Starts what `plan` says, side by side, each until ready. `None` when `cancel` turned
    /// true first; on an error, what did start is stopped again.
    async fn start(
        config: &Config,
        plan: &Plan,
        cancel: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<Option<Daemons>> {
        match &plan.redis {
            Some(redis) => {
                tracing::info!(socket = %redis.socket().display(), server = %redis.server.display(), "redis.url is not set: starting a private redis-server")
            }
            None => tracing::info!(url = %config.redis.url, "using the Redis at redis.url"),
        }
        match &plan.postgres {
            Some(pg) => {
                tracing::info!(socket = %pg.socket().display(), server = %pg.postgres.display(), "postgres.url is not set: starting a private PostgreSQL")
            }
            None => {
                tracing::info!(url = %config.postgres.url, "using the PostgreSQL at postgres.url")
            }
        }
        if plan.is_empty() {
            return Ok(Some(Daemons::default()));
        }
        tracing::info!(data_dir = %plan.data_dir.display(), "data directory of the servers started here");
        let lock = daemons::prepare_data_dir(plan)?;
        daemons::stop_leftovers(plan).await?;

        let redis = plan.redis.clone().map(|redis| {
            let data_dir = plan.data_dir.clone();
            move || daemons::redis(&redis, &data_dir)
        });
        let postgres = plan.postgres.clone().map(|pg| {
            let data_dir = plan.data_dir.clone();
            move || daemons::postgres(&pg, &data_dir)
        });
        let (redis, postgres) = tokio::join!(supervise(redis, cancel), supervise(postgres, cancel));

        let mut started = Daemons {
            _lock: Some(lock),
            ..Daemons::default()
        };
        let mut error = None;
        match redis {
            Ok(s) => started.redis = s,
            Err(e) => error = Some(e.context("starting redis-server")),
        }
        match postgres {
            Ok(s) => started.postgres = s,
            Err(e) => error = error.or(Some(e.context("starting PostgreSQL"))),
        }
        let cancelled = *cancel.borrow()
            || (plan.redis.is_some() && started.redis.is_none())
            || (plan.postgres.is_some() && started.postgres.is_none());
        if let Some(e) = error {
            started.stop().await;
            return Err(e);
        }
        if cancelled {
            started.stop().await;
            return Ok(None);
        }
        Ok(Some(started))
    }

    fn infos(&self) -> Vec<app::ChildInfo> {
        [&self.redis, &self.postgres]
            .into_iter()
            .flatten()
            .map(|s| (s.name(), s.stats()))
            .collect()
    }

    /// PostgreSQL first, then Redis.
    async fn stop(self) {
        let stopped = tokio::task::spawn_blocking(move || {
            self.postgres
                .into_iter()
                .chain(self.redis)
                .for_each(Supervised::stop);
        });
        if let Err(e) = stopped.await {
            tracing::error!(error = %e, "stopping the servers failed");
        }
    }
}

/// Makes the server with `make` (`initdb` included), starts it and waits until it is ready,
/// on a blocking thread: see [`Supervised::start`]. `None` for no server, or when `cancel`
/// turned true first.
async fn supervise(
    make: Option<impl FnOnce() -> anyhow::Result<Server> + Send + 'static>,
    cancel: &watch::Receiver<bool>,
) -> anyhow::Result<Option<Supervised>> {
    let Some(make) = make else {
        return Ok(None);
    };
    let cancel = cancel.clone();
    tokio::task::spawn_blocking(move || Supervised::start(make()?, &|| *cancel.borrow())).await?
}
