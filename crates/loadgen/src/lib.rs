//! `loadgen`: votes over HTTP against the vote service, at a chosen count or rate, from many
//! voters, and checks afterwards that every accepted vote reached PostgreSQL.
//!
//! The original app seeded itself with 3,000 `ab` POSTs; this is the same idea, measured:
//! keep-alive connections, distinct voters and re-votes, open-loop pacing without coordinated
//! omission, an HDR latency histogram, and an exit code that says whether every vote counted.
//!
//! # Layout
//! - [`args`]: the command line, its checks and the help text.
//! - [`plan`]: voter ids, re-votes, option choices; what each voter's last accepted vote was.
//! - [`client`]: one keep-alive hyper connection per slot.
//! - [`load`]: the slots sending votes, closed loop or at a fixed rate.
//! - [`progress`]: a bar on a terminal, plain lines otherwise.
//! - [`verify`]: waiting until PostgreSQL holds every accepted vote.
//! - [`report`]: the summary (text or JSON) and the exit code.
//!
//! [`run`] is the whole run as a library call (the tests use it); [`main`] is the binary.
#![forbid(unsafe_code)]

pub mod args;
pub mod client;
pub mod load;
pub mod plan;
pub mod progress;
pub mod report;
pub mod verify;

use std::future::Future;
use std::pin::pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

pub use args::{Command, Config};
pub use report::Report;

/// Sends the votes `config` asks for, then verifies them if asked; returns the summary.
/// `interrupt` completing stops the run early: no new vote is started, the ones in flight are
/// answered, and verification is skipped.
pub async fn run(config: &Config, interrupt: impl Future<Output = ()>) -> anyhow::Result<Report> {
    let authority = &config.target.authority;
    let addrs: Vec<_> = tokio::net::lookup_host(authority)
        .await
        .with_context(|| format!("resolving {authority}"))?
        .collect();
    anyhow::ensure!(!addrs.is_empty(), "{authority} resolves to no address");
    let endpoint = client::Endpoint::new(config, addrs)?;
    // 53 bits, so the seed in the JSON summary survives a JavaScript number.
    let seed = config.seed.unwrap_or_else(|| rand::random::<u64>() >> 11);
    let planned = planned_votes(config);
    let planner = plan::Planner::new(
        seed,
        config.mix.clone(),
        Some(planned),
        config.voters,
        config.revote_ratio,
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(load::Shared::new(
        config.clone(),
        endpoint,
        planner,
        stop_rx,
    ));

    let progress = progress::Sending::start(shared.clone());
    let mut interrupt = pin!(interrupt);
    let mut sending = pin!(load::run(shared.clone()));
    let mut interrupted = tokio::select! {
        done = &mut sending => { done?; false }
        _ = &mut interrupt => {
            let _ = stop_tx.send(true);
            sending.await?;
            true
        }
    };
    let elapsed = shared.started.elapsed();
    progress.finish().await;

    let shared = Arc::into_inner(shared).context("a slot outlived the run")?;
    let expected_status = shared.endpoint.expected.as_u16();
    let (sent, accepted) = (shared.counters.sent(), shared.counters.accepted());
    let state = shared.into_state();
    let refused = state.by_status.values().sum();
    let errors = report::Errors {
        connect: state.connect_errors,
        timeout: state.timeouts,
        broken: state.broken,
        total: state.connect_errors + state.timeouts + state.broken,
    };
    let mut report = Report {
        url: config.target.url.clone(),
        mode: if config.form { "form" } else { "json" },
        expected_status,
        seed,
        concurrency: config.concurrency,
        target_rate: config.rate,
        sent,
        accepted,
        refused,
        refused_by_status: state.by_status.clone(),
        unconfirmed: state.unconfirmed,
        errors,
        voters: state.planner.voters(),
        revotes: state.planner.revotes(),
        missed: (config.rate.is_some() && config.duration.is_some() && !interrupted)
            .then(|| planned.saturating_sub(sent)),
        elapsed_s: elapsed.as_secs_f64(),
        rate: accepted as f64 / elapsed.as_secs_f64().max(1e-9),
        latency_ms: report::Latency::of(&state.latency),
        verify: None,
        interrupted,
        ok: false,
    };
    if let Some(url) = config.verify.as_deref().filter(|_| !interrupted) {
        let verifying = verify::run(
            url,
            config.verify_timeout,
            &state.planner,
            &config.mix,
            state.last_accepted,
            config.quiet,
        );
        tokio::select! {
            v = verifying => report.verify = Some(v),
            _ = &mut interrupt => interrupted = true,
        }
    }
    report.interrupted = interrupted;
    report.judge();
    Ok(report)
}

/// The most votes the run may send: `--votes`, the votes due within `--duration` at
/// `--rate`, and the hard cap, whichever is least.
fn planned_votes(config: &Config) -> u64 {
    let mut planned = config.votes.unwrap_or(args::MAX_VOTES);
    if let (Some(rate), Some(d)) = (config.rate, config.duration) {
        planned = planned.min((d.as_secs_f64() * rate).ceil() as u64);
    }
    planned
}

/// The binary: parses `args` (without the program name), runs, prints the summary on stdout,
/// and says how it went: 0 all good, 1 a vote refused, failed or lost, 2 bad arguments.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let args: Result<Vec<String>, _> = args.into_iter().map(|a| a.into_string()).collect();
    let parsed = match args {
        Ok(args) => args::parse(args),
        Err(bad) => Err(args::UsageError(format!(
            "error: {bad:?} is not UTF-8\n\nFor more information, try '--help'.\n"
        ))),
    };
    let config = match parsed {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help(text) | Command::Version(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = if config.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(run(&config, interrupted(config.quiet)));
    // Slots' connections may still be closing: do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        Ok(report) => {
            if config.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            ExitCode::from(report.exit_code())
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Completes on ctrl-c or SIGTERM; a second one ends the process at once.
async fn interrupted(quiet: bool) {
    wait_for_signal().await;
    if !quiet {
        eprintln!("loadgen: stopping; the votes in flight are answered first (again to quit)");
    }
    tokio::spawn(async {
        wait_for_signal().await;
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
