//! Integration tests of loadgen against the real vote service and worker, on a real
//! redis-server and PostgreSQL started by the tests (crates/testkit). Nothing is mocked.

mod helpers;

mod binary;
mod failures;
mod runs;
