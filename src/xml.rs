//! The protocol layer: everything the two programs say to each other, as pure functions and
//! types (bytes in, typed values out, and back). It knows no socket, no store and no program.
//!
//! - [`legacy`]: the original's request and replies, as exact byte templates.
//! - [`frame`]: the account protocol's framing, a 4-byte length before each document.
//! - [`document`]: XML documents, read with explicit limits and written compactly.
//! - [`command`]: the account protocol's commands as types, each parsed from and built to a
//!   document; the one list of command names.
//! - [`reply`]: the server's replies and their result codes.
//! - [`account`]: what an account holds and the policy for each value.
//! - [`sign_in`]: enrolled certificates and sign-in events, and their policies.
//!
//! docs/LEGACY.md and docs/PROTOCOL.md describe the same on the wire.

pub mod account;
pub mod command;
pub mod document;
pub mod frame;
pub mod legacy;
pub mod reply;
pub mod sign_in;
