//! The integration tests, in one test binary: one link instead of eleven, and every test free
//! to run beside any other (`cargo test` runs them on parallel threads). Each module starts
//! the real binaries (or the server inside this process) on free loopback ports.
//!
//! `cargo test --test integration crash::` runs one module's tests.

mod common;

mod abuse;
mod accounts;
mod admin;
mod bench;
mod certificates;
pub mod crash;
mod failover;
mod fleet;
mod floods;
mod legacy;
mod memory;
mod metrics;
mod portal;
mod properties;
mod protocol;
mod proxy;
mod robustness;
mod round_trips;
mod shared_store;
mod sign_in;
mod startup;
mod terminal;
mod tickets;
