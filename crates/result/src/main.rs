//! The `result` binary: serves the live results page until SIGTERM or ctrl-c.

use std::process::ExitCode;

use common::config::Service;

fn main() -> ExitCode {
    common::service::main(Service::Result, result::run)
}
