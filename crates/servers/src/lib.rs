//! A private `redis-server` or PostgreSQL, started, watched and stopped the same way by the
//! `voting` binary (its own servers on Unix sockets in its data directory) and by the test kit
//! (throwaway servers on free TCP ports in temp dirs).
//!
//! # Layout
//! - This file: a [`Server`] (program, arguments, user, log, readiness probe, stop signal),
//!   [`Server::start`] (spawn, then wait until ready) and the [`Running`] process (stop with a
//!   signal, then SIGKILL after [`STOP_DEADLINE`]; killed when dropped).
//! - [`redis`]: the `redis-server` command line, `PING`, one-line commands.
//! - [`postgres`]: finding `initdb` and `postgres`, the `postgres` user when root, `initdb`
//!   into a temporary directory renamed into place, the server's command line, the startup
//!   handshake as readiness.
//! - [`supervise`]: keeping a server running: restart with capped backoff, [`ChildStats`].
//!
//! Each server listens as [`Listen`] says: on a TCP port of 127.0.0.1, or only on a Unix
//! socket in its own directory. Its output is appended to its log file.
#![forbid(unsafe_code)]

pub mod postgres;
pub mod redis;
pub mod supervise;

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use common::system::{log_stdio, send_signal};

pub use postgres::Cluster;
pub use supervise::{ChildStats, Supervised};

/// What to install when a server program is missing.
pub const INSTALL_HINT: &str = "apt-get install redis-server postgresql, or nix develop";
/// How long a server may take to become ready (PostgreSQL may be recovering after a crash).
pub const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a server may take to exit after its stop signal before it is killed.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// How long one probe may wait to connect, to send, or for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How much of the end of a log an error shows.
const LOG_TAIL_BYTES: u64 = 4096;

/// "`a` not found: install it (…)", or "`a` and `b` not found: install them (…)".
pub fn not_found(missing: &[&str]) -> String {
    let them = if missing.len() == 1 { "it" } else { "them" };
    format!(
        "{} not found: install {them} ({INSTALL_HINT})",
        missing.join(" and ")
    )
}

/// Where a server listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// This TCP port of 127.0.0.1.
    Tcp(u16),
    /// No TCP port: a Unix socket (mode 0700) in the server's own directory.
    Socket,
}

/// Where a probe or a client reaches a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// 127.0.0.1 and this port.
    Tcp(u16),
    /// This socket file.
    Unix(PathBuf),
}

/// A connection to an [`Endpoint`].
pub trait Connection: Read + Write {}
impl<T: Read + Write> Connection for T {}

impl Endpoint {
    /// Connects with short timeouts (a probe must not hang).
    pub fn connect(&self) -> std::io::Result<Box<dyn Connection>> {
        Ok(match self {
            Endpoint::Tcp(port) => {
                let addr = SocketAddr::from(([127, 0, 0, 1], *port));
                let stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
                stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
                stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
                Box::new(stream)
            }
            Endpoint::Unix(path) => {
                let stream = UnixStream::connect(path)?;
                stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
                stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
                Box::new(stream)
            }
        })
    }
}

/// How to tell that a server is ready.
#[derive(Clone, Debug)]
pub enum Probe {
    /// Answers `PING` with `PONG` (a Redis still loading its file answers `-LOADING`).
    Redis(Endpoint),
    /// Completes a startup handshake as `postgres` (one still starting or recovering answers
    /// with an error).
    Postgres(Endpoint),
}

impl Probe {
    /// Whether the server answers as a ready one.
    pub fn ready(&self) -> bool {
        match self {
            Probe::Redis(at) => redis::ping(at),
            Probe::Postgres(at) => postgres::accepts_connections(at),
        }
    }
}

/// A server to start: what [`redis::server`] and [`Cluster::server`] make.
#[derive(Clone, Debug)]
pub struct Server {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// `(uid, gid)` to run it as.
    pub run_as: Option<(u32, u32)>,
    /// Where its stdout and stderr are appended.
    pub log: PathBuf,
    pub probe: Probe,
    /// The signal that asks it to stop cleanly (`"TERM"`, `"INT"`).
    pub stop_signal: &'static str,
    /// Whether it runs in a process group of its own: a ctrl-c in the terminal then reaches
    /// only this process, which stops it in order.
    pub own_group: bool,
}

/// Why [`Server::start`] gave no ready server.
#[derive(Debug)]
pub enum StartError {
    /// `cancelled` turned true first; the server was stopped.
    Cancelled,
    /// Its address was in use (what it logged says so): worth another port.
    AddressInUse(anyhow::Error),
    Failed(anyhow::Error),
}

impl StartError {
    /// Classifies a startup failure by what the server logged during this start.
    pub fn from_log(error: anyhow::Error, new_log: &str) -> Self {
        if new_log.contains("Address already in use") {
            Self::AddressInUse(error)
        } else {
            Self::Failed(error)
        }
    }

    pub fn into_inner(self) -> anyhow::Error {
        match self {
            Self::Cancelled => anyhow::anyhow!("cancelled"),
            Self::AddressInUse(e) | Self::Failed(e) => e,
        }
    }
}

impl Server {
    /// Spawns the server and polls its probe until it is ready (for at most
    /// [`READY_DEADLINE`]), stopping it again when `cancelled` turns true first.
    ///
    /// # Errors
    ///
    /// When it cannot be spawned, exits, or is not ready in time; the message ends with the
    /// end of its log.
    pub fn start(&self, cancelled: &dyn Fn() -> bool) -> Result<Running, StartError> {
        if cancelled() {
            return Err(StartError::Cancelled);
        }
        let offset = log_len(&self.log);
        let mut running = Running {
            child: self.spawn().map_err(StartError::Failed)?,
            server: self.clone(),
        };
        let pid = running.pid();
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = running.exited() {
                let error = anyhow::anyhow!(
                    "{} (pid {pid}) exited during startup ({status})\n{}",
                    self.name,
                    log_tail(&self.log)
                );
                return Err(StartError::from_log(error, &log_since(&self.log, offset)));
            }
            if self.probe.ready() {
                tracing::info!(server = self.name, pid, "ready");
                return Ok(running);
            }
            if Instant::now() >= deadline {
                let _ = running.stop();
                return Err(StartError::Failed(anyhow::anyhow!(
                    "{} (pid {pid}) was not ready within {READY_DEADLINE:?}\n{}",
                    self.name,
                    log_tail(&self.log)
                )));
            }
            if cancelled() {
                let _ = running.stop();
                return Err(StartError::Cancelled);
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        let (stdout, stderr) = log_stdio(&self.log)?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if self.own_group {
            command.process_group(0);
        }
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.program.display()))?;
        tracing::info!(server = self.name, pid = child.id(), log = %self.log.display(), "started");
        Ok(child)
    }
}

/// A server process this process started. Dropped while it runs, it is killed (SIGKILL) and
/// reaped: none is left behind, not even a zombie.
#[derive(Debug)]
pub struct Running {
    child: Child,
    server: Server,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How it exited, once it has (it is then reaped).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        match self.child.try_wait() {
            Ok(status) => status,
            // Reaped already: it is gone.
            Err(_) => Some(ExitStatus::default()),
        }
    }

    /// Sends signal `name` (`"STOP"`, `"CONT"`, …).
    ///
    /// # Errors
    ///
    /// When the signal cannot be sent.
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        send_signal(self.pid(), name)
    }

    /// Stops it with its stop signal: see [`Running::stop_with`].
    ///
    /// # Errors
    ///
    /// As [`Running::stop_with`].
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        self.stop_with(self.server.stop_signal)
    }

    /// Sends it `signal`, waits up to [`STOP_DEADLINE`] for it to exit, and kills it
    /// (SIGKILL) if it has not. It is reaped in every case.
    ///
    /// # Errors
    ///
    /// When the signal cannot be sent, or it had to be killed.
    pub fn stop_with(&mut self, signal: &str) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        let (name, pid) = (self.server.name, self.pid());
        tracing::info!(server = name, pid, signal, "stopping");
        if let Err(e) = self.signal(signal) {
            self.kill();
            return Err(e);
        }
        if let Some(status) = wait_timeout(&mut self.child, STOP_DEADLINE) {
            tracing::info!(server = name, pid, %status, "stopped");
            return Ok(status);
        }
        tracing::warn!(server = name, pid, deadline = ?STOP_DEADLINE, "did not stop in time; killing it");
        self.kill();
        anyhow::bail!(
            "{name} (pid {pid}) ignored SIG{signal} for {STOP_DEADLINE:?} and was killed\n{}",
            log_tail(&self.server.log)
        )
    }

    /// Kills it (SIGKILL) and reaps it; nothing when it has exited.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `child` until it exits or `timeout` passes; `None` on timeout.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            // The child was already reaped: treat it as gone.
            Err(_) => return Some(ExitStatus::default()),
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The last few kilobytes of the log at `path`, for error messages.
pub fn log_tail(path: &Path) -> String {
    common::system::log_tail(path, LOG_TAIL_BYTES)
}

/// The current length of the file at `path` (0 if it does not exist), to read only what a
/// new process appends later with [`log_since`].
pub fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Everything appended to the log at `path` after byte `offset`.
pub fn log_since(path: &Path, offset: u64) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_collisions_are_recognised() {
        let log = "could not bind IPv4 address \"127.0.0.1\": Address already in use";
        assert!(matches!(
            StartError::from_log(anyhow::anyhow!("x"), log),
            StartError::AddressInUse(_)
        ));
        assert!(matches!(
            StartError::from_log(anyhow::anyhow!("x"), "FATAL: something else"),
            StartError::Failed(_)
        ));
    }

    #[test]
    fn missing_programs_are_named_with_what_to_install() {
        assert_eq!(
            not_found(&["redis-server"]),
            format!("redis-server not found: install it ({INSTALL_HINT})")
        );
        assert!(not_found(&["a", "b"]).starts_with("a and b not found: install them ("));
    }

    #[test]
    fn a_server_that_exits_at_once_fails_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("false.log");
        std::fs::write(&log, "an earlier run: Address already in use\n").unwrap();
        let server = Server {
            name: "sh",
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "echo no such option >&2; exit 3".into()],
            run_as: None,
            log: log.clone(),
            probe: Probe::Redis(Endpoint::Unix(dir.path().join("none.sock"))),
            stop_signal: "TERM",
            own_group: false,
        };
        // What an earlier run logged does not make it a port collision.
        let Err(StartError::Failed(error)) = server.start(&|| false) else {
            panic!("it started");
        };
        let text = error.to_string();
        assert!(text.contains("exited during startup"), "{text}");
        assert!(text.contains("no such option"), "{text}");
        assert!(matches!(server.start(&|| true), Err(StartError::Cancelled)));
    }
}
