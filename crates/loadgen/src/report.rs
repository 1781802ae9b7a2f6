//! The summary of a run: as text for people, as one JSON object for scripts, and the exit
//! code that CI and the compose `seed` profile rely on.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::verify::Verification;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub url: String,
    /// `json` (`POST <url>api/vote`, 202) or `form` (`POST <url>`, 303).
    pub mode: &'static str,
    pub expected_status: u16,
    pub seed: u64,
    pub concurrency: usize,
    /// `--rate`, when the run was paced.
    pub target_rate: Option<f64>,
    /// Requests started.
    pub sent: u64,
    /// Answered with the expected status.
    pub accepted: u64,
    /// Answered with another status.
    pub refused: u64,
    /// The refusals by status code.
    pub refused_by_status: BTreeMap<u16, u64>,
    /// Of the refusals, those the vote service marked `Vote-Outcome: unconfirmed`: Redis gave
    /// no answer in time, so the vote may be counted (its voter is not judged by `--verify`).
    pub unconfirmed: u64,
    /// No answer at all.
    pub errors: Errors,
    /// Distinct voters who sent a vote.
    pub voters: u64,
    /// Votes by a voter who had sent one before.
    pub revotes: u64,
    /// At a fixed rate with a duration: votes that were due before the end but not sent
    /// because the server (or loadgen) fell behind.
    pub missed: Option<u64>,
    pub elapsed_s: f64,
    /// Accepted votes per second.
    pub rate: f64,
    /// Latency of the accepted votes (from the due time at a fixed rate).
    pub latency_ms: Option<Latency>,
    pub verify: Option<Verification>,
    /// Stopped by ctrl-c or SIGTERM.
    pub interrupted: bool,
    /// Every vote accepted (and found, with `--verify`): exit code 0.
    pub ok: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Errors {
    /// No connection could be made (the vote was not sent).
    pub connect: u64,
    /// No whole answer within `--timeout`.
    pub timeout: u64,
    /// The connection broke after the vote was sent.
    pub broken: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// From a histogram in microseconds; `None` when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        })
    }
}

impl Report {
    /// 0: every vote accepted (and verified); 1: anything else.
    pub fn exit_code(&self) -> u8 {
        if self.ok { 0 } else { 1 }
    }

    /// Whether the figures add up to a clean run.
    pub fn judge(&mut self) {
        self.ok = !self.interrupted
            && self.refused == 0
            && self.errors.total == 0
            && self.verify.as_ref().is_none_or(Verification::ok);
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report serializes")
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(
            w,
            "target     {} ({}, expects {})",
            self.url, self.mode, self.expected_status
        );
        let pace = match self.target_rate {
            Some(r) => format!("at {r} votes/s"),
            None => "as fast as answered".into(),
        };
        let _ = writeln!(
            w,
            "sent       {} votes over {} connections, {pace}; {} voters, {} re-votes",
            self.sent, self.concurrency, self.voters, self.revotes
        );
        if let Some(missed) = self.missed.filter(|m| *m > 0) {
            let _ = writeln!(w, "missed     {missed} votes were due but not sent in time");
        }
        let _ = writeln!(w, "accepted   {}", self.accepted);
        let _ = writeln!(w, "refused    {}", self.refused);
        for (status, n) in &self.refused_by_status {
            let _ = writeln!(w, "  {status}:    {n}");
        }
        if self.unconfirmed > 0 {
            let _ = writeln!(
                w,
                "  of which unconfirmed (may be counted): {}",
                self.unconfirmed
            );
        }
        let e = &self.errors;
        let _ = writeln!(
            w,
            "errors     {} (connect {}, timeout {}, broken {})",
            e.total, e.connect, e.timeout, e.broken
        );
        let _ = writeln!(w, "elapsed    {:.2} s", self.elapsed_s);
        let _ = writeln!(w, "rate       {:.0} accepted/s", self.rate);
        match &self.latency_ms {
            Some(l) => {
                let _ = writeln!(
                    w,
                    "latency    p50 {} ms  p90 {} ms  p99 {} ms  max {} ms",
                    ms(l.p50),
                    ms(l.p90),
                    ms(l.p99),
                    ms(l.max)
                );
            }
            None => {
                let _ = writeln!(w, "latency    - (no vote accepted)");
            }
        }
        if let Some(v) = &self.verify {
            let verdict = if v.ok() {
                "all present".to_string()
            } else if !v.complete && v.missing + v.wrong == 0 {
                "not checked".to_string()
            } else {
                format!("{} missing, {} wrong", v.missing, v.wrong)
            };
            let _ = writeln!(
                w,
                "verify     {} of {} voters hold their last accepted vote: {verdict}",
                v.present, v.voters
            );
            match (v.drain_s, v.confirmed_s) {
                (Some(d), Some(c)) => {
                    let _ = writeln!(
                        w,
                        "drain      {d:.2} s after the last accepted vote (confirmed after {c:.2} s)"
                    );
                }
                (Some(d), None) => {
                    let _ = writeln!(w, "drain      {d:.2} s after the last accepted vote");
                }
                _ => {
                    let _ = writeln!(w, "drain      - (waited {:.1} s)", v.waited_s);
                }
            }
            if v.refused_but_stored > 0 {
                let _ = writeln!(
                    w,
                    "           {} refused voters are stored anyway",
                    v.refused_but_stored
                );
            }
            if v.unknown > 0 {
                let _ = writeln!(
                    w,
                    "           {} voters with an unanswered vote not judged",
                    v.unknown
                );
            }
            if let Some(e) = &v.error {
                let _ = writeln!(w, "           database: {e}");
            }
            for m in &v.examples {
                let _ = writeln!(
                    w,
                    "           voter {}: expected {}, stored {}",
                    m.voter_id,
                    m.expected.as_deref().unwrap_or("nothing"),
                    m.stored.as_deref().unwrap_or("nothing")
                );
            }
        }
        if self.interrupted {
            let _ = writeln!(w, "interrupted");
        }
        let _ = writeln!(w, "result     {}", if self.ok { "ok" } else { "FAILED" });
        out
    }
}

/// Milliseconds with three significant digits or so.
fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}
