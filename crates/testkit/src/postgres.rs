//! A throwaway PostgreSQL cluster, copied from a per-machine `initdb`
//! template into a temp dir.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::Context as _;
use servers::postgres::{USER, is_cluster};
use servers::{Cluster, Listen, Running, StartError};
use tempfile::TempDir;

use crate::process::{launch_on_a_free_port, temp_dir};

/// Bump when the `initdb` arguments change, so old templates are not reused.
const TEMPLATE_FORMAT: u32 = 1;
/// Settings for speed, and for many test clients.
const SETTINGS: &[&str] = &[
    "fsync=off",
    "full_page_writes=off",
    "max_connections=200",
    "shared_buffers=64MB",
];

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
    running: Option<Running>,
    port: u16,
    /// Its data directory in `root`, and the programs.
    cluster: Cluster,
    /// Holds the data directory and the server log; removed on drop.
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
    /// not ready within 60 s (the error includes the end of its log).
    pub fn start() -> anyhow::Result<Postgres> {
        let (initdb, postgres) = servers::postgres::find(None).ok_or_else(|| {
            anyhow::anyhow!(servers::not_found(&["PostgreSQL (initdb and postgres)"]))
        })?;
        let run_as = servers::postgres::run_as().map_err(anyhow::Error::msg)?;
        if let Some((uid, gid)) = run_as {
            check_traversable(&std::env::temp_dir(), uid, gid)?;
        }
        let root = temp_dir("postgres")?;
        if run_as.is_some() {
            // Let the server's user reach the data directory inside.
            std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711))
                .context("cannot make the postgres temp dir traversable")?;
        }
        let mut cluster = Cluster {
            dir: PathBuf::new(),
            initdb,
            postgres,
            run_as,
        };
        let template = template(&cluster, &root.path().join("postgres.log"))?;
        cluster.dir = root.path().join("data");
        copy_dir(&template, &cluster.dir)?;

        let mut pg = Postgres {
            running: None,
            port: 0, // chosen below
            cluster,
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
        &self.cluster.dir
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
        match self.running.take() {
            Some(mut running) => running.stop_with("QUIT").map(drop),
            None => Ok(()),
        }
    }

    /// Starts the same cluster again on the same port and waits until it
    /// accepts connections.
    ///
    /// # Errors
    ///
    /// When the server is still running, or is not ready within 60 s.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if let Some(running) = &mut self.running {
            if running.exited().is_none() {
                anyhow::bail!("postgres on port {} is still running", self.port);
            }
            self.running = None;
        }
        self.launch().map_err(StartError::into_inner)
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
        let path = self.cluster.dir.join("pg_hba.conf");
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

    /// Starts the server on `self.port` and waits until it accepts connections.
    fn launch(&mut self) -> Result<(), StartError> {
        let server = self
            .cluster
            .server(Listen::Tcp(self.port), self.log_path(), SETTINGS);
        self.running = Some(server.start(&|| false)?);
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's "fast" shutdown (SIGTERM would be "smart",
        // waiting for clients to disconnect). `self.root` is removed next.
        if let Some(mut running) = self.running.take() {
            let _ = running.stop();
        }
    }
}

/// Fails unless the user `uid`/`gid` can traverse every ancestor of `dir`
/// (the data directories live below it).
fn check_traversable(dir: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    match common::system::untraversable_ancestor(dir, uid, gid) {
        None => Ok(()),
        Some(blocked) => anyhow::bail!(
            "the {USER} user (uid {uid}) cannot traverse {}, which holds the \
             temp dir {}; point TMPDIR at a world-traversable directory such as /tmp",
            blocked.display(),
            dir.display()
        ),
    }
}

/// The template data directory for this process, made on first use.
fn template(programs: &Cluster, log: &Path) -> anyhow::Result<PathBuf> {
    // Held while building, so threads of one process run initdb only once.
    static TEMPLATE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut cached = TEMPLATE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = cached.as_ref()
        && is_cluster(path)
    {
        return Ok(path.clone());
    }
    let path = build_template(programs, log)?;
    *cached = Some(path.clone());
    Ok(path)
}

/// Finds or creates the shared template directory
/// `$TMPDIR/voting-testkit-pgtemplate-<uid>-<hash>`.
///
/// It is created atomically across processes: initdb runs into a unique
/// directory which is then renamed into place; a process losing the rename
/// race uses the winner's.
fn build_template(programs: &Cluster, log: &Path) -> anyhow::Result<PathBuf> {
    let runner = common::system::effective_uid();
    let initdb = &programs.initdb;
    let meta =
        std::fs::metadata(initdb).with_context(|| format!("cannot stat {}", initdb.display()))?;
    let mut hasher = DefaultHasher::new();
    TEMPLATE_FORMAT.hash(&mut hasher);
    initdb.hash(&mut hasher);
    meta.len().hash(&mut hasher);
    meta.mtime().hash(&mut hasher);
    programs.run_as.hash(&mut hasher);
    let target = std::env::temp_dir().join(format!(
        "voting-testkit-pgtemplate-{runner}-{:016x}",
        hasher.finish()
    ));
    if !is_cluster(&target) && target.exists() {
        // Incomplete leftovers (nothing incomplete is ever renamed into
        // place, so someone tampered with it): move aside and remove.
        let stale = target.with_extension(format!("stale-{:016x}", rand::random::<u64>()));
        if std::fs::rename(&target, &stale).is_ok() {
            let _ = std::fs::remove_dir_all(&stale);
        }
    }
    let template = Cluster {
        dir: target,
        ..programs.clone()
    };
    template.init(log, false)?;
    Ok(template.dir)
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
