//! The `voting` binary: the whole app on one port, starting and supervising its own Redis and
//! PostgreSQL where none answers, until SIGTERM or ctrl-c. `voting reset` starts a new poll
//! instead ([`worker::reset`]).

use std::process::ExitCode;

use common::config::Service;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("reset") {
        return worker::reset::main(Service::Voting, std::env::args().skip(2));
    }
    common::service::main_with(Service::Voting, voting::preflight, voting::run_supervised)
}
