//! Integration tests of the worker, against real redis-server and PostgreSQL processes.

mod helpers;

mod binary;
mod end_to_end;
mod failures;
mod stream;
