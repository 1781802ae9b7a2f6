//! Keeping a server running, as a small init system does.
//!
//! - [`Supervised::start`] starts a [`Server`] and returns once it is ready; a thread of its
//!   own then watches it.
//! - A server that dies is logged and started again after a capped exponential backoff
//!   (250 ms doubling to 30 s; back to 250 ms once a run lasted a minute), forever.
//! - [`Supervised::stop`] (or dropping it) sends the server its stop signal, waits, and kills
//!   it (SIGKILL) after [`STOP_DEADLINE`](crate::STOP_DEADLINE). A child is always waited
//!   for: none is left behind, not even a zombie.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::backoff::Backoff;

use crate::{Running, Server, StartError};

const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How often the watcher looks whether the server has exited.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);

/// What `/metrics` tells about a supervised server.
#[derive(Debug, Default)]
pub struct ChildStats {
    restarts: AtomicU64,
    up: AtomicU64,
    pid: AtomicU64,
}

impl ChildStats {
    /// How many times it was started again after it died.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// 1 while it runs, 0 while it is down.
    pub fn up(&self) -> u64 {
        self.up.load(Ordering::Relaxed)
    }

    /// Its process id, the last one when it is down.
    pub fn pid(&self) -> u64 {
        self.pid.load(Ordering::Relaxed)
    }

    fn running(&self, running: &Running) {
        self.up.store(1, Ordering::Relaxed);
        self.pid.store(u64::from(running.pid()), Ordering::Relaxed);
    }
}

/// A running server and the thread that watches it.
#[derive(Debug)]
pub struct Supervised {
    name: &'static str,
    stats: Arc<ChildStats>,
    /// Dropped to tell the watcher to stop (nothing is ever sent).
    stop: Sender<()>,
    watcher: JoinHandle<()>,
}

impl Supervised {
    /// Starts `server`, waits until it is ready, and supervises it from then on. `None` when
    /// `cancelled` turned true first (the server was stopped). Blocks until then.
    ///
    /// # Errors
    ///
    /// As [`Server::start`].
    pub fn start(server: Server, cancelled: &dyn Fn() -> bool) -> anyhow::Result<Option<Self>> {
        let running = match server.start(cancelled) {
            Ok(running) => running,
            Err(StartError::Cancelled) => return Ok(None),
            Err(e) => return Err(e.into_inner()),
        };
        let stats = Arc::new(ChildStats::default());
        stats.running(&running);
        let (stop, stop_rx) = mpsc::channel();
        let name = server.name;
        let watched = stats.clone();
        let watcher = std::thread::Builder::new()
            .name(format!("watch {name}"))
            .spawn(move || watch(&server, running, &stop_rx, &watched))?;
        Ok(Some(Supervised {
            name,
            stats,
            stop,
            watcher,
        }))
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn stats(&self) -> Arc<ChildStats> {
        self.stats.clone()
    }

    /// Stops the server (its stop signal, then SIGKILL after the deadline) and waits until
    /// it is gone. Blocks.
    pub fn stop(self) {
        drop(self.stop);
        if self.watcher.join().is_err() {
            tracing::error!(server = self.name, "the watching thread panicked");
        }
    }
}

/// Watches a ready server: restarts it when it dies, stops it when `stop` is dropped.
fn watch(server: &Server, mut running: Running, stop: &Receiver<()>, stats: &ChildStats) {
    let name = server.name;
    // Waits `pause`; true when told to stop meanwhile.
    let stopped_within = |pause| {
        matches!(
            stop.recv_timeout(pause),
            Err(RecvTimeoutError::Disconnected)
        )
    };
    let stopped = || matches!(stop.try_recv(), Err(TryRecvError::Disconnected));
    let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
    let mut since = Instant::now();
    loop {
        let status = loop {
            if let Some(status) = running.exited() {
                break status;
            }
            if stopped_within(WATCH_INTERVAL) {
                let _ = running.stop();
                stats.up.store(0, Ordering::Relaxed);
                return;
            }
        };
        stats.up.store(0, Ordering::Relaxed);
        if since.elapsed() >= STABLE_AFTER {
            backoff.reset();
        }
        let mut why = format!(
            "{name} (pid {}) exited unexpectedly ({status}); its log is {}",
            stats.pid(),
            server.log.display()
        );
        running = loop {
            let pause = backoff.next_wait();
            tracing::warn!(server = name, restart_in = ?pause, "{why}; restarting it");
            if stopped_within(pause) {
                return;
            }
            match server.start(&stopped) {
                Ok(running) => break running,
                Err(StartError::Cancelled) => return,
                Err(e) => {
                    let e = e.into_inner();
                    why = format!("restarting {name} failed: {}", common::error::describe(&e));
                }
            }
        };
        since = Instant::now();
        stats.restarts.fetch_add(1, Ordering::Relaxed);
        stats.running(&running);
        tracing::info!(server = name, pid = running.pid(), "restarted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_from_a_quarter_second_to_half_a_minute() {
        let mut b = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
        let waits: Vec<u64> = (0..10).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(
            waits,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }
}
