//! The client: a port of the original `client.c`, function by function.
//!
//! | C function                    | here                  |
//! |-------------------------------|-----------------------|
//! | `OpenConnection(host, port)`  | [`open_connection`]   |
//! | `InitCTX()`                   | [`init_ctx`]          |
//! | `ShowCerts(ssl)`              | [`show_certs`]        |
//! | `main()`                      | [`main`] and [`run`]  |
//!
//! With no command it does the original's exchange and prints its prompts and transcript byte
//! for byte. Unlike the original it verifies the server's certificate (unless `--insecure`),
//! reads the password without echo from a terminal, has no fixed-size buffers, and bounds every
//! wait. With `--portal` it opens the interactive Login / Signup portal ([`crate::portal`]);
//! with a command (`signup`, `login`, `view`, `update`, `passwd`, `delete`) it runs that one
//! command of the account protocol for scripts ([`crate::script`]).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use getopts::Options;
use std::os::unix::fs::OpenOptionsExt;

use openssl::ssl::{
    SslConnector, SslFiletype, SslMethod, SslRef, SslSession, SslSessionRef, SslStream,
    SslVerifyMode,
};

use crate::cli::CommandLine;
use crate::deadline::DeadlineStream;
use crate::error::{Error, Result};
use crate::portal;
use crate::prompt::Prompter;
use crate::script::{self, Script};
use crate::tls;
use crate::xml::{LEGACY_REQUEST_MAX, legacy_request, printable};

const ABOUT: &str = "\
       client [options] <hostname> <portnum> COMMAND   (one command, for scripts)
       client [options] --portal <hostname> <portnum>  (the Login / Signup portal)

Without a command: logs in with the original's legacy exchange over TLS 1.2, reading
the user name and password from the terminal (the password without echo), or as two
lines from standard input when it is not a terminal.

COMMAND is one of signup, login, view, update, passwd, delete. Every command but
signup first logs in as --user; passwords are read from standard input, one line each
(passwd reads the current, then the new one), or from --password-file. Exit status:
0 done, 1 refused by the server (its message on stderr), 2 usage error.";
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
    /// Print every frame of the account protocol on stderr (passwords masked).
    pub trace: bool,
    /// The legacy exchange: resume the TLS session saved in this file, and save the new one.
    pub reuse_session: Option<PathBuf>,
}

/// What the client is asked to do.
#[derive(Clone, Debug)]
pub enum Mode {
    /// The original's exchange.
    Legacy,
    /// The interactive Login / Signup portal.
    Portal,
    /// One command of the account protocol.
    Script(Script),
}

/// The `client` program: parses the command line and runs the exchange.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let cli = CommandLine::new(&args, "usage: {argv0} <hostname> <portnum>", ABOUT, 2..=3);
    let (config, mode) = match parse_config(&cli, &args) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    let done = match mode {
        Mode::Legacy => run(&config),
        Mode::Portal => portal::run(&config),
        Mode::Script(script) => match script::run(&config, &script) {
            Ok(reply) if reply.code.is_success() => Ok(()),
            Ok(refusal) => {
                eprintln!("{}: {refusal}", cli.argv0);
                return ExitCode::FAILURE;
            }
            Err(e) => Err(e),
        },
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli.fail(&e),
    }
}

fn parse_config(cli: &CommandLine, args: &[String]) -> Result<(ClientConfig, Mode), ExitCode> {
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
    opts.optflag("", "portal", "open the interactive Login / Signup portal");
    opts.optopt("", "user", "the account a command works on", "NAME");
    opts.optmulti(
        "",
        "set",
        "with signup and update: give FIELD (full_name, email, phone, address) a VALUE",
        "FIELD=VALUE",
    );
    opts.optopt(
        "",
        "password-file",
        "read passwords from this file, one line each, instead of standard input",
        "FILE",
    );
    opts.optopt(
        "",
        "if-version",
        "with update: refuse (2304) if the account is no longer at version N",
        "N",
    );
    opts.optflag(
        "",
        "xml",
        "print the server's reply document instead of its text",
    );
    opts.optopt(
        "",
        "reuse-session",
        "resume the TLS session saved in FILE (a shorter handshake), and save the new one there",
        "FILE",
    );
    opts.optflag(
        "",
        "trace",
        "print every frame sent and received on stderr (passwords masked)",
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
    let config = ClientConfig {
        host,
        port,
        cafile: m.opt_str("cafile").map(PathBuf::from),
        insecure,
        cert,
        timeout: Duration::from_secs(timeout_secs),
        trace: m.opt_present("trace"),
        reuse_session: m.opt_str("reuse-session").map(PathBuf::from),
    };
    let mode = match (m.free.get(2), m.opt_present("portal")) {
        (Some(_), true) => return Err(cli.usage_error("--portal takes no command")),
        (Some(name), false) => Mode::Script(script::parse(cli, &m, name)?),
        (None, portal) => {
            let script_only = ["user", "set", "password-file", "if-version", "xml"];
            if let Some(name) = script_only.iter().find(|o| m.opt_present(o)) {
                return Err(cli.usage_error(&format!("--{name} goes with a command")));
            }
            if portal {
                Mode::Portal
            } else if config.trace {
                return Err(cli.usage_error("--trace goes with --portal or a command"));
            } else {
                Mode::Legacy
            }
        }
    };
    if config.reuse_session.is_some() && !matches!(mode, Mode::Legacy) {
        return Err(cli.usage_error("--reuse-session goes with the legacy exchange"));
    }
    Ok((config, mode))
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
    let mut ssl = match saved_session(config) {
        Some(session) => connect_resuming(config, &connector, &session)?,
        None => connect(config, &connector)?,
    };
    save_session(config, ssl.ssl());
    print!(
        "\n\nConnected with {} encryption\n",
        tls::cipher_name(ssl.ssl())
    );
    show_certs(ssl.ssl());
    let exchange = |what: &str, e: io::Error| {
        Error::Config(format!(
            "cannot {what} the server: {}",
            tls::describe_io(&e)
        ))
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

/// [`open_connection`] and the original's `SSL_connect`, checking the server's name (or IP
/// address) unless insecure. The handshake, and then each read and write, must end within
/// the timeout.
pub fn connect(
    config: &ClientConfig,
    connector: &SslConnector,
) -> Result<SslStream<DeadlineStream>> {
    connect_offering(config, connector, None)
}

/// As [`connect`], offering `session` (from an earlier connection with the same connector,
/// or read back from its DER form) for an abbreviated, resumed handshake.
pub fn connect_resuming(
    config: &ClientConfig,
    connector: &SslConnector,
    session: &SslSessionRef,
) -> Result<SslStream<DeadlineStream>> {
    connect_offering(config, connector, Some(session))
}

fn connect_offering(
    config: &ClientConfig,
    connector: &SslConnector,
    session: Option<&SslSessionRef>,
) -> Result<SslStream<DeadlineStream>> {
    let tcp = open_connection(&config.host, config.port, config.timeout)?;
    let mut setup = connector
        .configure()
        .map_err(|e| Error::tls("cannot set up the connection", e))?
        .verify_hostname(!config.insecure);
    if let Some(session) = session {
        // SAFETY: the session comes from this connector's context, or from DER, which ties
        // it to no context (as `openssl s_client -sess_in` uses it); either way the context's
        // session callbacks see only sessions they can handle.
        unsafe { setup.set_session(session) }
            .map_err(|e| Error::tls("cannot offer the saved TLS session", e))?;
    }
    setup
        .connect(
            &config.host,
            DeadlineStream::new(tcp, config.timeout, config.timeout),
        )
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

/// The session saved by `--reuse-session`, if there is a readable one.
fn saved_session(config: &ClientConfig) -> Option<SslSession> {
    let path = config.reuse_session.as_ref()?;
    let der = std::fs::read(path).ok()?;
    match SslSession::from_der(&der) {
        Ok(session) => Some(session),
        Err(e) => {
            log::warn!("ignoring the saved session in {}: {e}", path.display());
            None
        }
    }
}

/// Saves the connection's session for `--reuse-session` (readable by its owner only: it holds
/// the session's master secret). Failing to save costs only a full handshake next time.
fn save_session(config: &ClientConfig, ssl: &SslRef) {
    let Some(path) = &config.reuse_session else {
        return;
    };
    log::info!(
        "TLS session {}",
        if ssl.session_reused() {
            "resumed"
        } else {
            "new"
        }
    );
    let Some(der) = ssl.session().and_then(|s| s.to_der().ok()) else {
        return;
    };
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(&der));
    if let Err(e) = written {
        log::warn!("cannot save the TLS session to {}: {e}", path.display());
    }
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
    let ask = Prompter::stdin();
    let ended = |what: &str| Error::Config(format!("no {what} given: standard input ended"));
    let username = ask
        .line("Enter the User Name : ", "user name", LEGACY_REQUEST_MAX)?
        .ok_or_else(|| ended("user name"))?;
    let password = ask
        .password("\n\nEnter the Password : ", "password", LEGACY_REQUEST_MAX)?
        .ok_or_else(|| ended("password"))?;
    Ok((username, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parsing() {
        let args = |extra: &[&str]| -> Vec<String> {
            std::iter::once("client")
                .chain(extra.iter().copied())
                .map(String::from)
                .collect()
        };
        let a = args(&["[::1]", "8081"]);
        let cli = CommandLine::new(&a, "usage: {argv0} <hostname> <portnum>", ABOUT, 2..=3);
        let (config, mode) = parse_config(&cli, &a).unwrap();
        assert_eq!(config.host, "::1");
        assert_eq!(config.port, 8081);
        assert!(matches!(mode, Mode::Legacy));
        let a = args(&["--cert", "me.pem", "h", "1"]);
        let (config, _) = parse_config(&cli, &a).unwrap();
        assert_eq!(
            config.cert,
            Some((PathBuf::from("me.pem"), PathBuf::from("me.pem")))
        );
        let a = args(&["--portal", "--trace", "h", "1"]);
        assert!(matches!(parse_config(&cli, &a).unwrap().1, Mode::Portal));
        let a = args(&[
            "--user",
            "alice",
            "--set",
            "email=a@b.c",
            "h",
            "1",
            "update",
        ]);
        let Mode::Script(script) = parse_config(&cli, &a).unwrap().1 else {
            panic!("not a script");
        };
        assert_eq!(script.user, "alice");
        for bad in [
            &["h"][..],
            &["h", "1", "2"],
            &["h", "x"],
            &["--key", "k", "h", "1"],
            &["--insecure", "--cafile", "c", "h", "1"],
            &["--portal", "h", "1", "view"],
            &["--user", "alice", "h", "1"],
            &["--trace", "h", "1"],
            &["h", "1", "view"],
            &["--user", "alice", "h", "1", "fly"],
            &["--user", "alice", "h", "1", "update"],
            &["--user", "alice", "--set", "email=a@b.c", "h", "1", "view"],
            &["--user", "alice", "--set", "shoe=9", "h", "1", "update"],
            &["--user", "alice", "--set", "email", "h", "1", "update"],
            &[
                "--user", "a", "--set", "email=x", "--set", "email=y", "h", "1", "update",
            ],
            &[
                "--user",
                "alice",
                "--if-version",
                "x",
                "--set",
                "email=y",
                "h",
                "1",
                "update",
            ],
            &["--user", "alice", "--if-version", "3", "h", "1", "view"],
        ] {
            let a = args(bad);
            assert!(parse_config(&cli, &a).is_err(), "{bad:?}");
        }
    }
}
