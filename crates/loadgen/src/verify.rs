//! `--verify`: after the sending, wait (bounded) until PostgreSQL holds every accepted vote.
//!
//! For each voter, the last vote the service accepted must be `votes.vote` of the row whose
//! `votes.id` is the voter's id. Voters are looked up in chunks with `id = ANY($1)`; each pass
//! only asks about the voters not found yet. A voter whose every vote was refused must be
//! absent. A voter with a vote that got no answer (timeout, broken connection, proxy 502/504)
//! may legitimately hold any of its votes, so it is counted apart and not judged.
//!
//! Two drain figures, both from the last accepted answer: `confirmed_s`, when the lookup that
//! found the last missing vote answered (an upper bound, which includes the lookups' own time:
//! about a second per 200,000 voters); and `drain_s`, when the last of those rows was written,
//! from the rows' `updated_at` (the worker's transaction time, by PostgreSQL's clock, so the
//! two clocks must agree: same host, or synchronized), or `confirmed_s` where the table has no
//! `updated_at` (the original app's schema).

use std::collections::HashMap;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

use crate::args::Mix;
use crate::load::Moment;
use crate::plan::{Expect, Planner, voter_id};
use crate::progress::Display;

/// Voters asked about in one query.
const CHUNK: usize = 5_000;
/// Pause between passes over the voters still missing.
const POLL: Duration = Duration::from_millis(50);
/// Mismatches quoted in the report.
const EXAMPLES: usize = 10;

const LOOKUP: &str = "SELECT id, vote, (extract(epoch FROM updated_at) * 1000000)::bigint \
                      FROM votes WHERE id = ANY($1)";
/// For a `votes` table without `updated_at`.
const LOOKUP_PLAIN: &str = "SELECT id, vote, NULL::bigint FROM votes WHERE id = ANY($1)";

/// What PostgreSQL held, compared with what was accepted.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verification {
    /// Voters with an accepted vote, each checked.
    pub voters: u64,
    /// Of which holding their last accepted vote.
    pub present: u64,
    /// Of which absent from `votes` when the wait ended.
    pub missing: u64,
    /// Of which holding another vote when the wait ended.
    pub wrong: u64,
    /// Voters whose every vote was refused but who are in `votes`.
    pub refused_but_stored: u64,
    /// Voters with a vote that got no answer: not judged.
    pub unknown: u64,
    /// Whether every accepted vote was found before `--verify-timeout`.
    pub complete: bool,
    /// From the last accepted answer to the write of the last row (see the module doc).
    pub drain_s: Option<f64>,
    /// From the last accepted answer to the lookup that found the last vote.
    pub confirmed_s: Option<f64>,
    /// How long the check took.
    pub waited_s: f64,
    /// The last database error, if any got in the way.
    pub error: Option<String>,
    /// A few of the missing or wrong voters.
    pub examples: Vec<Mismatch>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.complete && self.missing == 0 && self.wrong == 0 && self.refused_but_stored == 0
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Mismatch {
    pub voter_id: String,
    /// The last accepted vote (`None`: every vote was refused).
    pub expected: Option<String>,
    /// What `votes` holds (`None`: no row).
    pub stored: Option<String>,
}

/// One voter's row, as a lookup saw it.
#[derive(Debug, Clone)]
struct Row {
    vote: Option<String>,
    /// When the lookup answered.
    seen: Instant,
    /// `updated_at`, in microseconds since the epoch, when the table has it.
    written_us: Option<i64>,
}

/// Waits until every accepted vote is in PostgreSQL at `url`, or `timeout` has passed.
pub async fn run(
    url: &str,
    timeout: Duration,
    planner: &Planner,
    mix: &Mix,
    last_accepted: Option<Moment>,
    quiet: bool,
) -> Verification {
    let started = Instant::now();
    let deadline = started + timeout;
    let seed = planner.seed();
    let mut pending: Vec<(u32, u8)> = Vec::new();
    let mut absent: Vec<u32> = Vec::new();
    let mut unknown = 0;
    for voter in 0..planner.voters() as u32 {
        match planner.expect(voter) {
            Expect::Vote(option) => pending.push((voter, option)),
            Expect::Absent => absent.push(voter),
            Expect::Unknown => unknown += 1,
        }
    }
    let voters = pending.len() as u64;
    let mut display = Display::new(quiet, voters, "verify");
    let mut db = Db::new(url);
    let mut complete = false;
    // The latest lookup answer and row write among the votes found so far.
    let (mut last_seen, mut last_written_us) = (None, None);
    // What the last pass saw for each voter still pending.
    let mut rows: HashMap<u32, Row> = HashMap::new();
    loop {
        if let Some(found) = db.lookup(pending.iter().map(|p| p.0), seed, deadline).await {
            rows = found;
            pending.retain(|(voter, option)| {
                let row = &rows[voter];
                let found = row.vote.as_deref() == Some(mix.key(usize::from(*option)));
                if found {
                    last_seen = last_seen.max(Some(row.seen));
                    last_written_us = last_written_us.max(row.written_us);
                }
                !found
            });
        }
        let now = Instant::now();
        let msg = format!(
            "{} of {voters} accepted votes in PostgreSQL  {:.1} s",
            voters - pending.len() as u64,
            now.duration_since(started).as_secs_f64(),
        );
        display.update(voters - pending.len() as u64, &msg, false);
        if pending.is_empty() && db.error.is_none() {
            complete = true;
            break;
        }
        if now >= deadline {
            break;
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
    display.finish();

    let mut examples = Vec::new();
    let (mut missing, mut wrong) = (0, 0);
    for (voter, option) in &pending {
        let stored = rows.get(voter).and_then(|row| row.vote.clone());
        if stored.is_some() {
            wrong += 1;
        } else {
            missing += 1;
        }
        if examples.len() < EXAMPLES {
            examples.push(Mismatch {
                voter_id: voter_id(seed, *voter).to_string(),
                expected: Some(mix.key(usize::from(*option)).to_string()),
                stored,
            });
        }
    }
    // Refused votes must not be there. A last look, once the accepted ones are in.
    let mut refused_but_stored = 0;
    if !absent.is_empty() {
        let found = db
            .lookup(absent.iter().copied(), seed, Instant::now() + POLL * 40)
            .await
            .unwrap_or_default();
        for (voter, row) in found {
            if let Some(vote) = row.vote {
                refused_but_stored += 1;
                if examples.len() < EXAMPLES {
                    examples.push(Mismatch {
                        voter_id: voter_id(seed, voter).to_string(),
                        expected: None,
                        stored: Some(vote),
                    });
                }
            }
        }
    }

    let (mut drain_s, mut confirmed_s) = (None, None);
    if let (true, Some(last)) = (complete, last_accepted) {
        confirmed_s =
            last_seen.map(|seen| seen.saturating_duration_since(last.instant).as_secs_f64());
        let last_us = last
            .wall
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        // A row may be written before its answer is read: that drain is 0.
        drain_s = last_written_us
            .map(|w| (w - last_us).max(0) as f64 / 1e6)
            .or(confirmed_s);
    }
    Verification {
        voters,
        present: voters - missing - wrong,
        missing,
        wrong,
        refused_but_stored,
        unknown,
        complete,
        drain_s,
        confirmed_s,
        waited_s: started.elapsed().as_secs_f64(),
        error: db.error,
        examples,
    }
}

/// A connection that is opened, and reopened, on demand.
struct Db<'a> {
    url: &'a str,
    conn: Option<(Client, Statement)>,
    error: Option<String>,
}

impl<'a> Db<'a> {
    fn new(url: &'a str) -> Db<'a> {
        Db {
            url,
            conn: None,
            error: None,
        }
    }

    /// What `votes` holds for each of `voters`; `None` after a database error (remembered
    /// in `self.error`, and the connection is reopened next time).
    async fn lookup(
        &mut self,
        voters: impl Iterator<Item = u32>,
        seed: u64,
        deadline: Instant,
    ) -> Option<HashMap<u32, Row>> {
        let budget = deadline.saturating_duration_since(Instant::now()).max(POLL);
        match tokio::time::timeout(budget, self.try_lookup(voters, seed)).await {
            Ok(Ok(found)) => {
                self.error = None;
                Some(found)
            }
            Ok(Err(e)) => {
                self.error = Some(format!("{e:#}"));
                self.conn = None;
                None
            }
            Err(_) => {
                self.error = Some("PostgreSQL did not answer in time".into());
                self.conn = None;
                None
            }
        }
    }

    async fn try_lookup(
        &mut self,
        voters: impl Iterator<Item = u32>,
        seed: u64,
    ) -> anyhow::Result<HashMap<u32, Row>> {
        use anyhow::Context;
        if self.conn.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            let (client, conn) = tokio_postgres::connect(self.url, NoTls)
                .await
                .context("connecting to PostgreSQL")?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let statement = match client.prepare(LOOKUP).await {
                Ok(s) => s,
                Err(e) if e.code() == Some(&SqlState::UNDEFINED_COLUMN) => client
                    .prepare(LOOKUP_PLAIN)
                    .await
                    .context("preparing the lookup of votes")?,
                // No table yet: no worker has started. Nothing is there so far.
                Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                    let seen = Instant::now();
                    let none = || Row {
                        vote: None,
                        seen,
                        written_us: None,
                    };
                    return Ok(voters.map(|v| (v, none())).collect());
                }
                Err(e) => return Err(e).context("preparing the lookup of votes"),
            };
            self.conn = Some((client, statement));
        }
        let (client, statement) = self.conn.as_ref().expect("connected just above");
        let voters: Vec<u32> = voters.collect();
        let mut found = HashMap::with_capacity(voters.len());
        for chunk in voters.chunks(CHUNK) {
            let ids: Vec<String> = chunk
                .iter()
                .map(|v| voter_id(seed, *v).to_string())
                .collect();
            let answer = client
                .query(statement, &[&ids])
                .await
                .context("looking up votes")?;
            let seen = Instant::now();
            let mut stored: HashMap<String, (String, Option<i64>)> = answer
                .into_iter()
                .map(|row| (row.get(0), (row.get(1), row.get(2))))
                .collect();
            for (voter, id) in chunk.iter().zip(ids) {
                let (vote, written_us) = stored.remove(&id).unzip();
                found.insert(
                    *voter,
                    Row {
                        vote,
                        seen,
                        written_us: written_us.flatten(),
                    },
                );
            }
        }
        Ok(found)
    }
}
