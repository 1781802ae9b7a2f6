//! The worker's loop body: [`Worker::step`] takes one batch from Redis and applies it.
//!
//! Order of sources: first this consumer's own pending entries (left by a previous run of
//! the same consumer name), then new entries; every `claim_interval` it claims entries left
//! idle on other consumers (presumed dead). Entries of the original app's list are moved into
//! the stream first (one atomic script), so they are read, applied and acknowledged like any
//! vote, with a stream ID as their version.
//! A batch is acknowledged and deleted only after its transaction committed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use common::config::{Config, QueueConfig, WorkerConfig};
use common::metrics::{Counter, Gauge};
use common::pools::{PgPool, Redis};
use domain::options::Options;
use domain::queue::EntryId;

use crate::ballot;
use crate::store;
use crate::stream::{Dead, Entry, StreamConn};

/// Where a step's entries came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Source {
    #[default]
    New,
    OwnPending,
    Claimed,
}

/// What one step did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepOutcome {
    pub source: Source,
    /// Stream entries taken (and acknowledged).
    pub entries: usize,
    /// Ballots applied after keeping the newest per voter.
    pub ballots: usize,
    /// Rows inserted or changed in `votes`.
    pub rows: u64,
    /// Entries sent to the dead-letter stream.
    pub dead: usize,
    /// Entries moved from the original app's list into the stream.
    pub legacy: usize,
}

impl StepOutcome {
    /// Nothing was there to do.
    pub fn is_idle(&self) -> bool {
        self.entries == 0 && self.legacy == 0
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub batches: Counter,
    pub entries: Counter,
    pub rows: Counter,
    pub dead: Counter,
    pub claimed: Counter,
    pub legacy: Counter,
    pub failures: Counter,
    pub last_batch: Gauge,
    pub backlog: Gauge,
}

/// What `/readyz` and `/metrics` read while the loop runs.
pub struct Status {
    pub metrics: Metrics,
    pub redis: Redis,
    pub pg: PgPool,
    /// The last step's error, until a step succeeds.
    pub last_error: Mutex<Option<String>>,
    /// Whether this worker applied (or found) the schema.
    pub schema_ready: AtomicBool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    OwnPending,
    Live,
}

pub struct Worker {
    options: Options,
    queue: QueueConfig,
    settings: WorkerConfig,
    consumer: String,
    postgres: common::config::PostgresConfig,
    status: Arc<Status>,
    conn: Option<StreamConn>,
    schema_ready: bool,
    phase: Phase,
    claim_cursor: String,
    next_claim: Instant,
    /// New entries read while the previous batch was being applied.
    prefetched: Option<Vec<Entry>>,
    /// No new read before this (see `worker.linger_ms`).
    linger_until: Option<Instant>,
}

impl Worker {
    /// Builds a worker; nothing connects until the first step.
    pub fn new(config: &Config) -> anyhow::Result<Worker> {
        let consumer = if config.worker.consumer.is_empty() {
            format!(
                "{}-{}-{:04x}",
                common::host_name(),
                std::process::id(),
                rand::random::<u16>()
            )
        } else {
            config.worker.consumer.clone()
        };
        let status = Arc::new(Status {
            metrics: Metrics::default(),
            redis: Redis::new(&config.redis)?,
            // A worker paused mid-transaction would hold the tally rows' locks: its session ends
            // when its entries become claimable, so the claimant is not blocked behind it.
            pg: common::pools::pg_pool(&config.postgres, Some(config.worker.claim_idle_ms.get()))?,
            last_error: Mutex::new(None),
            schema_ready: AtomicBool::new(false),
        });
        Ok(Worker {
            options: config.options().clone(),
            queue: config.queue.clone(),
            settings: config.worker.clone(),
            consumer,
            postgres: config.postgres.clone(),
            status,
            conn: None,
            schema_ready: false,
            phase: Phase::OwnPending,
            claim_cursor: "0-0".into(),
            next_claim: Instant::now(),
            prefetched: None,
            linger_until: None,
        })
    }

    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    pub fn status(&self) -> Arc<Status> {
        self.status.clone()
    }

    /// Takes one batch and applies it. On error nothing was acknowledged: the entries stay
    /// pending and are taken again by the next step (or, after a restart, by this consumer's
    /// pending phase, or by another worker's claim).
    pub async fn step(&mut self) -> anyhow::Result<StepOutcome> {
        let result = self.try_step().await;
        match &result {
            Ok(_) => *self.status.last_error.lock().expect("not poisoned") = None,
            Err(e) => {
                // Start over on a fresh connection, from this consumer's pending entries (which
                // include any prefetched ones).
                self.conn = None;
                self.prefetched = None;
                self.phase = Phase::OwnPending;
                self.status.metrics.failures.inc();
                *self.status.last_error.lock().expect("not poisoned") =
                    Some(common::error::describe(e));
            }
        }
        result
    }

    async fn try_step(&mut self) -> anyhow::Result<StepOutcome> {
        self.try_connect().await?;
        let batch = self.settings.batch_size.get();
        let conn = self.conn.as_mut().expect("connected above");
        let mut outcome = StepOutcome::default();
        let now = Instant::now();
        if self.phase == Phase::Live && !self.queue.legacy_list.is_empty() {
            let moved = conn.legacy_move(batch).await?;
            self.status.metrics.legacy.add(moved);
            outcome.legacy = moved as usize;
        }

        let entries = match self.phase {
            Phase::OwnPending => {
                outcome.source = Source::OwnPending;
                let entries = conn.read_own_pending(batch).await?;
                if entries.is_empty() {
                    self.phase = Phase::Live;
                }
                entries
            }
            Phase::Live if now >= self.next_claim => {
                outcome.source = Source::Claimed;
                let idle = self.settings.claim_idle_ms.get();
                let (next, entries) = conn.autoclaim(idle, &self.claim_cursor, batch).await?;
                if next == "0-0" {
                    self.next_claim = now + self.settings.claim_interval_ms.get();
                }
                self.claim_cursor = next;
                self.status.metrics.claimed.add(entries.len() as u64);
                if !entries.is_empty() {
                    tracing::info!(
                        entries = entries.len(),
                        "claimed entries of an idle consumer"
                    );
                }
                self.status.metrics.backlog.set(conn.backlog().await?);
                entries
            }
            Phase::Live if self.prefetched.is_some() => self.prefetched.take().unwrap_or_default(),
            Phase::Live => {
                if let Some(until) = self.linger_until.take() {
                    tokio::time::sleep_until(until.into()).await;
                }
                let block = self.settings.block_ms.get();
                conn.read_new(batch, Some(block)).await?
            }
        };
        // A full batch means more is waiting: read the next batch while this one is applied.
        let prefetch = self.phase == Phase::Live && entries.len() == batch;
        // Votes are flowing, but not backlogged: let the next batch gather a few
        // milliseconds' worth, so that steady load costs fewer transactions.
        let linger = self.settings.linger_ms.get();
        if outcome.source == Source::New && entries.len() > 1 && !prefetch && !linger.is_zero() {
            self.linger_until = Some(Instant::now() + linger);
        }
        self.apply_stream(entries, prefetch, &mut outcome).await?;
        Ok(outcome)
    }

    async fn apply_stream(
        &mut self,
        entries: Vec<Entry>,
        prefetch: bool,
        outcome: &mut StepOutcome,
    ) -> anyhow::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut done = Vec::with_capacity(entries.len());
        let mut ballots = Vec::with_capacity(entries.len());
        let mut dead = Vec::new();
        for entry in entries {
            done.push(entry.id.clone());
            // An entry deleted while pending was already applied: only acknowledge it.
            let Some(fields) = entry.fields else { continue };
            let parsed = EntryId::parse(&entry.id)
                .ok_or(ballot::Invalid::BadId)
                .and_then(|id| ballot::from_stream(id, &fields, &self.options));
            match parsed {
                Ok(b) => ballots.push(b),
                Err(reason) => {
                    let mut fields: Vec<(String, Vec<u8>)> = fields.into_iter().collect();
                    fields.sort();
                    dead.push(Dead {
                        id: entry.id,
                        fields,
                        reason: reason.to_string(),
                    });
                }
            }
        }
        let ballots = ballot::newest_per_voter(ballots);
        let conn = self.conn.as_mut().expect("connected");
        let rows = if prefetch {
            let batch = self.settings.batch_size.get();
            let (rows, next) = tokio::join!(
                store::apply(&self.status.pg, &ballots),
                conn.read_new(batch, None)
            );
            // Read but not applied, the prefetched entries are this consumer's pending
            // entries: if anything fails they are read again from there.
            self.prefetched = Some(next?);
            rows?
        } else {
            store::apply(&self.status.pg, &ballots).await?
        };
        conn.finish(&done, &dead).await?;
        if !dead.is_empty() {
            tracing::warn!(entries = dead.len(), first_id = %dead[0].id, first_reason = %dead[0].reason, "dead-lettered invalid entries");
        }
        let m = &self.status.metrics;
        m.batches.inc();
        m.entries.add(done.len() as u64);
        m.rows.add(rows);
        m.dead.add(dead.len() as u64);
        m.last_batch.set(done.len() as u64);
        outcome.entries += done.len();
        outcome.ballots += ballots.len();
        outcome.rows += rows;
        outcome.dead += dead.len();
        Ok(())
    }

    /// Schema and Redis connection are set up (for tests that want to fail fast).
    pub async fn connect(&mut self) -> anyhow::Result<()> {
        self.try_connect().await.context("worker start")
    }

    async fn try_connect(&mut self) -> anyhow::Result<()> {
        if !self.schema_ready {
            let mut client = common::pools::pg_connect(&self.postgres).await?;
            common::schema::migrate(&mut client).await?;
            self.schema_ready = true;
            self.status.schema_ready.store(true, Ordering::Relaxed);
        }
        if self.conn.is_none() {
            let block = self.settings.block_ms.get();
            self.conn = Some(
                StreamConn::connect(
                    self.status.redis.client(),
                    &self.queue,
                    &self.consumer,
                    block,
                )
                .await?,
            );
        }
        Ok(())
    }
}
