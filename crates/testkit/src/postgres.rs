//! A throwaway PostgreSQL cluster, copied from a per-machine `initdb`
//! template into a temp dir.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tempfile::TempDir;

use crate::find_binary;
use crate::process::{
    LaunchError, current_uid, kill_and_wait, launch_on_a_free_port, log_len, log_since, log_stdio,
    log_tail, lookup_user, send_signal, temp_dir, wait_timeout,
};

/// How long to wait for a server to accept connections.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long to wait for a server to exit after asking it to stop.
const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Bump when the `initdb` arguments change, so old templates are not reused.
const TEMPLATE_FORMAT: u32 = 1;
/// The system user PostgreSQL runs as when the tests run as root.
const POSTGRES_USER: &str = "postgres";

/// A private PostgreSQL server on 127.0.0.1 with its own data directory.
///
/// `fsync` and `full_page_writes` are off for speed: they only matter when the
/// machine itself crashes. `synchronous_commit` stays on, so a commit survives
/// a crash of the server process (`stop_immediate`), as in production; the
/// fault tests depend on that. Authentication is `trust` for the
/// `postgres` superuser. On drop the server gets a fast shutdown and its
/// directory is removed.
#[derive(Debug)]
pub struct Postgres {
    child: Option<Child>,
    port: u16,
    postgres_bin: PathBuf,
    /// `(uid, gid)` to run the server as, when the tests run as root.
    run_as: Option<(u32, u32)>,
    data: PathBuf,
    /// Holds `data` and the server log; removed on drop.
    root: TempDir,
}

/// A client of the database at `url`, its connection driven on a background task of the
/// current Tokio runtime.
///
/// # Errors
///
/// When the server cannot be reached or refuses the login.
pub async fn pg_client(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

impl Postgres {
    /// Starts a fresh cluster on a free port and waits until it accepts
    /// connections.
    ///
    /// The first call in a process runs `initdb` once into a template
    /// directory shared by all processes on the machine (by user and
    /// PostgreSQL installation); every cluster is a copy of it.
    ///
    /// # Errors
    ///
    /// When the PostgreSQL binaries are missing, when running as root without
    /// a `postgres` system user, when `initdb` fails, or when the server is
    /// not ready within 30 s (the error includes the end of its log).
    pub fn start() -> anyhow::Result<Postgres> {
        let initdb = find_binary("initdb")?;
        // Use the server from the same installation as initdb if possible:
        // initdb insists on a matching version.
        let postgres_bin = match initdb.parent().map(|dir| dir.join("postgres")) {
            Some(path) if path.is_file() => path,
            _ => find_binary("postgres")?,
        };
        let run_as = run_as()?;
        if let Some((uid, gid)) = run_as {
            check_traversable(&std::env::temp_dir(), uid, gid)?;
        }
        let template = template(&initdb, run_as)?;

        let root = temp_dir("postgres")?;
        if run_as.is_some() {
            // Let the server's user reach the data directory inside.
            std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711))
                .context("cannot make the postgres temp dir traversable")?;
        }
        let data = root.path().join("data");
        copy_dir(&template, &data)?;

        let mut pg = Postgres {
            child: None,
            port: 0, // chosen below
            postgres_bin,
            run_as,
            data,
            root,
        };
        launch_on_a_free_port("postgres", |port| {
            pg.port = port;
            pg.launch()
        })?;
        Ok(pg)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    #[must_use]
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The TCP port the server listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory (inside the temp dir removed on drop); `postmaster.pid`
    /// in it names the running server.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Creates a database with a unique name (`t_` and random hex) and
    /// returns its URL.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or refuses the statement.
    pub async fn create_database(&self) -> anyhow::Result<String> {
        let name = format!("t_{:016x}", rand::random::<u64>());
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .with_context(|| format!("cannot connect to {}", self.url()))?;
        let driver = tokio::spawn(connection);
        let created = client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("CREATE DATABASE {name} failed"));
        drop(client);
        // The connection ends once the client is gone; its outcome no
        // longer matters.
        let _ = driver.await;
        created?;
        Ok(self.database_url(&name))
    }

    /// Stops the server like a crash (immediate shutdown: SIGQUIT to the
    /// postmaster, no checkpoint) and waits for it to exit. The next
    /// [`start_again`](Self::start_again) runs crash recovery. Does nothing
    /// if the server is not running.
    ///
    /// # Errors
    ///
    /// When the server cannot be signalled or does not exit within 30 s (it
    /// is then killed).
    pub fn stop_immediate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        tracing::debug!(port = self.port, "immediate shutdown of postgres");
        if let Err(e) = send_signal(child.id(), "QUIT") {
            kill_and_wait(&mut child);
            return Err(e);
        }
        if wait_timeout(&mut child, STOP_DEADLINE).is_none() {
            kill_and_wait(&mut child);
            anyhow::bail!(
                "postgres on port {} ignored SIGQUIT for {STOP_DEADLINE:?} and was killed\n{}",
                self.port,
                log_tail(&self.log_path())
            );
        }
        Ok(())
    }

    /// Starts the same cluster again on the same port and waits until it
    /// accepts connections.
    ///
    /// # Errors
    ///
    /// When the server is still running, or is not ready within 30 s.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child {
            if matches!(child.try_wait(), Ok(None)) {
                anyhow::bail!("postgres on port {} is still running", self.port);
            }
            self.child = None;
        }
        self.launch().map_err(LaunchError::into_inner)
    }

    /// Makes the server ask every TCP client for a password (`scram-sha-256`), and gives the
    /// `postgres` superuser `password`; the Unix socket in the data directory stays `trust`.
    /// Connections already open stay as they are.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached, or the file cannot be written.
    pub async fn require_password(&self, password: &str) -> anyhow::Result<()> {
        let client = pg_client(&self.url()).await?;
        let quoted = password.replace('\'', "''");
        client
            .batch_execute(&format!(
                "SET password_encryption = 'scram-sha-256'; \
                 ALTER ROLE postgres PASSWORD '{quoted}'"
            ))
            .await
            .context("ALTER ROLE postgres PASSWORD")?;
        let hba = "local all all trust\n\
                   host all all 127.0.0.1/32 scram-sha-256\n\
                   host all all ::1/128 scram-sha-256\n";
        let path = self.data.join("pg_hba.conf");
        std::fs::write(&path, hba).with_context(|| format!("cannot write {}", path.display()))?;
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .context("pg_reload_conf()")?;
        Ok(())
    }

    /// The server's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Where the server's stdout and stderr go.
    fn log_path(&self) -> PathBuf {
        self.root.path().join("postgres.log")
    }

    fn database_url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Spawns the server on `self.port` and waits until it accepts
    /// connections.
    fn launch(&mut self) -> Result<(), LaunchError> {
        let failed = |e: anyhow::Error| LaunchError::Failed(e);
        let log = self.log_path();
        let offset = log_len(&log);
        let (stdout, stderr) = log_stdio(&log).map_err(failed)?;
        let mut command = Command::new(&self.postgres_bin);
        command
            .arg("-D")
            .arg(&self.data)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.data)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"])
            .args(["-c", "shared_buffers=64MB"])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot spawn {}", self.postgres_bin.display()))
            .map_err(failed)?;
        tracing::debug!(port = self.port, pid = child.id(), data = %self.data.display(), "started postgres");

        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let error = anyhow::anyhow!(
                    "postgres on port {} exited during startup ({status})\n{}",
                    self.port,
                    log_tail(&log)
                );
                return Err(LaunchError::from_log(error, &log_since(&log, offset)));
            }
            if accepts_connections(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                kill_and_wait(&mut child);
                return Err(failed(anyhow::anyhow!(
                    "postgres on port {} was not ready within {READY_DEADLINE:?}\n{}",
                    self.port,
                    log_tail(&log)
                )));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGINT is PostgreSQL's "fast" shutdown (SIGTERM would be "smart",
        // waiting for clients to disconnect).
        if send_signal(child.id(), "INT").is_err()
            || wait_timeout(&mut child, STOP_DEADLINE).is_none()
        {
            kill_and_wait(&mut child);
        }
        // `self.root` (and the data directory in it) is removed next.
    }
}

/// The `(uid, gid)` to run PostgreSQL as: `None` normally, the `postgres`
/// system user when running as root (initdb and postgres refuse root).
fn run_as() -> anyhow::Result<Option<(u32, u32)>> {
    if current_uid()? != 0 {
        return Ok(None);
    }
    match lookup_user(POSTGRES_USER)? {
        Some(ids) => Ok(Some(ids)),
        None => anyhow::bail!(
            "running as root, but PostgreSQL refuses to run as root and there is no \
             `{POSTGRES_USER}` system user to run it as: apt-get install postgresql \
             (which creates it) or create the user (useradd --system {POSTGRES_USER})"
        ),
    }
}

/// Fails unless the user `uid`/`gid` can traverse every ancestor of `dir`
/// (the data directories live below it).
fn check_traversable(dir: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    match common::system::untraversable_ancestor(dir, uid, gid) {
        None => Ok(()),
        Some(blocked) => anyhow::bail!(
            "the {POSTGRES_USER} user (uid {uid}) cannot traverse {}, which holds the \
             temp dir {}; point TMPDIR at a world-traversable directory such as /tmp",
            blocked.display(),
            dir.display()
        ),
    }
}

/// The template data directory for this process, made on first use.
fn template(initdb: &Path, run_as: Option<(u32, u32)>) -> anyhow::Result<PathBuf> {
    // Held while building, so threads of one process run initdb only once.
    static TEMPLATE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut cached = TEMPLATE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = cached.as_ref()
        && is_cluster(path)
    {
        return Ok(path.clone());
    }
    let path = build_template(initdb, run_as)?;
    *cached = Some(path.clone());
    Ok(path)
}

/// Whether `dir` looks like a complete data directory.
fn is_cluster(dir: &Path) -> bool {
    dir.join("PG_VERSION").is_file() && dir.join("global").join("pg_control").is_file()
}

/// Finds or creates the shared template directory
/// `$TMPDIR/voting-testkit-pgtemplate-<uid>-<hash>`.
///
/// It is created atomically across processes: initdb runs into a unique
/// directory which is then renamed into place; a process losing the rename
/// race uses the winner's.
fn build_template(initdb: &Path, run_as: Option<(u32, u32)>) -> anyhow::Result<PathBuf> {
    let runner = current_uid()?;
    let meta =
        std::fs::metadata(initdb).with_context(|| format!("cannot stat {}", initdb.display()))?;
    let mut hasher = DefaultHasher::new();
    TEMPLATE_FORMAT.hash(&mut hasher);
    initdb.hash(&mut hasher);
    meta.len().hash(&mut hasher);
    meta.mtime().hash(&mut hasher);
    run_as.hash(&mut hasher);
    let name = format!(
        "voting-testkit-pgtemplate-{runner}-{:016x}",
        hasher.finish()
    );
    let tmp = std::env::temp_dir();
    let target = tmp.join(&name);
    if is_cluster(&target) {
        return Ok(target);
    }

    let unique = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
    if target.exists() {
        // Incomplete leftovers (nothing incomplete is ever renamed into
        // place, so someone tampered with it): move aside and remove.
        let stale = tmp.join(format!("{name}.stale-{unique}"));
        if std::fs::rename(&target, &stale).is_ok() {
            let _ = std::fs::remove_dir_all(&stale);
        }
    }

    let work = tmp.join(format!("{name}.tmp-{unique}"));
    tracing::info!(template = %target.display(), "running initdb for the postgres test template");
    if let Err(e) = run_initdb(initdb, &work, run_as) {
        let _ = std::fs::remove_dir_all(&work);
        return Err(e);
    }
    match std::fs::rename(&work, &target) {
        Ok(()) => Ok(target),
        Err(_) if is_cluster(&target) => {
            // Another process won the race; use its template.
            let _ = std::fs::remove_dir_all(&work);
            Ok(target)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            Err(e).with_context(|| {
                format!(
                    "cannot move the postgres template into {}",
                    target.display()
                )
            })
        }
    }
}

/// Runs initdb into the new directory `dir`, as `run_as` if given.
fn run_initdb(initdb: &Path, dir: &Path, run_as: Option<(u32, u32)>) -> anyhow::Result<()> {
    std::fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .with_context(|| format!("cannot chown {} to uid {uid}", dir.display()))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot chmod 0700 {}", dir.display()))?;

    let mut command = Command::new(initdb);
    command
        .arg("-D")
        .arg(dir)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .current_dir("/")
        .stdin(Stdio::null());
    if let Some((uid, gid)) = run_as {
        command.uid(uid).gid(gid);
    }
    let output = command
        .output()
        .with_context(|| format!("cannot run {}", initdb.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} failed ({}):\n{}\n{}",
        initdb.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Copies the data directory `from` to the new path `to`, keeping owners and
/// modes (`cp -a`).
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    let output = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .stdin(Stdio::null())
        .output()
        .context("cannot run cp")?;
    anyhow::ensure!(
        output.status.success(),
        "cp -a {} {} failed ({}): {}",
        from.display(),
        to.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Whether a PostgreSQL server on 127.0.0.1:`port` completes a startup
/// handshake as `postgres` (trust auth). A server still starting up or
/// recovering answers with an error instead.
fn accepts_connections(port: u16) -> bool {
    let probe = || -> std::io::Result<bool> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.set_write_timeout(Some(Duration::from_secs(1)))?;

        // StartupMessage: length, protocol 3.0, then key/value pairs.
        let params: &[u8] = b"user\0postgres\0database\0postgres\0\0";
        let len = u32::try_from(8 + params.len()).unwrap_or(u32::MAX);
        let mut startup = Vec::with_capacity(64);
        startup.extend_from_slice(&len.to_be_bytes());
        startup.extend_from_slice(&0x0003_0000_u32.to_be_bytes());
        startup.extend_from_slice(params);
        stream.write_all(&startup)?;

        loop {
            let mut header = [0_u8; 5];
            stream.read_exact(&mut header)?;
            let body_len =
                u32::from_be_bytes([header[1], header[2], header[3], header[4]]).saturating_sub(4);
            if body_len > 1 << 20 {
                return Ok(false);
            }
            let mut body = vec![0_u8; body_len as usize];
            stream.read_exact(&mut body)?;
            match header[0] {
                // ReadyForQuery: fully up. Say goodbye politely.
                b'Z' => {
                    let _ = stream.write_all(&[b'X', 0, 0, 0, 4]);
                    return Ok(true);
                }
                // ErrorResponse, e.g. "the database system is starting up".
                b'E' => return Ok(false),
                // Authentication other than AuthenticationOk (trust).
                b'R' if body.get(..4) != Some(&[0, 0, 0, 0][..]) => return Ok(false),
                // AuthenticationOk, ParameterStatus, BackendKeyData, notices.
                _ => {}
            }
        }
    };
    probe().unwrap_or(false)
}
