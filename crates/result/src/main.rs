//! The `result` binary: serves the live results page until SIGTERM or ctrl-c.

use std::process::ExitCode;

use common::config::Program;

fn main() -> ExitCode {
    common::program::main(Program::Result, result::run)
}
