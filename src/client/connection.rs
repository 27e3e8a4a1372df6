//! The client's side of an account-protocol session: one TLS connection, commands out, replies
//! in, each framed, each within the time limit, traced on request.

use openssl::ssl::{SslConnector, SslStream};

use super::connect::{ConnectOptions, connect};
use crate::deadline::DeadlineStream;
use crate::error::{Error, Result};
use crate::xml::command::{Command, mask_secrets};
use crate::xml::document::{parse_document, write_document};
use crate::xml::frame::{FrameReader, MAX_FRAME, encode_frame};
use crate::xml::legacy::printable;
use crate::xml::reply::Reply;

/// A session with the server.
pub(crate) struct AccountConnection {
    ssl: SslStream<DeadlineStream>,
    frames: FrameReader,
    /// How long each command and its reply may take.
    timeout: std::time::Duration,
    /// Print every frame on stderr (passwords masked).
    trace: bool,
    last_reply: Vec<u8>,
}

impl AccountConnection {
    /// Connects and completes the handshake; with `trace`, every frame is shown on stderr.
    pub(crate) fn open(
        options: &ConnectOptions,
        connector: &SslConnector,
        trace: bool,
    ) -> Result<Self> {
        Ok(AccountConnection {
            ssl: connect(options, connector)?,
            frames: FrameReader::default(),
            timeout: options.timeout,
            trace,
            last_reply: Vec::new(),
        })
    }

    /// Sends a command and waits for its reply.
    pub(crate) fn call(&mut self, command: &Command) -> Result<Reply> {
        let element = command.to_element();
        let frame = encode_frame(&write_document(&element)).map_err(|_| {
            Error::Input(format!(
                "the {} command is too large to send (a frame holds at most {MAX_FRAME} bytes)",
                command.kind()
            ))
        })?;
        if self.trace {
            trace("C", frame.len(), &write_document(&mask_secrets(&element)));
        }
        // Each command and its reply within the timeout.
        self.ssl.get_mut().start_phase(self.timeout);
        let lost = |e: &dyn std::fmt::Display| Error::ConnectionLost(e.to_string());
        std::io::Write::write_all(&mut self.ssl, &frame).map_err(|e| lost(&e))?;
        let document = self
            .frames
            .next_frame(&mut self.ssl)
            .map_err(|e| lost(&e))?
            .ok_or_else(|| Error::ConnectionLost("the server closed it".into()))?;
        if self.trace {
            trace("S", document.len() + 4, &document);
        }
        let unreadable = |e: &dyn std::fmt::Display| {
            Error::Protocol(format!("the server's reply is unreadable: {e}"))
        };
        let root = parse_document(&document).map_err(|e| unreadable(&e))?;
        let reply = Reply::from_element(&root).map_err(|e| unreadable(&e))?;
        self.last_reply = document;
        Ok(reply)
    }

    /// The document of the last reply, as received.
    pub(crate) fn last_reply(&self) -> &[u8] {
        &self.last_reply
    }

    /// Ends the connection with a TLS close_notify.
    pub(crate) fn close(mut self) {
        // The session is over either way; a failed close_notify changes nothing.
        let _ = self.ssl.shutdown();
    }
}

fn trace(direction: &str, frame_len: usize, document: &[u8]) {
    eprintln!("{direction}: [{frame_len} bytes] {}", printable(document));
}
