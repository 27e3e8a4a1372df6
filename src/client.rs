//! The client: a port of the original `client.c`, function by function.
//!
//! | C function                    | here                  |
//! |-------------------------------|-----------------------|
//! | `OpenConnection(host, port)`  | [`open_connection`]   |
//! | `InitCTX()`                   | [`init_ctx`]          |
//! | `ShowCerts(ssl)`              | [`show_certs`]        |
//! | `main()`                      | [`main`] and [`run`]  |
//!
//! It prints the original's prompts and transcript byte for byte. Unlike the original it
//! verifies the server's certificate (unless `--insecure`), reads the password without echo
//! from a terminal, has no fixed-size buffers, and bounds every wait.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use getopts::Options;
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslRef, SslStream, SslVerifyMode};

use crate::cli::CommandLine;
use crate::deadline::DeadlineStream;
use crate::error::{Error, Result};
use crate::tls;
use crate::xml::{LEGACY_REQUEST_MAX, legacy_request, printable};

const ABOUT: &str = "Logs in to the server over TLS 1.2 with the legacy exchange.
Reads the user name and password from the terminal (the password without echo),
or as two lines from standard input when it is not a terminal.";
const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// The certificate trusted by default when it is in the working directory.
const DEFAULT_CA_FILE: &str = "mycert.pem";

/// Everything the client is told on its command line.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Host name, IPv4 or IPv6 address of the server.
    pub host: String,
    /// The server's TCP port.
    pub port: u16,
    /// Certificates to trust instead of the default (`./mycert.pem`, else the system's).
    pub cafile: Option<PathBuf>,
    /// Skip verification of the server, as the original did.
    pub insecure: bool,
    /// A client certificate (and its key file) to present.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// The longest connecting, and then the whole exchange, may take (each).
    pub timeout: Duration,
}

/// The `client` program: parses the command line and runs the exchange.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let cli = CommandLine::new(&args, "usage: {argv0} <hostname> <portnum>", ABOUT, 2);
    let config = match parse_config(&cli, &args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli.fail(&e),
    }
}

fn parse_config(cli: &CommandLine, args: &[String]) -> Result<ClientConfig, ExitCode> {
    let mut opts = Options::new();
    opts.optopt(
        "",
        "cafile",
        "trust the server certificates in this PEM file [./mycert.pem if present, else the system's]",
        "FILE",
    );
    opts.optflag(
        "",
        "insecure",
        "do not verify the server's certificate (the original's behaviour)",
    );
    opts.optopt("", "cert", "present this client certificate (PEM)", "FILE");
    opts.optopt(
        "",
        "key",
        "the client certificate's key (PEM) [the --cert file]",
        "FILE",
    );
    opts.optopt(
        "",
        "timeout",
        &format!("seconds to connect, and then for the whole exchange [{DEFAULT_TIMEOUT_SECS}]"),
        "SECS",
    );
    let m = cli.parse(opts, args)?;
    let host = m.free[0]
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = cli.port(&m.free[1])?;
    let timeout_secs: u64 = cli.number(&m, "timeout", DEFAULT_TIMEOUT_SECS)?;
    if timeout_secs == 0 {
        return Err(cli.usage_error("--timeout must be at least 1 second"));
    }
    let cert = match (m.opt_str("cert"), m.opt_str("key")) {
        (None, None) => None,
        (Some(cert), key) => {
            let cert = PathBuf::from(cert);
            Some((cert.clone(), key.map_or(cert, PathBuf::from)))
        }
        (None, Some(_)) => return Err(cli.usage_error("--key needs --cert")),
    };
    let insecure = m.opt_present("insecure");
    if insecure && m.opt_present("cafile") {
        return Err(cli.usage_error("--insecure and --cafile exclude each other"));
    }
    Ok(ClientConfig {
        host,
        port,
        cafile: m.opt_str("cafile").map(PathBuf::from),
        insecure,
        cert,
        timeout: Duration::from_secs(timeout_secs),
    })
}

/// Runs the original's `main()`: asks for the credentials, connects, prints the cipher and the
/// server's certificate, sends the request and prints the reply.
pub fn run(config: &ClientConfig) -> Result<()> {
    let connector = init_ctx(config)?;
    let (username, password) = read_credentials()?;
    let request = legacy_request(&username, &password);
    if request.len() > LEGACY_REQUEST_MAX {
        return Err(Error::Config(format!(
            "the user name and password are too long: the request would be {} bytes and the \
             server reads at most {LEGACY_REQUEST_MAX}",
            request.len()
        )));
    }
    let tcp = open_connection(&config.host, config.port, config.timeout)?;
    let mut ssl = handshake(&connector, config, tcp)?;
    print!(
        "\n\nConnected with {} encryption\n",
        tls::cipher_name(ssl.ssl())
    );
    show_certs(ssl.ssl());
    let exchange = |what: &str, e: io::Error| {
        let why = if tls::is_timeout(&e) {
            "timed out".to_string()
        } else {
            e.to_string()
        };
        Error::Config(format!("cannot {what} the server: {why}"))
    };
    ssl.write_all(&request)
        .map_err(|e| exchange("send the request to", e))?;
    let mut buf = [0u8; LEGACY_REQUEST_MAX];
    let n = ssl
        .read(&mut buf)
        .map_err(|e| exchange("read the reply of", e))?;
    println!("Received: \"{}\"", printable(&buf[..n]));
    // The reply is in; a failed close_notify changes nothing for the user.
    let _ = ssl.shutdown();
    Ok(())
}

/// Ports `OpenConnection(hostname, port)`: a TCP connection to the first address of `host`
/// (name, IPv4 or IPv6) that answers within `timeout`.
pub fn open_connection(host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::io(format!("cannot resolve {host}"), e))?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address found");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(tcp) => return Ok(tcp),
            Err(e) => {
                log::info!("cannot connect to {addr}: {e}");
                last = e;
            }
        }
    }
    Err(Error::io(
        format!("cannot connect to {host} port {port}"),
        last,
    ))
}

/// Ports `InitCTX()`: a client context that speaks TLS 1.2 only and verifies the server
/// against `--cafile`, else `./mycert.pem` when present, else the system's trust store; with
/// `--insecure`, verifies nothing (the original's behaviour).
pub fn init_ctx(config: &ClientConfig) -> Result<SslConnector> {
    let mut ctx = SslConnector::builder(SslMethod::tls_client())
        .map_err(|e| Error::tls("cannot create the TLS context", e))?;
    tls::pin_tls12(&mut ctx)?;
    if config.insecure {
        eprintln!(
            "warning: --insecure: the server's certificate is not checked; anyone between you \
             and the server can read your password"
        );
        ctx.set_verify(SslVerifyMode::NONE);
    } else {
        let default = Path::new(DEFAULT_CA_FILE);
        let cafile = match &config.cafile {
            Some(file) => Some(file.as_path()),
            None => default.exists().then_some(default),
        };
        if let Some(file) = cafile {
            std::fs::File::open(file).map_err(|e| Error::file("CA file", file, e))?;
            ctx.set_ca_file(file)
                .map_err(|e| Error::tls(format!("cannot load CA file {}", file.display()), e))?;
            log::info!("trusting the certificates in {}", file.display());
        }
    }
    if let Some((cert, key)) = &config.cert {
        ctx.set_certificate_chain_file(cert)
            .map_err(|e| Error::tls(format!("cannot load certificate {}", cert.display()), e))?;
        ctx.set_private_key_file(key, SslFiletype::PEM)
            .map_err(|e| Error::tls(format!("cannot load key {}", key.display()), e))?;
        ctx.check_private_key().map_err(|e| {
            Error::tls(
                format!(
                    "the key in {} does not match {}",
                    key.display(),
                    cert.display()
                ),
                e,
            )
        })?;
    }
    Ok(ctx.build())
}

/// The original's `SSL_connect`, checking the server's name (or IP address) unless insecure.
fn handshake(
    connector: &SslConnector,
    config: &ClientConfig,
    tcp: TcpStream,
) -> Result<SslStream<DeadlineStream>> {
    let setup = connector
        .configure()
        .map_err(|e| Error::tls("cannot set up the connection", e))?
        .verify_hostname(!config.insecure);
    setup
        .connect(&config.host, DeadlineStream::new(tcp, config.timeout))
        .map_err(|e| {
            let hint = if tls::failed_verification(&e) {
                " (trust the server's certificate with --cafile FILE)"
            } else {
                ""
            };
            Error::Config(format!(
                "TLS handshake with {} port {} failed: {}{hint}",
                config.host,
                config.port,
                tls::describe_handshake_error(&e)
            ))
        })
}

/// Ports the client's `ShowCerts(ssl)`: prints the server's certificate, or the original's
/// note that there is none.
pub fn show_certs(ssl: &SslRef) {
    print!(
        "{}",
        tls::peer_certificate_lines(ssl)
            .unwrap_or_else(|| "Info: No client certificates configured.\n".into())
    );
}

/// Asks for the user name and password with the original's prompts. From a terminal the
/// password is read without echo; otherwise both are read as lines from standard input.
fn read_credentials() -> Result<(Vec<u8>, Vec<u8>)> {
    let stdin = io::stdin();
    let terminal = stdin.is_terminal();
    prompt("Enter the User Name : ")?;
    let username = read_line(&mut stdin.lock(), "user name")?;
    prompt("\n\nEnter the Password : ")?;
    let password = if terminal {
        rpassword::read_password()
            .map_err(|e| Error::io("cannot read the password from the terminal", e))?
            .into_bytes()
    } else {
        read_line(&mut stdin.lock(), "password")?
    };
    Ok((username, password))
}

fn prompt(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot write to standard output", e))
}

/// One line of at most [`LEGACY_REQUEST_MAX`] bytes, without its line ending.
fn read_line(input: &mut impl BufRead, what: &str) -> Result<Vec<u8>> {
    let mut line = Vec::new();
    let limit = LEGACY_REQUEST_MAX as u64 + 2; // room for "\r\n"
    input
        .take(limit)
        .read_until(b'\n', &mut line)
        .map_err(|e| Error::io(format!("cannot read the {what}"), e))?;
    if line.is_empty() {
        return Err(Error::Config(format!(
            "no {what} given: standard input ended"
        )));
    }
    let complete = line.ends_with(b"\n");
    if complete {
        line.pop();
        if line.ends_with(b"\r") {
            line.pop();
        }
    }
    if line.len() > LEGACY_REQUEST_MAX || (!complete && line.len() as u64 == limit) {
        return Err(Error::Config(format!(
            "the {what} is too long (at most {LEGACY_REQUEST_MAX} bytes)"
        )));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_without_endings() {
        let mut input = io::Cursor::new(b"aticle\r\n123\nlast".to_vec());
        assert_eq!(read_line(&mut input, "u").unwrap(), b"aticle");
        assert_eq!(read_line(&mut input, "p").unwrap(), b"123");
        assert_eq!(read_line(&mut input, "p").unwrap(), b"last");
        assert!(read_line(&mut input, "p").is_err());
    }

    #[test]
    fn long_lines_refused() {
        let mut long = vec![b'a'; LEGACY_REQUEST_MAX + 5];
        long.push(b'\n');
        assert!(read_line(&mut io::Cursor::new(long), "u").is_err());
        let mut fits = vec![b'a'; LEGACY_REQUEST_MAX];
        fits.extend_from_slice(b"\r\n");
        assert_eq!(
            read_line(&mut io::Cursor::new(fits), "u").unwrap().len(),
            LEGACY_REQUEST_MAX
        );
    }

    #[test]
    fn config_parsing() {
        let args = |extra: &[&str]| -> Vec<String> {
            std::iter::once("client")
                .chain(extra.iter().copied())
                .map(String::from)
                .collect()
        };
        let a = args(&["[::1]", "8081"]);
        let cli = CommandLine::new(&a, "usage: {argv0} <hostname> <portnum>", ABOUT, 2);
        let config = parse_config(&cli, &a).unwrap();
        assert_eq!(config.host, "::1");
        assert_eq!(config.port, 8081);
        let a = args(&["--cert", "me.pem", "h", "1"]);
        let config = parse_config(&cli, &a).unwrap();
        assert_eq!(
            config.cert,
            Some((PathBuf::from("me.pem"), PathBuf::from("me.pem")))
        );
        for bad in [
            &["h"][..],
            &["h", "1", "2"],
            &["h", "x"],
            &["--key", "k", "h", "1"],
            &["--insecure", "--cafile", "c", "h", "1"],
        ] {
            let a = args(bad);
            assert!(parse_config(&cli, &a).is_err(), "{bad:?}");
        }
    }
}
