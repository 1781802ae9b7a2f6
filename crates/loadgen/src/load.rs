//! Sending: one task per concurrency slot, each with its own keep-alive connection, taking
//! tickets from the shared [`Planner`] until the votes are sent, the time is up or the run is
//! interrupted.
//!
//! Closed loop (the default): a slot sends its next vote as soon as the last one is answered,
//! and latency is measured from the moment it is sent. Open loop (`--rate`): vote `n` is due at
//! `start + n / rate`; a slot sleeps until then, and latency is measured from that due time,
//! so when the server falls behind the queueing shows in the figures instead of being hidden
//! (no coordinated omission).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use http::{HeaderValue, StatusCode};
use tokio::sync::{Notify, watch};

use crate::args::Config;
use crate::client::{Conn, Endpoint, Failure, Phase};
use crate::plan::{Next, Outcome, Planner, Ticket, voter_id};

/// Live counts, read by the progress display.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub errors: AtomicU64,
}

impl Counters {
    pub fn sent(&self) -> u64 {
        self.sent.load(Relaxed)
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Relaxed)
    }
}

/// Highest latency the histogram holds, in microseconds; longer ones are recorded as this.
const MAX_LATENCY_US: u64 = 2 * 3600 * 1_000_000;

/// The moment of the last accepted answer, on both clocks.
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    pub instant: Instant,
    pub wall: SystemTime,
}

impl Moment {
    pub fn now() -> Moment {
        Moment {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// Everything the slots share.
pub struct Shared {
    pub config: Config,
    pub endpoint: Endpoint,
    pub counters: Counters,
    pub started: Instant,
    /// The planner's seed, from which voter ids derive.
    seed: u64,
    /// No new vote is started after this.
    pub end: Option<Instant>,
    state: Mutex<State>,
    /// A voter was freed: a slot waiting for one may go on.
    freed: Notify,
    stop: watch::Receiver<bool>,
}

/// What the slots record, under one lock.
pub struct State {
    pub planner: Planner,
    /// Latency of accepted votes, in microseconds.
    pub latency: Histogram<u64>,
    pub by_status: BTreeMap<u16, u64>,
    /// Refusals the vote service marked unconfirmed (they may be counted).
    pub unconfirmed: u64,
    pub connect_errors: u64,
    pub timeouts: u64,
    pub broken: u64,
    pub last_accepted: Option<Moment>,
}

impl Shared {
    pub fn new(
        config: Config,
        endpoint: Endpoint,
        planner: Planner,
        stop: watch::Receiver<bool>,
    ) -> Shared {
        let started = Instant::now();
        let latency = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
            .expect("1 us to 2 h at 3 significant digits is a valid histogram");
        Shared {
            end: config.duration.map(|d| started + d),
            config,
            endpoint,
            counters: Counters::default(),
            started,
            seed: planner.seed(),
            state: Mutex::new(State {
                planner,
                latency,
                by_status: BTreeMap::new(),
                unconfirmed: 0,
                connect_errors: 0,
                timeouts: 0,
                broken: 0,
                last_accepted: None,
            }),
            freed: Notify::new(),
            stop,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        // A panic in a slot is a bug that the join reports; the counts stay readable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the slots recorded, once they are done.
    pub fn into_state(self) -> State {
        self.state.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow() || self.end.is_some_and(|end| Instant::now() >= end)
    }

    /// When vote `seq` is due, at a fixed rate.
    fn due(&self, seq: u64) -> Option<Instant> {
        self.config
            .rate
            .map(|rate| self.started + Duration::from_secs_f64(seq as f64 / rate))
    }
}

/// Runs every slot to the end; returns when the last answer is in.
pub async fn run(shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut slots = tokio::task::JoinSet::new();
    for _ in 0..shared.config.concurrency {
        slots.spawn(slot(shared.clone()));
    }
    while let Some(done) = slots.join_next().await {
        done?;
    }
    Ok(())
}

async fn slot(shared: Arc<Shared>) {
    let mut conn = Conn::new();
    let mut stop = shared.stop.clone();
    let mut backoff = Duration::ZERO;
    while let Some(ticket) = next_ticket(&shared).await {
        let start = match shared.due(ticket.seq) {
            Some(due) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    _ = stop.wait_for(|s| *s) => {
                        // Interrupted before it was sent.
                        shared.state().planner.finish(ticket, Outcome::Refused);
                        shared.freed.notify_one();
                        break;
                    }
                }
                due
            }
            None => Instant::now(),
        };
        let connect_failed = send_one(&shared, &mut conn, ticket, start).await;
        shared.freed.notify_one();
        if connect_failed {
            // The server is not there: do not spin through the remaining votes at full speed.
            backoff = (backoff * 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
            let until = Instant::now() + backoff;
            let until = shared.end.map_or(until, |end| until.min(end));
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        } else {
            backoff = Duration::ZERO;
        }
    }
}

/// The next ticket, waiting while every free voter is in flight; `None` when the run is over.
async fn next_ticket(shared: &Shared) -> Option<Ticket> {
    loop {
        if shared.stopped() {
            return None;
        }
        match shared.state().planner.next_ticket() {
            Next::Go(ticket) => return Some(ticket),
            Next::Done => return None,
            Next::Wait => {}
        }
        tokio::select! {
            _ = shared.freed.notified() => {}
            // Re-check the end of the run now and then.
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// Sends one vote and records how it ended. Returns whether no connection could be made.
async fn send_one(shared: &Shared, conn: &mut Conn, ticket: Ticket, start: Instant) -> bool {
    let cookie = HeaderValue::try_from(format!("voter_id={}", voter_id(shared.seed, ticket.voter)))
        .expect("hex is a valid header value");
    let counters = &shared.counters;
    counters.sent.fetch_add(1, Relaxed);
    let answer = tokio::time::timeout(
        shared.config.timeout,
        conn.vote(&shared.endpoint, &cookie, ticket.option),
    )
    .await;
    let now = Instant::now();
    let mut state = shared.state();
    let (outcome, connect_failed) = match answer {
        Ok(Ok((status, _))) if status == shared.endpoint.expected => {
            counters.accepted.fetch_add(1, Relaxed);
            let us = now.saturating_duration_since(start).as_micros();
            state
                .latency
                .saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
            state.last_accepted = Some(Moment::now());
            (Outcome::Accepted, false)
        }
        Ok(Ok((status, unconfirmed))) => {
            counters.refused.fetch_add(1, Relaxed);
            *state.by_status.entry(status.as_u16()).or_default() += 1;
            if unconfirmed {
                state.unconfirmed += 1;
            }
            (refusal_outcome(status, unconfirmed), false)
        }
        Ok(Err(Failure::Connect(_))) => {
            counters.errors.fetch_add(1, Relaxed);
            state.connect_errors += 1;
            (Outcome::Refused, true)
        }
        Ok(Err(Failure::Broken(_))) => {
            counters.errors.fetch_add(1, Relaxed);
            state.broken += 1;
            (Outcome::Unknown, false)
        }
        Err(_elapsed) => {
            counters.errors.fetch_add(1, Relaxed);
            state.timeouts += 1;
            let phase = conn.phase();
            conn.reset();
            match phase {
                Phase::Connecting => (Outcome::Refused, false),
                Phase::Sent => (Outcome::Unknown, false),
            }
        }
    };
    state.planner.finish(ticket, outcome);
    connect_failed
}

/// What a status other than the expected one says about the vote. The vote service answers
/// every refusal before queueing anything, except a 503 it marks `Vote-Outcome: unconfirmed`
/// (Redis gave no answer in time); a proxy's 502 or 504 may come after the service queued the
/// vote. Those leave the voter's outcome unknown.
fn refusal_outcome(status: StatusCode, unconfirmed: bool) -> Outcome {
    match status {
        _ if unconfirmed => Outcome::Unknown,
        StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => Outcome::Unknown,
        _ => Outcome::Refused,
    }
}
