//! Integration tests for testkit: real servers and a real browser are started and stopped.

mod binaries;
mod browser;
mod native_run;
mod nginx;
mod postgres;
mod redis;
