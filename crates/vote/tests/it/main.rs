//! Integration tests of the vote service: the real service over real HTTP on port 0, backed by
//! a real throwaway `redis-server` per test. No mocks.
//!
//! - [`helpers`]: starting the app, the HTTP client, reading the Redis stream.
//! - [`page`]: the voting page and stylesheet.
//! - [`voting`]: accepted votes (form, JSON, re-votes, concurrency) and what is queued.
//! - [`binary`]: the binary run unprivileged, passwords kept out of its output and metrics;
//!   bad configuration files.
//! - [`bad_input`]: refused requests (each queues nothing) and untrusted voter ids.
//! - [`limits`]: the limits of every connection over raw TCP: slow clients, the connection
//!   cap, oversized and malformed request heads, trickled bodies.
//! - [`unavailable`]: Redis down or the backlog full: 503, then recovery.
//! - [`ops`]: health, readiness, metrics and hardening headers.

mod bad_input;
mod binary;
mod helpers;
mod limits;
mod ops;
mod page;
mod unavailable;
mod voting;
