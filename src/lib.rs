//! A Rust port of the OpenSSL "secure server-client program in C", grown into a TLS 1.2
//! account service.
//!
//! # Layout
//! - [`server`]: the `server` program, function by function as the original `server.c`.
//! - [`client`]: the `client` program, function by function as the original `client.c`.
//! - [`xml`]: the documents of the legacy exchange, built and read as exact bytes.
//! - [`db`]: the account store; all storage goes through it.
//! - [`password`]: salted PBKDF2-HMAC-SHA512 password hashes.
//! - [`tls`]: TLS pieces both programs use (the TLS 1.2 pin, certificate names, errors).
//! - [`deadline`]: a TCP stream whose every wait ends by one deadline.
//! - [`bench`]: the load generator behind `./bench`.
//! - [`cli`]: the command-line handling the programs share.
//! - [`error`]: the library's error type.

pub mod account;
pub mod bench;
pub mod cli;
pub mod client;
pub mod command;
pub mod connection;
pub mod db;
pub mod deadline;
pub mod error;
pub mod frame;
pub mod password;
pub mod portal;
pub mod prompt;
pub mod reply;
pub mod script;
pub mod server;
pub mod session;
pub mod tls;
pub mod xml;

pub use error::{Error, Result};
