//! The `vote` binary: serves the voting page until SIGTERM or ctrl-c.

use std::process::ExitCode;

use common::config::Program;

fn main() -> ExitCode {
    common::program::main(Program::Vote, vote::run)
}
