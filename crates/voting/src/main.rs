//! The `voting` binary: the whole app on one port, starting and supervising its own private
//! Redis and PostgreSQL for the URLs not named, until SIGTERM or ctrl-c; or one of its tools
//! (`voting psql`, `voting redis-cli`, `voting reset`).

use std::process::ExitCode;

use common::config::Program;

fn main() -> ExitCode {
    common::program::main_with_tools(
        Program::Voting,
        voting::tools::TOOLS,
        voting::preflight,
        voting::run_supervised,
    )
}
