//! Checks on the whole source tree that `cargo test` runs (tidy, the configuration docs), and the `healthcheck` probe
//! against tiny servers.

mod config_docs;
mod healthcheck;
mod tidy;
