//! The `vote` binary: serves the voting page until SIGTERM or ctrl-c.

use std::process::ExitCode;

use common::config::Service;

fn main() -> ExitCode {
    common::service::main(Service::Vote, vote::run)
}
