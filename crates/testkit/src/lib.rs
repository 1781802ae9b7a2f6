//! Dev-only helpers for integration tests: throwaway real servers, and a real browser.
//!
//! [`Redis`] and [`Postgres`] each start a private server process on a free
//! port inside its own temporary directory and stop it when dropped, so tests
//! running in parallel threads or processes never share state.
//!
//! [`Nginx`] serves the project's own routes (`nginx/routes.conf`) in front of
//! services the test started, and [`Browser`] is a headless Chromium driven
//! over WebDriver ([`fantoccini`]) for the end-to-end tests. [`story`] is those tests'
//! browser story, told against any deployment of the app given its base URL.
//! [`child`] runs a service binary as an operator would, as an unprivileged user when the
//! tests run as root.
//!
//! The harness of the services' tests: [`Infra`] (a Redis of the test's own, a fresh database on
//! the PostgreSQL server the test process shares, and a service configuration pointed at
//! them), [`App`] (a service's `run` on the test's runtime), [`Tally`] and [`Socket`] (the
//! results as a client sees them) and [`eventually`] (polling with a deadline).
//!
//! The binaries are located with [`find_binary`]; when one is missing the
//! error says which package to install.
//!
//! All files live under [`std::env::temp_dir`], so `TMPDIR` chooses where:
//! `TMPDIR=/dev/shm` (tmpfs) makes PostgreSQL clusters, which are copies of
//! a ~1000-file template, much faster to create on slow disks.
//!
//! Servers are stopped by `Drop`; a test process that aborts (or is killed)
//! without unwinding leaves its servers running, except [`Infra`]'s shared PostgreSQL.

#![forbid(unsafe_code)]

mod app;
mod binary;
mod browser;
pub mod child;
pub mod http;
mod infra;
mod nginx;
mod postgres;
mod process;
mod redis;
pub mod story;
mod tally;

use std::collections::HashSet;
use std::future::Future;
use std::net::TcpListener;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

pub use app::{App, Stop};
pub use binary::find_binary;
pub use browser::{Browser, BrowserOptions};
pub use fantoccini;
pub use infra::{Infra, voter};
pub use nginx::{Nginx, project_nginx_dir};
pub use postgres::{Postgres, pg_client};
pub use redis::Redis;
pub use tally::{Received, Socket, Tally, TallyOption};

/// How long an awaited condition may take, by default, before a test fails instead of hanging.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Sends signal `name` (`"KILL"`, `"STOP"`, `"CONT"`, …) to process `pid`, with the `kill`
/// command (no unsafe code). For tests that crash or pause a service they started.
///
/// # Errors
///
/// When `kill` cannot run or fails (e.g. the process is gone).
pub fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    process::send_signal(pid, name)
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding `127.0.0.1:0` and reading the port the
/// kernel picked. Within one process the same port is never handed out twice,
/// which keeps parallel tests of one binary from racing for it.
///
/// # Panics
///
/// Panics if no port can be bound on the loopback interface.
#[must_use]
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

    let mut last = 0;
    for _ in 0..100 {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0 to find a free port: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("cannot read the local address of a listener: {e}"))
            .port();
        drop(listener);
        last = port;
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    last
}

/// Polls `check` every 20 ms until it gives `Some`, and returns that value: the way tests
/// wait for a condition, never with a bare sleep.
///
/// # Panics
///
/// When `limit` has passed first; the message names `what` was awaited.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Installs a `tracing` subscriber for test output, but only when the
/// environment variable `TEST_LOG` is set.
///
/// The filter comes from `RUST_LOG` and defaults to `info`. Output goes
/// through the test harness's capture. Safe to call any number of times, from
/// any thread; only the first call has an effect.
pub fn init_logging() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_none() {
            return;
        }
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // Another subscriber may already be installed (e.g. by the test
        // itself); that is fine, keep it.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}
