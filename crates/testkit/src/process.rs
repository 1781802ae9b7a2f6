//! Small helpers for child processes: log files, signals, waiting, users.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Why launching a server failed: port collisions are worth retrying on
/// another port, anything else is not.
pub(crate) enum LaunchError {
    PortInUse(anyhow::Error),
    Failed(anyhow::Error),
}

impl LaunchError {
    /// Classifies a startup failure by what the server just logged.
    pub(crate) fn from_log(error: anyhow::Error, new_log: &str) -> Self {
        if new_log.contains("Address already in use") {
            Self::PortInUse(error)
        } else {
            Self::Failed(error)
        }
    }

    pub(crate) fn into_inner(self) -> anyhow::Error {
        match self {
            Self::PortInUse(e) | Self::Failed(e) => e,
        }
    }
}

/// How many ports [`launch_on_a_free_port`] tries when another process grabs the port.
const START_ATTEMPTS: usize = 5;

/// Calls `launch` with a free port until it succeeds, with another free port each time
/// another process grabbed the port first ([`LaunchError::PortInUse`]), at most
/// [`START_ATTEMPTS`] times. `name` names the server in the debug log.
pub(crate) fn launch_on_a_free_port(
    name: &str,
    mut launch: impl FnMut(u16) -> Result<(), LaunchError>,
) -> anyhow::Result<()> {
    let mut attempt = 1;
    loop {
        let port = crate::free_port();
        match launch(port) {
            Ok(()) => return Ok(()),
            Err(LaunchError::PortInUse(e)) if attempt < START_ATTEMPTS => {
                tracing::debug!(port, "{name} port taken, retrying: {e:#}");
                attempt += 1;
            }
            Err(e) => return Err(e.into_inner()),
        }
    }
}

/// A new directory `testkit-<name>-…` under [`std::env::temp_dir`], removed on drop.
pub(crate) fn temp_dir(name: &str) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("testkit-{name}-"))
        .tempdir()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create a temp dir testkit-{name}-… in {}: {e}",
                std::env::temp_dir().display()
            )
        })
}

/// How many bytes at the end of a log file an error message shows.
const LOG_TAIL_BYTES: u64 = 4096;

pub(crate) use common::system::log_stdio;

/// The last few kilobytes of the log at `path`, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    common::system::log_tail(path, LOG_TAIL_BYTES)
}

/// The current length of the file at `path` (0 if it does not exist), to
/// read only what a new process appends later with [`log_since`].
pub(crate) fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Everything appended to the log at `path` after byte `offset`.
pub(crate) fn log_since(path: &Path, offset: u64) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_default()
}

/// Sends signal `name` (e.g. `"INT"`, `"QUIT"`) to `pid` with the `kill`
/// command. Needs no unsafe code, unlike calling `kill(2)` directly.
pub(crate) fn send_signal(pid: u32, name: &str) -> anyhow::Result<()> {
    common::system::send_signal(pid, name)
}

/// Sends signal `name` to every process of the process group `pgid` (a child
/// spawned with `process_group(0)` leads the group of its own id), children
/// that it started included. Errors are ignored: the group may be gone.
pub(crate) fn signal_group(pgid: u32, name: &str) {
    let _ = common::system::signal_group(pgid, name);
}

/// Waits until no live process is left in the process group `pgid` (zombies
/// awaiting their reaper do not count), for at most `timeout`. Reads `/proc`;
/// `false` when some are still there.
pub(crate) fn wait_group_gone(pgid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if live_in_group(pgid) == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How many processes of group `pgid` are alive (not zombies), from `/proc/<pid>/stat`.
fn live_in_group(pgid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| in_group_alive(stat, pgid))
        .count()
}

/// Whether a `/proc/<pid>/stat` line is of a live process in group `pgid`:
/// `pid (comm) state ppid pgrp ...`, where `comm` may hold spaces and parens.
fn in_group_alive(stat: &str, pgid: u32) -> bool {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next();
    let _ppid = fields.next();
    let group = fields.next().and_then(|g| g.parse::<u32>().ok());
    group == Some(pgid) && !matches!(state, Some("Z" | "X"))
}

/// Polls `child` until it exits or `timeout` passes; `None` on timeout.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
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

/// Kills `child` with SIGKILL and reaps it, ignoring errors (it may be gone).
pub(crate) fn kill_and_wait(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The effective uid of this process.
pub(crate) fn current_uid() -> anyhow::Result<u32> {
    Ok(common::system::effective_uid())
}

/// Looks up the system user `name`, returning its `(uid, gid)`.
pub(crate) fn lookup_user(name: &str) -> anyhow::Result<Option<(u32, u32)>> {
    Ok(common::system::lookup_user(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_collisions_are_recognised() {
        let log = "could not bind IPv4 address \"127.0.0.1\": Address already in use";
        assert!(matches!(
            LaunchError::from_log(anyhow::anyhow!("x"), log),
            LaunchError::PortInUse(_)
        ));
        assert!(matches!(
            LaunchError::from_log(anyhow::anyhow!("x"), "FATAL: something else"),
            LaunchError::Failed(_)
        ));
    }

    #[test]
    fn a_taken_port_is_retried_on_another_and_other_failures_are_not() {
        let port_in_use = || LaunchError::PortInUse(anyhow::anyhow!("taken"));

        let mut ports = Vec::new();
        launch_on_a_free_port("test", |port| {
            ports.push(port);
            if ports.len() < 3 {
                Err(port_in_use())
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!(ports.len(), 3);
        assert!(ports[0] != ports[1] && ports[1] != ports[2], "{ports:?}");

        let mut calls = 0;
        let error = launch_on_a_free_port("test", |_| {
            calls += 1;
            Err(port_in_use())
        })
        .unwrap_err();
        assert_eq!((calls, error.to_string()), (START_ATTEMPTS, "taken".into()));

        let mut calls = 0;
        let error = launch_on_a_free_port("test", |_| {
            calls += 1;
            Err(LaunchError::Failed(anyhow::anyhow!("broken")))
        })
        .unwrap_err();
        assert_eq!((calls, error.to_string()), (1, "broken".into()));
    }

    #[test]
    fn process_groups_from_proc_stat() {
        let stat = "4242 (chromium (x) a) S 4200 4100 4100 0 -1 4194560 1 0";
        assert!(in_group_alive(stat, 4100));
        assert!(!in_group_alive(stat, 4200));
        assert!(!in_group_alive("4243 (chromium) Z 1 4100 4100 0", 4100));
        assert!(!in_group_alive("garbage", 4100));
    }
}
