//! `cargo xtask`: the project's chores, in Rust. `cargo xtask bench` runs every benchmark
//! on 127.0.0.1 and writes the table of docs/benchmarks.md (see [`mod@bench`]).
//!
//! # Layout
//! - [`args`]: the command line.
//! - [`mod@bench`]: the scenarios, each figure with its same-run reference.
//! - [`conns`]: `cargo xtask conns`, the memory a service holds per open connection.
//! - [`stack`]: the processes: Redis, PostgreSQL, the services, Nginx, the trivial upstream.
//! - [`upstream`]: the trivial upstream of the reference runs.
//! - [`load`]: loadgen and wrk.
//! - [`feed`]: WebSockets and probe votes.
//! - [`scale`]: replicas added and removed under load behind one Nginx.
//! - [`markdown`]: the table and the generated section of the document.
//! - [`machine`]: cores, CPU, load average, date, memory.

#![forbid(unsafe_code)]

mod args;
mod bench;
mod conns;
mod feed;
mod load;
mod machine;
mod markdown;
mod scale;
mod stack;
mod upstream;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;

use args::Command;

fn main() -> ExitCode {
    let command = match args::parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("xtask: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = match command {
        Command::Help => {
            print!("{}", args::HELP);
            Ok(())
        }
        Command::Upstream { listen } => upstream::serve(listen),
        Command::Bench(bench) => run_bench(&bench),
        Command::Conns { service, count } => conns::run(&service, count),
        Command::ConnsClient { addr, count, mode } => conns::hold(addr, count, mode),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace's root directory.
pub(crate) fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..");
    root.canonicalize().unwrap_or(root)
}

fn run_bench(args: &args::Bench) -> anyhow::Result<()> {
    if args.build {
        build_release()?;
    }
    let started = Instant::now();
    let load_before = machine::load_average();
    let runtime = tokio::runtime::Runtime::new()?;
    // On ctrl-c the run is dropped, which stops everything it started (testkit's Nginx runs
    // in a process group of its own, out of the terminal's reach).
    let rows = runtime.block_on(async {
        tokio::select! {
            rows = bench::run(args) => rows,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    })?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    let mut command = "cargo xtask bench".to_string();
    if args.quick {
        command.push_str(" --quick");
    }
    let context = markdown::Context {
        date: machine::today(),
        cores: machine::cores(),
        cpu: machine::cpu_model(),
        load_before,
        load_after: machine::load_average(),
        command,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    let section = markdown::section(&context, &rows);
    print!("{section}");
    if let Some(path) = &args.write {
        let doc =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let new = markdown::replace_section(&doc, &section)
            .with_context(|| format!("in {}", path.display()))?;
        std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

/// `cargo build --release` of the binaries the bench runs.
fn build_release() -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: building the release binaries");
    let status = std::process::Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--release", "--quiet"])
        .args([
            "-p", "vote", "-p", "worker", "-p", "result", "-p", "voting", "-p", "loadgen",
        ])
        .status()
        .context("cannot run cargo")?;
    anyhow::ensure!(status.success(), "cargo build --release failed ({status})");
    Ok(())
}
