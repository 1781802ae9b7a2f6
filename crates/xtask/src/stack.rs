//! The processes a bench run starts, all on 127.0.0.1: redis-server and PostgreSQL
//! (testkit's throwaway servers), the release binaries of the services, the trivial upstream,
//! and Nginx with the project's routes in front of either. Everything is stopped on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hyper::StatusCode;
use tempfile::TempDir;

/// The options every service gets: `a` and `b` carry the load, `c` the freshness probes, so
/// that a frame's count of `c` says exactly which probe it shows.
pub const OPTIONS: &str = r#"[{key="a",label="A"},{key="b",label="B"},{key="c",label="Probe"}]"#;

/// A child process, killed (SIGKILL) and reaped on drop.
pub struct Proc {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of its log (stdout and stderr), for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("--- {} log ---\n{}", self.name, tail.join("\n"))
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops it as Kubernetes does: SIGTERM, then waits up to `within` for a clean exit.
    pub fn terminate(mut self, within: Duration) -> anyhow::Result<()> {
        testkit::signal(self.pid(), "TERM")?;
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                anyhow::ensure!(status.success(), "{} exited with {status}", self.name);
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} did not stop within {within:?} of SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service binary that answered `/readyz`.
pub struct Instance {
    pub proc: Proc,
    pub addr: SocketAddr,
}

/// Redis, PostgreSQL and where the release binaries and the logs are.
pub struct Stack {
    /// `target/release`.
    pub bin: PathBuf,
    pub redis: testkit::Redis,
    /// Kept running for the run's length.
    _pg: testkit::Postgres,
    /// The database every service of the run uses.
    pub db: String,
    logs: TempDir,
}

impl Stack {
    pub async fn start(bin: PathBuf) -> anyhow::Result<Stack> {
        let redis = testkit::Redis::start()?;
        let pg = testkit::Postgres::start()?;
        let db = pg.create_database().await?;
        let logs = tempfile::Builder::new().prefix("xtask-bench-").tempdir()?;
        Ok(Stack {
            bin,
            redis,
            _pg: pg,
            db,
            logs,
        })
    }

    pub fn logs(&self) -> &Path {
        self.logs.path()
    }

    /// Spawns `program` with `args` and `env`, output to a log file of the run.
    pub fn spawn(
        &self,
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, String)],
    ) -> anyhow::Result<Proc> {
        let log = self.logs.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        Ok(Proc {
            child,
            name: name.to_string(),
            log,
        })
    }

    /// Starts the release binary `name` (vote, worker, result or voting) on a free port and
    /// waits until its `/readyz` answers 200.
    pub async fn service(&self, name: &str, env: &[(&str, String)]) -> anyhow::Result<Instance> {
        self.service_as(name, name, env).await
    }

    /// [`Stack::service`], its log named `label` (for several replicas of one service).
    pub async fn service_as(
        &self,
        name: &str,
        label: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<Instance> {
        let addr = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
        let mut all = vec![
            ("VOTING_LISTEN", addr.to_string()),
            ("VOTING_REDIS__URL", self.redis.url()),
            ("VOTING_POSTGRES__URL", self.db.clone()),
            ("VOTING_OPTIONS", OPTIONS.to_string()),
            ("RUST_LOG", "warn".to_string()),
        ];
        all.extend(env.iter().cloned());
        let mut proc = self.spawn(label, &self.bin.join(name), &[], &all)?;
        wait_ready(&mut proc, addr).await?;
        Ok(Instance { proc, addr })
    }

    /// Starts the trivial upstream (this program's `upstream` command) on a free port.
    pub async fn upstream(&self) -> anyhow::Result<(Proc, SocketAddr)> {
        let addr = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
        let exe = std::env::current_exe()?;
        let mut proc = self.spawn(
            "upstream",
            &exe,
            &["upstream", "--listen", &addr.to_string()],
            &[],
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Some(status) = proc.exited() {
                anyhow::bail!(
                    "the trivial upstream exited ({status})\n{}",
                    proc.log_tail()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the trivial upstream did not listen"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok((proc, addr))
    }

    /// A client of the run's database.
    pub async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::connect(&self.db, tokio_postgres::NoTls)
            .await
            .context("connecting to the bench's database")?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// A Redis connection without a response timeout (queueing the drain's votes in one
    /// script takes a while).
    pub async fn redis_conn(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        Ok(redis::Client::open(self.redis.url())?
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }
}

/// Polls `/readyz` until it answers 200, for at most 30 s.
async fn wait_ready(proc: &mut Proc, addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = proc.exited() {
            anyhow::bail!(
                "{} exited at start ({status})\n{}",
                proc.name,
                proc.log_tail()
            );
        }
        if let Ok(answer) = testkit::http::get(addr, "/readyz").await
            && answer.status == StatusCode::OK
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{} was not ready within 30 s\n{}",
                proc.name,
                proc.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sum of the tallies: how many voters' votes are in PostgreSQL.
pub async fn tallied(client: &tokio_postgres::Client) -> anyhow::Result<i64> {
    Ok(client
        .query_one("SELECT coalesce(sum(count), 0)::bigint FROM tallies", &[])
        .await?
        .get(0))
}

/// Waits until the tallies sum to at least `target` (polling every 5 ms); returns when it
/// saw that, or fails after `limit`.
pub async fn wait_tallied(
    client: &tokio_postgres::Client,
    target: i64,
    limit: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        let now = tallied(client).await?;
        if now >= target {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {now} of {target} votes reached PostgreSQL within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Raises this process's limit of open files to `need` (children inherit it) with
/// `prlimit`, which needs no unsafe code; returns the soft limit in force afterwards.
pub fn raise_fd_limit(need: u64) -> u64 {
    let soft = fd_limit();
    if soft >= need {
        return soft;
    }
    let pid = std::process::id().to_string();
    let _ = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={need}:{need}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    fd_limit()
}

/// The soft limit of open files, from `/proc/self/limits`.
fn fd_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}
