//! The clients of a run: each drives its operations (handshakes, exchanges, commands or
//! hashes) until the run's duration or count is reached, and counts what failed, by kind.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use openssl::ssl::{SslConnector, SslSession, SslStream};

use super::options::{BenchConfig, Workload};
use super::report::Measured;
use crate::client::connect::{connect, connect_resuming};
use crate::client::connection::AccountConnection;
use crate::deadline::DeadlineStream;
use crate::error::{Error, Result};
use crate::password::{PasswordHash, Pbkdf2Params};
use crate::xml::account::Field;
use crate::xml::command::{Command, Login, MAX_COMMANDS_PER_SESSION, Update};
use crate::xml::legacy::{LEGACY_REQUEST_MAX, LEGACY_VALID_REPLY, legacy_request};
use crate::xml::reply::ResultCode;

/// A failed operation, named by its kind for counting.
type Failure = String;

/// A logged-in account session and the commands it has sent (the login included).
struct LoggedIn {
    conn: AccountConnection,
    commands: usize,
}

/// State one client keeps between operations.
#[derive(Default)]
struct ClientState {
    /// Resume mode: the TLS session to offer.
    tls_session: Option<SslSession>,
    /// Session mode: the account session the views are sent on.
    account: Option<LoggedIn>,
    /// Full and resume modes: handshakes by the cipher suite negotiated.
    ciphers: BTreeMap<&'static str, u64>,
}

/// Runs the clients until the duration or count is reached.
pub(super) fn drive(config: &BenchConfig, connector: &SslConnector) -> Measured {
    let started = Instant::now();
    let deadline = started + config.duration;
    let remaining = Arc::new(AtomicU64::new(config.count.unwrap_or(u64::MAX)));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = show_progress(done.clone(), stop.clone());
    let mut total = Measured::default();
    let results = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..config.clients {
            let (remaining, done, results) = (&remaining, &done, &results);
            s.spawn(move || {
                let mut state = ClientState::default();
                let mut mine = Measured::default();
                while Instant::now() < deadline || config.count.is_some() {
                    if remaining
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_err()
                    {
                        break;
                    }
                    // Session modes measure the commands, not the login before them.
                    let prepared = match config.workload {
                        Workload::Session | Workload::Update => {
                            ensure_session(config, connector, &mut state)
                        }
                        _ => Ok(()),
                    };
                    let t0 = Instant::now();
                    match prepared.and_then(|()| operate(config, connector, &mut state)) {
                        Ok(()) => mine.latencies_us.push(t0.elapsed().as_micros() as u64),
                        Err(kind) => *mine.errors.entry(kind).or_default() += 1,
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(session) = state.account.take() {
                    log_out(session);
                }
                for (cipher, n) in state.ciphers {
                    mine.ciphers.insert(cipher.to_string(), n);
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

/// Names a failure: what was being done, and the error's kind.
fn failure(what: &'static str) -> impl Fn(Error) -> Failure {
    move |e| format!("{what}: {}", error_kind(&e))
}

/// One operation of the workload.
fn operate(
    config: &BenchConfig,
    connector: &SslConnector,
    state: &mut ClientState,
) -> std::result::Result<(), Failure> {
    match config.workload {
        Workload::Hash => {
            let params = Pbkdf2Params::new(config.iterations).map_err(failure("hash"))?;
            PasswordHash::new(b"bench-password", params).map_err(failure("hash"))?;
            Ok(())
        }
        Workload::Full | Workload::Resume => legacy_exchange(config, connector, state),
        Workload::Login => {
            let session = log_in(config, connector)?;
            log_out(session);
            Ok(())
        }
        Workload::Session | Workload::Update => {
            let session = state.account.as_mut().expect("opened before the operation");
            session.commands += 1;
            let (command, name) = match config.workload {
                Workload::Update => (
                    Command::Update(Update {
                        changes: vec![(Field::FullName, format!("Bench {}", session.commands))],
                        version: None,
                    }),
                    "update",
                ),
                _ => (Command::View, "view"),
            };
            match session.conn.call(&command) {
                Ok(reply) => expect_success(reply.code),
                Err(e) => {
                    state.account = None;
                    Err(failure(name)(e))
                }
            }
        }
        Workload::Idle => unreachable!("idle mode holds sessions instead"),
    }
}

/// Session mode: a logged-in session with room for one more command (and the logout): the
/// one the client has, or a new one when it has none or has used it up. The server ends a
/// session after [`MAX_COMMANDS_PER_SESSION`] commands, so a long run moves to a new one
/// before that.
fn ensure_session(
    config: &BenchConfig,
    connector: &SslConnector,
    state: &mut ClientState,
) -> std::result::Result<(), Failure> {
    if let Some(session) = state
        .account
        .take_if(|s| s.commands + 2 > MAX_COMMANDS_PER_SESSION)
    {
        log_out(session);
    }
    if state.account.is_none() {
        state.account = Some(log_in(config, connector)?);
    }
    Ok(())
}

/// A new account session, logged in as the run's account.
fn log_in(
    config: &BenchConfig,
    connector: &SslConnector,
) -> std::result::Result<LoggedIn, Failure> {
    let mut conn =
        AccountConnection::open(&config.connect, connector, false).map_err(failure("handshake"))?;
    let login = Command::Login(Login {
        username: config.user.clone(),
        password: config.password.clone(),
    });
    expect_success(conn.call(&login).map_err(failure("login"))?.code)?;
    Ok(LoggedIn { conn, commands: 1 })
}

/// Ends an account session: logout, then close_notify. Its errors change no figure.
fn log_out(mut session: LoggedIn) {
    let _ = session.conn.call(&Command::Logout);
    session.conn.close();
}

fn expect_success(code: ResultCode) -> std::result::Result<(), Failure> {
    if code.is_success() {
        Ok(())
    } else {
        Err(format!("refused ({})", code.number()))
    }
}

/// A handshake (resumed, in resume mode, when the client has a TLS session) and the legacy
/// exchange.
fn legacy_exchange(
    config: &BenchConfig,
    connector: &SslConnector,
    state: &mut ClientState,
) -> std::result::Result<(), Failure> {
    let resume = config.workload == Workload::Resume;
    let offered = state.tls_session.as_ref().filter(|_| resume);
    let mut ssl = connect_with(config, connector, offered).map_err(failure("handshake"))?;
    if let Some(cipher) = ssl.ssl().current_cipher() {
        *state.ciphers.entry(cipher.name()).or_default() += 1;
    }
    if resume {
        if state.tls_session.is_some() && !ssl.ssl().session_reused() {
            state.tls_session = None;
            return Err("not resumed".into());
        }
        state.tls_session = ssl.ssl().session().map(|s| s.to_owned());
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

/// A connection, offering `tls_session` for resumption.
fn connect_with(
    config: &BenchConfig,
    connector: &SslConnector,
    tls_session: Option<&SslSession>,
) -> Result<SslStream<DeadlineStream>> {
    match tls_session {
        None => connect(&config.connect, connector),
        Some(session) => connect_resuming(&config.connect, connector, session),
    }
}

/// The kind of an error, for counting: its first words, without addresses and numbers.
fn error_kind(e: &Error) -> String {
    let text = e.to_string();
    let kind: String = text.split(':').next().unwrap_or_default().to_string();
    kind.chars().filter(|c| !c.is_ascii_digit()).collect()
}

/// Idle mode: opens `connections` sessions (each greeted once), holds them all, then sends
/// one command on each. Gives the figures and how many were held at once.
pub(super) fn hold_and_use(config: &BenchConfig, connector: &SslConnector) -> (Measured, usize) {
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
                    let result = AccountConnection::open(&config.connect, connector, false)
                        .and_then(|mut conn| conn.call(&Command::Hello).map(|_| conn));
                    match result {
                        Ok(conn) => opened.lock().unwrap_or_else(|e| e.into_inner()).push(conn),
                        Err(e) => {
                            *errors
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .entry(failure("open")(e))
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
    let mut measured = Measured {
        errors: errors.into_inner().unwrap_or_else(|e| e.into_inner()),
        ..Measured::default()
    };
    let chunk = conns.len().div_ceil(config.clients).max(1);
    let results: Mutex<Vec<Measured>> = Mutex::default();
    thread::scope(|s| {
        for part in conns.chunks_mut(chunk) {
            let results = &results;
            s.spawn(move || {
                let mut mine = Measured::default();
                for conn in part {
                    let t0 = Instant::now();
                    match conn.call(&Command::Hello) {
                        Ok(_) => mine.latencies_us.push(t0.elapsed().as_micros() as u64),
                        Err(e) => *mine.errors.entry(failure("use")(e)).or_default() += 1,
                    }
                }
                results.lock().unwrap_or_else(|e| e.into_inner()).push(mine);
            });
        }
    });
    for r in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        measured.merge(r);
    }
    measured.elapsed = started.elapsed();
    drop(conns);
    (measured, held)
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
