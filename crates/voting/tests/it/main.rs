//! Integration tests of the all-in-one `voting`: the app in this process on port 0 against
//! throwaway Redis and PostgreSQL, and the real binary starting, supervising and stopping its
//! own servers. No mocks; conditions are polled with a deadline, never waited for with a sleep.
//!
//! - [`e2e`]: the binary alone in headless Chromium, through the browser story that result's
//!   end-to-end tests tell behind Nginx.
//! - [`hostile`]: forged voter ids and option keys, through the app and straight into Redis,
//!   never reach the queue or PostgreSQL as given.
//! - [`helpers`]: the infrastructure, the app, the binary, a WebSocket client, polling.
//! - [`reset`]: `voting reset` says what it deletes, deletes nothing unconfirmed, and open
//!   results pages show the empty poll at once.
//! - [`routes`]: Nginx's routes in one process: redirects, prefixes, 404, 405, health.
//! - [`story`]: a vote travels from the form to the tally and to an open WebSocket.
//! - [`supervised`]: the binary with its own Redis and PostgreSQL: restart after a crash,
//!   clean stop leaving no process behind, data kept across runs, a missing program.

mod e2e;
mod helpers;
mod hostile;
mod reset;
mod routes;
mod story;
mod supervised;
