//! What every binary's `main` does: read arguments and configuration (exit code 2 when they
//! are bad), set up logging, bind the listener, and run until SIGTERM or ctrl-c. Or, with
//! `healthcheck [URL]`, probe the running service instead (see [`crate::healthcheck`]).

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::{Config, Service};

/// Exit code for a bad command line or configuration.
pub const EXIT_CONFIG: u8 = 2;

/// The command line every service accepts: `[--config PATH] [healthcheck [URL]]`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    pub config: Option<PathBuf>,
    /// `healthcheck [URL]`: probe the running service (exit 0 or 1) instead of running it.
    pub healthcheck: Option<Healthcheck>,
}

/// The `healthcheck` subcommand: the URL to probe, by default `/readyz` on the configured
/// `listen` port ([`crate::healthcheck::default_url`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Healthcheck {
    pub url: Option<String>,
}

impl Args {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
        let mut parsed = Args::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--config" | "-c" => {
                    let path = args.next().ok_or("--config needs a path")?;
                    parsed.config = Some(PathBuf::from(path));
                }
                s if s.starts_with("--config=") => {
                    parsed.config = Some(PathBuf::from(&s["--config=".len()..]));
                }
                "healthcheck" if parsed.healthcheck.is_none() => {
                    parsed.healthcheck = Some(Healthcheck::default());
                }
                url if url.contains("://")
                    && parsed.healthcheck.as_ref().is_some_and(|h| h.url.is_none()) =>
                {
                    parsed.healthcheck = Some(Healthcheck {
                        url: Some(url.to_string()),
                    });
                }
                other => {
                    return Err(format!(
                        "unknown argument {other:?}; usage: [--config PATH] [healthcheck [URL]]"
                    ));
                }
            }
        }
        Ok(parsed)
    }
}

/// Runs `service` the way its binary does. `run` gets the checked configuration, the bound
/// listener and a future that completes on SIGTERM or ctrl-c.
pub fn main<F, Fut>(service: Service, run: F) -> ExitCode
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
pub fn main_with<P, T, F, Fut>(service: Service, prepare: P, run: F) -> ExitCode
where
    P: FnOnce(&Config) -> Result<T, String>,
    F: FnOnce(Config, T, TcpListener, ShutdownSignal) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let name = service.name();
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{name}: invalid command line: {e}");
            return ExitCode::from(EXIT_CONFIG);
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
    let prepared = match prepare(&config) {
        Ok(prepared) => prepared,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    crate::telemetry::init(config.log.format);
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
            tracing::error!(service = name, error = format!("{e:#}"), "failed");
            ExitCode::FAILURE
        }
    }
}

/// `healthcheck [URL]`: exit code 0 when the URL (by default `/readyz` on the configured
/// `listen` port) answers `200`, else 1, whatever went wrong (a configuration that cannot be
/// read included: Docker reserves exit code 2 of a health check).
fn healthcheck(service: Service, config: Option<PathBuf>, url: Option<String>) -> ExitCode {
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
}
