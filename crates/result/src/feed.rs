//! The feed: one dedicated PostgreSQL connection that `LISTEN`s on the worker's channel,
//! reads `tallies` when told to, and publishes each new tally to every socket through a
//! `tokio::sync::watch` channel.
//!
//! - The connection is not taken from a pool: the feed owns it and drives it itself with
//!   [`tokio_postgres::Connection::poll_message`], which is how notifications arrive.
//! - A notification triggers one read of `tallies` (O(options) rows). Notifications that have
//!   already arrived are drained before the read, and those arriving during it cause exactly
//!   one more read after it: bursts coalesce, reads never queue.
//! - A slow safety poll (`result.poll_interval_ms`) reads anyway, and every (re)connection
//!   starts with a full read, so a missed notification is repaired.
//! - A snapshot is published only when the counts or the staleness change; readers of the
//!   watch channel always see the newest one (slow sockets skip the ones in between).
//! - PostgreSQL lost: the last counts are republished marked stale, and the feed reconnects
//!   with capped backoff (100 ms doubling to 5 s), forever; it never ends the process.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::backoff::{Backoff, Outage};
use common::config::Config;
use common::metrics::{Counter, Gauge};
use common::schema::NOTIFY_CHANNEL;
use domain::options::Options;
use tokio::sync::watch;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{AsyncMessage, NoTls, Socket};

use crate::snapshot::{self, Snapshot};

/// Longest a connection attempt, the schema migration or a read may take before the connection
/// is presumed dead.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the feed tells `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct FeedStats {
    pub notifications: Counter,
    pub refreshes_notify: Counter,
    pub refreshes_poll: Counter,
    pub refreshes_connect: Counter,
    pub published: Counter,
    pub connects: Counter,
    pub failures: Counter,
    /// Sum and number of the delays from a notification's arrival to the publication of the
    /// snapshot it caused, in microseconds.
    pub lag_sum_us: Counter,
    pub lag_count: Counter,
    pub lag_last_us: Gauge,
    pub lag_max_us: Gauge,
    /// Why the feed is not connected, while it is not.
    pub last_error: Mutex<Option<String>>,
}

impl FeedStats {
    fn record_lag(&self, lag: Duration) {
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.lag_sum_us.add(us);
        self.lag_count.inc();
        self.lag_last_us.set(us);
        if us > self.lag_max_us.get() {
            self.lag_max_us.set(us);
        }
    }

    fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// The reason the feed is down, if it is.
    pub fn error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Why a read happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    Connect,
    Notify,
    Poll,
}

/// The feed task's state; [`Feed::run`] consumes it.
pub struct Feed {
    options: Options,
    pg: tokio_postgres::Config,
    poll_interval: Duration,
    tx: watch::Sender<Arc<Snapshot>>,
    stats: Arc<FeedStats>,
    version: u64,
    /// What the log says about reconnecting.
    outage: Outage,
}

impl Feed {
    /// A feed for `config` and the receiving end of its snapshots (the placeholder until the
    /// first read). Nothing connects until [`Feed::run`].
    pub fn new(
        config: &Config,
        stats: Arc<FeedStats>,
    ) -> anyhow::Result<(Feed, watch::Receiver<Arc<Snapshot>>)> {
        let mut pg: tokio_postgres::Config = config
            .postgres
            .url
            .0
            .expose()
            .parse()
            .with_context(|| format!("bad PostgreSQL URL {}", config.postgres.url))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(STATEMENT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("result-feed");
        }
        let options = config.options().clone();
        let (tx, rx) = watch::channel(Arc::new(Snapshot::placeholder(&options)));
        let feed = Feed {
            options,
            pg,
            poll_interval: config.result.poll_interval_ms.get(),
            tx,
            stats,
            version: 0,
            outage: Outage::default(),
        };
        Ok((feed, rx))
    }

    /// Runs until `stop` turns true: connect, read, publish, wait for a notification or the
    /// poll, read again; on any failure mark the tally stale and reconnect after a backoff.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
        loop {
            let error = tokio::select! {
                ended = self.session(&mut backoff) => {
                    let Err(e) = ended;
                    e
                }
                _ = crate::socket::stopped(&mut stop) => return,
            };
            self.stats.failures.inc();
            let wait = backoff.next_wait();
            let reason = common::error::describe(&error);
            if self.outage.failed(&reason) {
                tracing::warn!(error = reason, retry_in = ?wait, "tally feed lost PostgreSQL; showing the last tally as stale; retrying with backoff (logged again when the reason changes)");
            } else {
                tracing::debug!(error = reason, retry_in = ?wait, "tally feed: reconnecting failed again");
            }
            self.stats.set_error(Some(reason));
            let counts = self.tx.borrow().counts.clone();
            self.publish(counts, true, None);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = crate::socket::stopped(&mut stop) => return,
            }
        }
    }

    /// One connection's life; returns only with the error that ended it.
    async fn session(&mut self, backoff: &mut Backoff) -> anyhow::Result<Infallible> {
        let (mut client, connection) =
            tokio::time::timeout(STATEMENT_TIMEOUT, self.pg.connect(NoTls))
                .await
                .context("connecting to PostgreSQL: timed out")?
                .context("connecting to PostgreSQL")?;
        self.stats.connects.inc();
        let mut conn = Driven {
            connection,
            pending: None,
            stats: self.stats.clone(),
        };
        conn.drive("applying the schema", common::schema::migrate(&mut client))
            .await?;
        conn.drive(
            "LISTEN",
            client.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}")),
        )
        .await?;
        let read = conn
            .drive(
                "preparing the tally read",
                client.prepare("SELECT vote, count FROM tallies"),
            )
            .await?;
        match self.outage.recovered() {
            Some(failures) => {
                tracing::info!(
                    failures,
                    "tally feed connected to PostgreSQL again and listening"
                )
            }
            None => tracing::info!("tally feed connected to PostgreSQL and listening"),
        }

        let mut poll = tokio::time::interval_at(
            tokio::time::Instant::now() + self.poll_interval,
            self.poll_interval,
        );
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut trigger = Trigger::Connect;
        loop {
            // Whatever notified before this read is covered by it.
            let notified_at = conn.pending.take();
            match trigger {
                Trigger::Connect => &self.stats.refreshes_connect,
                Trigger::Notify => &self.stats.refreshes_notify,
                Trigger::Poll => &self.stats.refreshes_poll,
            }
            .inc();
            let rows = conn
                .drive("reading tallies", client.query(&read, &[]))
                .await?;
            let mut pairs = Vec::with_capacity(rows.len());
            for row in &rows {
                let key: &str = row.try_get(0).context("tallies.vote")?;
                let count: i64 = row.try_get(1).context("tallies.count")?;
                pairs.push((key, count));
            }
            let counts = snapshot::counts_from_rows(&self.options, pairs);
            self.publish(counts, false, notified_at);
            if trigger == Trigger::Connect {
                backoff.reset();
                self.stats.set_error(None);
            }
            poll.reset();

            trigger = if conn.pending.is_some() {
                // Notified while reading: the read may have missed that commit.
                Trigger::Notify
            } else {
                tokio::select! {
                    woke = conn.notified() => { woke?; Trigger::Notify }
                    _ = poll.tick() => Trigger::Poll,
                }
            };
        }
    }

    /// Publishes the tally unless it equals the current one. Returns whether it published.
    fn publish(&mut self, counts: Vec<u64>, stale: bool, notified_at: Option<Instant>) -> bool {
        {
            let current = self.tx.borrow();
            if current.counts == counts && current.stale == stale {
                return false;
            }
        }
        self.version += 1;
        let snapshot = Arc::new(Snapshot::new(&self.options, counts, stale, self.version));
        self.tx.send_replace(snapshot);
        self.stats.published.inc();
        if let Some(at) = notified_at {
            self.stats.record_lag(at.elapsed());
        }
        true
    }
}

/// The feed's connection, polled by the feed itself (no driver task), remembering whether a
/// notification arrived since the last read began.
struct Driven {
    connection: tokio_postgres::Connection<Socket, NoTlsStream>,
    /// When the first notification not yet covered by a read arrived.
    pending: Option<Instant>,
    stats: Arc<FeedStats>,
}

impl Driven {
    /// Runs `work` (a request on this connection's client) while driving the connection,
    /// within [`STATEMENT_TIMEOUT`]. Notifications arriving meanwhile are noted.
    async fn drive<T, E>(
        &mut self,
        what: &'static str,
        work: impl Future<Output = Result<T, E>>,
    ) -> anyhow::Result<T>
    where
        E: Into<anyhow::Error>,
    {
        let work = tokio::time::timeout(STATEMENT_TIMEOUT, work);
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                done = &mut work => {
                    return match done {
                        Ok(result) => result.map_err(Into::into).context(what),
                        Err(_) => Err(anyhow::anyhow!("{what}: no answer within {STATEMENT_TIMEOUT:?}")),
                    };
                }
                message = std::future::poll_fn(|cx| self.connection.poll_message(cx)) => {
                    self.note(message)?;
                }
            }
        }
    }

    /// Waits until a notification is pending, then takes every message that has already
    /// arrived, so that a burst costs one read.
    async fn notified(&mut self) -> anyhow::Result<()> {
        while self.pending.is_none() {
            let message = std::future::poll_fn(|cx| self.connection.poll_message(cx)).await;
            self.note(message)?;
        }
        loop {
            let ready =
                std::future::poll_fn(|cx| Poll::Ready(self.connection.poll_message(cx))).await;
            match ready {
                Poll::Ready(message) => self.note(message)?,
                Poll::Pending => return Ok(()),
            }
        }
    }

    fn note(
        &mut self,
        message: Option<Result<AsyncMessage, tokio_postgres::Error>>,
    ) -> anyhow::Result<()> {
        match message {
            Some(Ok(AsyncMessage::Notification(_))) => {
                self.stats.notifications.inc();
                self.pending.get_or_insert_with(Instant::now);
                Ok(())
            }
            Some(Ok(AsyncMessage::Notice(notice))) => {
                tracing::debug!(%notice, "PostgreSQL notice");
                Ok(())
            }
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e).context("PostgreSQL connection failed"),
            None => Err(anyhow::anyhow!("PostgreSQL closed the connection")),
        }
    }
}
