//! Small helpers for child processes: log files, signals, waiting, users.

use std::process::Child;
use std::time::{Duration, Instant};

use servers::StartError;
pub(crate) use servers::{log_len, log_since, log_tail, wait_timeout};

/// How many ports [`launch_on_a_free_port`] tries when another process grabs the port.
const START_ATTEMPTS: usize = 5;

/// Calls `launch` with a free port until it succeeds, with another free port each time
/// another process grabbed the port first ([`StartError::AddressInUse`]), at most
/// [`START_ATTEMPTS`] times. `name` names the server in the debug log.
pub(crate) fn launch_on_a_free_port(
    name: &str,
    mut launch: impl FnMut(u16) -> Result<(), StartError>,
) -> anyhow::Result<()> {
    let mut attempt = 1;
    loop {
        let port = crate::free_port();
        match launch(port) {
            Ok(()) => return Ok(()),
            Err(StartError::AddressInUse(e)) if attempt < START_ATTEMPTS => {
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

pub(crate) use common::system::log_stdio;

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
    fn a_taken_port_is_retried_on_another_and_other_failures_are_not() {
        let port_in_use = || StartError::AddressInUse(anyhow::anyhow!("taken"));

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
            Err(StartError::Failed(anyhow::anyhow!("broken")))
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
