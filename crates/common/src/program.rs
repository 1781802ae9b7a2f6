//! What every binary's `main` does: read arguments and configuration (exit code 2 when they
//! are bad), set up logging, bind the listener, and run until SIGTERM or ctrl-c. Or, with
//! `healthcheck [URL]`, probe the running service instead (see [`crate::healthcheck`]).

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::{Config, Program};

/// Exit code for a bad command line or configuration.
pub const EXIT_CONFIG: u8 = 2;

/// The command line every service accepts: `[--config PATH] [healthcheck [URL]]`, plus
/// `--help` and `--version`, plus the subcommands of the binary's own [`Tool`]s.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    pub config: Option<PathBuf>,
    /// `healthcheck [URL]`: probe the running service (exit 0 or 1) instead of running it.
    pub healthcheck: Option<Healthcheck>,
    /// A [`Tool`]'s subcommand: its name and the arguments after it, as given.
    pub tool: Option<(String, Vec<String>)>,
}

/// A subcommand of one binary that reads the configuration, does one thing and ends instead of
/// running the service (e.g. `voting psql`). Every argument after its name is its own.
#[derive(Clone, Copy)]
pub struct Tool {
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// Runs it with the loaded configuration and the arguments after its name.
    pub run: fn(&Config, Vec<String>) -> ExitCode,
}

/// The `healthcheck` subcommand: the URL to probe, by default `/readyz` on the configured
/// `listen` port ([`crate::healthcheck::default_url`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Healthcheck {
    pub url: Option<String>,
}

#[derive(clap::Parser)]
#[command(version, disable_help_subcommand = true)]
struct Cli {
    /// A TOML configuration file (also `VOTING_CONFIG`). Environment variables
    /// (`VOTING_<SECTION>__<KEY>`) override it.
    #[arg(short, long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Probe the running service: exit 0 when URL answers 200, else 1 (for container health
    /// checks: there is no shell or curl in the images).
    Healthcheck {
        /// What to probe [default: /readyz on the configured `listen` port].
        #[arg(value_parser = absolute_url)]
        url: Option<String>,
    },
}

fn absolute_url(s: &str) -> Result<String, String> {
    if s.contains("://") {
        Ok(s.to_string())
    } else {
        Err("expected an absolute URL such as http://127.0.0.1:8082/readyz".into())
    }
}

/// What each binary says it is, for `--help`.
fn about(service: Program) -> &'static str {
    match service {
        Program::Vote => "The voting page and API: queues each vote in the Redis stream.",
        Program::Result => "The live results page: tallies from PostgreSQL, pushed over WebSocket.",
        Program::Worker => "Moves votes from the Redis stream into PostgreSQL.",
        Program::Voting => {
            "The whole voting app in one process: vote, result and worker, with its own private \
             Redis and PostgreSQL (Unix sockets in its data directory) unless redis.url or \
             postgres.url names one."
        }
    }
}

/// Where the configuration is documented, for `--help`.
const CONFIG_HELP: &str = "Configuration: every key, its environment variable and its default \
are listed in docs/configuration.md. Example: VOTING_REDIS__URL=redis://cache:6379";

impl Args {
    /// Parses a command line (without the program name). `Err` carries what to print and
    /// the exit code: 0 for `--help` and `--version`, 2 for a bad command line.
    pub fn parse_for(
        service: Program,
        args: impl IntoIterator<Item = String>,
    ) -> Result<Args, (String, u8)> {
        Args::parse_with_tools(service, &[], args)
    }

    /// [`Args::parse_for`] with the subcommands of `tools`.
    pub fn parse_with_tools(
        service: Program,
        tools: &[Tool],
        args: impl IntoIterator<Item = String>,
    ) -> Result<Args, (String, u8)> {
        use clap::{CommandFactory, FromArgMatches};
        let mut command = Cli::command()
            .name(service.name())
            .bin_name(service.name())
            .about(about(service))
            .after_help(CONFIG_HELP);
        for tool in tools {
            command = command.subcommand(
                clap::Command::new(tool.name)
                    .about(tool.about)
                    .override_usage(format!("{} {} [ARGS]...", service.name(), tool.name))
                    .after_help(
                        "Every argument after the subcommand's name is passed on as it is.",
                    ),
            );
        }
        // Everything after a tool's name is the tool's, `--help` and `-c` included: clap sees
        // only what comes before it.
        let mut args: Vec<String> = args.into_iter().collect();
        let mut tool = None;
        let mut i = 0;
        while let Some(arg) = args.get(i) {
            match arg.as_str() {
                "-c" | "--config" => i += 2,
                "--" => break,
                a if a.starts_with('-') => i += 1,
                a => {
                    if let Some(t) = tools.iter().find(|t| t.name == a) {
                        tool = Some((t.name.to_string(), args.split_off(i + 1)));
                    }
                    break;
                }
            }
        }
        let args = std::iter::once(service.name().to_string()).chain(args);
        let parsed = command.try_get_matches_from(args).and_then(|m| {
            let cli = match &tool {
                // The derived parser knows only `healthcheck`.
                Some(_) => Cli {
                    config: m.get_one::<PathBuf>("config").cloned(),
                    command: None,
                },
                None => Cli::from_arg_matches(&m)?,
            };
            Ok((cli, tool))
        });
        match parsed {
            Ok((cli, tool)) => Ok(Args {
                config: cli.config,
                healthcheck: cli
                    .command
                    .map(|Sub::Healthcheck { url }| Healthcheck { url }),
                tool,
            }),
            Err(e) => {
                let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
                Err((e.render().to_string(), code))
            }
        }
    }

    /// [`Args::parse_for`] for tests and tools: the message of a bad command line.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
        Args::parse_for(Program::Vote, args).map_err(|(message, _)| message)
    }
}

/// Runs `service` the way its binary does. `run` gets the checked configuration, the bound
/// listener and a future that completes on SIGTERM or ctrl-c.
pub fn main<F, Fut>(service: Program, run: F) -> ExitCode
where
    F: FnOnce(Config, TcpListener, ShutdownSignal) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    main_with(
        service,
        |_| Ok(()),
        |config, (), listener, shutdown| run(config, listener, shutdown),
    )
}

/// Like [`main`], with a check between reading the configuration and logging or binding
/// anything: `prepare` looks at the configuration and the machine, and what it finds is handed
/// to `run`. Its error, one line, is printed alone and stops the binary with exit code 1.
pub fn main_with<P, T, F, Fut>(service: Program, prepare: P, run: F) -> ExitCode
where
    P: FnOnce(&Config) -> Result<T, String>,
    F: FnOnce(Config, T, TcpListener, ShutdownSignal) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    main_with_tools(service, &[], prepare, run)
}

/// Like [`main_with`], with the subcommands of `tools`: one given on the command line runs
/// with the loaded configuration instead of the service, and its exit code is the binary's.
pub fn main_with_tools<P, T, F, Fut>(
    service: Program,
    tools: &[Tool],
    prepare: P,
    run: F,
) -> ExitCode
where
    P: FnOnce(&Config) -> Result<T, String>,
    F: FnOnce(Config, T, TcpListener, ShutdownSignal) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let name = service.name();
    let args = match Args::parse_with_tools(service, tools, std::env::args().skip(1)) {
        Ok(args) => args,
        Err((message, 0)) => {
            print!("{message}");
            return ExitCode::SUCCESS;
        }
        Err((message, code)) => {
            eprint!("{message}");
            return ExitCode::from(code);
        }
    };
    if let Some(check) = args.healthcheck {
        return healthcheck(service, args.config, check.url);
    }
    let config = match Config::load(service, args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some((tool, tool_args)) = args.tool
        && let Some(tool) = tools.iter().find(|t| t.name == tool)
    {
        return (tool.run)(&config, tool_args);
    }
    let prepared = match prepare(&config) {
        Ok(prepared) => prepared,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    crate::telemetry::init(config.log.format);
    crate::nofile::raise_and_check(service, &config);
    let threads = match config.threads {
        0 => service.default_threads(),
        n => n,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    let result = runtime.block_on(async move {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        tracing::info!(service = name, listen = %listener.local_addr()?, "listening");
        run(config, prepared, listener, shutdown_signal()).await
    });
    match result {
        Ok(()) => {
            tracing::info!(service = name, "stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(service = name, error = crate::error::describe(&e), "failed");
            ExitCode::FAILURE
        }
    }
}

/// `healthcheck [URL]`: exit code 0 when the URL (by default `/readyz` on the configured
/// `listen` port) answers `200`, else 1, whatever went wrong (a configuration that cannot be
/// read included: Docker reserves exit code 2 of a health check).
fn healthcheck(service: Program, config: Option<PathBuf>, url: Option<String>) -> ExitCode {
    let url = match url {
        Some(url) => url,
        None => match Config::load(service, config) {
            Ok(config) => crate::healthcheck::default_url(config.listen),
            Err(e) => {
                eprintln!("{}: unhealthy: {e}", service.name());
                return ExitCode::FAILURE;
            }
        },
    };
    crate::healthcheck::run(&url)
}

pub type ShutdownSignal = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Completes on SIGTERM (what Kubernetes and Docker send) or SIGINT (ctrl-c).
pub fn shutdown_signal() -> ShutdownSignal {
    Box::pin(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler can be installed");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        Args::parse(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_config_flag() {
        assert_eq!(args(&[]).unwrap(), Args::default());
        assert_eq!(
            args(&["--config", "x.toml"]).unwrap().config,
            Some("x.toml".into())
        );
        assert_eq!(
            args(&["--config=y.toml"]).unwrap().config,
            Some("y.toml".into())
        );
        assert!(args(&["--config"]).is_err());
        assert!(args(&["--verbose"]).unwrap_err().contains("--verbose"));
    }

    #[test]
    fn parses_healthcheck() {
        let check = |list: &[&str]| args(list).unwrap().healthcheck;
        assert_eq!(check(&[]), None);
        assert_eq!(check(&["healthcheck"]), Some(Healthcheck { url: None }));
        assert_eq!(
            check(&["healthcheck", "http://127.0.0.1:8082/healthz"]),
            Some(Healthcheck {
                url: Some("http://127.0.0.1:8082/healthz".into())
            })
        );
        let both = args(&["--config", "v.toml", "healthcheck"]).unwrap();
        assert_eq!(both.config, Some("v.toml".into()));
        assert!(both.healthcheck.is_some());
        let after = args(&["healthcheck", "--config", "v.toml"]).unwrap();
        assert_eq!(after.config, Some("v.toml".into()));
        assert_eq!(after.healthcheck, Some(Healthcheck { url: None }));
        // A URL only after `healthcheck`, and only one.
        assert!(args(&["http://127.0.0.1:8082/readyz"]).is_err());
        assert!(args(&["healthcheck", "http://a/", "http://b/"]).is_err());
        assert!(args(&["healthcheck", "healthcheck"]).is_err());
        assert!(args(&["healthcheck", "8082"]).is_err());
    }

    #[test]
    fn tools_take_every_argument_after_their_name() {
        fn run(_: &Config, _: Vec<String>) -> ExitCode {
            ExitCode::SUCCESS
        }
        let tools = [Tool {
            name: "psql",
            about: "Opens psql on the database.",
            run,
        }];
        let parse = |list: &[&str]| {
            Args::parse_with_tools(Program::Voting, &tools, list.iter().map(|s| s.to_string()))
        };
        let args = parse(&["--config", "v.toml", "psql", "-c", "SELECT 1", "--help"]).unwrap();
        assert_eq!(args.config, Some("v.toml".into()));
        assert_eq!(
            args.tool,
            Some((
                "psql".into(),
                vec!["-c".into(), "SELECT 1".into(), "--help".into()]
            ))
        );
        assert_eq!(
            parse(&["psql"]).unwrap().tool,
            Some(("psql".into(), vec![]))
        );
        assert_eq!(parse(&[]).unwrap().tool, None);
        let (help, code) = parse(&["--help"]).unwrap_err();
        assert_eq!(code, 0);
        assert!(
            help.contains("psql") && help.contains("Opens psql"),
            "{help}"
        );
        // Other binaries do not have it.
        assert!(args_of(Program::Vote, &["psql"]).is_err());
    }

    fn args_of(service: Program, list: &[&str]) -> Result<Args, (String, u8)> {
        Args::parse_for(service, list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn help_and_version_exit_0_and_say_what_each_binary_is() {
        for service in [
            Program::Vote,
            Program::Result,
            Program::Worker,
            Program::Voting,
        ] {
            let (help, code) = Args::parse_for(service, ["--help".to_string()]).unwrap_err();
            assert_eq!(code, 0, "{help}");
            assert!(help.contains(about(service)), "{help}");
            assert!(
                help.contains("--config") && help.contains("healthcheck"),
                "{help}"
            );
            assert!(help.contains("Configuration"), "{help}");
            let (version, code) = Args::parse_for(service, ["-V".to_string()]).unwrap_err();
            assert_eq!(code, 0);
            assert_eq!(
                version.trim(),
                format!("{} {}", service.name(), env!("CARGO_PKG_VERSION"))
            );
        }
        let (_, code) = Args::parse_for(Program::Worker, ["--nope".to_string()]).unwrap_err();
        assert_eq!(code, EXIT_CONFIG);
    }
}
