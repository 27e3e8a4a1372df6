//! The load generator behind `./bench`: N concurrent clients drive a TLS 1.2 server for a
//! duration or a count of operations, and it reports operations per second, latency
//! percentiles, errors by kind and, given the server's process id, the server's CPU time per
//! operation and its peak memory.
//!
//! Modes (one operation each):
//! - `full`: a full handshake and the legacy exchange (`--handshake-only`: no exchange, so
//!   any TLS 1.2 server can be measured);
//! - `resume`: a resumed handshake (the client's last session) and the legacy exchange
//!   (`--handshake-only` likewise);
//! - `login`: a full handshake, then `login` and `logout` in the account protocol;
//! - `session`: one persistent logged-in session per client, each operation a `view`;
//! - `idle`: hold `--connections` sessions open at once, then use each of them once;
//! - `hash`: no server: one PBKDF2-HMAC-SHA512 password hash at `--iterations`, the cost a
//!   login adds.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use getopts::Options;
use openssl::ssl::{SslConnector, SslSession};
use serde::Serialize;

use crate::cli::CommandLine;
use crate::client::{ClientConfig, connect, init_ctx};
use crate::command::{Command, Login};
use crate::connection::AccountConnection;
use crate::error::{Error, Result};
use crate::password::{DEFAULT_ITERATIONS, PasswordHash, Pbkdf2Params};
use crate::reply::ResultCode;
use crate::xml::{LEGACY_REQUEST_MAX, LEGACY_VALID_REPLY, legacy_request};

const ABOUT: &str = "Drives a TLS 1.2 server with concurrent clients and reports its speed.
Modes: full, resume, login, session, idle, hash (see --mode).";

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A full handshake and the legacy exchange.
    Full,
    /// A resumed handshake and the legacy exchange.
    Resume,
    /// A full handshake, login and logout.
    Login,
    /// `view` on a persistent logged-in session.
    Session,
    /// Many sessions held open, then each used once.
    Idle,
    /// A password hash, no server.
    Hash,
}

impl Mode {
    const ALL: [Mode; 6] = [
        Mode::Full,
        Mode::Resume,
        Mode::Login,
        Mode::Session,
        Mode::Idle,
        Mode::Hash,
    ];

    /// The mode's name on the command line and in the figures.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Resume => "resume",
            Mode::Login => "login",
            Mode::Session => "session",
            Mode::Idle => "idle",
            Mode::Hash => "hash",
        }
    }

    fn from_name(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Everything `bench` is told.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Where and how to connect (trust, timeouts).
    pub client: ClientConfig,
    /// What to measure.
    pub mode: Mode,
    /// `full` and `resume`: only the handshake, no exchange.
    pub handshake_only: bool,
    /// `hash`: PBKDF2 iterations.
    pub iterations: u32,
    /// Concurrent clients.
    pub clients: usize,
    /// How long to run (unless `count` is given).
    pub duration: Duration,
    /// How many operations to run, in all.
    pub count: Option<u64>,
    /// The account used (legacy exchange, login, session).
    pub user: String,
    /// Its password.
    pub password: String,
    /// Sessions held open in `idle` mode.
    pub connections: usize,
    /// The server's process id, for its CPU time and memory.
    pub pid: Option<u32>,
    /// Where to write the figures as JSON.
    pub json: Option<PathBuf>,
}

/// The figures of one run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// What was measured.
    pub mode: Mode,
    /// Concurrent clients.
    pub clients: usize,
    /// Operations that succeeded.
    pub operations: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Successful operations per second.
    pub ops_per_second: f64,
    /// Latency percentiles of successful operations, in milliseconds.
    pub latency_ms: Latency,
    /// Failed operations by kind.
    pub errors: BTreeMap<String, u64>,
    /// The server's CPU seconds per successful operation (with `--pid`).
    pub server_cpu_ms_per_op: Option<f64>,
    /// The server's CPU seconds during the run (with `--pid`).
    pub server_cpu_seconds: Option<f64>,
    /// The server's largest resident memory seen during the run, in KiB (with `--pid`).
    pub server_peak_rss_kib: Option<u64>,
    /// `idle` mode: sessions held open at once.
    pub held: Option<usize>,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// The `bench` program.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let cli = CommandLine::new(
        &args,
        "usage: {argv0} [options] <hostname> <portnum>",
        ABOUT,
        2..=2,
    );
    let config = match parse_config(&cli, &args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match run(&config) {
        Ok(report) => {
            print!("{}", report.text());
            if let Some(path) = &config.json {
                let json = serde_json::to_string_pretty(&report).expect("figures serialise");
                if let Err(e) = std::fs::write(path, json + "\n") {
                    return cli.fail(&Error::io(format!("cannot write {}", path.display()), e));
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => cli.fail(&e),
    }
}

fn parse_config(cli: &CommandLine, args: &[String]) -> Result<BenchConfig, ExitCode> {
    let mut opts = Options::new();
    opts.optopt(
        "m",
        "mode",
        "full, resume, login, session, idle or hash [full]",
        "MODE",
    );
    opts.optflag(
        "",
        "handshake-only",
        "full and resume: the handshake only, no exchange",
    );
    opts.optopt(
        "",
        "iterations",
        &format!("hash: PBKDF2 iterations [{DEFAULT_ITERATIONS}]"),
        "N",
    );
    opts.optopt("c", "clients", "concurrent clients [16]", "N");
    opts.optopt("d", "duration", "seconds to run [10]", "SECS");
    opts.optopt(
        "n",
        "count",
        "operations to run, instead of a duration",
        "N",
    );
    opts.optopt("", "user", "the account used [aticle]", "NAME");
    opts.optopt(
        "",
        "password-file",
        "the account's password, first line [the demo password 123]",
        "FILE",
    );
    opts.optopt(
        "",
        "connections",
        "idle mode: sessions held open at once [1000]",
        "M",
    );
    opts.optopt(
        "",
        "pid",
        "the server's process id, for its CPU time and memory",
        "PID",
    );
    opts.optopt("", "json", "also write the figures to FILE as JSON", "FILE");
    opts.optopt(
        "",
        "cafile",
        "trust the server certificates in this PEM file [./mycert.pem]",
        "FILE",
    );
    opts.optflag("", "insecure", "do not verify the server's certificate");
    opts.optopt(
        "",
        "timeout",
        "seconds each operation may take [30]",
        "SECS",
    );
    let m = cli.parse(opts, args)?;
    let mode_name = m.opt_str("mode").unwrap_or_else(|| "full".into());
    let mode = Mode::from_name(&mode_name)
        .ok_or_else(|| cli.usage_error(&format!("--mode: no mode {mode_name:?}")))?;
    let clients: usize = cli.number(&m, "clients", 16)?;
    let connections: usize = cli.number(&m, "connections", 1000)?;
    let timeout: u64 = cli.number(&m, "timeout", 30)?;
    if clients == 0 || connections == 0 || timeout == 0 {
        return Err(cli.usage_error("--clients, --connections and --timeout must be at least 1"));
    }
    let password = match m.opt_str("password-file") {
        None => "123".to_string(),
        Some(file) => std::fs::read_to_string(&file)
            .map(|text| text.lines().next().unwrap_or_default().to_string())
            .map_err(|e| cli.fail(&Error::file("password file", file.as_ref(), e)))?,
    };
    Ok(BenchConfig {
        client: ClientConfig {
            host: m.free[0]
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: cli.port(&m.free[1])?,
            cafile: m.opt_str("cafile").map(PathBuf::from),
            insecure: m.opt_present("insecure"),
            cert: None,
            timeout: Duration::from_secs(timeout),
            trace: false,
            reuse_session: None,
        },
        mode,
        handshake_only: m.opt_present("handshake-only"),
        iterations: cli.number(&m, "iterations", DEFAULT_ITERATIONS)?,
        clients,
        duration: Duration::from_secs(cli.number(&m, "duration", 10)?),
        count: m
            .opt_str("count")
            .map(|_| cli.number(&m, "count", 0u64))
            .transpose()?,
        user: m.opt_str("user").unwrap_or_else(|| "aticle".into()),
        password,
        connections,
        pid: m
            .opt_str("pid")
            .map(|_| cli.number(&m, "pid", 0u32))
            .transpose()?,
        json: m.opt_str("json").map(PathBuf::from),
    })
}

/// Runs the benchmark.
pub fn run(config: &BenchConfig) -> Result<Report> {
    // Idle mode holds thousands of sockets.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        log::warn!("cannot raise the open-file limit: {e}");
    }
    let connector = init_ctx(&config.client)?;
    let server = config.pid.map(ServerWatch::start).transpose()?;
    let (outcome, held) = if config.mode == Mode::Idle {
        hold_and_use(config, &connector)?
    } else {
        (drive(config, &connector), None)
    };
    let (cpu, peak) = match server {
        Some(watch) => {
            let (cpu, peak) = watch.finish()?;
            (Some(cpu), Some(peak))
        }
        None => (None, None),
    };
    Ok(outcome.report(config, cpu, peak, held))
}

/// What the clients measured.
#[derive(Default)]
struct Outcome {
    latencies_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
    elapsed: Duration,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.latencies_us.extend(other.latencies_us);
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
    }

    fn report(
        mut self,
        config: &BenchConfig,
        cpu: Option<f64>,
        peak: Option<u64>,
        held: Option<usize>,
    ) -> Report {
        self.latencies_us.sort_unstable();
        let ms = |us: u64| us as f64 / 1000.0;
        let at = |q: f64| {
            let n = self.latencies_us.len();
            if n == 0 {
                0.0
            } else {
                ms(self.latencies_us[((n as f64 * q).ceil() as usize).clamp(1, n) - 1])
            }
        };
        let operations = self.latencies_us.len() as u64;
        let seconds = self.elapsed.as_secs_f64();
        Report {
            mode: config.mode,
            clients: config.clients,
            operations,
            seconds,
            ops_per_second: operations as f64 / seconds.max(1e-9),
            latency_ms: Latency {
                p50: at(0.50),
                p99: at(0.99),
                max: at(1.0),
            },
            errors: self.errors,
            server_cpu_ms_per_op: cpu.map(|c| c * 1000.0 / operations.max(1) as f64),
            server_cpu_seconds: cpu,
            server_peak_rss_kib: peak,
            held,
        }
    }
}

impl Report {
    /// The figures as text, one line each.
    pub fn text(&self) -> String {
        let errors = if self.errors.is_empty() {
            "none".to_string()
        } else {
            self.errors
                .iter()
                .map(|(kind, n)| format!("{n} {kind}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = format!(
            "mode          {}\nclients       {}\noperations    {} in {:.2} s: {:.1} per second\n\
             latency       p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms\nerrors        {errors}\n",
            self.mode.name(),
            self.clients,
            self.operations,
            self.seconds,
            self.ops_per_second,
            self.latency_ms.p50,
            self.latency_ms.p99,
            self.latency_ms.max,
        );
        if let Some(held) = self.held {
            out += &format!("held open     {held} sessions at once\n");
        }
        if let (Some(per_op), Some(total)) = (self.server_cpu_ms_per_op, self.server_cpu_seconds) {
            out += &format!("server CPU    {per_op:.3} ms per operation ({total:.2} s in all)\n");
        }
        if let Some(peak) = self.server_peak_rss_kib {
            out += &format!(
                "server memory peak {:.1} MiB resident\n",
                peak as f64 / 1024.0
            );
        }
        out
    }
}

/// State one client keeps between operations.
#[derive(Default)]
struct ClientState {
    session: Option<SslSession>,
    account: Option<AccountConnection>,
}

/// Runs the clients until the duration or count is reached.
fn drive(config: &BenchConfig, connector: &SslConnector) -> Outcome {
    let started = Instant::now();
    let deadline = started + config.duration;
    let remaining = Arc::new(AtomicU64::new(config.count.unwrap_or(u64::MAX)));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = show_progress(done.clone(), stop.clone());
    let mut total = Outcome::default();
    let results = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..config.clients {
            let (remaining, done, results) = (&remaining, &done, &results);
            s.spawn(move || {
                let mut state = ClientState::default();
                let mut mine = Outcome::default();
                // Session mode measures the commands, not the login before them.
                if config.mode == Mode::Session
                    && let Err(kind) = open_session(config, connector, &mut state)
                {
                    *mine.errors.entry(kind).or_default() += 1;
                }
                while Instant::now() < deadline || config.count.is_some() {
                    if remaining
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_err()
                    {
                        break;
                    }
                    let t0 = Instant::now();
                    match operate(config, connector, &mut state) {
                        Ok(()) => mine.latencies_us.push(t0.elapsed().as_micros() as u64),
                        Err(kind) => *mine.errors.entry(kind).or_default() += 1,
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                results.lock().unwrap_or_else(|e| e.into_inner()).push(mine);
            });
        }
    });
    total.elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    if let Some(p) = progress {
        let _ = p.join();
    }
    for outcome in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        total.merge(outcome);
    }
    total
}

/// One operation of the mode; an error is named by its kind.
fn operate(
    config: &BenchConfig,
    connector: &SslConnector,
    state: &mut ClientState,
) -> std::result::Result<(), String> {
    fn kind(what: &'static str) -> impl Fn(Error) -> String {
        move |e| format!("{what}: {}", error_kind(&e))
    }
    match config.mode {
        Mode::Hash => {
            let params = Pbkdf2Params::new(config.iterations).map_err(kind("hash"))?;
            PasswordHash::new(b"bench-password", params).map_err(kind("hash"))?;
            Ok(())
        }
        Mode::Full | Mode::Resume => legacy_exchange(config, connector, state),
        Mode::Login => {
            let mut conn =
                AccountConnection::open(&config.client, connector).map_err(kind("handshake"))?;
            expect_success(
                conn.call(&login_command(config))
                    .map_err(kind("login"))?
                    .code,
            )?;
            let _ = conn.call(&Command::Logout);
            conn.close();
            Ok(())
        }
        Mode::Session => {
            if state.account.is_none() {
                open_session(config, connector, state)?;
            }
            let conn = state.account.as_mut().expect("opened above");
            match conn.call(&Command::View) {
                Ok(reply) => expect_success(reply.code),
                Err(e) => {
                    state.account = None;
                    Err(kind("view")(e))
                }
            }
        }
        Mode::Idle => unreachable!("idle mode holds sessions instead"),
    }
}

/// Session mode: a logged-in session for this client.
fn open_session(
    config: &BenchConfig,
    connector: &SslConnector,
    state: &mut ClientState,
) -> std::result::Result<(), String> {
    let describe = |what: &str, e: Error| format!("{what}: {}", error_kind(&e));
    let mut conn =
        AccountConnection::open(&config.client, connector).map_err(|e| describe("handshake", e))?;
    let reply = conn
        .call(&login_command(config))
        .map_err(|e| describe("login", e))?;
    expect_success(reply.code)?;
    state.account = Some(conn);
    Ok(())
}

fn login_command(config: &BenchConfig) -> Command {
    Command::Login(Login {
        username: config.user.clone(),
        password: config.password.clone(),
    })
}

fn expect_success(code: ResultCode) -> std::result::Result<(), String> {
    if code.is_success() {
        Ok(())
    } else {
        Err(format!("refused ({})", code.number()))
    }
}

/// A handshake (resumed, in resume mode, when the client has a session) and the legacy
/// exchange.
fn legacy_exchange(
    config: &BenchConfig,
    connector: &SslConnector,
    state: &mut ClientState,
) -> std::result::Result<(), String> {
    let resume = config.mode == Mode::Resume;
    let mut ssl = connect_with(config, connector, state.session.as_ref().filter(|_| resume))
        .map_err(|e| format!("handshake: {}", error_kind(&e)))?;
    if resume {
        if state.session.is_some() && !ssl.ssl().session_reused() {
            state.session = None;
            return Err("not resumed".into());
        }
        state.session = ssl.ssl().session().map(|s| s.to_owned());
    }
    if config.handshake_only {
        let _ = ssl.shutdown();
        return Ok(());
    }
    let request = legacy_request(config.user.as_bytes(), config.password.as_bytes());
    ssl.write_all(&request)
        .map_err(|e| format!("send: {}", e.kind()))?;
    let mut reply = Vec::with_capacity(LEGACY_VALID_REPLY.len());
    let mut buf = [0u8; LEGACY_REQUEST_MAX];
    loop {
        match ssl.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if reply.is_empty() => return Err(format!("receive: {}", e.kind())),
            Err(_) => break,
        }
    }
    let _ = ssl.shutdown();
    if reply == LEGACY_VALID_REPLY {
        Ok(())
    } else {
        Err("wrong reply".into())
    }
}

/// [`connect`], offering `session` for resumption.
fn connect_with(
    config: &BenchConfig,
    connector: &SslConnector,
    session: Option<&SslSession>,
) -> Result<openssl::ssl::SslStream<crate::deadline::DeadlineStream>> {
    match session {
        None => connect(&config.client, connector),
        Some(session) => crate::client::connect_resuming(&config.client, connector, session),
    }
}

/// The kind of an error, for counting: its first words, without addresses and numbers.
fn error_kind(e: &Error) -> String {
    let text = e.to_string();
    let kind: String = text.split(':').next().unwrap_or_default().to_string();
    kind.chars().filter(|c| !c.is_ascii_digit()).collect()
}

/// Idle mode: opens `connections` sessions (each greeted once), holds them all, then sends
/// one command on each.
fn hold_and_use(
    config: &BenchConfig,
    connector: &SslConnector,
) -> Result<(Outcome, Option<usize>)> {
    let started = Instant::now();
    let per_client = config.connections.div_ceil(config.clients);
    let opened: Mutex<Vec<AccountConnection>> = Mutex::new(Vec::new());
    let errors: Mutex<BTreeMap<String, u64>> = Mutex::default();
    thread::scope(|s| {
        for c in 0..config.clients {
            let n = per_client.min(config.connections.saturating_sub(c * per_client));
            let (opened, errors) = (&opened, &errors);
            s.spawn(move || {
                for _ in 0..n {
                    let result = AccountConnection::open(&config.client, connector)
                        .and_then(|mut conn| conn.call(&Command::Hello).map(|_| conn));
                    match result {
                        Ok(conn) => opened.lock().unwrap_or_else(|e| e.into_inner()).push(conn),
                        Err(e) => {
                            *errors
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .entry(format!("open: {}", error_kind(&e)))
                                .or_default() += 1;
                        }
                    }
                }
            });
        }
    });
    let mut conns = opened.into_inner().unwrap_or_else(|e| e.into_inner());
    let held = conns.len();
    eprintln!("holding {held} sessions open; now using each once");
    let mut outcome = Outcome {
        errors: errors.into_inner().unwrap_or_else(|e| e.into_inner()),
        ..Outcome::default()
    };
    let chunk = conns.len().div_ceil(config.clients).max(1);
    let results: Mutex<Vec<Outcome>> = Mutex::default();
    thread::scope(|s| {
        for part in conns.chunks_mut(chunk) {
            let results = &results;
            s.spawn(move || {
                let mut mine = Outcome::default();
                for conn in part {
                    let t0 = Instant::now();
                    match conn.call(&Command::Hello) {
                        Ok(_) => mine.latencies_us.push(t0.elapsed().as_micros() as u64),
                        Err(e) => {
                            *mine
                                .errors
                                .entry(format!("use: {}", error_kind(&e)))
                                .or_default() += 1;
                        }
                    }
                }
                results.lock().unwrap_or_else(|e| e.into_inner()).push(mine);
            });
        }
    });
    for r in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        outcome.merge(r);
    }
    outcome.elapsed = started.elapsed();
    drop(conns);
    Ok((outcome, Some(held)))
}

/// Prints a progress line every second when stderr is a terminal.
fn show_progress(done: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> Option<thread::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(thread::spawn(move || {
        let started = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(250));
            let n = done.load(Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64();
            eprint!(
                "\r{n} operations, {:.0} per second   ",
                n as f64 / secs.max(1e-9)
            );
        }
        eprintln!();
    }))
}

/// Watches a server process: its CPU time from the start, and its largest resident memory.
struct ServerWatch {
    pid: u32,
    cpu_at_start: f64,
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: thread::JoinHandle<()>,
}

impl ServerWatch {
    fn start(pid: u32) -> Result<ServerWatch> {
        let cpu_at_start = cpu_seconds(pid)?;
        let peak_kib = Arc::new(AtomicU64::new(resident_kib(pid).unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak_kib, stop) = (peak_kib.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(kib) = resident_kib(pid) {
                        peak_kib.fetch_max(kib, Ordering::Relaxed);
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Ok(ServerWatch {
            pid,
            cpu_at_start,
            peak_kib,
            stop,
            sampler,
        })
    }

    /// CPU seconds used since the start, and the peak resident KiB.
    fn finish(self) -> Result<(f64, u64)> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.sampler.join();
        let cpu = cpu_seconds(self.pid)? - self.cpu_at_start;
        Ok((cpu, self.peak_kib.load(Ordering::Relaxed)))
    }
}

/// User and system CPU seconds of a process, all its threads (from /proc/PID/stat).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat =
        std::fs::read_to_string(&path).map_err(|e| Error::io(format!("cannot read {path}"), e))?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        return Err(Error::Config(format!("cannot read the CPU time in {path}")));
    };
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((user + system) / per_second.max(1.0))
}

/// Resident memory of a process in KiB (VmRSS in /proc/PID/status).
fn resident_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).map_err(|e| Error::io(format!("cannot read {path}"), e))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| Error::Config(format!("no VmRSS in {path}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let outcome = Outcome {
            latencies_us: (1..=1000).rev().map(|n| n * 1000).collect(),
            errors: BTreeMap::new(),
            elapsed: Duration::from_secs(2),
        };
        let config = BenchConfig {
            client: ClientConfig {
                host: "h".into(),
                port: 1,
                cafile: None,
                insecure: false,
                cert: None,
                timeout: Duration::from_secs(1),
                trace: false,
                reuse_session: None,
            },
            mode: Mode::Full,
            handshake_only: false,
            iterations: 1000,
            clients: 4,
            duration: Duration::from_secs(2),
            count: None,
            user: "u".into(),
            password: "p".into(),
            connections: 1,
            pid: None,
            json: None,
        };
        let report = outcome.report(&config, Some(1.0), Some(2048), None);
        assert_eq!(report.operations, 1000);
        assert_eq!(report.ops_per_second, 500.0);
        assert_eq!(report.latency_ms.p50, 500.0);
        assert_eq!(report.latency_ms.p99, 990.0);
        assert_eq!(report.latency_ms.max, 1000.0);
        assert_eq!(report.server_cpu_ms_per_op, Some(1.0));
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"mode\":\"full\""), "{json}");
    }

    #[test]
    fn our_own_cpu_time_and_memory_can_be_read() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(resident_kib(pid).unwrap() > 0);
    }
}
