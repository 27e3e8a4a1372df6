//! The client's side of an account-protocol session: one TLS connection, commands out, replies
//! in, each framed, each within the time limit, traced on request.

use openssl::ssl::{SslConnector, SslStream};

use crate::client::{ClientConfig, connect};
use crate::command::{Command, mask_secrets};
use crate::deadline::DeadlineStream;
use crate::error::{Error, Result};
use crate::frame::{FrameReader, MAX_FRAME, encode_frame};
use crate::reply::Reply;
use crate::xml::{parse_document, printable, write_document};

/// A session with the server.
pub struct AccountConnection {
    ssl: SslStream<DeadlineStream>,
    frames: FrameReader,
    config: ClientConfig,
    last_reply: Vec<u8>,
}

impl AccountConnection {
    /// Connects and completes the handshake.
    pub fn open(config: &ClientConfig, connector: &SslConnector) -> Result<Self> {
        Ok(AccountConnection {
            ssl: connect(config, connector)?,
            frames: FrameReader::default(),
            config: config.clone(),
            last_reply: Vec::new(),
        })
    }

    /// Sends a command and waits for its reply.
    pub fn call(&mut self, command: &Command) -> Result<Reply> {
        let element = command.to_element();
        let frame = encode_frame(&write_document(&element)).map_err(|_| {
            Error::Config(format!(
                "the {} command is too large to send (a frame holds at most {MAX_FRAME} bytes)",
                command.name()
            ))
        })?;
        if self.config.trace {
            trace("C", frame.len(), &write_document(&mask_secrets(&element)));
        }
        // Each command and its reply within the timeout.
        self.ssl.get_mut().start_phase(self.config.timeout);
        let lost = |e: &dyn std::fmt::Display| Error::ConnectionLost(e.to_string());
        std::io::Write::write_all(&mut self.ssl, &frame).map_err(|e| lost(&e))?;
        let document = self
            .frames
            .next_frame(&mut self.ssl)
            .map_err(|e| lost(&e))?
            .ok_or_else(|| Error::ConnectionLost("the server closed it".into()))?;
        if self.config.trace {
            trace("S", document.len() + 4, &document);
        }
        let root = parse_document(&document)
            .map_err(|e| Error::Config(format!("the server's reply is unreadable: {e}")))?;
        let reply = Reply::from_element(&root)
            .map_err(|e| Error::Config(format!("the server's reply is unreadable: {e}")))?;
        self.last_reply = document;
        Ok(reply)
    }

    /// The document of the last reply, as received.
    pub fn last_reply(&self) -> &[u8] {
        &self.last_reply
    }

    /// Ends the connection with a TLS close_notify.
    pub fn close(mut self) {
        // The session is over either way; a failed close_notify changes nothing.
        let _ = self.ssl.shutdown();
    }
}

fn trace(direction: &str, frame_len: usize, document: &[u8]) {
    eprintln!("{direction}: [{frame_len} bytes] {}", printable(document));
}
