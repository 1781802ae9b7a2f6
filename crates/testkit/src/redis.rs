//! A throwaway `redis-server` with append-only persistence in a temp dir.

use std::path::PathBuf;

use anyhow::Context as _;
use servers::{Endpoint, Listen, Running, StartError};
use tempfile::TempDir;

use crate::process::{launch_on_a_free_port, temp_dir};

/// A private `redis-server` on 127.0.0.1 with its own temp dir.
///
/// Append-only persistence is on (`appendfsync everysec`), RDB snapshots off.
/// The server is killed (SIGKILL) and its directory removed on drop.
#[derive(Debug)]
pub struct Redis {
    /// Declared first: killed before `dir` is removed.
    running: Option<Running>,
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
    /// 60 s (the error includes the end of its log).
    pub fn start() -> anyhow::Result<Redis> {
        let binary = servers::redis::find()
            .ok_or_else(|| anyhow::anyhow!(servers::not_found(&["redis-server"])))?;
        let dir = temp_dir("redis")?;
        let log = dir.path().join("redis.log");
        let mut redis = Redis {
            running: None,
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
        let reply = servers::redis::call(
            &Endpoint::Tcp(self.port),
            &["CONFIG", "SET", "requirepass", password],
        )
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
        if let Some(mut running) = self.running.take() {
            running.kill();
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
        self.running()?.signal("STOP")
    }

    /// Lets a paused server go on (SIGCONT).
    ///
    /// # Errors
    ///
    /// When the server is not running or the signal cannot be sent.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.running()?.signal("CONT")
    }

    /// Starts the server again on the same port and directory (so the
    /// append-only file is replayed) and waits until it answers `PING`.
    /// A running server is killed first.
    ///
    /// # Errors
    ///
    /// When the server does not become ready within 60 s, e.g. because
    /// another process took the port meanwhile.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch().map_err(StartError::into_inner)
    }

    fn running(&self) -> anyhow::Result<&Running> {
        self.running.as_ref().context("redis-server is not running")
    }

    /// Starts `redis-server` on `self.port` and waits for `PING`.
    fn launch(&mut self) -> Result<(), StartError> {
        let server = servers::redis::server(
            &self.binary,
            self.dir.path(),
            Listen::Tcp(self.port),
            self.log.clone(),
        )
        .map_err(StartError::Failed)?;
        self.running = Some(server.start(&|| false)?);
        Ok(())
    }
}
