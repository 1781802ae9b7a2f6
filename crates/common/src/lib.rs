//! Shared parts of the voting services. The domain types and rules (options, voter ids,
//! stream entry ids, same-origin) are in the `domain` crate, which does no I/O.
//!
//! # Layout
//! - [`config`]: the one configuration struct every binary reads (figment: defaults, TOML
//!   file, `VOTING_…` environment, `OPTION_A`/`OPTION_B`), with errors that name the key.
//! - [`secret`]: URLs whose password never prints.
//! - [`pools`]: bb8 pools for Redis and PostgreSQL.
//! - [`schema`]: the embedded, idempotent SQL schema, applied under an advisory lock.
//! - [`web`]: serving hyper connections with limits and graceful shutdown, plus small
//!   response helpers.
//! - [`metrics`]: atomic counters and gauges, read at scrape time through prometheus-client.
//! - [`embed`]: [`embed::Embed`], the one shape of vote, result and the worker, and
//!   [`embed::run`], which serves one alone.
//! - [`nofile`]: the open-file limit: raised to the hard limit at start, logged, checked
//!   against the configured caps, and shown in `/metrics`.
//! - [`telemetry`]: tracing setup (text or JSON).
//! - [`program`]: what every `main.rs` does (arguments, config, exit code 2, signals).
//! - [`healthcheck`]: the `healthcheck [URL]` subcommand of every service binary, for
//!   container images without a shell or curl.
//! - [`backoff`]: capped exponential backoff for the retry loops, and [`backoff::Outage`],
//!   which logs their state changes rather than every retry.
//! - [`error`]: error text for people: each cause once, no crate jargon.
//! - [`system`]: Unix facts without `unsafe` (uids, users, programs on `PATH`, signals), for
//!   the `voting` supervisor and the test kit.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod config;
pub mod embed;
pub mod error;
pub mod healthcheck;
pub mod metrics;
pub mod nofile;
pub mod pools;
pub mod program;
pub mod schema;
pub mod secret;
pub mod system;
pub mod telemetry;
pub mod web;

/// The pages' icon, served at `static/favicon.svg` next to each page.
pub const FAVICON_SVG: &str = include_str!("../static/favicon.svg");

/// The name of the host serving a page (a container's id under Docker).
pub fn host_name() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// The name of the replica serving a page, when there is one to name: a Kubernetes pod's
/// name, or the id of a Docker container (`docker compose up --scale vote=3`), where several
/// replicas of a service answer. `None` elsewhere (a machine's own name says nothing about
/// which replica answered).
pub fn replica_name() -> Option<String> {
    let host = host_name();
    let in_kubernetes = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let in_docker = std::path::Path::new("/.dockerenv").exists() && is_container_id(&host);
    (in_kubernetes || in_docker).then_some(host)
}

/// Whether `host` is the host name Docker gives a container: its id's first 12 hex digits.
fn is_container_id(host: &str) -> bool {
    host.len() == 12
        && host
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_docker_host_name_is_a_short_container_id() {
        assert!(super::is_container_id("3f4e5d6c7b8a"));
        assert!(!super::is_container_id("vm"));
        assert!(!super::is_container_id("3F4E5D6C7B8A"));
        assert!(!super::is_container_id("3f4e5d6c7b8a9"));
    }
}
