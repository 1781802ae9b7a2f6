//! A throwaway `redis-server` with append-only persistence in a temp dir.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tempfile::TempDir;

use crate::find_binary;
use crate::process::{
    LaunchError, kill_and_wait, launch_on_a_free_port, log_len, log_since, log_stdio, log_tail,
    temp_dir,
};

/// How long to wait for a fresh server to answer `PING`.
const READY_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A private `redis-server` on 127.0.0.1 with its own temp dir.
///
/// Append-only persistence is on (`appendfsync everysec`), RDB snapshots off.
/// The server is killed (SIGKILL) and its directory removed on drop.
#[derive(Debug)]
pub struct Redis {
    child: Option<Child>,
    port: u16,
    binary: PathBuf,
    log: PathBuf,
    dir: TempDir,
}

impl Redis {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Errors
    ///
    /// When `redis-server` is not installed, or does not become ready within
    /// 10 s (the error includes the end of its log).
    pub fn start() -> anyhow::Result<Redis> {
        let binary = find_binary("redis-server")?;
        let dir = temp_dir("redis")?;
        let log = dir.path().join("redis.log");
        let mut redis = Redis {
            child: None,
            port: 0, // chosen below
            binary,
            log,
            dir,
        };
        launch_on_a_free_port("redis", |port| {
            redis.port = port;
            redis.launch()
        })?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TCP port the server listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Makes the server ask new connections for `password` (`CONFIG SET requirepass`);
    /// connections already open stay authenticated.
    ///
    /// # Errors
    ///
    /// When the server does not answer `+OK`.
    pub fn require_password(&self, password: &str) -> anyhow::Result<()> {
        let reply = call(self.port, &["CONFIG", "SET", "requirepass", password])
            .with_context(|| format!("CONFIG SET requirepass on port {}", self.port))?;
        anyhow::ensure!(
            reply.starts_with(b"+OK\r\n"),
            "CONFIG SET requirepass on port {} answered {}",
            self.port,
            String::from_utf8_lossy(&reply)
        );
        Ok(())
    }

    /// Kills the server with SIGKILL and waits for it to exit. Does nothing
    /// if it is not running. Writes not yet fsynced to the append-only file
    /// may be lost, as in a real crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            tracing::debug!(port = self.port, "killing redis");
            kill_and_wait(&mut child);
        }
    }

    /// Stops the server with SIGSTOP: its connections stay open and it reads nothing, as a
    /// stalled or overloaded Redis behaves. What clients send meanwhile waits in the kernel's
    /// buffers and is run on [`Redis::resume`].
    ///
    /// # Errors
    ///
    /// When the server is not running or the signal cannot be sent.
    pub fn pause(&self) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("redis-server is not running")?;
        crate::process::send_signal(child.id(), "STOP")
    }

    /// Lets a paused server go on (SIGCONT).
    ///
    /// # Errors
    ///
    /// When the server is not running or the signal cannot be sent.
    pub fn resume(&self) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("redis-server is not running")?;
        crate::process::send_signal(child.id(), "CONT")
    }

    /// Starts the server again on the same port and directory (so the
    /// append-only file is replayed) and waits until it answers `PING`.
    /// A running server is killed first.
    ///
    /// # Errors
    ///
    /// When the server does not become ready within 10 s, e.g. because
    /// another process took the port meanwhile.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch().map_err(LaunchError::into_inner)
    }

    /// Spawns `redis-server` on `self.port` and waits for `PING`.
    fn launch(&mut self) -> Result<(), LaunchError> {
        let failed = |e: anyhow::Error| LaunchError::Failed(e);
        let offset = log_len(&self.log);
        let (stdout, stderr) = log_stdio(&self.log).map_err(failed)?;
        let port = self.port.to_string();
        let mut child = Command::new(&self.binary)
            .arg("--port")
            .arg(&port)
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "everysec"])
            .args(["--save", ""])
            .args(["--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot spawn {}", self.binary.display()))
            .map_err(failed)?;
        tracing::debug!(port = self.port, pid = child.id(), dir = %self.dir.path().display(), "started redis");

        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let error = anyhow::anyhow!(
                    "redis-server on port {} exited during startup ({status})\n{}",
                    self.port,
                    log_tail(&self.log)
                );
                return Err(LaunchError::from_log(error, &log_since(&self.log, offset)));
            }
            if ping(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                kill_and_wait(&mut child);
                return Err(failed(anyhow::anyhow!(
                    "redis-server on port {} did not answer PING within {READY_DEADLINE:?}\n{}",
                    self.port,
                    log_tail(&self.log)
                )));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a server on 127.0.0.1:`port` answers `PING` with `+PONG`
/// (a server still loading its data answers `-LOADING` instead).
fn ping(port: u16) -> bool {
    call(port, &["PING"]).is_ok_and(|reply| reply.starts_with(b"+PONG\r\n"))
}

/// Sends one command to the server on 127.0.0.1:`port` and returns the first line of its
/// reply (`+OK\r\n`, `-ERR …\r\n`, …), with short timeouts.
fn call(port: u16, args: &[&str]) -> std::io::Result<Vec<u8>> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reply = Vec::new();
    let mut buf = [0_u8; 64];
    while !reply.ends_with(b"\r\n") && reply.len() < 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(reply)
}
