//! Progress on stderr while the run goes: a bar on a terminal, else one plain line a second
//! (logs and CI output stay readable), or nothing with `--quiet`.
//!
//! indicatif's bar hides itself when stderr is not a terminal (or `TERM` is unset or `dumb`);
//! that is what picks between the two.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::load::Shared;

/// Where progress goes.
pub enum Display {
    Bar(ProgressBar),
    /// A line every [`LINE_EVERY`], prefixed with this.
    Lines {
        prefix: &'static str,
        last: Option<Instant>,
    },
    Off,
}

/// How often a plain progress line is printed.
pub const LINE_EVERY: Duration = Duration::from_secs(1);

impl Display {
    /// A bar of `len` steps on a terminal, else lines prefixed with `prefix`.
    pub fn new(quiet: bool, len: u64, prefix: &'static str) -> Display {
        if quiet {
            return Display::Off;
        }
        let bar = ProgressBar::new(len);
        if bar.is_hidden() {
            return Display::Lines { prefix, last: None };
        }
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:24}] {percent:>3}% {wide_msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(prefix);
        Display::Bar(bar)
    }

    /// Shows `pos` of the bar's length and `msg`; a line is printed at most once a
    /// [`LINE_EVERY`] unless `force`.
    pub fn update(&mut self, pos: u64, msg: &str, force: bool) {
        match self {
            Display::Bar(bar) => {
                bar.set_position(pos);
                bar.set_message(msg.to_string());
            }
            Display::Lines { prefix, last } => {
                let now = Instant::now();
                if force || last.is_none_or(|l| now.duration_since(l) >= LINE_EVERY) {
                    *last = Some(now);
                    eprintln!("{prefix}: {msg}");
                }
            }
            Display::Off => {}
        }
    }

    pub fn finish(self) {
        if let Display::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// The sending's progress display, updated by its own task.
pub struct Sending {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Sending {
    pub fn start(shared: Arc<Shared>) -> Sending {
        let config = &shared.config;
        // The bar measures votes when their number is known, else time.
        let by_votes = config.votes.is_some() && config.duration.is_none();
        let len = match (config.votes, config.duration) {
            (Some(v), None) => v,
            (_, Some(d)) => d.as_millis() as u64,
            (None, None) => 0,
        };
        let mut display = Display::new(config.quiet, len, "loadgen");
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let tick = match display {
                Display::Bar(_) => Duration::from_millis(100),
                _ => LINE_EVERY,
            };
            let mut ticks = tokio::time::interval_at((Instant::now() + tick).into(), tick);
            // (when, accepted) over the last second, for the current rate.
            let mut window = std::collections::VecDeque::from([(Instant::now(), 0u64)]);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = &mut stopped => break,
                }
                let c = &shared.counters;
                let (sent, accepted) = (c.sent.load(Relaxed), c.accepted.load(Relaxed));
                let now = Instant::now();
                while window.len() > 1 && now.duration_since(window[0].0) > LINE_EVERY {
                    window.pop_front();
                }
                let (then, before) = window[0];
                let rate = (accepted - before) as f64 / now.duration_since(then).as_secs_f64();
                window.push_back((now, accepted));
                let elapsed = now.duration_since(shared.started);
                // Most telling first: a narrow terminal cuts the end of the bar's message.
                let msg = format!(
                    "accepted {accepted}  {rate:.0}/s  refused {}  errors {}  sent {sent}  {:.1} s",
                    c.refused.load(Relaxed),
                    c.errors.load(Relaxed),
                    elapsed.as_secs_f64(),
                );
                let pos = if by_votes {
                    sent
                } else {
                    elapsed.as_millis() as u64
                };
                display.update(pos, &msg, true);
            }
            display.finish();
        });
        Sending { stop, task }
    }

    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use std::io::IsTerminal;

    use super::*;

    #[test]
    fn the_bar_hides_itself_off_a_terminal() {
        assert!(matches!(Display::new(true, 10, "test"), Display::Off));
        if std::io::stderr().is_terminal() {
            return; // run by hand in a terminal: the bar shows (unless TERM is dumb)
        }
        assert!(ProgressBar::new(10).is_hidden());
        assert!(matches!(
            Display::new(false, 10, "test"),
            Display::Lines { .. }
        ));
    }
}
