//! What is particular to the servers `voting` starts ([`servers`] starts, probes and stops
//! them): where they live, and how a data directory is kept to one `voting`.
//!
//! - Redis in `DATA/redis`, its socket `DATA/redis/redis.sock`, no TCP port; append-only, so
//!   a restart (even after a crash of Redis alone) loses no queued vote.
//! - PostgreSQL in `DATA/postgres` (`initdb` the first time), its socket in that 0700
//!   directory, no TCP port (`trust` is safe there: only its owner and root can enter). As
//!   root it runs as the `postgres` system user, which owns `DATA/postgres`.
//! - Both in process groups of their own, their output in `DATA/redis.log` and
//!   `DATA/postgres.log`.
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
use std::time::Duration;

use anyhow::Context;
use servers::{Cluster, Endpoint, Listen, STOP_DEADLINE, Server};

use crate::plan::{POSTGRES_SOCKET_PORT, Plan, PostgresPlan, RedisPlan};

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
pub fn redis(plan: &RedisPlan, data_dir: &Path) -> anyhow::Result<Server> {
    let log = data_dir.join("redis.log");
    let server = servers::redis::server(&plan.server, &plan.dir, Listen::Socket, log)?;
    Ok(Server {
        own_group: true,
        ..server
    })
}

/// The PostgreSQL server of `plan`; runs `initdb` first when the cluster does not exist yet.
pub fn postgres(plan: &PostgresPlan, data_dir: &Path) -> anyhow::Result<Server> {
    let cluster = Cluster {
        dir: plan.cluster.clone(),
        initdb: plan.initdb.clone(),
        postgres: plan.postgres.clone(),
        run_as: plan.run_as,
    };
    let log = data_dir.join("postgres.log");
    cluster.remove_interrupted_inits();
    cluster.init(&log, true)?;
    Ok(Server {
        own_group: true,
        ..cluster.server(Listen::Socket, log, &[])
    })
}

/// Stops the servers of `plan` that a previous `voting` left running (see the module
/// documentation), and waits until they are gone. Call with the data directory locked.
pub async fn stop_leftovers(plan: &Plan) -> anyhow::Result<()> {
    if let Some(redis) = &plan.redis {
        let socket = redis.socket();
        if servers::redis::ping(&Endpoint::Unix(socket.clone())) {
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
        if let Some(pid) = pid
            && servers::postgres::accepts_connections(&Endpoint::Unix(pg.socket()))
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

/// Polls `gone` until it is true, for at most [`STOP_DEADLINE`].
async fn wait_until_gone<F, Fut>(what: &str, mut gone: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
    while !gone().await {
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{what} did not stop within {:?}: stop it by hand",
                STOP_DEADLINE
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
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
