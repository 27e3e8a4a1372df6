//! The server's side of an account-protocol session: its state ([`Session`]), and the loop
//! that reads frames, has each command handled and sends the replies, until the client logs
//! out, the connection ends, or a limit is reached.

use std::io::Write;
use std::time::Duration;

use openssl::ssl::SslStream;

use super::handlers::{Outcome, handle};
use super::memory::release_unused_stack;
use super::metrics::Metrics;
use crate::address::ClientAddress;
use crate::db::{AccountStore, SessionAccount};
use crate::deadline::DeadlineStream;
use crate::tls;
use crate::xml::command::{Command, CommandKind, MAX_COMMANDS_PER_SESSION};
use crate::xml::document::{parse_document, write_document};
use crate::xml::frame::{FrameError, FrameReader, write_frame};
use crate::xml::legacy::printable;
use crate::xml::reply::{Reply, ResultCode};

/// The state of one session: who is at the other end, the fingerprint of the client
/// certificate its connection presented, if any, and which account, if any, it is logged in as
/// (with the credentials' generation it logged in with: a password change or reset, or an
/// operator's lock, ends the session at its next command that reads or writes the account). It
/// lives with the connection and nowhere else.
#[derive(Debug)]
pub(super) struct Session {
    /// Where the client connects from (behind a trusted proxy, the client's own address).
    pub(super) client: ClientAddress,
    /// The SHA-256 fingerprint of the public key of the client certificate, if one was shown.
    pub(super) certificate: Option<String>,
    /// The account logged in as, and its name as the client wrote it.
    pub(super) account: Option<(SessionAccount, String)>,
}

impl Session {
    /// A new session from `client`, not logged in, on a connection that presented the client
    /// certificate of `certificate` (its public key's SHA-256 fingerprint), if any.
    pub(super) fn new(client: ClientAddress, certificate: Option<String>) -> Session {
        Session {
            client,
            certificate,
            account: None,
        }
    }

    /// The name the session is logged in as.
    pub(super) fn username(&self) -> Option<&str> {
        self.account.as_ref().map(|(_, name)| name.as_str())
    }
}

/// Serves one session on `stream`, whose first bytes (`initial`) were already read. Each
/// command must arrive within `idle` of the previous reply.
pub(super) fn serve_session(
    stream: &mut SslStream<DeadlineStream>,
    initial: &[u8],
    (store, metrics): (&AccountStore, &Metrics),
    mut session: Session,
    idle: Duration,
) {
    let peer = session.client;
    let mut frames = FrameReader::new(initial);
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
        let outcome = respond(&document, &mut session, store);
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
fn respond(document: &[u8], session: &mut Session, store: &AccountStore) -> Outcome {
    let peer = session.client;
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
fn send(stream: &mut impl Write, reply: &Reply, peer: ClientAddress) -> bool {
    match write_frame(stream, &write_document(&reply.to_element())) {
        Ok(()) => true,
        Err(e) => {
            log::info!("{peer}: cannot send a reply: {e}");
            false
        }
    }
}
