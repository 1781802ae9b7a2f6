//! The harness: a vote service (and optionally a worker) in-process on port 0, over testkit's
//! throwaway Redis (and PostgreSQL database); and loadgen runs through the library entry.

use common::config::Program;
use loadgen::{Command, Report};
use testkit::{App, Infra};

/// A vote service on its Redis and, with [`Stack::with_database`], a fresh PostgreSQL database
/// (and with [`Stack::with_worker`], a worker). Dropping it stops the services and Redis.
pub struct Stack {
    pub infra: Infra,
    vote: App,
    _worker: Option<App>,
}

impl Stack {
    /// Redis and the vote service.
    pub async fn vote_only() -> Stack {
        Stack::on(Infra::redis_only()).await
    }

    /// Redis, a fresh database (no schema yet) and the vote service; no worker.
    pub async fn with_database() -> Stack {
        Stack::on(Infra::database().await.with_redis()).await
    }

    /// Redis, a fresh database, the vote service and a worker.
    pub async fn with_worker() -> Stack {
        let mut stack = Stack::with_database().await;
        stack.start_worker().await;
        stack
    }

    pub async fn start_worker(&mut self) {
        let config = self.infra.config(Program::Worker, |f| f);
        self._worker = Some(App::spawn(worker::run, config, None).await);
    }

    async fn on(infra: Infra) -> Stack {
        let vote = App::spawn(vote::run, infra.config(Program::Vote, |f| f), None).await;
        Stack {
            infra,
            vote,
            _worker: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.vote.addr)
    }

    pub fn db_url(&self) -> &str {
        self.infra.db_url()
    }
}

/// Parses a loadgen command line; panics unless it is a run.
pub fn config(args: &[&str]) -> loadgen::Config {
    match loadgen::args::parse(args.iter().copied()) {
        Ok(Command::Run(config)) => *config,
        other => panic!("{args:?}: {other:?}"),
    }
}

/// Runs loadgen (quietly) to the end, through the library entry.
pub async fn run(args: &[&str]) -> Report {
    let mut args = args.to_vec();
    args.push("--quiet");
    loadgen::run(&config(&args), std::future::pending())
        .await
        .expect("the run completes")
}

/// What the loadgen binary did.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the loadgen binary with `args`.
pub async fn run_binary(args: &[&str]) -> Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output()
        .await
        .expect("the loadgen binary runs");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
