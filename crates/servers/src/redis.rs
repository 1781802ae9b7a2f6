//! `redis-server` with append-only persistence (`appendfsync everysec`, the default) and no RDB
//! snapshots: every write is in the file before Redis answers it, so a restart (after a crash
//! of Redis alone) loses no queued vote. Stopped with SIGTERM (it flushes the file and exits).
//!
//! [`Listen::Socket`]: `--port 0 --unixsocket DIR/redis.sock --unixsocketperm 700`, no TCP
//! port; [`Listen::Tcp`]: `--port P --bind 127.0.0.1`.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::{Endpoint, Listen, Probe, Server};

/// `redis-server` on `PATH`.
pub fn find() -> Option<PathBuf> {
    common::system::find_on_path("redis-server")
}

/// The socket file in `dir` for [`Listen::Socket`].
pub fn socket_in(dir: &Path) -> PathBuf {
    dir.join("redis.sock")
}

/// `program` keeping its data in `dir` (created, mode 0700: only this user reaches the
/// socket) and listening as `listen`; its output appended to `log`.
///
/// # Errors
///
/// When `dir` cannot be created.
pub fn server(program: &Path, dir: &Path, listen: Listen, log: PathBuf) -> anyhow::Result<Server> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot chmod 0700 {}", dir.display()))?;
    let (mut args, at): (Vec<OsString>, _) = match listen {
        Listen::Tcp(port) => (
            vec![
                "--port".into(),
                port.to_string().into(),
                "--bind".into(),
                "127.0.0.1".into(),
            ],
            Endpoint::Tcp(port),
        ),
        Listen::Socket => (
            vec![
                "--port".into(),
                "0".into(),
                "--unixsocket".into(),
                socket_in(dir).into(),
                "--unixsocketperm".into(),
                "700".into(),
            ],
            Endpoint::Unix(socket_in(dir)),
        ),
    };
    args.extend(["--dir".into(), dir.as_os_str().to_owned()]);
    for arg in ["--appendonly", "yes", "--save", "", "--daemonize", "no"] {
        args.push(arg.into());
    }
    Ok(Server {
        name: "redis-server",
        program: program.to_path_buf(),
        args,
        run_as: None,
        log,
        probe: Probe::Redis(at),
        stop_signal: "TERM",
        own_group: false,
    })
}

/// Whether the server at `at` answers `PING` with `+PONG`.
pub fn ping(at: &Endpoint) -> bool {
    call(at, &["PING"]).is_ok_and(|reply| reply.starts_with(b"+PONG\r\n"))
}

/// Sends one command to the server at `at` and returns the first line of its reply
/// (`+OK\r\n`, `-ERR …\r\n`, …).
///
/// # Errors
///
/// When the server cannot be reached or does not answer in time.
pub fn call(at: &Endpoint, args: &[&str]) -> std::io::Result<Vec<u8>> {
    let mut stream = at.connect()?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reply = Vec::new();
    let mut buf = [0_u8; 64];
    while !reply.ends_with(b"\r\n") && reply.len() < 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(reply)
}
