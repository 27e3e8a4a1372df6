//! The original's exchange: ask for the user name and password, connect, show the cipher and
//! the server's certificate, send the request, print the reply.

use std::io::{self, Read, Write};

use openssl::ssl::SslRef;

use super::connect::{ConnectOptions, connect, init_ctx};
use crate::error::{Error, Result};
use crate::prompt::Prompter;
use crate::tls;
use crate::xml::legacy::{LEGACY_INVALID_REPLY, LEGACY_REQUEST_MAX, legacy_request, printable};

/// How the server answered the original's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// Anything but `Invalid Message`: the credentials were accepted.
    Accepted,
    /// `Invalid Message`: the client exits with status 1, so scripts can tell.
    Invalid,
}

/// Runs the original's `main()`: asks for the credentials, connects, prints the cipher and the
/// server's certificate, sends the request and prints the reply.
pub(super) fn run(config: &ConnectOptions) -> Result<Answer> {
    let connector = init_ctx(config)?;
    let (username, password) = read_credentials()?;
    let request = legacy_request(&username, &password);
    if request.len() > LEGACY_REQUEST_MAX {
        return Err(Error::Input(format!(
            "the user name and password are too long: the request would be {} bytes and the \
             server reads at most {LEGACY_REQUEST_MAX}",
            request.len()
        )));
    }
    let mut ssl = connect(config, &connector)?;
    print!(
        "\n\nConnected with {} encryption\n",
        tls::cipher_name(ssl.ssl())
    );
    show_certs(ssl.ssl());
    // An expired deadline reads "timed out" (the deadline stream's own error).
    let exchange = |what: &str, e: io::Error| Error::io(format!("cannot {what} the server"), e);
    ssl.write_all(&request)
        .map_err(|e| exchange("send the request to", e))?;
    let mut buf = [0u8; LEGACY_REQUEST_MAX];
    let n = ssl
        .read(&mut buf)
        .map_err(|e| exchange("read the reply of", e))?;
    println!("Received: \"{}\"", printable(&buf[..n]));
    // The reply is in; a failed close_notify changes nothing for the user.
    let _ = ssl.shutdown();
    // Said by the exit status only: a line on stderr would show in the transcript at a terminal.
    Ok(if &buf[..n] == LEGACY_INVALID_REPLY {
        log::info!("the server answered Invalid Message: exit status 1");
        Answer::Invalid
    } else {
        Answer::Accepted
    })
}

/// Ports the client's `ShowCerts(ssl)`: prints the server's certificate, or the original's
/// note that there is none.
pub(crate) fn show_certs(ssl: &SslRef) {
    print!(
        "{}",
        tls::peer_certificate_lines(ssl)
            .unwrap_or_else(|| "Info: No client certificates configured.\n".into())
    );
}

/// Asks for the user name and password with the original's prompts. From a terminal the
/// password is read without echo; otherwise both are read as lines from standard input.
fn read_credentials() -> Result<(Vec<u8>, Vec<u8>)> {
    let ask = Prompter::stdin();
    let ended = |what: &str| Error::Input(format!("no {what} given: standard input ended"));
    let username = ask
        .line("Enter the User Name : ", "user name", LEGACY_REQUEST_MAX)?
        .ok_or_else(|| ended("user name"))?;
    let password = ask
        .password("\n\nEnter the Password : ", "password", LEGACY_REQUEST_MAX)?
        .ok_or_else(|| ended("password"))?;
    Ok((username, password))
}
