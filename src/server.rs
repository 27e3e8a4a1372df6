//! The server: a port of the original `server.c`, function by function.
//!
//! | C function            | here                   |
//! |-----------------------|------------------------|
//! | `OpenListener(port)`  | [`open_listener`]      |
//! | `InitServerCTX()`     | [`init_server_ctx`]    |
//! | `LoadCertificates()`  | [`load_certificates`]  |
//! | `ShowCerts(ssl)`      | [`show_certs`]         |
//! | `Servlet(ssl)`        | [`servlet`]            |
//! | `main()`              | [`main`] and [`run`]   |
//!
//! Unlike the original it serves each client on its own thread, bounds every wait, checks
//! credentials against the account store instead of one built-in request, never prints a
//! password, and stops cleanly on SIGINT/SIGTERM.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use getopts::Options;
use openssl::error::ErrorStack;
use openssl::ssl::{
    SslAcceptor, SslAcceptorBuilder, SslContextBuilder, SslFiletype, SslMethod, SslOptions, SslRef,
    SslVerifyMode, SslVersion,
};
use openssl::x509::X509Name;
use socket2::{Domain, Protocol, Socket, Type};

use crate::cli::CommandLine;
use crate::db::{AccountStore, LoginOutcome, StoreOptions};
use crate::deadline::DeadlineStream;
use crate::error::{Error, Result};
use crate::password::{DEFAULT_ITERATIONS, Pbkdf2Params};
use crate::session;
use crate::tls;
use crate::xml::{
    LEGACY_INVALID_REPLY, LEGACY_REQUEST_MAX, LEGACY_VALID_REPLY, mask_legacy_password,
    parse_legacy_request, printable,
};

/// The original's one account, created by `--demo`.
pub const DEMO_USERNAME: &str = "aticle";
/// The original's password for [`DEMO_USERNAME`]: weak, for the demo only.
pub const DEMO_PASSWORD: &str = "123";

const ABOUT: &str =
    "A TLS 1.2 server for the legacy login exchange, backed by an account database.";
/// The flags that take seconds: name, what it bounds, default.
const DURATION_FLAGS: [(&str, &str, u64); 6] = [
    (
        "handshake-timeout",
        "seconds the TLS handshake may take",
        10,
    ),
    ("timeout", "seconds each read and write may wait", 30),
    (
        "idle-timeout",
        "seconds an account session may wait for its next command",
        300,
    ),
    ("session-timeout", "seconds one connection may last", 3600),
    (
        "ticket-key-lifetime",
        "seconds before session-ticket keys are replaced",
        3600,
    ),
    (
        "grace-period",
        "seconds a stop waits for connections in flight",
        10,
    ),
];
const DEFAULT_MAX_CLIENTS: usize = 1024;
/// Pending connections the kernel queues for `accept` (the original asked for 10).
const LISTEN_BACKLOG: i32 = 1024;
/// Stack of a client thread. A handshake, a request, a password hash and SQLite's statements
/// fit with room to spare (documents are at most 8 levels deep); only the pages a thread
/// touches become resident, so ten thousand threads cost what they use, not 2 MiB each.
const CLIENT_THREAD_STACK: usize = 256 * 1024;

/// Everything the server is told on its command line.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The TCP port; 0 lets the system choose (logged with `-v`).
    pub port: u16,
    /// The address to listen on; `None` for every interface, IPv4 and IPv6.
    pub bind: Option<IpAddr>,
    /// PEM file with the certificate (chain).
    pub cert: PathBuf,
    /// PEM file with the private key (by default the certificate's file).
    pub key: PathBuf,
    /// The SQLite account database.
    pub db: PathBuf,
    /// Whether to make sure the original's demo account exists.
    pub demo: bool,
    /// How long each wait may last.
    pub limits: Limits,
    /// How long a stop (SIGINT, SIGTERM) waits for connections in flight.
    pub grace: Duration,
    /// The most clients served at once.
    pub max_clients: usize,
    /// When set, clients must present a certificate signed by a CA in this file.
    pub verify_client: Option<PathBuf>,
    /// Password hashing and login throttling.
    pub store: StoreOptions,
    /// Also accept TLS 1.3 (TLS 1.2 only by default, as the original).
    pub allow_tls13: bool,
    /// How often the TLS context, and with it the session-ticket keys, is made anew.
    pub ticket_key_lifetime: Duration,
}

/// The `server` program: parses the command line and runs the server.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let cli = CommandLine::new(&args, "Usage: {argv0} <portnum>", ABOUT, 1..=1);
    let config = match parse_config(&cli, &args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli.fail(&e),
    }
}

fn parse_config(cli: &CommandLine, args: &[String]) -> Result<ServerConfig, ExitCode> {
    let mut opts = Options::new();
    opts.optopt(
        "",
        "bind",
        "listen on this address only (default: every interface, IPv4 and IPv6)",
        "ADDR",
    );
    opts.optopt(
        "",
        "cert",
        "certificate (PEM, may hold the key too) [mycert.pem]",
        "FILE",
    );
    opts.optopt("", "key", "private key (PEM) [the --cert file]", "FILE");
    opts.optopt("", "db", "account database (SQLite) [users.db]", "PATH");
    opts.optflag(
        "",
        "demo",
        "create the original's account aticle/123 if missing (weak password: demo only)",
    );
    for (flag, what, default) in DURATION_FLAGS {
        opts.optopt("", flag, &format!("{what} [{default}]"), "SECS");
    }
    opts.optopt(
        "",
        "max-clients",
        &format!("clients served at once; more are closed at once [{DEFAULT_MAX_CLIENTS}]"),
        "N",
    );
    opts.optflag("", "allow-tls13", "accept TLS 1.3 as well as TLS 1.2");
    opts.optopt(
        "",
        "verify-client",
        "require a client certificate signed by a CA in this file",
        "CAFILE",
    );
    opts.optopt(
        "",
        "hash-iterations",
        &format!("PBKDF2 iterations for new password hashes [{DEFAULT_ITERATIONS}]"),
        "N",
    );
    let defaults = StoreOptions::default();
    opts.optopt(
        "",
        "hash-threads",
        &format!(
            "password hashes computed at once [the number of cores: {}]",
            defaults.hash_threads
        ),
        "N",
    );
    opts.optopt(
        "",
        "hash-wait",
        &format!(
            "seconds a command may wait for its turn to hash a password [{}]",
            defaults.hash_wait.as_secs()
        ),
        "SECS",
    );
    opts.optopt(
        "",
        "max-login-failures",
        &format!(
            "failed logins for one account before refusals begin [{}]",
            defaults.throttle.per_account
        ),
        "N",
    );
    opts.optopt(
        "",
        "max-address-failures",
        &format!(
            "failed logins from one address before refusals begin [{}]",
            defaults.throttle.per_address
        ),
        "N",
    );
    let m = cli.parse(opts, args)?;

    let port = cli.port(&m.free[0])?;
    let bind = match m.opt_str("bind") {
        None => None,
        Some(text) => Some(
            text.trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| cli.usage_error(&format!("--bind: {text:?} is not an IP address")))?,
        ),
    };
    let mut waits = [Duration::ZERO; DURATION_FLAGS.len()];
    for (wait, (flag, _, default)) in waits.iter_mut().zip(DURATION_FLAGS) {
        let secs: u64 = cli.number(&m, flag, default)?;
        if secs == 0 {
            return Err(cli.usage_error(&format!("--{flag} must be at least 1 second")));
        }
        *wait = Duration::from_secs(secs);
    }
    let [handshake, io, idle, session, ticket_key_lifetime, grace] = waits;
    let max_clients: usize = cli.number(&m, "max-clients", DEFAULT_MAX_CLIENTS)?;
    if max_clients == 0 {
        return Err(cli.usage_error("--max-clients must be at least 1"));
    }
    let iterations: u32 = cli.number(&m, "hash-iterations", DEFAULT_ITERATIONS)?;
    let mut store = StoreOptions {
        hash: Pbkdf2Params::new(iterations)
            .map_err(|e| cli.usage_error(&format!("--hash-iterations: {e}")))?,
        hash_threads: cli.number(&m, "hash-threads", defaults.hash_threads)?,
        hash_wait: Duration::from_secs(cli.number(
            &m,
            "hash-wait",
            defaults.hash_wait.as_secs(),
        )?),
        ..defaults
    };
    store.throttle.per_account =
        cli.number(&m, "max-login-failures", defaults.throttle.per_account)?;
    store.throttle.per_address =
        cli.number(&m, "max-address-failures", defaults.throttle.per_address)?;
    if store.hash_threads == 0 || store.throttle.per_account == 0 || store.throttle.per_address == 0
    {
        return Err(cli.usage_error(
            "--hash-threads, --max-login-failures and --max-address-failures must be at least 1",
        ));
    }
    let cert = PathBuf::from(m.opt_str("cert").unwrap_or_else(|| "mycert.pem".into()));
    Ok(ServerConfig {
        port,
        bind,
        key: m.opt_str("key").map_or_else(|| cert.clone(), PathBuf::from),
        cert,
        db: PathBuf::from(m.opt_str("db").unwrap_or_else(|| "users.db".into())),
        demo: m.opt_present("demo"),
        limits: Limits {
            handshake,
            io,
            idle,
            session,
        },
        grace,
        max_clients,
        verify_client: m.opt_str("verify-client").map(PathBuf::from),
        store,
        allow_tls13: m.opt_present("allow-tls13"),
        ticket_key_lifetime,
    })
}

/// Runs the server until SIGINT or SIGTERM: the original's `main()` loop, with one thread per
/// client. Returns once the exchanges in flight have finished (or had their time).
pub fn run(config: &ServerConfig) -> Result<()> {
    let acceptor = build_acceptor(config)?;
    let store = AccountStore::open(&config.db, config.store)?;
    if config.demo {
        ensure_demo_account(&store)?;
    }
    let shared = Arc::new(Shared {
        acceptor: RwLock::new(Arc::new(acceptor)),
        store,
        limits: config.limits,
    });
    rotate_ticket_keys(config.clone(), Arc::clone(&shared))?;
    raise_file_limit(config.max_clients);
    let listener = open_listener(config.bind, config.port)?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the listening address", e))?;
    log::info!("listening on {local}");
    let stopping = stop_on_signals(local)?;
    let slots = Arc::new(ClientSlots::new(config.max_clients));
    let threads = ClientThreads::new();

    for incoming in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let tcp = match incoming {
            Ok(tcp) => tcp,
            Err(e) => {
                log::warn!("accept failed: {e}");
                // Out of file descriptors and the like: give exchanges time to end.
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let (peer, ip) = match tcp.peer_addr() {
            Ok(addr) => (peer_display(addr), addr.ip()),
            Err(e) => {
                log::warn!("connection closed before it could be served: {e}");
                continue;
            }
        };
        let Some(slot) = slots.try_acquire() else {
            log::warn!(
                "{peer}: refused: {} clients already being served (--max-clients)",
                config.max_clients
            );
            continue;
        };
        console(&format!("Connection: {peer}\n"));
        let shared = Arc::clone(&shared);
        if let Err(e) = threads.serve(Box::new(move || {
            let _slot = slot;
            servlet(tcp, &peer, ip, &shared);
        })) {
            log::error!("cannot start a thread for a client: {e}");
        }
    }
    drop(threads);

    // Refuse new connections at once instead of leaving them queued.
    drop(listener);
    let unfinished = slots.wait_idle(config.grace);
    if unfinished > 0 {
        log::warn!("stopped with {unfinished} exchange(s) unfinished");
    }
    shared.store.close();
    log::info!("stopped");
    Ok(())
}

/// Raises the open-file limit to the hard limit, so that `max_clients` connections (each a
/// socket) can be open at once; warns if even that is too low.
fn raise_file_limit(max_clients: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            log::info!("open files: up to {limit}");
            // A few descriptors go to the listener, the database and the logs.
            if (limit as usize) < max_clients.saturating_add(64) {
                log::warn!(
                    "the open-file limit ({limit}) is below --max-clients ({max_clients}); \
                     connections beyond it will fail to be accepted"
                );
            }
        }
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
}

/// Ports `OpenListener(port)`: a listening TCP socket on `port`, on `bind` or on every
/// interface (IPv6 and IPv4 on one socket; IPv4 alone where IPv6 is off).
pub fn open_listener(bind: Option<IpAddr>, port: u16) -> Result<TcpListener> {
    match bind {
        Some(ip) => listen_on(SocketAddr::new(ip, port)),
        None => listen_on(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)).or_else(|e| {
            log::info!("IPv6 unavailable ({e}); listening on IPv4 only");
            listen_on(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port))
        }),
    }
}

fn listen_on(addr: SocketAddr) -> Result<TcpListener> {
    let fail = |e: io::Error| Error::io(format!("cannot listen on port {}", addr.port()), e);
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    if addr.is_ipv6() {
        // Unspecified: serve IPv4 too; a given IPv6 address: only it.
        socket
            .set_only_v6(!addr.ip().is_unspecified())
            .map_err(fail)?;
    }
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(LISTEN_BACKLOG).map_err(fail)?;
    Ok(socket.into())
}

/// Ports `InitServerCTX()`: a server context that speaks TLS 1.2 only (1.3 too if
/// `allow_tls13`), with forward-secret AEAD suites only (Mozilla's intermediate profile: ECDHE
/// or DHE with AES-GCM or ChaCha20-Poly1305), no compression and no renegotiation.
pub fn init_server_ctx(allow_tls13: bool) -> Result<SslAcceptorBuilder> {
    let mut ctx = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|e| Error::tls("cannot create the TLS context", e))?;
    tls::pin_tls12(&mut ctx)?;
    if allow_tls13 {
        ctx.set_max_proto_version(Some(SslVersion::TLS1_3))
            .map_err(|e| Error::tls("cannot allow TLS 1.3", e))?;
    }
    ctx.set_options(SslOptions::NO_COMPRESSION | SslOptions::NO_RENEGOTIATION);
    Ok(ctx)
}

/// The whole TLS set-up of the server: context, certificate and key, client verification.
fn build_acceptor(config: &ServerConfig) -> Result<SslAcceptor> {
    let mut ctx = init_server_ctx(config.allow_tls13)?;
    load_certificates(&mut ctx, &config.cert, &config.key)?;
    if let Some(ca_file) = &config.verify_client {
        require_client_certificates(&mut ctx, ca_file)?;
    }
    Ok(ctx.build())
}

/// Every `ticket_key_lifetime`, replaces the TLS context with a new one, whose session-ticket
/// keys OpenSSL draws afresh (and which rereads the certificate and key). Tickets issued
/// under the old keys then fall back to a full handshake. Each server instance has its own
/// keys: behind a load balancer, a ticket resumes only on the instance that issued it.
fn rotate_ticket_keys(config: ServerConfig, shared: Arc<Shared>) -> Result<()> {
    thread::Builder::new()
        .name("ticket keys".into())
        .spawn(move || {
            loop {
                thread::sleep(config.ticket_key_lifetime);
                match build_acceptor(&config) {
                    Ok(fresh) => {
                        *shared.acceptor.write().unwrap_or_else(|e| e.into_inner()) =
                            Arc::new(fresh);
                        log::info!("new TLS context: session-ticket keys replaced");
                    }
                    Err(e) => log::error!("cannot renew the TLS context, keeping the old: {e}"),
                }
            }
        })
        .map(drop)
        .map_err(|e| Error::io("cannot start the ticket-key thread", e))
}

/// Ports `LoadCertificates(ctx, CertFile, KeyFile)`: loads the certificate and its private key
/// (both may be in one PEM file) and checks that they belong together.
pub fn load_certificates(ctx: &mut SslContextBuilder, cert: &Path, key: &Path) -> Result<()> {
    check_readable("certificate file", cert)?;
    check_readable("key file", key)?;
    check_private(key)?;
    ctx.set_certificate_chain_file(cert)
        .map_err(|e| pem_error("certificate", cert, e))?;
    ctx.set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| pem_error("private key", key, e))?;
    ctx.check_private_key().map_err(|_| {
        Error::Config(format!(
            "the private key in {} does not match the certificate in {}",
            key.display(),
            cert.display()
        ))
    })
}

fn check_readable(what: &str, path: &Path) -> Result<()> {
    std::fs::File::open(path).map(drop).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::NotFound {
            " (`make cert` writes a self-signed mycert.pem)"
        } else {
            ""
        };
        Error::Config(format!("cannot read {what} {}: {e}{hint}", path.display()))
    })
}

/// Refuses a private key file that others than its owner may read.
fn check_private(key: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(key)
        .map_err(|e| Error::file("key file", key, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(Error::Config(format!(
            "the private key file {0} can be read by others (mode {1:o}); make it private \
             with `chmod 600 {0}`",
            key.display(),
            mode & 0o777
        )));
    }
    Ok(())
}

fn pem_error(what: &str, path: &Path, stack: ErrorStack) -> Error {
    let has = |reason: &str| stack.errors().iter().any(|e| e.reason() == Some(reason));
    if has("ee key too small") || has("ca key too small") {
        Error::Config(format!(
            "the key of {} is too small for OpenSSL's security level (ee key too small); \
             make a 2048-bit one with `make cert FORCE=1`",
            path.display()
        ))
    } else if has("key values mismatch") {
        Error::Config(format!(
            "the private key in {} does not match the certificate",
            path.display()
        ))
    } else {
        Error::tls(format!("cannot load {what} from {}", path.display()), stack)
    }
}

/// Asks every client for a certificate and refuses those without one signed by a CA in
/// `ca_file` (mutual TLS).
fn require_client_certificates(ctx: &mut SslContextBuilder, ca_file: &Path) -> Result<()> {
    check_readable("client CA file", ca_file)?;
    let context = || format!("cannot load client CA file {}", ca_file.display());
    ctx.set_ca_file(ca_file)
        .map_err(|e| Error::tls(context(), e))?;
    let names = X509Name::load_client_ca_file(ca_file).map_err(|e| Error::tls(context(), e))?;
    ctx.set_client_ca_list(names);
    ctx.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    // Required with client verification, or resumed sessions fail.
    ctx.set_session_id_context(env!("CARGO_PKG_NAME").as_bytes())
        .map_err(|e| Error::tls("cannot set the session id context", e))
}

/// Ports `ShowCerts(ssl)` of the server: prints the client's certificate, or `No certificates.`
pub fn show_certs(ssl: &SslRef) {
    console(&tls::peer_certificate_lines(ssl).unwrap_or_else(|| "No certificates.\n".into()));
}

/// How long each wait of a connection may last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The whole TLS handshake.
    pub handshake: Duration,
    /// Each read and write.
    pub io: Duration,
    /// An account session's wait for its next command.
    pub idle: Duration,
    /// The whole connection.
    pub session: Duration,
}

/// What every client thread shares: the TLS context (and so its session cache), the account
/// store and the limits.
pub struct Shared {
    /// The TLS server context, replaced when the session-ticket keys are.
    pub acceptor: RwLock<Arc<SslAcceptor>>,
    /// The account store.
    pub store: AccountStore,
    /// How long each wait may last.
    pub limits: Limits,
}

/// Ports `Servlet(ssl)`: completes the handshake, shows the client's certificate, reads one
/// request (at most 1024 bytes, as the original), answers it and closes the connection. A
/// first byte other than `<` starts an account-protocol session instead
/// ([`session::serve_session`]). Failures are logged, never fatal.
pub fn servlet(tcp: TcpStream, peer: &str, ip: IpAddr, shared: &Shared) {
    let acceptor = Arc::clone(&shared.acceptor.read().unwrap_or_else(|e| e.into_inner()));
    let mut ssl = match acceptor.accept(
        DeadlineStream::new(tcp, shared.limits.io, shared.limits.handshake)
            .with_session_limit(shared.limits.session),
    ) {
        Ok(ssl) => ssl,
        Err(e) => {
            log::warn!(
                "{peer}: TLS handshake failed: {}",
                tls::describe_handshake_error(&e)
            );
            return;
        }
    };
    // The first request, and the answer to it, within one --timeout.
    ssl.get_mut().start_phase(shared.limits.io);
    show_certs(ssl.ssl());
    let mut buf = [0u8; LEGACY_REQUEST_MAX];
    let request = match ssl.read(&mut buf) {
        Ok(n) => &buf[..n],
        Err(e) => {
            log::warn!("{peer}: no request read: {}", tls::describe_io(&e));
            return;
        }
    };
    if request.first().is_some_and(|&b| b != b'<') {
        let client = session::Client { peer, ip };
        session::serve_session(
            &mut ssl,
            request,
            &shared.store,
            &client,
            shared.limits.idle,
        );
        if let Err(e) = ssl.shutdown() {
            log::debug!("{peer}: shutdown: {e}");
        }
        return;
    }
    console(&format!(
        "Client msg: \"{}\"\n",
        printable(&mask_legacy_password(request))
    ));
    if request.is_empty() {
        log::warn!("{peer}: closed without sending a request");
        return;
    }
    let reply = legacy_reply(&shared.store, request, peer, ip);
    if let Err(e) = ssl.write_all(reply) {
        log::warn!("{peer}: cannot send the reply: {}", tls::describe_io(&e));
        return;
    }
    // close_notify, so the client can tell a complete reply from a cut one.
    if let Err(e) = ssl.shutdown() {
        log::debug!("{peer}: shutdown: {e}");
    }
}

/// The original's `strcmp(cpValidMessage, buf)`, with the account store in place of its one
/// built-in account: the 220-byte reply for a well-formed request with valid credentials,
/// `Invalid Message` for anything else.
fn legacy_reply(store: &AccountStore, request: &[u8], peer: &str, ip: IpAddr) -> &'static [u8] {
    let Some(credentials) = parse_legacy_request(request) else {
        log::info!("{peer}: not a well-formed request");
        return LEGACY_INVALID_REPLY;
    };
    let Ok(username) = std::str::from_utf8(credentials.username) else {
        log::info!("{peer}: user name is not UTF-8");
        return LEGACY_INVALID_REPLY;
    };
    match store.login(username, credentials.password, ip) {
        Ok(LoginOutcome::Success(_)) => {
            log::info!("{peer}: {username:?} logged in");
            LEGACY_VALID_REPLY
        }
        Ok(LoginOutcome::Failed) => {
            log::info!("{peer}: login refused for {username:?}");
            LEGACY_INVALID_REPLY
        }
        Ok(LoginOutcome::Throttled(wait)) => {
            log::warn!(
                "{peer}: login for {username:?} throttled for {}s: too many failures",
                wait.as_secs_f64().ceil()
            );
            LEGACY_INVALID_REPLY
        }
        Err(e) => {
            log::error!("{peer}: {e}");
            LEGACY_INVALID_REPLY
        }
    }
}

fn ensure_demo_account(store: &AccountStore) -> Result<()> {
    match store.create_account(DEMO_USERNAME, DEMO_PASSWORD.as_bytes(), &[]) {
        Ok(_) => log::info!("created the demo account {DEMO_USERNAME:?}"),
        Err(Error::UserExists(_)) => {}
        Err(e) => return Err(e),
    }
    eprintln!(
        "warning: --demo: the account {DEMO_USERNAME:?} with the original's weak password is \
         active; do not use --demo where others can connect"
    );
    Ok(())
}

/// Writes the program's own output (the original's console lines) to stdout in one piece per
/// event. A closed stdout must not stop the server, so errors are only logged.
fn console(text: &str) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        log::debug!("cannot write to stdout: {e}");
    }
}

/// A peer address as the original prints it (`inet_ntoa(addr):port`); IPv4 clients of the
/// dual-stack socket appear as plain IPv4.
fn peer_display(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{}", v6.port()),
            None => v6.to_string(),
        },
        SocketAddr::V4(v4) => v4.to_string(),
    }
}

/// On the first SIGINT or SIGTERM: stop accepting (the flag returned, then a connection to
/// `local` to wake the accept loop). A second signal exits at once.
fn stop_on_signals(local: SocketAddr) -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stopping = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| Error::io("cannot install signal handlers", e))?;
    let flag = Arc::clone(&stopping);
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = signals.forever();
            if seen.next().is_some() {
                log::info!("stopping: no new connections; letting exchanges in flight finish");
                flag.store(true, Ordering::SeqCst);
                let wake = SocketAddr::new(
                    match local.ip() {
                        IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
                        IpAddr::V6(ip) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
                        ip => ip,
                    },
                    local.port(),
                );
                if let Err(e) = TcpStream::connect_timeout(&wake, Duration::from_secs(1)) {
                    log::warn!("cannot wake the accept loop: {e}");
                }
            }
            if seen.next().is_some() {
                eprintln!("second signal: exiting without waiting");
                std::process::exit(1);
            }
        })
        .map_err(|e| Error::io("cannot start the signal thread", e))?;
    Ok(stopping)
}

/// One client's whole connection, run on a thread of its own.
type ClientJob = Box<dyn FnOnce() + Send>;

/// The threads that serve clients: each serves one client at a time, for the whole of its
/// connection, and then waits for the next client instead of exiting; a thread that waits
/// [`IDLE_THREAD_LIFETIME`] exits, so an idle server gives the memory back. Creating a thread
/// costs about as much CPU as a resumed handshake; reusing one costs nothing.
struct ClientThreads {
    /// The waiting threads, each reachable through its own channel; the latest last.
    waiting: Arc<Mutex<Vec<WaitingThread>>>,
    next_id: Arc<AtomicU64>,
}

/// A waiting client thread: its number, and the channel its next client comes by.
type WaitingThread = (u64, mpsc::Sender<ClientJob>);

/// How long a client thread waits for another client before it exits.
const IDLE_THREAD_LIFETIME: Duration = Duration::from_secs(60);

impl ClientThreads {
    fn new() -> ClientThreads {
        ClientThreads {
            waiting: Arc::default(),
            next_id: Arc::default(),
        }
    }

    /// Runs `job` on the thread that waited least long, or on a new one if none waits.
    fn serve(&self, job: ClientJob) -> io::Result<()> {
        let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match waiting {
            Some((_, thread)) => match thread.send(job) {
                Ok(()) => Ok(()),
                Err(mpsc::SendError(job)) => self.start(job),
            },
            None => self.start(job),
        }
    }

    fn start(&self, first: ClientJob) -> io::Result<()> {
        let (waiting, next_id) = (Arc::clone(&self.waiting), Arc::clone(&self.next_id));
        thread::Builder::new()
            .name("client".into())
            .stack_size(CLIENT_THREAD_STACK)
            .spawn(move || {
                let mut job = first;
                loop {
                    job();
                    let (sender, receiver) = mpsc::channel();
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    waiting
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((id, sender));
                    job = match receiver.recv_timeout(IDLE_THREAD_LIFETIME) {
                        Ok(next) => next,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            let mut list = waiting.lock().unwrap_or_else(|e| e.into_inner());
                            match list.iter().position(|(i, _)| *i == id) {
                                Some(at) => {
                                    list.remove(at);
                                    return;
                                }
                                // Taken off the list just now: a client is on its way.
                                None => {
                                    drop(list);
                                    match receiver.recv() {
                                        Ok(next) => next,
                                        Err(_) => return,
                                    }
                                }
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    };
                }
            })
            .map(drop)
    }
}

/// Counts the clients being served, up to a maximum.
struct ClientSlots {
    max: usize,
    active: Mutex<usize>,
    changed: Condvar,
}

/// One client's place among [`ClientSlots`]; freed when dropped.
struct ClientSlot(Arc<ClientSlots>);

impl ClientSlots {
    fn new(max: usize) -> Self {
        ClientSlots {
            max,
            active: Mutex::new(0),
            changed: Condvar::new(),
        }
    }

    fn try_acquire(self: &Arc<Self>) -> Option<ClientSlot> {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if *active >= self.max {
            return None;
        }
        *active += 1;
        Some(ClientSlot(Arc::clone(self)))
    }

    /// Waits up to `limit` for every client to finish; gives how many have not.
    fn wait_idle(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        while *active > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            active = self
                .changed
                .wait_timeout(active, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *active
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut active = self.0.active.lock().unwrap_or_else(|e| e.into_inner());
        *active -= 1;
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_print_as_the_original() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:46142".parse().unwrap();
        assert_eq!(peer_display(mapped), "127.0.0.1:46142");
        let v6: SocketAddr = "[::1]:8081".parse().unwrap();
        assert_eq!(peer_display(v6), "[::1]:8081");
    }

    #[test]
    fn client_threads_are_reused() {
        let threads = ClientThreads::new();
        let (done, finished) = mpsc::channel();
        for _ in 0..10 {
            let done = done.clone();
            threads
                .serve(Box::new(move || done.send(thread::current().id()).unwrap()))
                .unwrap();
            let ran_on = finished.recv().unwrap();
            // Wait until that thread is back among the waiting ones.
            while threads.waiting.lock().unwrap().is_empty() {
                thread::yield_now();
            }
            assert_eq!(threads.waiting.lock().unwrap().len(), 1, "{ran_on:?}");
        }
        // Two at once need two threads.
        let (hold, release) = mpsc::channel::<()>();
        let release = Arc::new(Mutex::new(release));
        for _ in 0..2 {
            let (done, release) = (done.clone(), release.clone());
            threads
                .serve(Box::new(move || {
                    done.send(thread::current().id()).unwrap();
                    let _ = release.lock().unwrap().recv();
                }))
                .unwrap();
        }
        let (a, b) = (finished.recv().unwrap(), finished.recv().unwrap());
        assert_ne!(a, b);
        drop(hold);
    }

    #[test]
    fn slots_cap_and_free() {
        let slots = Arc::new(ClientSlots::new(2));
        let a = slots.try_acquire().unwrap();
        let _b = slots.try_acquire().unwrap();
        assert!(slots.try_acquire().is_none());
        drop(a);
        assert!(slots.try_acquire().is_some());
        assert_eq!(slots.wait_idle(Duration::from_millis(10)), 1);
    }

    #[test]
    fn config_defaults_and_checks() {
        let args = |extra: &[&str]| -> Vec<String> {
            std::iter::once("server")
                .chain(extra.iter().copied())
                .map(String::from)
                .collect()
        };
        let a = args(&["8081"]);
        let cli = CommandLine::new(&a, "Usage: {argv0} <portnum>", ABOUT, 1..=1);
        let config = parse_config(&cli, &a).unwrap();
        assert_eq!(config.port, 8081);
        assert_eq!(config.cert, PathBuf::from("mycert.pem"));
        assert_eq!(config.key, config.cert);
        assert_eq!(config.limits.io, Duration::from_secs(30));
        assert_eq!(config.limits.handshake, Duration::from_secs(10));
        assert_eq!(config.limits.idle, Duration::from_secs(300));
        assert_eq!(config.limits.session, Duration::from_secs(3600));
        assert_eq!(config.grace, Duration::from_secs(10));
        assert_eq!(config.max_clients, 1024);
        assert_eq!(config.store.hash, Pbkdf2Params::default());
        assert_eq!(config.store.throttle.per_account, 5);
        for bad in [
            &["80810"][..],
            &["--timeout", "0", "8081"],
            &["--session-timeout", "-1", "8081"],
            &["--max-clients", "x", "8081"],
            &["--bind", "localhost", "8081"],
            &["--hash-iterations", "5", "8081"],
        ] {
            let a = args(bad);
            assert!(parse_config(&cli, &a).is_err(), "{bad:?}");
        }
        let a = args(&["--bind", "[::1]", "--cert", "c.pem", "0"]);
        let config = parse_config(&cli, &a).unwrap();
        assert_eq!(config.bind, Some(Ipv6Addr::LOCALHOST.into()));
        assert_eq!(config.key, PathBuf::from("c.pem"));
    }
}
