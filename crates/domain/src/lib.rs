//! The voting app's domain: the types and rules every service and `loadgen` agree on, with
//! no I/O (no Redis, PostgreSQL, sockets or runtime), so any crate can depend on it cheaply.
//!
//! # Layout
//! - [`options`], [`voter`]: the newtypes `OptionKey`, `Options` and `VoterId`; their `parse`
//!   functions are the only ways in.
//! - [`queue`]: the field names of the Redis stream shared by vote and worker, and its entry
//!   ids (`<ms>-<seq>`), which order a voter's votes.
//! - [`origin`]: the same-origin rule (scheme, host and port, default ports filled in) of
//!   vote's votes and result's WebSocket, and the scheme a trusted proxy reports.
#![forbid(unsafe_code)]

pub mod options;
pub mod origin;
pub mod queue;
pub mod voter;
