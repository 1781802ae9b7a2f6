//! Checks on the whole source tree that `cargo test` runs, and the `healthcheck` probe
//! against tiny servers.

mod healthcheck;
mod tidy;
