//! Shared helpers of the integration tests: a certificate from `scripts/gencert.sh`, the real
//! `server` binary on a free loopback port (or the server inside this process), the real
//! `client`, and openssl's own tools.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode, SslVersion};
use ssl_server_client::server::{self, Console, ServerConfig, Shutdown};

/// Throwaway PostgreSQL clusters (shared with the library's unit tests).
#[path = "../support/postgres.rs"]
pub mod pg;

/// A proxy that counts what a client sends PostgreSQL.
#[path = "../support/pg_wire.rs"]
pub mod pg_wire;

#[path = "../support/patroni.rs"]
pub mod patroni;

/// The PgBouncer in front of the shared test cluster, started on first use.
pub fn bouncer() -> &'static pg::pgbouncer::PgBouncer {
    static BOUNCER: OnceLock<pg::pgbouncer::PgBouncer> = OnceLock::new();
    BOUNCER.get_or_init(|| pg::pgbouncer::PgBouncer::start(pg::cluster().port))
}

/// A fresh database of the shared test cluster, reached through [`bouncer`].
pub fn bounced_database() -> String {
    let url = pg::cluster().new_database();
    let name = url.rsplit('/').next().expect("a database name");
    bouncer().url(name)
}

/// The original's 220-byte reply.
pub const VALID_REPLY: &[u8] = ssl_server_client::xml::legacy::LEGACY_VALID_REPLY;

/// How long a test waits for anything before it fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// PBKDF2 cost for test servers: the floor, so debug builds run fast.
pub const TEST_ITERATIONS: &str = "1000";

/// The exact legacy request for `user` / `password`.
pub fn request(user: &str, password: &str) -> Vec<u8> {
    ssl_server_client::xml::legacy::legacy_request(user.as_bytes(), password.as_bytes())
}

/// The suite OpenSSL negotiates between our client (or `openssl s_client`) and a server with
/// the RSA certificate only, as the original's transcript names it.
pub const RSA_SUITE: &str = "ECDHE-RSA-AES256-GCM-SHA384";

/// The suite the same clients negotiate with a server that also holds an ECDSA certificate:
/// OpenSSL's default list puts ECDSA suites first, and the server follows the client's order.
pub const ECDSA_SUITE: &str = "ECDHE-ECDSA-AES256-GCM-SHA384";

/// The client's exact transcript for a reply, when stdin is not a terminal.
pub fn client_transcript(reply: &[u8]) -> String {
    client_transcript_with(RSA_SUITE, reply)
}

/// As [`client_transcript`], for a connection that negotiated `suite`.
pub fn client_transcript_with(suite: &str, reply: &[u8]) -> String {
    format!(
        "Enter the User Name : \n\nEnter the Password : \n\n\
         Connected with {suite} encryption\n\
         Server certificates:\nSubject: /CN=localhost\nIssuer: /CN=localhost\n\
         Received: \"{}\"\n",
        String::from_utf8_lossy(reply)
    )
}

/// Asserts that a client run ended with the exact transcript for `reply`, and status 0 (1 for
/// `Invalid Message`).
pub fn assert_transcript(out: &Output, reply: &[u8]) {
    // `Invalid Message` exits with status 1 (scripts can tell), the transcript unchanged.
    let status = if reply == b"Invalid Message" { 1 } else { 0 };
    assert_eq!(out.status.code(), Some(status), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        client_transcript(reply)
    );
}

/// A scratch directory holding a `mycert.pem` made by `scripts/gencert.sh`: one per test
/// process, copied into each fixture (a new RSA key costs a quarter of a second of CPU, and
/// some 130 tests each make a fixture; a test that needs a certificate of its own makes it).
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        // Tests run side by side, each holding sockets (some hundreds): lift the soft limit.
        static RAISE_FILE_LIMIT: Once = Once::new();
        RAISE_FILE_LIMIT.call_once(|| {
            rlimit::increase_nofile_limit(u64::MAX).expect("raise the open-file limit");
        });
        // Under target/ (a static is never dropped): `make clean` removes it.
        static CERT: OnceLock<tempfile::TempDir> = OnceLock::new();
        let made = CERT.get_or_init(|| {
            let dir =
                tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temporary directory");
            let out = gencert(&dir.path().join("mycert.pem"), &[]);
            assert!(out.status.success(), "gencert failed: {out:?}");
            dir
        });
        let dir = tempfile::tempdir().expect("temporary directory");
        // A copy keeps the mode (0600) the server checks.
        std::fs::copy(
            made.path().join("mycert.pem"),
            dir.path().join("mycert.pem"),
        )
        .expect("copy the certificate");
        Fixture { dir }
    }

    /// As [`Fixture::new`], with a certificate (and key) of its own, not the one the other
    /// fixtures share: another server's, or a client's the server does not trust.
    pub fn with_own_certificate() -> Fixture {
        let fx = Fixture::new();
        let out = gencert(&fx.cert(), &[("FORCE", "1")]);
        assert!(out.status.success(), "gencert failed: {out:?}");
        fx
    }

    /// As [`Fixture::new`], with an ECDSA P-256 `mycert-ec.pem` beside `mycert.pem` (from
    /// `scripts/gencert.sh FILE ec`).
    pub fn with_ecdsa() -> Fixture {
        let fx = Fixture::new();
        let out = gencert_of(&fx.ec_cert(), "ec", &[]);
        assert!(out.status.success(), "gencert ec failed: {out:?}");
        fx
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The ECDSA certificate of [`Fixture::with_ecdsa`].
    pub fn ec_cert(&self) -> PathBuf {
        self.dir.path().join("mycert-ec.pem")
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("mycert.pem")
    }

    pub fn cert_arg(&self) -> String {
        self.cert().display().to_string()
    }

    /// Starts the server in this directory with the test defaults and `args`.
    pub fn server(&self, args: &[&str]) -> Server {
        Server::start(self.path(), args)
    }

    /// Runs the server inside the test process, on this directory's certificate and database,
    /// with the test defaults and `args`.
    pub fn in_process(&self, args: &[&str]) -> InProcess {
        InProcess::start(self.path(), args)
    }

    /// [`Fixture::in_process`] with the console's lines written to `console` instead.
    pub fn in_process_writing(
        &self,
        args: &[&str],
        console: impl Write + Send + 'static,
    ) -> InProcess {
        InProcess::start_writing(self.path(), args, Console::new(console))
    }

    /// Runs the real client in this directory (so `./mycert.pem` is the default trust).
    pub fn client(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_with_input(
            Command::new(env!("CARGO_BIN_EXE_client"))
                .args(args)
                .current_dir(self.path()),
            stdin,
        )
    }
}

impl Fixture {
    /// Runs `client [args] 127.0.0.1 PORT COMMAND` against `server` with `stdin`.
    pub fn command(
        &self,
        server: &impl Listening,
        args: &[&str],
        command: &str,
        stdin: &str,
    ) -> Output {
        let port = server.port_arg();
        let mut all = args.to_vec();
        all.extend(["127.0.0.1", &port, command]);
        self.client(&all, stdin.as_bytes())
    }
}

/// A client run's stdout and stderr as text.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `scripts/gencert.sh OUT` (the default key type, RSA) with `env` set.
pub fn gencert(out: &Path, env: &[(&str, &str)]) -> Output {
    gencert_script()
        .arg(out)
        .envs(env.iter().copied())
        .output()
        .expect("run scripts/gencert.sh")
}

/// Runs `scripts/gencert.sh OUT KIND` (`rsa` or `ec`) with `env` set.
pub fn gencert_of(out: &Path, kind: &str, env: &[(&str, &str)]) -> Output {
    gencert_script()
        .arg(out)
        .arg(kind)
        .envs(env.iter().copied())
        .output()
        .expect("run scripts/gencert.sh")
}

/// `scripts/gencert.sh`, to be given its arguments.
pub fn gencert_script() -> Command {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gencert.sh"))
}

/// Runs the real server in `dir` with exactly `args` (for a start that should fail).
pub fn server_in(dir: &Path, args: &[&str]) -> Output {
    run_with_input(
        Command::new(env!("CARGO_BIN_EXE_server"))
            .args(args)
            .current_dir(dir),
        b"",
    )
}

/// A failed start: exit status 1 and one line on stderr that contains `cause`.
pub fn assert_fails_with(out: &Output, cause: &str) {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(cause), "wanted {cause:?} in {err}");
}

/// Text a child writes, collected as it comes, and whether its end was read.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>, Arc<std::sync::atomic::AtomicBool>);

impl Captured {
    pub fn collect_from(mut from: impl Read + Send + 'static) -> Captured {
        let captured = Captured::default();
        let sink = captured.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.0.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            sink.1.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        captured
    }

    /// Waits (up to 10 s) until the end of the stream has been read, so that nothing the
    /// child wrote just before it exited is missed on a loaded machine.
    pub fn wait_for_end(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.1.load(std::sync::atomic::Ordering::SeqCst)
            && std::time::Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Waits until `done` holds for the text so far; panics after [`PATIENCE`].
    pub fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let text = self.text();
            if done(&text) {
                return text;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for {what}; got:\n{text}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The real server, on a port the system chose, on loopback.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub stdout: Captured,
    pub stderr: Captured,
}

impl Server {
    /// Starts `server -v --db users.db ARGS 0` in `dir` (with `--bind 127.0.0.1` and
    /// `--hash-iterations 1000` unless ARGS say otherwise) and waits until it listens.
    pub fn start(dir: &Path, args: &[&str]) -> Server {
        Server::try_start(dir, args).unwrap_or_else(|out| panic!("server did not start: {out}"))
    }

    /// As [`Server::start`], but gives the server's stderr if it exits instead.
    pub fn try_start(dir: &Path, args: &[&str]) -> Result<Server, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
            .arg("-v")
            .args(with_defaults(args))
            .arg("0")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start server");
        let stdout = Captured::collect_from(child.stdout.take().unwrap());
        let stderr = Captured::collect_from(child.stderr.take().unwrap());
        let start = Instant::now();
        loop {
            if let Some(port) = listening_port(&stderr.text()) {
                return Ok(Server {
                    child,
                    port,
                    stdout,
                    stderr,
                });
            }
            if child.try_wait().unwrap().is_some() {
                thread::sleep(Duration::from_millis(100)); // let the readers finish
                return Err(stderr.text());
            }
            assert!(start.elapsed() < PATIENCE, "server never listened");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server process is still running (not ended, not a zombie).
    pub fn is_running(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).is_ok_and(|stat| {
            let state = stat
                .rfind(')')
                .and_then(|end| stat[end + 1..].split_whitespace().next());
            !matches!(state, Some("Z" | "X") | None)
        })
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        signal(&self.child, "TERM");
        wait_timeout(&mut self.child).expect("server did not stop after SIGTERM")
    }

    /// Waits for the exit (after a signal sent elsewhere).
    pub fn wait_exit(mut self) -> ExitStatus {
        wait_timeout(&mut self.child).expect("server did not stop")
    }

    /// Everything the server wrote, stdout and stderr.
    pub fn all_output(&self) -> Vec<u8> {
        [self.stdout.bytes(), self.stderr.bytes()].concat()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Listening for Server {
    fn port(&self) -> u16 {
        self.port
    }
}

/// A server on loopback, in a process of its own or in the test's.
pub trait Listening {
    /// The port it listens on.
    fn port(&self) -> u16;

    /// `127.0.0.1:PORT`.
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// The port as a command-line argument.
    fn port_arg(&self) -> String {
        self.port().to_string()
    }
}

/// The server inside the test process (`server::run` on a listener bound here), for tests
/// that see it only through the network: nothing to spawn, and the port is known at once.
/// Stopped by its [`Shutdown`] when dropped.
pub struct InProcess {
    port: u16,
    /// The server's console lines (the program's stdout).
    pub console: Captured,
    shutdown: Shutdown,
    thread: Option<thread::JoinHandle<Result<(), String>>>,
}

impl InProcess {
    /// Runs the server on `dir`'s `mycert.pem` and (unless `args` name another store)
    /// `users.db`, with the test defaults and `args` (a stop waits at most a second for
    /// connections in flight).
    pub fn start(dir: &Path, args: &[&str]) -> InProcess {
        let console = Captured::default();
        let mut server = InProcess::start_writing(dir, args, Console::new(console.clone()));
        server.console = console;
        server
    }

    /// [`InProcess::start`] with the console's lines written to `lines` (and none captured).
    pub fn start_writing(dir: &Path, args: &[&str], lines: Console) -> InProcess {
        let (db, cert) = (dir.join("users.db"), dir.join("mycert.pem"));
        let (db, cert) = (db.display().to_string(), cert.display().to_string());
        let mut given = args.to_vec();
        if !args.contains(&"--db") {
            given.extend(["--db", &db]);
        }
        let mut argv: Vec<String> = ["server", "--grace-period", "1", "--cert", &cert]
            .map(String::from)
            .to_vec();
        argv.extend(with_defaults(&given).into_iter().map(String::from));
        argv.push("0".into());
        let config = ServerConfig::from_args(&argv).expect("valid server arguments");
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().unwrap().port();
        let shutdown = Shutdown::new(&listener).unwrap();
        let stop = shutdown.clone();
        let thread = thread::spawn(move || {
            server::run(&config, listener, &stop, lines).map_err(|e| e.to_string())
        });
        InProcess {
            port,
            console: Captured::default(),
            shutdown,
            thread: Some(thread),
        }
    }
}

impl Listening for InProcess {
    fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.request();
        if let Some(thread) = self.thread.take() {
            let stopped = thread.join().expect("the server thread does not panic");
            if !thread::panicking() {
                stopped.expect("the server stops cleanly");
            }
        }
    }
}

/// `args` plus the test defaults for what they leave out: loopback only, cheap hashes, the
/// SQLite file `users.db`, and room for the many logins of one account a test makes in a
/// minute (tests of those limits give them).
fn with_defaults<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    for (flag, value) in [
        ("--bind", "127.0.0.1"),
        ("--hash-iterations", TEST_ITERATIONS),
        ("--db", "users.db"),
        ("--max-logins-per-account", "100000"),
        ("--max-logins-per-address", "100000"),
    ] {
        if !args.contains(&flag) {
            all.extend([flag, value]);
        }
    }
    all
}

fn listening_port(stderr: &str) -> Option<u16> {
    let line = stderr.lines().find(|l| l.contains("listening on "))?;
    line.rsplit(':').next()?.trim().parse().ok()
}

/// Sends a signal (`"TERM"`, `"INT"`, `"KILL"`) to a child.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Waits for a child to exit, up to [`PATIENCE`].
pub fn wait_timeout(child: &mut Child) -> Option<ExitStatus> {
    wait_within(child, PATIENCE)
}

/// Waits for a child to exit, up to `limit`.
fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Runs a command with `stdin` as its input; kills it after [`PATIENCE`].
pub fn run_with_input(command: &mut Command, stdin: &[u8]) -> Output {
    run_within(command, stdin, PATIENCE)
}

/// Runs a command with `stdin` as its input; kills it after `limit` (for a long run: a load
/// of thousands of commands, say).
pub fn run_within(command: &mut Command, stdin: &[u8], limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let stdout = Captured::collect_from(child.stdout.take().unwrap());
    let stderr = Captured::collect_from(child.stderr.take().unwrap());
    let status = match wait_within(&mut child, limit) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            panic!(
                "{command:?} did not finish in {limit:?}; stdout:\n{}\nstderr:\n{}",
                stdout.text(),
                stderr.text()
            );
        }
    };
    let _ = writer.join();
    // The readers see EOF just after the exit; a fixed pause lost output under load.
    stdout.wait_for_end();
    stderr.wait_for_end();
    Output {
        status,
        stdout: stdout.bytes(),
        stderr: stderr.bytes(),
    }
}

/// `openssl s_client -quiet -connect ADDR EXTRA`, with `stdin` sent once the handshake is done.
pub fn s_client(addr: &str, extra: &[&str], stdin: &[u8]) -> Output {
    run_with_input(
        Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", addr])
            .args(extra),
        stdin,
    )
}

/// A TCP connection to `addr` from the loopback address `source` (such as `127.0.3.1`), so
/// that one test can stand for clients at several addresses.
pub fn connect_from(source: &str, addr: &str) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let source: std::net::SocketAddr = format!("{source}:0").parse().expect("an IPv4 address");
    socket.bind(&source.into())?;
    let addr: std::net::SocketAddr = addr.parse().expect("an address");
    socket.connect_timeout(&addr.into(), PATIENCE)?;
    Ok(socket.into())
}

/// A TLS 1.2 connection from the test itself, without verification (the server is ours).
pub fn tls_connect(addr: &str) -> SslStream<TcpStream> {
    tls_over(TcpStream::connect(addr).unwrap())
}

/// As [`tls_connect`], from the loopback address `source` (see [`connect_from`]).
pub fn tls_connect_from(source: &str, addr: &str) -> SslStream<TcpStream> {
    tls_over(connect_from(source, addr).unwrap())
}

/// A TLS 1.2 connection over `tcp`, a connection on which the test may have sent something
/// already (a PROXY header, say).
pub fn tls_over(tcp: TcpStream) -> SslStream<TcpStream> {
    try_tls_over(tcp).expect("TLS handshake with the server")
}

/// As [`tls_over`], giving a failed handshake as an error.
pub fn try_tls_over(tcp: TcpStream) -> Result<SslStream<TcpStream>, String> {
    try_tls_presenting(tcp, None)
}

/// As [`tls_connect_from`], presenting the client certificate (and key) in the PEM file
/// `cert`.
pub fn tls_connect_with_cert_from(source: &str, addr: &str, cert: &Path) -> SslStream<TcpStream> {
    try_tls_presenting(connect_from(source, addr).unwrap(), Some(cert))
        .expect("TLS handshake with the server")
}

/// A TLS 1.2 connection over `tcp`, presenting the certificate and key in `cert` if given.
fn try_tls_presenting(tcp: TcpStream, cert: Option<&Path>) -> Result<SslStream<TcpStream>, String> {
    let mut ctx = SslConnector::builder(SslMethod::tls_client()).unwrap();
    ctx.set_min_proto_version(Some(SslVersion::TLS1_2)).unwrap();
    ctx.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
    ctx.set_verify(SslVerifyMode::NONE);
    if let Some(cert) = cert {
        ctx.set_certificate_chain_file(cert).unwrap();
        ctx.set_private_key_file(cert, openssl::ssl::SslFiletype::PEM)
            .unwrap();
    }
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    tcp.set_write_timeout(Some(PATIENCE)).unwrap();
    ctx.build()
        .configure()
        .unwrap()
        .verify_hostname(false)
        .connect("localhost", tcp)
        .map_err(|e| e.to_string())
}

/// Sends one request on a new connection and gives everything the server sends back.
pub fn exchange(addr: &str, request: &[u8]) -> Vec<u8> {
    let mut ssl = tls_connect(addr);
    ssl.write_all(request).unwrap();
    read_to_close(&mut ssl)
}

/// Reads until the peer closes (cleanly or not).
pub fn read_to_close(from: &mut impl Read) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A document framed for the account protocol.
pub fn frame(document: &str) -> Vec<u8> {
    frame_bytes(document.as_bytes())
}

/// Bytes framed for the account protocol.
pub fn frame_bytes(document: &[u8]) -> Vec<u8> {
    let mut out = ((document.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(document);
    out
}

/// Reads one framed reply.
pub fn read_reply(ssl: &mut SslStream<TcpStream>) -> String {
    try_read_reply(ssl).expect("a reply")
}

/// As [`read_reply`], `None` if the connection failed or ended first.
pub fn try_read_reply(ssl: &mut SslStream<TcpStream>) -> Option<String> {
    let mut header = [0u8; 4];
    ssl.read_exact(&mut header).ok()?;
    let len = u32::from_be_bytes(header) as usize;
    assert!((5..=65536).contains(&len), "reply length {len}");
    let mut body = vec![0u8; len - 4];
    ssl.read_exact(&mut body).ok()?;
    Some(String::from_utf8(body).expect("UTF-8 reply"))
}

/// The result code of a reply.
pub fn code(reply: &str) -> &str {
    let start = reply.find("code=\"").expect("a code") + 6;
    &reply[start..start + 4]
}

/// Sends a document and returns the reply.
pub fn call(ssl: &mut SslStream<TcpStream>, document: &str) -> String {
    ssl.write_all(&frame(document)).unwrap();
    read_reply(ssl)
}

/// A real HAProxy (Debian's `haproxy`, in the foreground) in TCP mode on a free loopback
/// port, round robin over `backends`, with a PROXY protocol v2 header on every connection
/// and health checks that carry one too. Stopped when dropped.
pub struct Haproxy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    pub fn start(backends: &[&Server]) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let port = pg::free_port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(n, s)| format!("    server s{n} 127.0.0.1:{}\n", s.port))
            .collect();
        let config = format!(
            "defaults\n    mode tcp\n    timeout connect 3s\n    timeout client 60s\n    \
             timeout server 60s\n    retries 3\n    option redispatch\n\
             frontend fleet\n    bind 127.0.0.1:{port}\n    default_backend instances\n\
             backend instances\n    balance roundrobin\n    \
             default-server send-proxy-v2 check-send-proxy check inter 300ms fall 1 rise 1\n    \
             tcp-check connect default linger\n{servers}"
        );
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy is not installed (apt-get install haproxy; .ci/run does)");
        // The probe passes through to an instance, as a client at 127.0.0.9.
        let started = Instant::now();
        while connect_from("127.0.0.9", &format!("127.0.0.1:{port}")).is_err() {
            assert!(started.elapsed() < PATIENCE, "haproxy never listened");
            thread::sleep(Duration::from_millis(20));
        }
        Haproxy {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Listening for Haproxy {
    fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
