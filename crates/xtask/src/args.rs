//! The command line of `cargo xtask`: `bench` and its options, and the hidden `upstream`
//! that the bench runs as its trivial reference server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use loadgen::args::UsageError;
use loadgen::args::parse_duration;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Bench(Bench),
    /// The trivial upstream: answers every request at once, with no body (see `upstream.rs`).
    Upstream {
        listen: SocketAddr,
    },
    /// Memory per open connection of a service (see `conns.rs`).
    Conns {
        service: String,
        count: usize,
    },
    /// A child of `conns`: holds connections.
    ConnsClient {
        addr: SocketAddr,
        count: usize,
        mode: crate::conns::Mode,
    },
    Help,
}

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// Idle RSS of every service.
    Idle,
    /// `POST /vote/api/vote` through Nginx, with loadgen and with wrk.
    Vote,
    /// The form `POST /vote/` through Nginx.
    Form,
    /// `GET /result/api/tally` through Nginx.
    Tally,
    /// 202 -> WebSocket frame, one vote at a time and under load.
    Freshness,
    /// 10,000 sockets on one result process.
    Sockets,
    /// Vote and result replicas added and removed under load behind Nginx.
    Scale,
    /// The worker draining 100,000 queued votes.
    Drain,
    /// The one-process `voting` binary under the same vote load.
    Voting,
}

impl Scenario {
    pub const ALL: [Scenario; 9] = [
        Scenario::Idle,
        Scenario::Vote,
        Scenario::Form,
        Scenario::Tally,
        Scenario::Freshness,
        Scenario::Sockets,
        Scenario::Scale,
        Scenario::Drain,
        Scenario::Voting,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Vote => "vote",
            Scenario::Form => "form",
            Scenario::Tally => "tally",
            Scenario::Freshness => "freshness",
            Scenario::Sockets => "sockets",
            Scenario::Scale => "scale",
            Scenario::Drain => "drain",
            Scenario::Voting => "voting",
        }
    }

    fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// `cargo xtask bench [OPTIONS]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bench {
    /// The scenarios to run, in order.
    pub scenarios: Vec<Scenario>,
    /// How long each timed load runs (and its reference run, as long).
    pub duration: Duration,
    /// Votes queued for the drain.
    pub drain_votes: u64,
    /// Sockets opened on the result process.
    pub sockets: usize,
    /// Probe votes for each freshness figure.
    pub probes: usize,
    /// Replace the generated section of this file; `None`: only print the table.
    pub write: Option<PathBuf>,
    /// Run `cargo build --release` of the binaries first.
    pub build: bool,
    /// `--quick`: a smoke run, named so in the caption.
    pub quick: bool,
}

/// Where the generated table goes by default.
pub fn default_doc() -> PathBuf {
    crate::workspace_root().join("docs").join("benchmarks.md")
}

pub const HELP: &str = "\
cargo xtask: the project's chores

Usage:
  cargo xtask bench [OPTIONS]
  cargo xtask conns [--service vote|result] [--count N]

conns: starts the release binary of the service (cargo build --release -p vote -p result
first), opens N idle connections [default: 10000], then N slow clients (a request head
begun, never finished), from child processes, and prints the service's RSS with each.

bench: builds the release binaries, starts redis-server, PostgreSQL, Nginx (with the
project's routes) and the services on 127.0.0.1, runs each scenario for a bounded time,
stops everything, and replaces the generated section of docs/benchmarks.md with a table of
the figures, each beside its reference measured in the same run.

Scenarios (all by default, in this order):
  idle        idle RSS of vote, worker, result (and voting)
  vote        POST /vote/api/vote through Nginx, 64 connections, worker running
              (loadgen, then wrk), against Nginx in front of a trivial upstream
  form        the form POST /vote/ (303) through Nginx, against the same reference
  tally       GET /result/api/tally through Nginx (wrk), against the same reference
  freshness   vote 202 -> WebSocket frame, one vote at a time, then under 5,000 votes/s
  sockets     10,000 WebSockets on one result process: all updated, RSS, last frame
  scale       2 vote and 2 result replicas behind Nginx, 1,000 reconnecting WebSockets,
              2,000 votes/s: a replica of each added, then one removed (SIGTERM)
  drain       the worker draining 100,000 queued votes, against one INSERT ... unnest
  voting      the one-process voting binary under the vote load

Options:
  --quick             3 s loads, 2,000 sockets, 50 probes (a smoke run; figures are rough)
  --only A,B,...      run only these scenarios (prints the table, writes nothing)
  --duration D        each timed load, e.g. 5s [default: 10s]
  --sockets N         sockets of the sockets scenario [default: 10000]; each takes an open
                      file in this process and one in result's (19000 fits a limit of 20000)
  --no-write          print the table only
  --output PATH       the Markdown file to update [default: docs/benchmarks.md]
  --no-build          use the release binaries as they are
  -h, --help          this text

Needs redis-server, PostgreSQL, nginx and wrk (apt-get install redis-server postgresql
nginx wrk). Every server listens on 127.0.0.1 only.
";

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// Parses the arguments (without the program name).
pub fn parse<I, S>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut args = args.into_iter().map(Into::into);
    match args.next().as_deref() {
        None | Some("-h" | "--help" | "help") => Ok(Command::Help),
        Some("bench") => parse_bench(args),
        Some("upstream") => {
            let (Some(flag), Some(addr), None) = (args.next(), args.next(), args.next()) else {
                return Err(usage("usage: upstream --listen ADDR"));
            };
            if flag != "--listen" {
                return Err(usage("usage: upstream --listen ADDR"));
            }
            let listen = addr
                .parse()
                .map_err(|_| usage(format!("--listen: {addr:?} is not an address")))?;
            Ok(Command::Upstream { listen })
        }
        Some("conns") => {
            let mut service = "vote".to_string();
            let mut count = 10_000;
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--service" => {
                        service = args
                            .next()
                            .ok_or_else(|| usage("--service needs a value"))?;
                        if service != "vote" && service != "result" {
                            return Err(usage("--service: vote or result"));
                        }
                    }
                    "--count" => {
                        let v = args.next().ok_or_else(|| usage("--count needs a value"))?;
                        count = v
                            .parse()
                            .ok()
                            .filter(|n| (1..=100_000).contains(n))
                            .ok_or_else(|| usage("--count: from 1 to 100000"))?;
                    }
                    other => return Err(usage(format!("unknown option {other:?} (try --help)"))),
                }
            }
            Ok(Command::Conns { service, count })
        }
        Some("conns-client") => {
            let (Some(addr), Some(count), Some(mode), None) =
                (args.next(), args.next(), args.next(), args.next())
            else {
                return Err(usage("usage: conns-client ADDR COUNT idle|slow"));
            };
            Ok(Command::ConnsClient {
                addr: addr
                    .parse()
                    .map_err(|_| usage("conns-client: bad address"))?,
                count: count
                    .parse()
                    .map_err(|_| usage("conns-client: bad count"))?,
                mode: crate::conns::Mode::parse(&mode)
                    .ok_or_else(|| usage("conns-client: idle or slow"))?,
            })
        }
        Some(other) => Err(usage(format!("unknown command {other:?} (try --help)"))),
    }
}

fn parse_bench(mut args: impl Iterator<Item = String>) -> Result<Command, UsageError> {
    let mut quick = false;
    let mut only: Option<Vec<Scenario>> = None;
    let mut duration = None;
    let mut sockets = None;
    let mut write = true;
    let mut output = None;
    let mut build = true;
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || match inline.clone() {
            Some(v) => Ok(v),
            None => args
                .next()
                .ok_or_else(|| usage(format!("{name} needs a value"))),
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--quick" => quick = true,
            "--no-write" => write = false,
            "--no-build" => build = false,
            "--output" => output = Some(PathBuf::from(value()?)),
            "--duration" => {
                let v = value()?;
                let d = parse_duration(&v).map_err(|e| usage(format!("--duration: {e}")))?;
                if d < Duration::from_millis(500) || d > Duration::from_secs(300) {
                    return Err(usage("--duration: from 500ms to 5m"));
                }
                duration = Some(d);
            }
            "--sockets" => {
                let v = value()?;
                sockets = Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| (1..=100_000).contains(n))
                        .ok_or_else(|| usage("--sockets: from 1 to 100000"))?,
                );
            }
            "--only" => {
                let list = value()?;
                let mut picked = Vec::new();
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let s = Scenario::parse(name).ok_or_else(|| {
                        let known: Vec<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
                        usage(format!(
                            "--only: unknown scenario {name:?} (known: {})",
                            known.join(", ")
                        ))
                    })?;
                    picked.push(s);
                }
                if picked.is_empty() {
                    return Err(usage("--only: name at least one scenario"));
                }
                only = Some(picked);
            }
            other => return Err(usage(format!("unknown option {other:?} (try --help)"))),
        }
    }
    let partial = only.is_some();
    let mut scenarios = only.unwrap_or_else(|| Scenario::ALL.to_vec());
    scenarios.sort();
    scenarios.dedup();
    let default_duration = if quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(10)
    };
    // A partial run would drop the other rows of the table: it only prints.
    let write = (write && !partial).then(|| output.unwrap_or_else(default_doc));
    Ok(Command::Bench(Bench {
        scenarios,
        duration: duration.unwrap_or(default_duration),
        drain_votes: 100_000,
        sockets: sockets.unwrap_or(if quick { 2_000 } else { 10_000 }),
        probes: if quick { 50 } else { 200 },
        write,
        build,
        quick,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bench(args: &[&str]) -> Bench {
        let mut all = vec!["bench"];
        all.extend_from_slice(args);
        match parse(all) {
            Ok(Command::Bench(b)) => b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_run_everything_and_write_the_doc() {
        let b = bench(&[]);
        assert_eq!(b.scenarios, Scenario::ALL.to_vec());
        assert_eq!(b.duration, Duration::from_secs(10));
        assert_eq!(b.write, Some(default_doc()));
        assert!(b.build && !b.quick);
        assert_eq!((b.sockets, b.probes, b.drain_votes), (10_000, 200, 100_000));
    }

    #[test]
    fn quick_is_shorter() {
        let b = bench(&["--quick"]);
        assert_eq!(b.duration, Duration::from_secs(3));
        assert_eq!(b.sockets, 2_000);
        assert!(b.quick);
        assert_eq!(
            bench(&["--quick", "--duration=5s"]).duration,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn only_selects_in_run_order_and_does_not_write() {
        let b = bench(&["--only", "drain,vote,drain"]);
        assert_eq!(b.scenarios, vec![Scenario::Vote, Scenario::Drain]);
        assert_eq!(b.write, None);
    }

    #[test]
    fn output_and_no_write() {
        assert_eq!(
            bench(&["--output", "x.md"]).write,
            Some(PathBuf::from("x.md"))
        );
        assert_eq!(bench(&["--no-write", "--output", "x.md"]).write, None);
        assert!(!bench(&["--no-build"]).build);
    }

    #[test]
    fn bad_arguments_are_named() {
        let err = |args: &[&str]| parse(args.iter().copied()).unwrap_err().0;
        assert!(err(&["bench", "--only", "nope"]).contains("\"nope\""));
        assert!(err(&["bench", "--duration", "1x"]).contains("--duration"));
        assert!(err(&["bench", "--duration", "10m"]).contains("from 500ms"));
        assert!(err(&["bench", "--frobnicate"]).contains("--frobnicate"));
        assert!(err(&["bench", "--output"]).contains("needs a value"));
        assert!(err(&["deploy"]).contains("deploy"));
        assert!(err(&["upstream", "--listen", "nowhere"]).contains("not an address"));
    }

    #[test]
    fn conns() {
        assert_eq!(
            parse(["conns"]).unwrap(),
            Command::Conns {
                service: "vote".into(),
                count: 10_000
            }
        );
        assert_eq!(
            parse(["conns", "--service", "result", "--count", "500"]).unwrap(),
            Command::Conns {
                service: "result".into(),
                count: 500
            }
        );
        assert!(parse(["conns", "--service", "worker"]).is_err());
        assert!(parse(["conns", "--count", "0"]).is_err());
        assert_eq!(
            parse(["conns-client", "127.0.0.1:9", "3", "slow"]).unwrap(),
            Command::ConnsClient {
                addr: "127.0.0.1:9".parse().unwrap(),
                count: 3,
                mode: crate::conns::Mode::Slow
            }
        );
    }

    #[test]
    fn upstream_and_help() {
        assert_eq!(
            parse(["upstream", "--listen", "127.0.0.1:9"]).unwrap(),
            Command::Upstream {
                listen: "127.0.0.1:9".parse().unwrap()
            }
        );
        assert_eq!(parse(Vec::<String>::new()).unwrap(), Command::Help);
        assert_eq!(parse(["bench", "-h"]).unwrap(), Command::Help);
    }
}
