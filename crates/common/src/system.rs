//! Small Unix facts and acts without `unsafe` in our code, shared by the `voting` supervisor
//! and the test kit: who we are, system users (the C library's `getpwnam_r`, through `nix`),
//! whether a user can reach a directory, where a program is, the end of a log file, and
//! signals (`kill(2)` through `nix`).

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;

use anyhow::Context;
use nix::sys::signal::{self, Signal};
use nix::unistd::{Pid, User, geteuid};

/// Where Debian and Ubuntu keep the versioned PostgreSQL server programs, out of `PATH`.
pub const DEBIAN_POSTGRES: &str = "/usr/lib/postgresql";

/// The effective uid of this process.
pub fn effective_uid() -> u32 {
    geteuid().as_raw()
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    geteuid().is_root()
}

/// `(uid, gid)` of the system user `name`, as the C library finds it (`/etc/passwd`, or
/// whatever the system's name service uses).
pub fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let user = User::from_name(name).ok()??;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// The first existing directory among `dir` and its ancestors that the user `uid`/`gid`
/// cannot traverse, if any. Directories that do not exist yet are not judged.
pub fn untraversable_ancestor(dir: &Path, uid: u32, gid: u32) -> Option<PathBuf> {
    dir.ancestors().find_map(|ancestor| {
        let meta = std::fs::metadata(ancestor).ok()?;
        let mode = meta.mode();
        let allowed = if meta.uid() == uid {
            mode & 0o100 != 0
        } else if meta.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        (!allowed).then(|| ancestor.to_path_buf())
    })
}

/// The executable `name` in one of the directories of `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is a regular file (following symlinks) with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `/usr/lib/postgresql/<version>/bin` directories, highest version first.
pub fn postgres_bin_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(DEBIAN_POSTGRES) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u64>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let key = name
                .split('.')
                .map(str::parse::<u64>)
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            Some((key, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// Opens `path` for appending (creating it) and returns it twice, for a child's stdout and
/// stderr.
pub fn log_stdio(path: &Path) -> anyhow::Result<(Stdio, Stdio)> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the log file {}", path.display()))?;
    let clone = file.try_clone()?;
    Ok((Stdio::from(file), Stdio::from(clone)))
}

/// The last `max_bytes` of the log at `path`, introduced by its name, for error messages.
pub fn log_tail(path: &Path, max_bytes: u64) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) if text.trim().is_empty() => format!("(log {} is empty)", path.display()),
        Ok(text) => format!("--- end of {} ---\n{}", path.display(), text.trim_end()),
        Err(e) => format!("(cannot read log {}: {e})", path.display()),
    }
}

/// Whether process `pid` runs: it exists and is not a zombie (a process that exited and that
/// its parent, perhaps an init that never reaps, has not waited for). It reads the state
/// letter in `/proc/<pid>/stat`, since a zombie still answers `kill(pid, 0)` and only its
/// parent can wait for it.
pub fn is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The command name is in parentheses and may hold spaces: the state follows the last ')'.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Sends signal `name` (`"TERM"`, `"INT"`, `"KILL"`, `"STOP"`…) to process `pid`.
pub fn send_signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let pid_t = i32::try_from(pid).with_context(|| format!("{pid} is not a process id"))?;
    signal::kill(Pid::from_raw(pid_t), signal_named(name)?)
        .with_context(|| format!("cannot send SIG{name} to process {pid}"))
}

/// Sends signal `name` to every process of the process group `pgid`.
pub fn signal_group(pgid: u32, name: &str) -> anyhow::Result<()> {
    let pgid_t = i32::try_from(pgid).with_context(|| format!("{pgid} is not a group id"))?;
    signal::killpg(Pid::from_raw(pgid_t), signal_named(name)?)
        .with_context(|| format!("cannot send SIG{name} to process group {pgid}"))
}

fn signal_named(name: &str) -> anyhow::Result<Signal> {
    Signal::from_str(&format!("SIG{name}")).map_err(|_| anyhow::anyhow!("no signal SIG{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_found_by_name() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
        assert_eq!(lookup_user("no-such-user-of-the-voting-app"), None);
    }

    #[test]
    fn a_private_directory_stops_everyone_but_its_owner() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        let inside = private.join("data");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let owner = std::fs::metadata(&private).unwrap();
        assert_eq!(
            untraversable_ancestor(&inside, owner.uid(), owner.gid()),
            None,
            "the owner enters"
        );
        // Someone else (nobody's ids, distinct from the owner's here).
        let (uid, gid) = (owner.uid() + 1, owner.gid() + 1);
        assert_eq!(untraversable_ancestor(&inside, uid, gid), Some(private));
    }

    #[test]
    fn tail_of_a_missing_log_says_so() {
        assert!(log_tail(Path::new("/no/such/log"), 100).contains("cannot read log"));
    }

    #[test]
    fn this_process_runs_and_no_process_does_not() {
        assert!(is_running(std::process::id()));
        assert!(!is_running(4_194_305));
    }

    #[test]
    fn a_signal_to_no_process_is_an_error() {
        // Above the kernel's largest pid (2^22).
        let err = format!("{:#}", send_signal(4_194_305, "TERM").unwrap_err());
        assert!(err.contains("SIGTERM to process 4194305"), "{err}");
        let err = send_signal(std::process::id(), "NOPE")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no signal SIGNOPE"), "{err}");
    }
}
