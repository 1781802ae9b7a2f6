//! A binary (`vote`, `worker`, `result`) run as a child process the way an operator
//! runs it: a clean environment, its own port, as an unprivileged user when the tests run as
//! root, everything it prints kept, and SIGTERM to stop it.

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::http::Answer;
use crate::process::{
    current_uid, kill_and_wait, lookup_user, send_signal, temp_dir, wait_timeout,
};

/// The user services run as when the tests run as root.
pub const UNPRIVILEGED_USER: &str = "nobody";
/// How long a service may take to stop after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// The `(uid, gid)` to run services as: those of [`UNPRIVILEGED_USER`] when this process is
/// root, `None` when it is not (a service it starts is unprivileged already).
///
/// # Errors
///
/// When running as root and there is no such user.
pub fn unprivileged_user() -> anyhow::Result<Option<(u32, u32)>> {
    if current_uid()? != 0 {
        return Ok(None);
    }
    match lookup_user(UNPRIVILEGED_USER)? {
        Some(ids) => Ok(Some(ids)),
        None => anyhow::bail!(
            "running as root, and there is no `{UNPRIVILEGED_USER}` user to run the services \
             as: create it (useradd --system {UNPRIVILEGED_USER})"
        ),
    }
}

/// [`unprivileged_user`] for a test that runs a service binary.
///
/// # Panics
///
/// When running as root and there is no such user. When the tests run unprivileged already,
/// says so in the test's output: the service then runs as the same user.
#[must_use]
pub fn test_user() -> Option<(u32, u32)> {
    let run_as = unprivileged_user().expect("an unprivileged user to run as");
    if run_as.is_none() {
        println!("the tests run unprivileged already: the service runs as the same user");
    }
    run_as
}

/// The real, effective, saved and file-system ids of process `pid`, and its supplementary
/// groups, from `/proc/<pid>/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    pub groups: Vec<u32>,
}

impl Credentials {
    /// Reads them for `pid`.
    ///
    /// # Errors
    ///
    /// When the process is gone or `/proc` cannot be read.
    pub fn of(pid: u32) -> anyhow::Result<Credentials> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let ids = |field: &str| -> Vec<u32> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .map(|rest| {
                    rest.split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Credentials {
            uids: ids("Uid:"),
            gids: ids("Gid:"),
            groups: ids("Groups:"),
        })
    }

    /// Whether nothing of root is left: no uid, gid or supplementary group 0.
    #[must_use]
    pub fn is_unprivileged(&self) -> bool {
        !self.uids.is_empty()
            && !self.gids.is_empty()
            && ![&self.uids, &self.gids, &self.groups]
                .iter()
                .any(|ids| ids.contains(&0))
    }
}

/// A running service binary. Dropping it kills the process.
pub struct ChildProcess {
    child: Child,
    addr: SocketAddr,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    /// A copy of the binary that the unprivileged user can reach, when the original is not.
    _copy: Option<tempfile::TempDir>,
}

/// Whether the user `uid`/`gid` may execute `exe`: the execute bit for them on the file and on
/// every directory above it.
fn can_execute(exe: &Path, uid: u32, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    exe.ancestors().all(|path| {
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        let mode = meta.mode();
        if meta.uid() == uid {
            mode & 0o100 != 0
        } else if meta.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    })
}

/// `exe`, or a copy of it in a world-reachable temp dir when `uid`/`gid` cannot reach it (a
/// checkout under a private home directory).
fn reachable_binary(
    exe: &Path,
    uid: u32,
    gid: u32,
) -> anyhow::Result<(std::path::PathBuf, Option<tempfile::TempDir>)> {
    use std::os::unix::fs::PermissionsExt;
    if can_execute(exe, uid, gid) {
        return Ok((exe.to_path_buf(), None));
    }
    let dir = temp_dir("bin")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let copy = dir
        .path()
        .join(exe.file_name().unwrap_or("service".as_ref()));
    std::fs::copy(exe, &copy).with_context(|| format!("cannot copy {}", exe.display()))?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
    anyhow::ensure!(
        can_execute(&copy, uid, gid),
        "uid {uid} can reach neither {} nor its copy {}: point TMPDIR at a world-traversable \
         directory such as /tmp",
        exe.display(),
        copy.display()
    );
    Ok((copy, Some(dir)))
}

impl ChildProcess {
    /// Starts `exe` with only `PATH`, `VOTING_LISTEN` (a free port on 127.0.0.1) and `env` in
    /// its environment, as `run_as` (`(uid, gid)`) when given (from a copy of `exe` when that
    /// user cannot reach it). Its stdout and stderr are kept.
    ///
    /// # Errors
    ///
    /// When the binary cannot be started.
    pub fn spawn(
        exe: &Path,
        env: &[(&str, String)],
        run_as: Option<(u32, u32)>,
    ) -> anyhow::Result<ChildProcess> {
        ChildProcess::spawn_with_soft_nofile(exe, env, run_as, None)
    }

    /// [`ChildProcess::spawn`], started by `sh` with its soft limit of open files lowered
    /// to `soft_nofile` first (`ulimit -Sn`), as many container runtimes start a process.
    ///
    /// # Errors
    ///
    /// When the binary cannot be started.
    pub fn spawn_with_soft_nofile(
        exe: &Path,
        env: &[(&str, String)],
        run_as: Option<(u32, u32)>,
        soft_nofile: Option<u64>,
    ) -> anyhow::Result<ChildProcess> {
        let addr = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
        let (exe, copy) = match run_as {
            Some((uid, gid)) => reachable_binary(exe, uid, gid)?,
            None => (exe.to_path_buf(), None),
        };
        let mut cmd = match soft_nofile {
            None => Command::new(&exe),
            Some(soft) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -Sn {soft} && exec \"$0\""))
                    .arg(&exe);
                sh
            }
        };
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("VOTING_LISTEN", addr.to_string())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = run_as {
            // std drops root's supplementary groups too when it changes the uid.
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let readers = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|mut stream| {
            let output = output.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]);
                }
            })
        })
        .collect();
        Ok(ChildProcess {
            child,
            addr,
            output,
            readers,
            _copy: copy,
        })
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far.
    #[must_use]
    pub fn output(&self) -> String {
        let bytes = self.output.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// `GET path`.
    ///
    /// # Errors
    ///
    /// When nothing answers.
    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        crate::http::get(self.addr, path).await
    }

    /// Polls `GET /readyz` until it answers 200, for at most `limit`.
    ///
    /// # Panics
    ///
    /// When the process exits first or `limit` passes; the message holds its output.
    pub async fn until_ready(&mut self, limit: Duration) -> Answer {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the service exited ({status}) before it was ready:\n{}",
                    self.output()
                );
            }
            let last = self.get("/readyz").await;
            if let Ok(answer) = last {
                if answer.status == 200 {
                    return answer;
                }
                assert!(
                    Instant::now() < deadline,
                    "not ready within {limit:?}: {answer:?}\n{}",
                    self.output()
                );
            } else {
                assert!(
                    Instant::now() < deadline,
                    "no answer within {limit:?}: {last:?}\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts that nothing of root is left to the process and, when `run_as` (`(uid, gid)`)
    /// is given, that all its user and group ids are those.
    ///
    /// # Panics
    ///
    /// When it is not so, or its credentials cannot be read.
    pub fn assert_runs_as(&self, run_as: Option<(u32, u32)>) {
        let credentials = Credentials::of(self.pid()).expect("the credentials of the service");
        assert!(credentials.is_unprivileged(), "{credentials:?}");
        if let Some((uid, gid)) = run_as {
            assert!(
                credentials.uids.iter().all(|u| *u == uid),
                "{credentials:?}"
            );
            assert!(
                credentials.gids.iter().all(|g| *g == gid),
                "{credentials:?}"
            );
        }
    }

    /// `GET /metrics`, asserted to answer 200 without any of `secrets` in its body.
    ///
    /// # Panics
    ///
    /// When nothing answers, the status is not 200, or a secret shows.
    pub async fn metrics_without(&self, secrets: &[&str]) -> Answer {
        let metrics = self.get("/metrics").await.expect("an answer to /metrics");
        assert_eq!(metrics.status, 200, "{metrics:?}");
        for secret in secrets {
            assert!(!metrics.body.contains(secret), "{}", metrics.body);
        }
        metrics
    }

    /// [`stop`](Self::stop), asserting that SIGTERM is a clean stop, that the log was captured
    /// (it says `listening`) and that none of `secrets` is in it; returns the output.
    ///
    /// # Panics
    ///
    /// When any of that fails.
    pub fn stop_cleanly_without(self, secrets: &[&str]) -> String {
        let (status, output) = self.stop().expect("the service stops");
        assert!(
            status.success(),
            "SIGTERM is a clean stop: {status}\n{output}"
        );
        assert!(
            output.contains("listening"),
            "the log was captured: {output}"
        );
        for secret in secrets {
            assert!(!output.contains(secret), "{secret} in the log:\n{output}");
        }
        output
    }

    /// Sends SIGTERM and waits for the exit (SIGKILL after 30 s); returns the exit status and
    /// everything it printed.
    ///
    /// # Errors
    ///
    /// When the signal cannot be sent, or the process does not stop in time.
    pub fn stop(mut self) -> anyhow::Result<(ExitStatus, String)> {
        send_signal(self.child.id(), "TERM")?;
        let Some(status) = wait_timeout(&mut self.child, STOP_DEADLINE) else {
            kill_and_wait(&mut self.child);
            anyhow::bail!(
                "still running {STOP_DEADLINE:?} after SIGTERM:\n{}",
                self.output()
            );
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Ok((status, self.output()))
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            kill_and_wait(&mut self.child);
        }
    }
}

/// A file holding a password, as a Docker secret is: readable by its owner only, owned by the
/// user the service runs as. Removed on drop.
pub struct SecretFile {
    dir: tempfile::TempDir,
}

impl SecretFile {
    /// Writes `content` to a file owned by `owner` (`(uid, gid)`, or this process's user).
    ///
    /// # Errors
    ///
    /// When the temp dir or the file cannot be made.
    pub fn new(content: &str, owner: Option<(u32, u32)>) -> anyhow::Result<SecretFile> {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("secret")?;
        // Others may pass through to the file, not list the directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
        let path = dir.path().join("password");
        std::fs::write(&path, content)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .with_context(|| format!("cannot give {} to uid {uid}", path.display()))?;
        }
        Ok(SecretFile { dir })
    }

    #[must_use]
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("password")
    }
}

/// Runs `binary --help` and `binary --version` as a user would: both exit 0 on stdout, the
/// help names the binary, its options and where the configuration is documented, and the
/// version is `<name> <version>`.
pub fn assert_help_and_version(binary: &Path, name: &str) {
    let run = |arg: &str| {
        let out = std::process::Command::new(binary)
            .arg(arg)
            .output()
            .unwrap_or_else(|e| panic!("{} {arg}: {e}", binary.display()));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{name} {arg}: {:?}\n{stdout}",
            out.status
        );
        stdout
    };
    let help = run("--help");
    for expected in [
        format!("Usage: {name}"),
        "--config".into(),
        "Configuration".into(),
    ] {
        assert!(
            help.contains(&expected),
            "{name} --help lacks {expected:?}:\n{help}"
        );
    }
    let version = run("--version");
    assert_eq!(
        version.trim(),
        format!("{name} {}", env!("CARGO_PKG_VERSION"))
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_binary_another_user_cannot_reach_is_run_from_a_copy() {
        let other = current_uid().unwrap().wrapping_add(1);
        let private = tempfile::tempdir().unwrap();
        std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let exe = private.path().join("service");
        std::fs::write(&exe, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!can_execute(&exe, other, other));

        let (copy, dir) = reachable_binary(&exe, other, other).unwrap();
        assert_ne!(copy, exe);
        assert!(dir.is_some());
        assert!(can_execute(&copy, other, other));
        assert_eq!(std::fs::read(&copy).unwrap(), b"#!/bin/sh\n");

        // Reachable already: used as it is.
        std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let (same, none) = reachable_binary(&exe, other, other).unwrap();
        assert_eq!((same, none.is_none()), (exe, true));
    }
}
