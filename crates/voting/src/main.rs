//! The `voting` binary: the whole app on one port, starting and supervising its own Redis and
//! PostgreSQL where none answers, until SIGTERM or ctrl-c.

use std::process::ExitCode;

use common::config::Service;

fn main() -> ExitCode {
    common::service::main_with(Service::Voting, voting::preflight, voting::run_supervised)
}
