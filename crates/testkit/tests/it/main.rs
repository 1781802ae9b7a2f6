//! Integration tests for testkit: real servers are started and stopped.

mod binaries;
mod postgres;
mod redis;
