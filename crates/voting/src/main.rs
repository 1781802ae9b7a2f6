//! The `voting` binary: the whole app on one port, starting and supervising its own private
//! Redis and PostgreSQL for the URLs not named, until SIGTERM or ctrl-c; or one of its tools
//! (`voting psql`, `voting redis-cli`, `voting reset`).

use std::process::ExitCode;

use common::config::Service;

fn main() -> ExitCode {
    common::service::main_with_tools(
        Service::Voting,
        voting::tools::TOOLS,
        voting::preflight,
        voting::run_supervised,
    )
}
