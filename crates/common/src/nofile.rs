//! The open-file limit. Every connection, WebSocket and pooled connection is a file
//! descriptor, and many container runtimes and shells start a process with a soft limit of
//! 1,024 under a much higher hard limit: a result process started so held 1,011 sockets, not
//! the 20,000 of `result.max_sockets`. So every service raises its soft limit to the hard
//! limit at start (as Go programs do), logs what it runs with, shows it in `/metrics`
//! (`process_max_fds`, `process_open_fds`, the names of Prometheus's process collector), and
//! warns, naming the numbers, when its configured caps need more descriptors than that.
//!
//! Past the limit nothing breaks for good: `accept` fails, the listener backs off, and the
//! next clients wait in the kernel's queue until a descriptor frees.

use std::io;

use crate::config::{Config, Program};
use crate::metrics::{self, Registry};

/// Descriptors kept aside for what is not a connection: standard streams, the runtime's
/// epoll and wake-up descriptors, the listener, a configuration or password file, and the
/// odd DNS lookup.
pub const SPARE: u64 = 64;

/// The limit before and after [`raise`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The soft limit the process was started with.
    pub started_with: u64,
    /// The soft limit in force now.
    pub soft: u64,
    pub hard: u64,
}

/// The soft and hard limits of open files of this process.
pub fn current() -> io::Result<(u64, u64)> {
    rlimit::Resource::NOFILE.get()
}

/// Raises the soft limit of open files to the hard limit (an unprivileged process may), and
/// returns both.
pub fn raise() -> io::Result<Limit> {
    let (started_with, _) = current()?;
    rlimit::increase_nofile_limit(u64::MAX)?;
    let (soft, hard) = current()?;
    Ok(Limit {
        started_with,
        soft,
        hard,
    })
}

/// What the configuration of `service` may hold open at once, term by term: `(what, count)`.
/// Upgraded WebSockets leave `http.max_connections` (their connection's place frees at the
/// upgrade), so result can hold both at once.
pub fn needs(service: Program, config: &Config) -> Vec<(&'static str, u64)> {
    let mut terms = vec![(
        "http.max_connections",
        config.http.max_connections.get() as u64,
    )];
    let redis = ("redis.pool_size", u64::from(config.redis.pool_size.get()));
    let postgres = (
        "postgres.pool_size",
        u64::from(config.postgres.pool_size.get()),
    );
    match service {
        Program::Vote => terms.push(redis),
        Program::Worker => terms.extend([redis, postgres]),
        Program::Result => terms.extend([
            ("result.max_sockets", config.result.max_sockets.get() as u64),
            postgres,
            ("the feed's connection", 1),
        ]),
        Program::Voting => terms.extend([
            ("result.max_sockets", config.result.max_sockets.get() as u64),
            // vote's, worker's and result's pools, and the feed.
            (
                "redis.pool_size × 2",
                2 * u64::from(config.redis.pool_size.get()),
            ),
            (
                "postgres.pool_size × 2",
                2 * u64::from(config.postgres.pool_size.get()),
            ),
            ("the feed's connection", 1),
        ]),
    }
    terms.push(("spare", SPARE));
    terms
}

/// The warning for a limit below `needs`, naming every term; `None` when they fit.
pub fn shortfall(terms: &[(&str, u64)], soft: u64) -> Option<String> {
    let total: u64 = terms.iter().map(|(_, n)| n).sum();
    if total <= soft {
        return None;
    }
    let sum = terms
        .iter()
        .map(|(what, n)| format!("{what} {n}"))
        .collect::<Vec<_>>()
        .join(" + ");
    Some(format!(
        "the open-file limit is {soft}, but the configuration can hold {total} descriptors \
         open ({sum}): past {soft}, new connections wait until one closes. Raise the hard \
         limit (`ulimit -Hn`, compose's `ulimits: nofile`, the container runtime's default) \
         or lower the caps"
    ))
}

/// At start: raises the limit, logs it, and warns when `config`'s caps do not fit.
pub fn raise_and_check(service: Program, config: &Config) {
    let name = service.name();
    match raise() {
        Ok(limit) => {
            tracing::info!(
                service = name,
                soft = limit.soft,
                hard = limit.hard,
                started_with = limit.started_with,
                "open-file limit"
            );
            if let Some(warning) = shortfall(&needs(service, config), limit.soft) {
                tracing::warn!(service = name, "{warning}");
            }
        }
        Err(e) => tracing::warn!(service = name, error = %e, "cannot raise the open-file limit"),
    }
}

/// Registers `process_max_fds` (the soft limit) and `process_open_fds`, read at each scrape:
/// every `/metrics` answer has them ([`crate::web::metrics`]).
pub fn register(registry: &mut Registry) {
    metrics::register(registry, (), |(), f| {
        if let Ok((soft, _)) = current() {
            f.gauge(
                "process_max_fds",
                "The soft limit of open files this process runs with.",
                soft,
            )?;
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            f.gauge(
                "process_open_fds",
                "Open file descriptors.",
                entries.count() as u64,
            )?;
        }
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_reaches_the_hard_limit() {
        let limit = raise().unwrap();
        assert_eq!(limit.soft, limit.hard);
        assert_eq!(current().unwrap(), (limit.soft, limit.hard));
        assert!(limit.soft >= limit.started_with);
    }

    #[test]
    fn result_needs_its_sockets_and_connections() {
        let config = Config::defaults(Program::Result);
        let terms = needs(Program::Result, &config);
        let total: u64 = terms.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 10_000 + 20_000 + 4 + 1 + SPARE);
        let warning = shortfall(&terms, 1024).unwrap();
        assert!(warning.contains("limit is 1024"), "{warning}");
        assert!(warning.contains("result.max_sockets 20000"), "{warning}");
        assert!(warning.contains("http.max_connections 10000"), "{warning}");
        assert!(warning.contains(&total.to_string()), "{warning}");
        assert_eq!(shortfall(&terms, total), None);
        assert!(shortfall(&terms, total - 1).is_some());
    }

    #[test]
    fn vote_needs_no_sockets() {
        let config = Config::defaults(Program::Vote);
        let terms = needs(Program::Vote, &config);
        assert!(!terms.iter().any(|(what, _)| what.contains("max_sockets")));
        assert_eq!(
            terms.iter().map(|(_, n)| n).sum::<u64>(),
            10_000 + 4 + SPARE
        );
    }

    #[test]
    fn metrics_show_the_limit_and_the_open_descriptors() {
        let mut registry = Registry::default();
        register(&mut registry);
        let text = metrics::encode(&registry);
        let (soft, _) = current().unwrap();
        assert!(
            text.contains(&format!("\nprocess_max_fds {soft}\n")),
            "{text}"
        );
        assert!(text.contains("\nprocess_open_fds "), "{text}");
    }
}
