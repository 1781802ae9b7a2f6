//! Checks on the whole source tree that `cargo test` runs.

mod tidy;
