//! A PostgreSQL cluster: `initdb -U postgres --auth=trust -E UTF8 --locale=C` into a
//! temporary directory beside it, renamed into place (an interrupted `initdb` leaves nothing
//! half made), then `postgres -D DIR` listening as [`Listen`] says, its socket in `DIR`. Ready
//! when it completes a startup handshake as `postgres`; stopped with SIGINT (fast shutdown).
//! Both refuse to run as root: as root they run as the `postgres` system user, which owns
//! the cluster.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use common::system;

use crate::{Endpoint, Listen, Probe, Server, log_tail};

/// The system user PostgreSQL runs as when this process runs as root.
pub const USER: &str = "postgres";
/// The port in the name of the socket file for [`Listen::Socket`] (no TCP port is opened).
pub const SOCKET_PORT: u16 = 5432;

/// `initdb` and `postgres` from one installation: the first directory of `PATH` that has
/// both, then Debian's `/usr/lib/postgresql/<version>/bin`, highest version first. An existing
/// cluster in `cluster` prefers the Debian installation of its own major version.
pub fn find(cluster: Option<&Path>) -> Option<(PathBuf, PathBuf)> {
    let pair = |dir: &Path| {
        let (initdb, postgres) = (dir.join("initdb"), dir.join("postgres"));
        (system::is_executable(&initdb) && system::is_executable(&postgres))
            .then_some((initdb, postgres))
    };
    if let Some(cluster) = cluster
        && let Ok(version) = std::fs::read_to_string(cluster.join("PG_VERSION"))
        && let Some(found) = pair(
            &Path::new(system::DEBIAN_POSTGRES)
                .join(version.trim())
                .join("bin"),
        )
    {
        return Some(found);
    }
    if let Some(initdb) = system::find_on_path("initdb") {
        if let Some(found) = pair(initdb.parent().unwrap_or(Path::new("/"))) {
            return Some(found);
        }
        if let Some(postgres) = system::find_on_path("postgres") {
            return Some((initdb, postgres));
        }
    }
    system::postgres_bin_dirs().iter().find_map(|dir| pair(dir))
}

/// The `(uid, gid)` to run PostgreSQL as: `None` normally, the `postgres` system user when
/// this process is root. The error is one line naming what to do.
pub fn run_as() -> Result<Option<(u32, u32)>, String> {
    if !system::is_root() {
        return Ok(None);
    }
    system::lookup_user(USER).map(Some).ok_or_else(|| {
        format!(
            "running as root, but PostgreSQL refuses to run as root and there is no `{USER}` \
             system user to run it as: create it (useradd --system {USER}) or install \
             PostgreSQL ({})",
            crate::INSTALL_HINT
        )
    })
}

/// Whether `dir` holds a complete cluster.
pub fn is_cluster(dir: &Path) -> bool {
    dir.join("PG_VERSION").is_file() && dir.join("global").join("pg_control").is_file()
}

/// A cluster (its data directory) and the programs of one installation that run it.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub dir: PathBuf,
    pub initdb: PathBuf,
    pub postgres: PathBuf,
    /// `(uid, gid)` to run them as (see [`run_as`]).
    pub run_as: Option<(u32, u32)>,
}

impl Cluster {
    /// Runs `initdb` unless the cluster exists, into a temporary directory beside it that is
    /// then renamed into place; when another process put a cluster there first, that one
    /// stays. `initdb`'s output is appended to `log`. With `fsync` false, `initdb` does not
    /// wait for the disk (for throwaway clusters).
    ///
    /// # Errors
    ///
    /// When the directory exists but is no cluster, or `initdb` fails (the error shows the
    /// end of `log`).
    pub fn init(&self, log: &Path, fsync: bool) -> anyhow::Result<()> {
        let dir = &self.dir;
        if is_cluster(dir) {
            return Ok(());
        }
        if dir.exists() {
            anyhow::bail!(
                "{} exists but is not a PostgreSQL data directory: move it away and start again",
                dir.display()
            );
        }
        let unique = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
        let work = self.sibling(&format!("init-{unique}"));
        tracing::info!(cluster = %dir.display(), initdb = %self.initdb.display(), "creating the PostgreSQL cluster");
        let done =
            self.initdb_into(&work, log, fsync)
                .and_then(|()| match std::fs::rename(&work, dir) {
                    Ok(()) => Ok(()),
                    Err(_) if is_cluster(dir) => Ok(()),
                    Err(e) => Err(e).with_context(|| {
                        format!("cannot move the new cluster to {}", dir.display())
                    }),
                });
        // Gone after the rename; what is left of a failed or superfluous one.
        let _ = std::fs::remove_dir_all(&work);
        done
    }

    /// Removes what `initdb`s of [`Cluster::init`] that were interrupted left beside the
    /// cluster. Only while no other process may be creating it.
    pub fn remove_interrupted_inits(&self) {
        let prefix = self.sibling("init-");
        let prefix = prefix.file_name().unwrap_or_default().to_string_lossy();
        let parent = self.dir.parent().unwrap_or(Path::new("/"));
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&*prefix) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// `DIR.<suffix>`, beside the cluster.
    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.dir.file_name().unwrap_or_default().to_owned();
        name.push(".");
        name.push(suffix);
        self.dir.with_file_name(name)
    }

    fn initdb_into(&self, work: &Path, log: &Path, fsync: bool) -> anyhow::Result<()> {
        std::fs::create_dir(work).with_context(|| format!("cannot create {}", work.display()))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(work, Some(uid), Some(gid))
                .with_context(|| format!("cannot give {} to the {USER} user", work.display()))?;
        }
        std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot chmod 0700 {}", work.display()))?;
        let (stdout, stderr) = system::log_stdio(log)?;
        let mut command = Command::new(&self.initdb);
        command
            .arg("-D")
            .arg(work)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .args((!fsync).then_some("--no-sync"))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        let status = command
            .status()
            .with_context(|| format!("cannot run {}", self.initdb.display()))?;
        anyhow::ensure!(
            status.success(),
            "{} failed ({status})\n{}",
            self.initdb.display(),
            log_tail(log)
        );
        Ok(())
    }

    /// The server of this cluster, listening as `listen`, its socket in the cluster's
    /// directory, with the extra `settings` (`name=value`); its output appended to `log`.
    pub fn server(&self, listen: Listen, log: PathBuf, settings: &[&str]) -> Server {
        // A list setting: the path in double quotes, so that a space or a comma stays in it.
        let mut sockets = OsString::from("unix_socket_directories=\"");
        sockets.push(self.dir.to_string_lossy().replace('"', "\"\""));
        sockets.push("\"");
        let (port, listen_addresses, at) = match listen {
            Listen::Tcp(port) => (port, "listen_addresses=127.0.0.1", Endpoint::Tcp(port)),
            Listen::Socket => (
                SOCKET_PORT,
                "listen_addresses=",
                Endpoint::Unix(self.dir.join(format!(".s.PGSQL.{SOCKET_PORT}"))),
            ),
        };
        let mut args: Vec<OsString> = vec![
            "-D".into(),
            self.dir.clone().into(),
            "-p".into(),
            port.to_string().into(),
            "-c".into(),
            listen_addresses.into(),
            "-c".into(),
            sockets,
        ];
        if listen == Listen::Socket {
            args.extend(["-c".into(), "unix_socket_permissions=0700".into()]);
        }
        for setting in settings {
            args.extend(["-c".into(), setting.into()]);
        }
        Server {
            name: "postgres",
            program: self.postgres.clone(),
            args,
            run_as: self.run_as,
            log,
            probe: Probe::Postgres(at),
            stop_signal: "INT",
            own_group: false,
        }
    }
}

/// Whether the server at `at` completes a startup handshake as `postgres` (trust
/// authentication) up to `ReadyForQuery`.
pub fn accepts_connections(at: &Endpoint) -> bool {
    let probe = || -> std::io::Result<bool> {
        let mut stream = at.connect()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_made_beside_its_place_and_moved_in() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster {
            dir: dir.path().join("postgres"),
            initdb: "/bin/false".into(),
            postgres: PathBuf::new(),
            run_as: None,
        };
        assert_eq!(
            cluster.sibling("init-1"),
            dir.path().join("postgres.init-1")
        );
        let log = dir.path().join("init.log");
        let error = cluster.init(&log, false).unwrap_err().to_string();
        assert!(error.contains("/bin/false failed"), "{error}");
        // Nothing half made is left.
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "{left:?}");

        std::fs::create_dir(dir.path().join("postgres.init-7-ab")).unwrap();
        cluster.remove_interrupted_inits();
        assert!(!dir.path().join("postgres.init-7-ab").exists());

        std::fs::create_dir(&cluster.dir).unwrap();
        let error = cluster.init(&log, false).unwrap_err().to_string();
        assert!(
            error.contains("is not a PostgreSQL data directory"),
            "{error}"
        );
    }
}
