//! Integration tests of the result service: the real service over real HTTP and real
//! WebSockets on port 0, against a throwaway PostgreSQL per test (and Redis, the vote service
//! and the worker where a vote travels the whole way). No mocks.
//!
//! - [`helpers`]: the infrastructure, the app, the WebSocket client, polling with a deadline.
//! - [`page`]: the page and its assets, without JavaScript; labels from the configuration.
//! - [`live`]: votes reaching open sockets; tallies equal the count of votes; same options as vote.
//! - [`scale`]: a thousand sockets at once, and a client that never reads.
//! - [`outage`]: PostgreSQL down and back under an open socket.
//! - [`binary`]: the binary run unprivileged, its password kept out of its output and metrics.
//! - [`bad_input`]: refused handshakes, the socket cap, oversized messages, 404 and 405.
//! - [`frames`]: WebSocket frames written by hand: malformed ones, fragments over the limit,
//!   a huge announced length.
//! - [`ops`]: health, readiness, metrics, starting without PostgreSQL, shutdown.
//! - [`e2e`]: the whole app in headless Chromium, through Nginx with the project's routes.
//! - [`present`]: the page on a projector and a phone, in Chromium: the QR code of a 1920x1080
//!   screenshot opens the voting page; 2 to 10 options fit one screen; live numbers grouped.

mod bad_input;
mod binary;
mod e2e;
mod frames;
mod helpers;
mod live;
mod ops;
mod outage;
mod page;
mod present;
mod scale;
