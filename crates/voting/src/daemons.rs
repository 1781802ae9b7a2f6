//! What is particular to the two servers this process may start: their data directories
//! (`initdb` on first use), their command lines, how to tell that they are ready, and how to
//! ask them to stop.
//!
//! - Redis: `redis-server --port P --bind HOST --dir DATA/redis --appendonly yes --save ""`.
//!   Every write is in the append-only file before Redis answers it, so a restart (even after
//!   a crash of Redis alone) loses no queued vote. Ready when it answers `PING` with `PONG`.
//!   Stopped with SIGTERM (it flushes the file and exits).
//! - PostgreSQL: `initdb -U postgres --auth=trust -E UTF8` into `DATA/postgres` the first time
//!   (into a temporary directory renamed into place, so an interrupted `initdb` leaves nothing
//!   half made), then `postgres -D DATA/postgres -p P -c listen_addresses=HOST`, without a
//!   Unix socket. Ready when it accepts a connection as `postgres`. Stopped with SIGINT (fast
//!   shutdown). As root both run as the `postgres` system user, which owns `DATA/postgres`.
//! - Output of both goes to `DATA/redis.log` and `DATA/postgres.log`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::plan::{Plan, PostgresPlan, RedisPlan};
use crate::supervise::{Daemon, Probe};

/// How long one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Creates the data directory; made traversable when PostgreSQL runs as another user.
pub fn prepare_data_dir(plan: &Plan) -> anyhow::Result<()> {
    let dir = &plan.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let runs_as_other = plan.postgres.as_ref().is_some_and(|p| p.run_as.is_some());
    if runs_as_other {
        let mode = std::fs::metadata(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011))
                .with_context(|| {
                    format!(
                        "cannot let the postgres user traverse {}: make it world-traversable (chmod o+x)",
                        dir.display()
                    )
                })?;
        }
    }
    Ok(())
}

/// The Redis server of `plan`, its directory created.
pub fn redis(plan: &RedisPlan, data_dir: &Path) -> anyhow::Result<Daemon> {
    let dir = data_dir.join("redis");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let args: Vec<OsString> = vec![
        "--port".into(),
        plan.addr.port().to_string().into(),
        "--bind".into(),
        plan.addr.ip().to_string().into(),
        "--dir".into(),
        dir.into_os_string(),
        "--appendonly".into(),
        "yes".into(),
        "--save".into(),
        "".into(),
        "--daemonize".into(),
        "no".into(),
    ];
    Ok(Daemon {
        name: "redis-server",
        program: plan.server.clone(),
        args,
        run_as: None,
        log: data_dir.join("redis.log"),
        probe: Probe::Redis(plan.addr),
        stop_signal: "TERM",
    })
}

/// The PostgreSQL server of `plan`; runs `initdb` first when the cluster does not exist yet.
pub async fn postgres(plan: &PostgresPlan, data_dir: &Path) -> anyhow::Result<Daemon> {
    let cluster = data_dir.join("postgres");
    let log = data_dir.join("postgres.log");
    if !is_cluster(&cluster) {
        initdb(plan, &cluster, &log).await?;
    }
    let args: Vec<OsString> = vec![
        "-D".into(),
        cluster.into_os_string(),
        "-p".into(),
        plan.addr.port().to_string().into(),
        "-c".into(),
        format!("listen_addresses={}", plan.addr.ip()).into(),
        "-c".into(),
        "unix_socket_directories=".into(),
    ];
    Ok(Daemon {
        name: "postgres",
        program: plan.postgres.clone(),
        args,
        run_as: plan.run_as,
        log,
        probe: Probe::Postgres(plan.addr),
        stop_signal: "INT",
    })
}

/// Whether `dir` holds a complete cluster.
fn is_cluster(dir: &Path) -> bool {
    dir.join("PG_VERSION").is_file() && dir.join("global").join("pg_control").is_file()
}

/// Runs `initdb` into a fresh directory next to `cluster`, then renames it into place.
async fn initdb(plan: &PostgresPlan, cluster: &Path, log: &Path) -> anyhow::Result<()> {
    let parent = cluster.parent().unwrap_or(Path::new("/"));
    if cluster.exists() {
        // Not a cluster (is_cluster said so): a directory someone else made, or a leftover
        // of a version of this program that ran initdb in place. Keep it, but say so.
        anyhow::bail!(
            "{} exists but is not a PostgreSQL data directory: move it away and start again",
            cluster.display()
        );
    }
    // Leftovers of an initdb that was interrupted.
    if let Ok(entries) = std::fs::read_dir(parent) {
        for entry in entries.filter_map(Result::ok) {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("postgres.init-")
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let work = parent.join(format!("postgres.init-{}", std::process::id()));
    std::fs::create_dir(&work).with_context(|| format!("cannot create {}", work.display()))?;
    if let Some((uid, gid)) = plan.run_as {
        std::os::unix::fs::chown(&work, Some(uid), Some(gid))
            .with_context(|| format!("cannot give {} to the postgres user", work.display()))?;
    }
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot chmod 0700 {}", work.display()))?;

    tracing::info!(cluster = %cluster.display(), initdb = %plan.initdb.display(), "creating the PostgreSQL cluster (first start)");
    let (stdout, stderr) = log_stdio(log)?;
    let mut command = tokio::process::Command::new(&plan.initdb);
    command
        .arg("-D")
        .arg(&work)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true);
    if let Some((uid, gid)) = plan.run_as {
        command.uid(uid).gid(gid);
    }
    let status = command
        .status()
        .await
        .with_context(|| format!("cannot run {}", plan.initdb.display()));
    let done = match status {
        Ok(status) if status.success() => std::fs::rename(&work, cluster)
            .with_context(|| format!("cannot move the new cluster to {}", cluster.display())),
        Ok(status) => Err(anyhow::anyhow!(
            "{} failed ({status}); its output is in {}",
            plan.initdb.display(),
            log.display()
        )),
        Err(e) => Err(e),
    };
    if done.is_err() {
        let _ = std::fs::remove_dir_all(&work);
    }
    done
}

/// Opens `path` for appending and returns it twice, for a child's stdout and stderr.
pub fn log_stdio(path: &Path) -> anyhow::Result<(Stdio, Stdio)> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the log file {}", path.display()))?;
    let clone = file.try_clone()?;
    Ok((Stdio::from(file), Stdio::from(clone)))
}

impl Probe {
    /// Whether the server answers as a ready one.
    pub async fn ready(&self) -> bool {
        let probe = async {
            match self {
                Probe::Redis(addr) => redis_pong(*addr).await,
                Probe::Postgres(addr) => postgres_accepts(*addr).await,
            }
        };
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, probe).await,
            Ok(Ok(true))
        )
    }
}

/// `PING` answered with `+PONG` (a Redis still loading its file answers `-LOADING`).
async fn redis_pong(addr: SocketAddr) -> anyhow::Result<bool> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
    let mut reply = Vec::new();
    let mut buf = [0_u8; 64];
    while !reply.ends_with(b"\r\n") && reply.len() < 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(reply.starts_with(b"+PONG\r\n"))
}

/// A connection as `postgres` to the database `postgres` answers `SELECT 1`.
async fn postgres_accepts(addr: SocketAddr) -> anyhow::Result<bool> {
    let client = superuser(addr).await?;
    client.simple_query("SELECT 1").await?;
    Ok(true)
}

/// A connection to the own cluster as its superuser.
async fn superuser(addr: SocketAddr) -> anyhow::Result<tokio_postgres::Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr.ip().to_string())
        .port(addr.port())
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(PROBE_TIMEOUT);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Creates the role and the database that `url` names in the own cluster, when they are not
/// `postgres` and do not exist yet (authentication is `trust`, so no password is set).
pub async fn ensure_database(addr: SocketAddr, url: &str) -> anyhow::Result<()> {
    let wanted: tokio_postgres::Config = url.parse().context("bad PostgreSQL URL")?;
    let user = wanted.get_user().unwrap_or("postgres").to_string();
    let database = wanted.get_dbname().unwrap_or(&user).to_string();
    if user == "postgres" && database == "postgres" {
        return Ok(());
    }
    let client = superuser(addr)
        .await
        .context("connecting to the own PostgreSQL")?;
    let role_exists = !client
        .query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
        .await?
        .is_empty();
    if !role_exists {
        tracing::info!(role = %user, "creating the PostgreSQL role the configuration names");
        client
            .batch_execute(&format!("CREATE ROLE {} LOGIN", quote_ident(&user)))
            .await
            .with_context(|| format!("CREATE ROLE {user}"))?;
    }
    let database_exists = !client
        .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await?
        .is_empty();
    if !database_exists {
        tracing::info!(%database, "creating the PostgreSQL database the configuration names");
        client
            .batch_execute(&format!(
                "CREATE DATABASE {} OWNER {}",
                quote_ident(&database),
                quote_ident(&user)
            ))
            .await
            .with_context(|| format!("CREATE DATABASE {database}"))?;
    }
    Ok(())
}

/// An SQL identifier in double quotes.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("votes"), "\"votes\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
