//! What is particular to the two servers this process may start: their data directories
//! (`initdb` on first use), their command lines, how to tell that they are ready, and how to
//! ask them to stop.
//!
//! - Redis: `redis-server --port 0 --unixsocket DATA/redis/redis.sock --unixsocketperm 700
//!   --dir DATA/redis --appendonly yes --save ""`: no TCP port. Every write is in the
//!   append-only file before Redis answers it, so a restart (even after a crash of Redis alone)
//!   loses no queued vote. Ready when it answers `PING` with `PONG`. Stopped with SIGTERM (it
//!   flushes the file and exits).
//! - PostgreSQL: `initdb -U postgres --auth=trust -E UTF8` into `DATA/postgres` the first time
//!   (into a temporary directory renamed into place, so an interrupted `initdb` leaves nothing
//!   half made), then `postgres -D DATA/postgres -c listen_addresses= -c
//!   unix_socket_directories=DATA/postgres`: no TCP port, its socket in its own 0700
//!   directory (`trust` is safe there: only its owner and root can enter). Ready when it
//!   accepts a connection as `postgres`. Stopped with SIGINT (fast shutdown). As root it runs
//!   as the `postgres` system user, which owns `DATA/postgres`.
//! - Output of both goes to `DATA/redis.log` and `DATA/postgres.log`.
//! - `DATA/voting.lock` is held (locked) while this process runs: a second `voting` on the
//!   same data directory stops at once instead of taking the sockets over.
//! - Servers a previous `voting` left running (it was killed with SIGKILL, which its children
//!   outlive) still answer on the sockets; with the lock held, they belong to no one:
//!   [`stop_leftovers`] stops them (Redis `SHUTDOWN`, which writes its file; PostgreSQL
//!   SIGINT) before its own start, so two servers never share one data directory.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::plan::{POSTGRES_SOCKET_PORT, Plan, PostgresPlan, RedisPlan};
use crate::supervise::{Daemon, Probe};

/// How long one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Creates the data directory (made traversable when PostgreSQL runs as another user) and
/// locks it: the returned file holds the lock until it is dropped.
pub fn prepare_data_dir(plan: &Plan) -> anyhow::Result<File> {
    let dir = &plan.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let lock_path = dir.join("voting.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another voting process uses the data directory {}: stop it, or give this one \
             another directory (voting.data_dir, VOTING_VOTING__DATA_DIR)",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
        }
    }
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
    Ok(lock)
}

/// The Redis server of `plan`, its directory created (0700: only this user reaches the
/// socket).
pub fn redis(plan: &RedisPlan, data_dir: &Path) -> anyhow::Result<Daemon> {
    let dir = &plan.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot chmod 0700 {}", dir.display()))?;
    let args: Vec<OsString> = vec![
        "--port".into(),
        "0".into(),
        "--unixsocket".into(),
        plan.socket().into_os_string(),
        "--unixsocketperm".into(),
        "700".into(),
        "--dir".into(),
        dir.clone().into_os_string(),
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
        probe: Probe::Redis(plan.socket()),
        stop_signal: "TERM",
    })
}

/// The PostgreSQL server of `plan`; runs `initdb` first when the cluster does not exist yet.
pub async fn postgres(plan: &PostgresPlan, data_dir: &Path) -> anyhow::Result<Daemon> {
    let cluster = &plan.cluster;
    let log = data_dir.join("postgres.log");
    if !is_cluster(cluster) {
        initdb(plan, cluster, &log).await?;
    }
    // A list setting: the path in double quotes, so that a space or a comma stays in it.
    let mut sockets = OsString::from("unix_socket_directories=\"");
    sockets.push(
        cluster
            .as_os_str()
            .to_string_lossy()
            .replace('"', "\"\"")
            .as_str(),
    );
    sockets.push("\"");
    let args: Vec<OsString> = vec![
        "-D".into(),
        cluster.clone().into_os_string(),
        "-p".into(),
        POSTGRES_SOCKET_PORT.to_string().into(),
        "-c".into(),
        "listen_addresses=".into(),
        "-c".into(),
        sockets,
        "-c".into(),
        "unix_socket_permissions=0700".into(),
    ];
    Ok(Daemon {
        name: "postgres",
        program: plan.postgres.clone(),
        args,
        run_as: plan.run_as,
        log,
        probe: Probe::Postgres(cluster.clone()),
        stop_signal: "INT",
    })
}

/// Stops the servers of `plan` that a previous `voting` left running (see the module
/// documentation), and waits until they are gone. Call with the data directory locked.
pub async fn stop_leftovers(plan: &Plan) -> anyhow::Result<()> {
    if let Some(redis) = &plan.redis {
        let socket = redis.socket();
        if redis_pong(&socket).await.unwrap_or(false) {
            let client = redis::Client::open(redis.url())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await?;
            let pid = info
                .lines()
                .find_map(|l| l.strip_prefix("process_id:"))
                .and_then(|pid| pid.trim().parse::<u32>().ok())
                .context("the Redis left by an earlier run does not tell its pid")?;
            tracing::warn!(pid, socket = %socket.display(), "a Redis left by an earlier run answers on the socket: stopping it");
            // It writes its file, then exits without an answer.
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query_async(&mut conn).await;
            wait_until_gone("the Redis left by an earlier run", || async {
                !common::system::is_running(pid)
            })
            .await?;
        }
    }
    if let Some(pg) = &plan.postgres {
        let pid = std::fs::read_to_string(pg.cluster.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok());
        let answers = async {
            tokio::time::timeout(PROBE_TIMEOUT, postgres_accepts(&pg.cluster))
                .await
                .is_ok_and(|r| r.unwrap_or(false))
        };
        if let Some(pid) = pid
            && answers.await
        {
            tracing::warn!(pid, cluster = %pg.cluster.display(), "a PostgreSQL left by an earlier run answers on the socket: stopping it");
            common::system::send_signal(pid, "INT")
                .context("cannot stop the PostgreSQL left by an earlier run")?;
            wait_until_gone("the PostgreSQL left by an earlier run", || async {
                !common::system::is_running(pid)
            })
            .await?;
        }
    }
    Ok(())
}

/// Polls `gone` until it is true, for at most [`crate::supervise::STOP_DEADLINE`].
async fn wait_until_gone<F, Fut>(what: &str, mut gone: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + crate::supervise::STOP_DEADLINE;
    while !gone().await {
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{what} did not stop within {:?}: stop it by hand",
                crate::supervise::STOP_DEADLINE
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
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
    let (stdout, stderr) = common::system::log_stdio(log)?;
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

impl Probe {
    /// Whether the server answers as a ready one.
    pub async fn ready(&self) -> bool {
        let probe = async {
            match self {
                Probe::Redis(socket) => redis_pong(socket).await,
                Probe::Postgres(socket_dir) => postgres_accepts(socket_dir).await,
            }
        };
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, probe).await,
            Ok(Ok(true))
        )
    }
}

/// `PING` answered with `+PONG` (a Redis still loading its file answers `-LOADING`).
async fn redis_pong(socket: &Path) -> anyhow::Result<bool> {
    let mut stream = tokio::net::UnixStream::connect(socket).await?;
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
async fn postgres_accepts(socket_dir: &Path) -> anyhow::Result<bool> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(socket_dir)
        .port(POSTGRES_SOCKET_PORT)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(PROBE_TIMEOUT);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client.simple_query("SELECT 1").await?;
    Ok(true)
}

/// The commands that reach the servers of `plan` as they are printed: `psql …` and
/// `redis-cli …`, each with its program and arguments.
pub fn inspect_commands(plan: &Plan) -> Vec<(String, Vec<OsString>)> {
    let mut commands = Vec::new();
    if let Some(pg) = &plan.postgres {
        commands.push(("psql".to_string(), psql_args(&pg.cluster)));
    }
    if let Some(redis) = &plan.redis {
        commands.push((
            "redis-cli".to_string(),
            vec!["-s".into(), redis.socket().into_os_string()],
        ));
    }
    commands
}

/// `-h DIR -p 5432 -U postgres -d postgres`.
pub fn psql_args(socket_dir: &Path) -> Vec<OsString> {
    vec![
        "-h".into(),
        socket_dir.as_os_str().to_owned(),
        "-p".into(),
        POSTGRES_SOCKET_PORT.to_string().into(),
        "-U".into(),
        "postgres".into(),
        "-d".into(),
        "postgres".into(),
    ]
}

/// A command line as a shell would take it (arguments quoted where needed).
pub fn shell_line(program: &str, args: &[OsString]) -> String {
    let quote = |a: &str| {
        if !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-._=:@%+,".contains(&b))
        {
            a.to_string()
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        }
    };
    std::iter::once(program.to_string())
        .chain(args.iter().map(|a| quote(&a.to_string_lossy())))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        let line = shell_line("psql", &psql_args(Path::new("/srv/it's here")));
        assert_eq!(
            line,
            "psql -h '/srv/it'\\''s here' -p 5432 -U postgres -d postgres"
        );
        assert_eq!(
            shell_line("redis-cli", &["-s".into(), "/a/redis.sock".into()]),
            "redis-cli -s /a/redis.sock"
        );
    }
}
