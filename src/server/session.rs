//! The server's side of an account-protocol session: frames in, commands handled, replies out,
//! until the client logs out, the connection ends, or a limit is reached.

use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

use openssl::ssl::SslStream;

use super::handlers::{Outcome, Session, handle};
use super::memory::release_unused_stack;
use super::metrics::Metrics;
use crate::db::AccountStore;
use crate::deadline::DeadlineStream;
use crate::tls;
use crate::xml::command::{Command, CommandKind, MAX_COMMANDS_PER_SESSION};
use crate::xml::document::{parse_document, write_document};
use crate::xml::frame::{FrameError, FrameReader, write_frame};
use crate::xml::legacy::printable;
use crate::xml::reply::{Reply, ResultCode};

/// Who is at the other end of a session.
pub(super) struct Client<'a> {
    /// The peer as shown in logs.
    pub(super) peer: &'a str,
    /// The peer's address, for login throttling.
    pub(super) ip: IpAddr,
    /// The fingerprint of the client certificate the connection presented, if any.
    pub(super) certificate: Option<String>,
}

/// Serves one session on `stream`, whose first bytes (`initial`) were already read. Each
/// command must arrive within `idle` of the previous reply.
pub(super) fn serve_session(
    stream: &mut SslStream<DeadlineStream>,
    initial: &[u8],
    (store, metrics): (&AccountStore, &Metrics),
    client: &Client<'_>,
    idle: Duration,
) {
    let peer = client.peer;
    let mut frames = FrameReader::new(initial);
    let mut session = Session::new(client.ip, client.certificate.clone());
    for _ in 0..MAX_COMMANDS_PER_SESSION {
        let document = match frames.next_frame(stream) {
            Ok(Some(document)) => document,
            Ok(None) => return,
            Err(e @ (FrameError::TooShort(_) | FrameError::TooLong(_))) => {
                log::warn!("{peer}: {e}; closing");
                send(
                    stream,
                    &Reply::new(ResultCode::SyntaxError, e.to_string()),
                    peer,
                );
                return;
            }
            Err(e) => {
                log::info!("{peer}: session ended: {e}");
                return;
            }
        };
        let outcome = respond(&document, &mut session, store, peer);
        count(metrics, &outcome);
        if !send(stream, &outcome.reply, peer) || outcome.end_session {
            return;
        }
        stream.get_mut().await_next(idle);
        if frames.is_empty() && !tls::has_buffered_input(stream.ssl()) {
            wait_quietly(stream.get_mut());
        }
    }
    // The next command, if any, is answered with the limit, and the session ends.
    if let Ok(Some(_)) = frames.next_frame(stream) {
        send(
            stream,
            &Reply::new(
                ResultCode::LimitExceeded,
                format!(
                    "a session may send at most {MAX_COMMANDS_PER_SESSION} commands; ending session"
                ),
            ),
            peer,
        );
    }
}

/// How long a session may wait for its next command before its thread gives back the memory
/// the wait does not need: longer than a busy client takes between commands.
const QUIET_AFTER: Duration = Duration::from_millis(250);

/// Waits for the next command on the socket rather than in a TLS read, which would hold
/// OpenSSL's read buffer (16 KiB) through the whole wait; after [`QUIET_AFTER`], gives back
/// the stack the thread does not use while it waits. A wait that fails (the deadline passed)
/// is the next read's to report.
fn wait_quietly(stream: &mut DeadlineStream) {
    if let Ok(false) = stream.wait_readable(QUIET_AFTER) {
        release_unused_stack();
        let _ = stream.wait_readable(Duration::MAX);
    }
}

/// Handles one document: parse, then the command's handler. A document that is not XML ends
/// the session; a command that is refused does not.
fn respond(document: &[u8], session: &mut Session, store: &AccountStore, peer: &str) -> Outcome {
    let root = match parse_document(document) {
        Ok(root) => root,
        Err(e) => {
            log::info!("{peer}: refused a document: {}", e.for_log());
            return Outcome {
                reply: Reply::new(ResultCode::SyntaxError, e.message),
                end_session: true,
                command: None,
                login_throttled: false,
            };
        }
    };
    let command = match Command::parse(&root) {
        Ok(command) => command,
        Err(why) => {
            // The message may quote element names as sent: shown escaped.
            log::info!("{peer}: refused a command: {}", printable(why.as_bytes()));
            return Reply::new(ResultCode::SyntaxError, why).into();
        }
    };
    let name = command.kind();
    let before = session.username().map(str::to_string);
    let outcome = handle(command, session, store);
    let who = session.username().or(before.as_deref()).unwrap_or("-");
    log::info!("{peer}: {name} as {who}: {}", outcome.reply);
    outcome
}

/// Counts a command's outcome: by name and code; a store that failed it (2400, the only
/// source of that code); a login refused for too many failures.
fn count(metrics: &Metrics, outcome: &Outcome) {
    let code = outcome.reply.code;
    let name = outcome.command.map_or("-", CommandKind::name);
    metrics
        .commands
        .get_or_create(&[
            ("command", name.to_string()),
            ("code", code.number().to_string()),
        ])
        .inc();
    if code == ResultCode::CommandFailed {
        metrics.store_errors.inc();
    }
    if outcome.login_throttled {
        metrics.logins_throttled.inc();
    }
}

/// Sends a reply; false if the connection failed.
fn send(stream: &mut impl Write, reply: &Reply, peer: &str) -> bool {
    match write_frame(stream, &write_document(&reply.to_element())) {
        Ok(()) => true,
        Err(e) => {
            log::info!("{peer}: cannot send a reply: {e}");
            false
        }
    }
}
