//! Integration tests of the worker, against real redis-server and PostgreSQL processes.

mod helpers;

mod binary;
mod cluster;
mod end_to_end;
mod failures;
mod faults;
mod stream;
