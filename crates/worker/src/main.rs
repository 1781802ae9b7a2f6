//! The `worker` binary: drains the vote stream into PostgreSQL until SIGTERM or ctrl-c, and
//! serves `/healthz`, `/readyz` and `/metrics` on its listen address.

use std::process::ExitCode;

use common::config::Service;

fn main() -> ExitCode {
    common::service::main(Service::Worker, worker::run)
}
