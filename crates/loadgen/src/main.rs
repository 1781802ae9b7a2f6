//! The `loadgen` binary: see `loadgen --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    loadgen::main(std::env::args_os().skip(1))
}
