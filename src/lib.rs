//! A Rust port of the OpenSSL "secure server-client program in C", grown into a TLS 1.2
//! account service.
//!
//! # Layout
//! Layers that only point down: the programs at the top, the protocol at the bottom. The
//! architecture on one page (the layers as a picture, one connection's path through the
//! server and its threads, start-up, where each function of the original C programs lives) is
//! `docs/ARCHITECTURE.md`.
//! - [`server`]: the `server` program, function by function as the original `server.c`, and
//!   the account service's sessions and command handlers. Uses the store, the protocol and TLS.
//! - [`client`]: the `client` program, function by function as the original `client.c`, with
//!   the Login / Signup portal and scripted commands. Uses the protocol and TLS, never the
//!   store.
//! - [`bench`]: the load generator behind `./bench`. Uses the client's connections and the
//!   protocol, never the store or the server.
//! - [`admin`]: the operator's tool behind `./admin` (list, show, lock, unlock,
//!   reset-password, delete, unthrottle, stats). Uses the store, never the server.
//! - `db`: the account store: the interface the server uses, the rules that hold for every
//!   backend (password hashing, throttling), and the backends (SQLite, PostgreSQL).
//! - [`xml`]: the protocol, pure: the legacy exchange's bytes, framing, XML documents,
//!   commands and replies. Uses nothing above it.
//! - `password`: salted PBKDF2-HMAC-SHA512 password hashes.
//! - `secret_file`: files of secrets (keys, the account database), their permissions checked
//!   on the opened file and read from it into memory wiped when dropped.
//! - `address`: a client's address as one value (printed as the original did, and the key
//!   it counts under: an IPv4 address or an IPv6 /64).
//! - `tls`: TLS pieces both programs use (the TLS 1.2 pin, certificate names, errors).
//! - `deadline`: a TCP stream whose every wait ends by a deadline.
//! - `cli`: the command-line handling the programs share.
//! - `prompt`: asking the person at a terminal for input, passwords without echo (the client
//!   and the admin tool).
//! - [`error`]: the library's error type.

mod address;
pub mod admin;
pub mod bench;
mod cli;
pub mod client;
mod db;
mod deadline;
pub mod error;
mod password;
mod prompt;
mod secret_file;
pub mod server;
mod tls;
pub mod xml;

pub use error::{Error, Result};
