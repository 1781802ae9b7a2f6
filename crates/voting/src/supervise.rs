//! A small init system for the servers this process starts.
//!
//! - [`start`] spawns a [`Daemon`] and returns once it is ready (its [`Probe`] answers), or
//!   fails with the end of its log when it exits or is not ready in time.
//! - A supervised daemon that dies is logged and started again after a capped exponential
//!   backoff (250 ms doubling to 30 s; back to 250 ms once a run lasted a minute), forever.
//! - [`Supervised::stop`] sends the daemon its stop signal, waits, and kills it (SIGKILL)
//!   after [`STOP_DEADLINE`]. A child is always waited for: none is left behind, not even a
//!   zombie. Children run in their own process group, so a ctrl-c in the terminal reaches
//!   this process only, and it stops them in order.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::backoff::Backoff;
use common::metrics::{Counter, Gauge};
use common::system::send_signal;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use common::system::log_stdio;

/// How long a daemon may take to become ready (PostgreSQL may be recovering after a crash).
pub const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a daemon may take to stop after its stop signal before it is killed.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How much of the end of a log an error shows.
const LOG_TAIL_BYTES: u64 = 2048;

/// A server to run and keep running.
#[derive(Clone, Debug)]
pub struct Daemon {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// `(uid, gid)` to run it as.
    pub run_as: Option<(u32, u32)>,
    /// Where its stdout and stderr are appended.
    pub log: PathBuf,
    pub probe: Probe,
    /// The signal that asks it to stop cleanly (`kill -s` name).
    pub stop_signal: &'static str,
}

/// How to tell that a daemon is ready (see `daemons.rs`).
#[derive(Clone, Debug)]
pub enum Probe {
    /// Answers `PING` on this Unix socket.
    Redis(PathBuf),
    /// Accepts a connection as `postgres` through the socket in this directory.
    Postgres(PathBuf),
}

/// What `/metrics` tells about a daemon.
#[derive(Debug, Default)]
pub struct ChildStats {
    pub restarts: Counter,
    pub up: Gauge,
    pub pid: Gauge,
}

/// A running daemon and the task that watches it.
pub struct Supervised {
    name: &'static str,
    stats: Arc<ChildStats>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Supervised {
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn stats(&self) -> Arc<ChildStats> {
        self.stats.clone()
    }

    /// Stops the daemon (its stop signal, then SIGKILL after [`STOP_DEADLINE`]) and waits
    /// until it is gone.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(daemon = self.name, error = %e, "the supervising task failed");
        }
    }
}

/// Why a launch did not give a ready daemon.
pub enum Launch {
    /// The stop signal came first; the child was stopped.
    Stopped,
    Failed(anyhow::Error),
}

/// Starts `daemon`, waits until it is ready, and supervises it from then on. `None` when
/// `cancel` turned true first (the child was stopped).
pub async fn start(
    daemon: Daemon,
    cancel: &mut watch::Receiver<bool>,
) -> anyhow::Result<Option<Supervised>> {
    let child = match launch(&daemon, cancel).await {
        Ok(child) => child,
        Err(Launch::Stopped) => return Ok(None),
        Err(Launch::Failed(e)) => return Err(e),
    };
    let stats = Arc::new(ChildStats::default());
    stats.up.set(1);
    stats.pid.set(child.id().map_or(0, u64::from));
    let (stop, stop_rx) = watch::channel(false);
    let name = daemon.name;
    let task = tokio::spawn(watch(daemon, child, stop_rx, stats.clone()));
    Ok(Some(Supervised {
        name,
        stats,
        stop,
        task,
    }))
}

/// Spawns the daemon and polls its probe until it is ready.
async fn launch(daemon: &Daemon, stop: &mut watch::Receiver<bool>) -> Result<Child, Launch> {
    if *stop.borrow() {
        return Err(Launch::Stopped);
    }
    let mut child = spawn(daemon).map_err(Launch::Failed)?;
    let pid = child.id().unwrap_or(0);
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Launch::Failed(anyhow::anyhow!(
                "{} (pid {pid}) exited during startup ({status})\n{}",
                daemon.name,
                log_tail(&daemon.log)
            )));
        }
        if daemon.probe.ready().await {
            tracing::info!(daemon = daemon.name, pid, "ready");
            return Ok(child);
        }
        if Instant::now() >= deadline {
            halt(daemon, child).await;
            return Err(Launch::Failed(anyhow::anyhow!(
                "{} (pid {pid}) was not ready within {READY_DEADLINE:?}\n{}",
                daemon.name,
                log_tail(&daemon.log)
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = stopped(stop) => {
                halt(daemon, child).await;
                return Err(Launch::Stopped);
            }
        }
    }
}

fn spawn(daemon: &Daemon) -> anyhow::Result<Child> {
    let (stdout, stderr) = log_stdio(&daemon.log)?;
    let mut command = Command::new(&daemon.program);
    command
        .args(&daemon.args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Its own process group: a ctrl-c in the terminal is for this process to handle.
        .process_group(0)
        // Should this process unwind without stopping it, the child does not outlive it.
        .kill_on_drop(true);
    if let Some((uid, gid)) = daemon.run_as {
        command.uid(uid).gid(gid);
    }
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {}", daemon.program.display()))?;
    tracing::info!(
        daemon = daemon.name,
        pid = child.id().unwrap_or(0),
        log = %daemon.log.display(),
        "started"
    );
    Ok(child)
}

/// Watches a ready daemon: restarts it when it dies, stops it when told to.
async fn watch(
    daemon: Daemon,
    mut child: Child,
    mut stop: watch::Receiver<bool>,
    stats: Arc<ChildStats>,
) {
    let name = daemon.name;
    let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
    let mut since = Instant::now();
    loop {
        let status = tokio::select! {
            status = child.wait() => status,
            _ = stopped(&mut stop) => {
                halt(&daemon, child).await;
                stats.up.set(0);
                return;
            }
        };
        stats.up.set(0);
        if since.elapsed() >= STABLE_AFTER {
            backoff.reset();
        }
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        let mut why = format!(
            "{name} (pid {}) exited unexpectedly ({status}); its log is {}",
            stats.pid.get(),
            daemon.log.display()
        );
        child = loop {
            let wait = backoff.next_wait();
            tracing::warn!(daemon = name, restart_in = ?wait, "{why}; restarting it");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopped(&mut stop) => return,
            }
            match launch(&daemon, &mut stop).await {
                Ok(child) => break child,
                Err(Launch::Stopped) => return,
                Err(Launch::Failed(e)) => {
                    why = format!("restarting {name} failed: {}", common::error::describe(&e))
                }
            }
        };
        since = Instant::now();
        stats.restarts.inc();
        stats.up.set(1);
        stats.pid.set(child.id().map_or(0, u64::from));
        tracing::info!(daemon = name, pid = stats.pid.get(), "restarted");
    }
}

/// Asks the child to stop with its stop signal, waits up to [`STOP_DEADLINE`], then kills it.
/// The child is reaped in every case.
async fn halt(daemon: &Daemon, mut child: Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let Some(pid) = child.id() else {
        return;
    };
    tracing::info!(
        daemon = daemon.name,
        pid,
        signal = daemon.stop_signal,
        "stopping"
    );
    if let Err(e) = send_signal(pid, daemon.stop_signal) {
        tracing::warn!(
            daemon = daemon.name,
            pid,
            error = common::error::describe(&e),
            "cannot signal it; killing it"
        );
        let _ = child.kill().await;
        return;
    }
    match tokio::time::timeout(STOP_DEADLINE, child.wait()).await {
        Ok(Ok(status)) => tracing::info!(daemon = daemon.name, pid, %status, "stopped"),
        Ok(Err(e)) => tracing::warn!(daemon = daemon.name, pid, error = %e, "cannot wait for it"),
        Err(_) => {
            tracing::warn!(daemon = daemon.name, pid, deadline = ?STOP_DEADLINE, "did not stop in time; killing it");
            let _ = child.kill().await;
        }
    }
}

/// Completes once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The end of the log at `path`, for error messages.
pub fn log_tail(path: &Path) -> String {
    common::system::log_tail(path, LOG_TAIL_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_from_a_quarter_second_to_half_a_minute() {
        let mut b = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
        let waits: Vec<u64> = (0..10).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(
            waits,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }

    #[test]
    fn tail_of_a_missing_log() {
        assert!(log_tail(Path::new("/no/such/log")).contains("cannot read"));
    }
}
