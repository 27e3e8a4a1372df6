//! Connecting to the server: the original's `OpenConnection` and `InitCTX`, the options that
//! say where and how to connect (shared with `./bench`), and the TLS handshake.

use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use getopts::{Matches, Options};
use openssl::ssl::{
    SslConnector, SslFiletype, SslMethod, SslRef, SslSession, SslSessionRef, SslStream,
    SslVerifyMode,
};

use crate::cli::{A_DAY, CommandLine, duration_help};
use crate::deadline::DeadlineStream;
use crate::error::{Error, Result};
use crate::tls;

const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// The certificate trusted by default when it is in the working directory.
const DEFAULT_CA_FILE: &str = "mycert.pem";

/// Where and how to connect: the server, whom to trust, what to present, how long to wait.
#[derive(Clone, Debug)]
pub(crate) struct ConnectOptions {
    /// Host name, IPv4 or IPv6 address of the server.
    pub(crate) host: String,
    /// The server's TCP port.
    pub(crate) port: u16,
    /// Files of certificates to trust instead of the default (`./mycert.pem`, else the
    /// system's), each given with `--cafile`: a server's RSA and ECDSA certificates, say.
    pub(crate) cafiles: Vec<PathBuf>,
    /// Skip verification of the server, as the original did.
    pub(crate) insecure: bool,
    /// A client certificate (and its key file) to present.
    pub(crate) cert: Option<(PathBuf, PathBuf)>,
    /// The longest connecting may take, and then each exchange (each).
    pub(crate) timeout: Duration,
    /// A file to resume the TLS session saved in, and to save the new one in
    /// (`--reuse-session`).
    pub(crate) reuse_session: Option<PathBuf>,
}

impl ConnectOptions {
    /// Declares the connection options: `--cafile`, `--insecure`, `--cert`, `--key` and
    /// `--timeout`.
    pub(crate) fn declare(opts: &mut Options) {
        opts.optmulti(
            "",
            "cafile",
            "trust the server certificates in this PEM file; repeatable (a server's RSA and \
             ECDSA certificates: --cafile mycert.pem --cafile mycert-ec.pem) [./mycert.pem if \
             present, else the system's]",
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
            &duration_help(
                "seconds to connect, and then for each exchange",
                DEFAULT_TIMEOUT_SECS,
                A_DAY,
            ),
            "SECS",
        );
    }

    /// The options given in `m`, to connect to `host` (a name or address, IPv6 in brackets or
    /// not) on `port`; a usage error is reported and gives the exit status.
    pub(crate) fn from_matches(
        cli: &CommandLine,
        m: &Matches,
        host: &str,
        port: &str,
    ) -> Result<ConnectOptions, ExitCode> {
        let port = cli.port(port)?;
        let timeout = cli.seconds(m, "timeout", DEFAULT_TIMEOUT_SECS, A_DAY)?;
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
        Ok(ConnectOptions {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            cafiles: m
                .opt_strs("cafile")
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            insecure,
            cert,
            timeout,
            reuse_session: None,
        })
    }
}

/// Ports `OpenConnection(hostname, port)`: a TCP connection to the first address of `host`
/// (name, IPv4 or IPv6) that answers within `timeout`.
pub(crate) fn open_connection(host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
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
/// against the certificates of every `--cafile`, else `./mycert.pem` when present, else the
/// system's trust store; with `--insecure`, verifies nothing (the original's behaviour).
pub(crate) fn init_ctx(config: &ConnectOptions) -> Result<SslConnector> {
    let mut ctx = SslConnector::builder(SslMethod::tls_client())
        .map_err(|e| Error::tls("cannot create the TLS context", e))?;
    tls::pin_tls12(&mut ctx)?;
    tls::spare_handshake_work(&mut ctx);
    if config.insecure {
        eprintln!(
            "warning: --insecure: the server's certificate is not checked; anyone between you \
             and the server can read your password"
        );
        ctx.set_verify(SslVerifyMode::NONE);
    } else {
        let default = Path::new(DEFAULT_CA_FILE);
        let cafiles: Vec<&Path> = if config.cafiles.is_empty() {
            default.exists().then_some(default).into_iter().collect()
        } else {
            config.cafiles.iter().map(PathBuf::as_path).collect()
        };
        // Each file's certificates join the context's store: all of them are trusted.
        for file in cafiles {
            std::fs::File::open(file).map_err(|e| Error::file("CA file", file, e))?;
            ctx.set_ca_file(file)
                .map_err(|e| Error::tls(format!("cannot load CA file {}", file.display()), e))?;
            log::info!("trusting the certificates in {}", file.display());
        }
    }
    if let Some((cert, key)) = &config.cert {
        // Said plainly, not as OpenSSL's error queue, when a file cannot be opened.
        std::fs::File::open(cert).map_err(|e| Error::file("client certificate", cert, e))?;
        std::fs::File::open(key).map_err(|e| Error::file("client key", key, e))?;
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
/// the timeout. With `--reuse-session FILE`, offers the session saved there (a shorter
/// handshake, and the server keeps the client certificate it was made with) and saves the
/// new one.
pub(crate) fn connect(
    config: &ConnectOptions,
    connector: &SslConnector,
) -> Result<SslStream<DeadlineStream>> {
    let saved = config.reuse_session.as_deref().and_then(saved_session);
    let ssl = connect_offering(config, connector, saved.as_deref())?;
    if let Some(path) = &config.reuse_session {
        save_session(path, ssl.ssl());
    }
    Ok(ssl)
}

/// The session saved by `--reuse-session`, if there is a readable one.
fn saved_session(path: &Path) -> Option<SslSession> {
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
fn save_session(path: &Path, ssl: &SslRef) {
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

/// As [`connect`], offering `session` (from an earlier connection with the same connector,
/// or read back from its DER form) for an abbreviated, resumed handshake.
pub(crate) fn connect_resuming(
    config: &ConnectOptions,
    connector: &SslConnector,
    session: &SslSessionRef,
) -> Result<SslStream<DeadlineStream>> {
    connect_offering(config, connector, Some(session))
}

fn connect_offering(
    config: &ConnectOptions,
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
            let presented = config.cert.as_ref().map(|(cert, _)| cert.as_path());
            let failure = tls::classify_handshake_failure(&e, presented.is_some());
            let why = tls::describe_handshake_error(&e);
            let said = match failure {
                tls::HandshakeFailure::ClientCertificateRequired
                | tls::HandshakeFailure::ClientCertificateRefused => {
                    // OpenSSL's own words (error:0A000410:SSL routines:...) under -v.
                    log::info!("handshake error: {why}");
                    client_certificate_hint(&failure, presented)
                }
                tls::HandshakeFailure::Untrusted => format!(
                    "{why}; if this is your server, trust its certificate (the server's \
                     {DEFAULT_CA_FILE}, and its mycert-ec.pem if it serves an ECDSA one too: \
                     OpenSSL picks that for most clients) with --cafile FILE (repeatable), or \
                     use --insecure for the original's unverified behaviour"
                ),
                tls::HandshakeFailure::NameMismatch(names) if names.is_empty() => {
                    format!("{why}: the certificate is not for {}", config.host)
                }
                tls::HandshakeFailure::NameMismatch(names) => format!(
                    "{why}: the certificate is for {}, not {}; connect by one of those names",
                    names.join(", "),
                    config.host
                ),
                tls::HandshakeFailure::Other => why,
            };
            Error::Handshake(format!(
                "TLS handshake with {} port {} failed: {said}",
                config.host, config.port
            ))
        })
}

/// What to do when the server refuses a client certificate, or wants one.
fn client_certificate_hint(failure: &tls::HandshakeFailure, presented: Option<&Path>) -> String {
    match (failure, presented) {
        (tls::HandshakeFailure::ClientCertificateRefused, Some(cert)) => format!(
            "the server does not accept the client certificate in {}; present one it trusts \
             with --cert FILE (and --key FILE if the key is in another file)",
            cert.display()
        ),
        _ => "the server requires a client certificate; present one it trusts with \
              --cert FILE (and --key FILE if the key is in another file)"
            .to_string(),
    }
}
