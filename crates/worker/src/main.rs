//! The `worker` binary: drains the vote stream into PostgreSQL until SIGTERM or ctrl-c, and
//! serves `/healthz`, `/readyz` and `/metrics` on its listen address. `worker reset` starts a
//! new poll instead ([`worker::reset`]).

use std::process::ExitCode;

use common::config::Program;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("reset") {
        return worker::reset::main(Program::Worker, std::env::args().skip(2));
    }
    common::program::main(Program::Worker, worker::run)
}
