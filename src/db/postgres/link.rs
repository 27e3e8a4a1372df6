//! One connection to PostgreSQL that never waits past a deadline, and the hosts it is made to.
//!
//! A database server that hangs (its processes stopped, its machine frozen) keeps its
//! connections open: its kernel still acknowledges what is sent and answers keepalives, so
//! neither `TCP_USER_TIMEOUT` nor keepalives end them, and PostgreSQL's own
//! `statement_timeout` is never applied. So every call on a [`Link`] runs under the deadline of
//! the command it serves, on our side; a link that missed one, or whose server went away or
//! turned read-only, is [`Link::is_broken`] and the pool drops it, with every link made
//! before to that server when the server is to blame ([`Link::server_failed`]).
//!
//! The driver is tokio-postgres, run on a single-threaded runtime of the link's own (what the
//! blocking `postgres` crate does, which offers no deadline); [`Hosts::connect`] tries the
//! URL's hosts one by one, each within [`HOST_CONNECT_TIMEOUT`] (the driver's own
//! `connect_timeout` bounds only the TCP connect, not a server that accepts and never
//! answers), the host that served last first (after a round where none did, the next one).

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use tokio::runtime::Runtime;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, NoTls, Row, SimpleQueryMessage};

use crate::error::{Error, Result, with_causes};

/// How long one host may take to accept a connection, authenticate it and, for
/// `target_session_attrs=read-write`, say that it takes writes.
pub(super) const HOST_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A deadline missed: the database did not answer in time (the link is dropped).
#[derive(Debug)]
pub(super) struct NoAnswer;

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the database did not answer in time")
    }
}

impl std::error::Error for NoAnswer {}

/// The hosts of the database's URL, each with its own connection settings, and which of them
/// served last.
pub(super) struct Hosts {
    hosts: Vec<HostEntry>,
    preferred: AtomicUsize,
}

/// One host of the URL.
struct HostEntry {
    /// `HOST:PORT`, for errors.
    name: String,
    config: Config,
    /// Bumped when a link to this host breaks: links made before are not lent again.
    epoch: AtomicU64,
}

impl Hosts {
    /// The hosts of `config`, in its order (one entry for a URL with none, whose connect
    /// fails with the driver's reason).
    pub(super) fn new(config: &Config) -> Hosts {
        let count = config.get_hosts().len().max(config.get_hostaddrs().len());
        let hosts = if count == 0 {
            vec![HostEntry {
                name: "the database".into(),
                config: config.clone(),
                epoch: AtomicU64::new(0),
            }]
        } else {
            (0..count)
                .map(|i| {
                    let (name, config) = one_host(config, i);
                    HostEntry {
                        name,
                        config,
                        epoch: AtomicU64::new(0),
                    }
                })
                .collect()
        };
        Hosts {
            hosts,
            preferred: AtomicUsize::new(0),
        }
    }

    /// A link to the first host that takes it, trying the one that served last first (or,
    /// after a round where none did, the one after the last round's first), then the others in
    /// the URL's order; each host within [`HOST_CONNECT_TIMEOUT`].
    pub(super) fn connect(&self) -> std::result::Result<Link, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("cannot start the database connection's runtime: {e}"))?;
        let preferred = self.preferred.load(Ordering::Relaxed);
        let order =
            std::iter::once(preferred).chain((0..self.hosts.len()).filter(|&i| i != preferred));
        let mut failures = Vec::new();
        for i in order {
            let host = &self.hosts[i];
            // The timer is made inside the runtime, whose clock it needs.
            let connected = runtime.block_on(async {
                tokio::time::timeout(HOST_CONNECT_TIMEOUT, host.config.connect(NoTls)).await
            });
            match connected {
                Ok(Ok((client, connection))) => {
                    // Driven whenever the link waits on the runtime (it has no thread of its own).
                    runtime.spawn(connection);
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(Link {
                        runtime: Some(runtime),
                        client,
                        host: i,
                        epoch: host.epoch.load(Ordering::Relaxed),
                        deadline: Instant::now(),
                        state: LinkState::Sound,
                        in_transaction: false,
                    });
                }
                Ok(Err(e)) => failures.push(format!("{}: {}", host.name, with_causes(&e))),
                Err(_) => failures.push(format!(
                    "{}: no answer within {} s",
                    host.name,
                    HOST_CONNECT_TIMEOUT.as_secs()
                )),
            }
        }
        // Next time, start with the next host: a hung one first in line would cost every
        // attempt its whole timeout, and delay finding a primary promoted meanwhile.
        self.preferred
            .store((preferred + 1) % self.hosts.len(), Ordering::Relaxed);
        // Without waiting for a host name still being resolved on its threads.
        runtime.shutdown_background();
        Err(failures.join("; "))
    }

    /// Whether `link` may be lent again: not broken, and made after the last link to its host
    /// found that server failed (a server gone or hung leaves all its links so; they are
    /// dropped at once rather than failing commands one by one).
    pub(super) fn is_current(&self, link: &Link) -> bool {
        !link.is_broken() && self.hosts[link.host].epoch.load(Ordering::Relaxed) == link.epoch
    }

    /// Marks the links made so far to `link`'s host as stale, if `link` found its server
    /// failed.
    pub(super) fn note(&self, link: &Link) {
        if link.server_failed() {
            let epoch = &self.hosts[link.host].epoch;
            // Only the first link to see a break bumps it (later ones carry an older epoch).
            let _ = epoch.compare_exchange(
                link.epoch,
                link.epoch + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

/// The settings of `config` with its `i`th host only, and that host's name.
fn one_host(config: &Config, i: usize) -> (String, Config) {
    let mut single = Config::new();
    if let Some(user) = config.get_user() {
        single.user(user);
    }
    if let Some(password) = config.get_password() {
        single.password(password);
    }
    if let Some(dbname) = config.get_dbname() {
        single.dbname(dbname);
    }
    if let Some(options) = config.get_options() {
        single.options(options);
    }
    if let Some(name) = config.get_application_name() {
        single.application_name(name);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        single.connect_timeout(*timeout);
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        single.tcp_user_timeout(*timeout);
    }
    single
        .ssl_mode(config.get_ssl_mode())
        .keepalives(config.get_keepalives())
        .keepalives_idle(config.get_keepalives_idle())
        .target_session_attrs(config.get_target_session_attrs())
        .channel_binding(config.get_channel_binding());
    if let Some(interval) = config.get_keepalives_interval() {
        single.keepalives_interval(interval);
    }
    if let Some(retries) = config.get_keepalives_retries() {
        single.keepalives_retries(retries);
    }
    let ports = config.get_ports();
    let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    single.port(port);
    let host = config.get_hosts().get(i);
    let name = match host {
        Some(Host::Tcp(host)) => {
            single.host(host);
            if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        }
        Some(Host::Unix(path)) => {
            single.host_path(path);
            format!("{}:{port}", path.display())
        }
        None => String::new(),
    };
    match config.get_hostaddrs().get(i) {
        Some(addr) => {
            single.hostaddr(*addr);
            let addr = std::net::SocketAddr::new(*addr, port).to_string();
            (if name.is_empty() { addr } else { name }, single)
        }
        None => (name, single),
    }
}

/// How long the server is given before a deadline missed counts against it, not only against
/// the link: its own `statement_timeout` (2 s, set with each statement) and a margin. A
/// statement given less (its command waited for a pooled connection first) may miss its
/// deadline on a server that answers; only its link is dropped then.
pub(super) const SERVER_SILENT_AFTER: Duration = Duration::from_millis(2250);

/// A connection to one host: every call waits no later than the deadline of the command it
/// serves ([`Link::set_deadline`]).
pub(super) struct Link {
    /// Always there but in `drop`, which shuts it down without waiting for its threads (a
    /// host name being resolved, say).
    runtime: Option<Runtime>,
    client: Client,
    /// Its host, in [`Hosts`], and that host's epoch when it was made.
    host: usize,
    epoch: u64,
    deadline: Instant,
    state: LinkState,
    /// Inside a transaction that was not ended (committed or rolled back) yet.
    in_transaction: bool,
}

/// What a link's calls have shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkState {
    Sound,
    /// It missed a deadline the server could have met: not to be used again.
    Broken,
    /// Its server failed: it closed the connection, turned read-only, is shutting down, or
    /// did not answer in [`SERVER_SILENT_AFTER`]: neither this link nor any made before to
    /// that server is to be used again.
    ServerFailed,
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Link {
    /// Calls from now on give up at `deadline`.
    pub(super) fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// Whether the link must not be used again: it missed a deadline (what it waited for may
    /// still come), its server failed, or a transaction on it was not ended.
    pub(super) fn is_broken(&self) -> bool {
        !self.is_usable() || self.in_transaction
    }

    /// Whether a statement may still be sent on it (to end its transaction, say): it missed
    /// no deadline and its server did not fail.
    pub(super) fn is_usable(&self) -> bool {
        self.state == LinkState::Sound && !self.client.is_closed()
    }

    /// Whether its server failed ([`LinkState::ServerFailed`]), or closed the connection.
    pub(super) fn server_failed(&self) -> bool {
        self.state == LinkState::ServerFailed || self.client.is_closed()
    }

    /// Marks the link inside a transaction (before its `BEGIN`), or out of it again (after
    /// its `COMMIT` or `ROLLBACK` succeeded): a link left inside one is never lent again.
    pub(super) fn set_in_transaction(&mut self, inside: bool) {
        self.in_transaction = inside;
    }

    fn runtime(&self) -> &Runtime {
        self.runtime
            .as_ref()
            .expect("a link's runtime lives until it is dropped")
    }

    /// Runs one or more statements without parameters (PostgreSQL's simple Query).
    pub(super) fn simple_query(&mut self, sql: &str) -> Result<Vec<SimpleQueryMessage>> {
        let started = Instant::now();
        let answer = wait(self.runtime(), self.deadline, self.client.simple_query(sql));
        self.settle(answer, started)
    }

    /// The rows of `statement`, its parameters bound with their types (one round trip, no
    /// named statement), and how many rows it changed.
    pub(super) fn query_typed(
        &mut self,
        statement: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<(Vec<Row>, u64)> {
        let started = Instant::now();
        let client = &self.client;
        let answer = wait(self.runtime(), self.deadline, async move {
            let stream = client
                .query_typed_raw(statement, params.iter().map(|(v, t)| (*v, t.clone())))
                .await?;
            let mut stream = std::pin::pin!(stream);
            let mut rows = Vec::new();
            while let Some(row) = stream.try_next().await? {
                rows.push(row);
            }
            let changed = stream.rows_affected().unwrap_or(rows.len() as u64);
            Ok((rows, changed))
        });
        self.settle(answer, started)
    }

    /// Marks the link by what `answer`, to a call made at `started`, says of it and its server.
    fn settle<T>(&mut self, answer: Waited<T>, started: Instant) -> Result<T> {
        match answer {
            Waited::Answered(Ok(value)) => Ok(value),
            Waited::Answered(Err(e)) => {
                if server_failed(&e) {
                    self.state = LinkState::ServerFailed;
                }
                Err(e.into())
            }
            Waited::TooLate => {
                let given = self.deadline.saturating_duration_since(started);
                self.state = if given >= SERVER_SILENT_AFTER {
                    LinkState::ServerFailed
                } else {
                    LinkState::Broken
                };
                Err(Error::Store(Box::new(NoAnswer)))
            }
        }
    }
}

/// What waiting for the database came to.
enum Waited<T> {
    Answered(std::result::Result<T, tokio_postgres::Error>),
    TooLate,
}

/// Runs `call` on `runtime` until it ends or `deadline` passes.
fn wait<T>(
    runtime: &Runtime,
    deadline: Instant,
    call: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> Waited<T> {
    let left = deadline.saturating_duration_since(Instant::now());
    match runtime.block_on(async { tokio::time::timeout(left, call).await }) {
        Ok(answer) => Waited::Answered(answer),
        Err(_) => Waited::TooLate,
    }
}

/// Whether a call that failed with `e` shows its server failed: the connection ended or
/// failed (an I/O error), or the server no longer takes writes (a primary turned standby:
/// SQLSTATE 25006), is shutting down or starting, or ended the connection (class 08). A
/// statement's own error (a constraint, a timeout of its own) or one of the client's
/// (a value that does not convert) says nothing of the server.
fn server_failed(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()) {
        return true;
    }
    let Some(db) = e.as_db_error() else {
        return false;
    };
    let code = db.code();
    *code == SqlState::READ_ONLY_SQL_TRANSACTION
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || code.code().starts_with("08")
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A "server" that accepts connections (the kernel does, as for a stopped PostgreSQL) and
    /// never answers.
    fn silent_server() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    #[test]
    fn a_host_that_accepts_and_never_answers_is_given_up_within_the_host_timeout() {
        let (_listener, port) = silent_server();
        let config: Config = format!("postgres://app@127.0.0.1:{port}/accounts")
            .parse()
            .unwrap();
        let started = Instant::now();
        let Err(why) = Hosts::new(&config).connect() else {
            panic!("connected to a silent server");
        };
        let waited = started.elapsed();
        assert!(waited >= HOST_CONNECT_TIMEOUT, "{waited:?}");
        assert!(waited < HOST_CONNECT_TIMEOUT * 2, "{waited:?}");
        assert_eq!(why, format!("127.0.0.1:{port}: no answer within 2 s"));
    }

    #[test]
    fn each_host_is_tried_and_each_failure_named() {
        let (_listener, silent) = silent_server();
        let closed = {
            let (listener, port) = silent_server();
            drop(listener);
            port
        };
        let config: Config =
            format!("postgres://app@127.0.0.1:{silent},127.0.0.1:{closed}/accounts")
                .parse()
                .unwrap();
        let Err(why) = Hosts::new(&config).connect() else {
            panic!("connected");
        };
        assert!(
            why.starts_with(&format!(
                "127.0.0.1:{silent}: no answer within 2 s; 127.0.0.1:{closed}: "
            )),
            "{why}"
        );
        assert!(why.contains("refused"), "{why}");
    }

    #[test]
    fn a_round_where_no_host_answered_is_followed_by_one_from_the_next_host() {
        let closed = || {
            let (listener, port) = silent_server();
            drop(listener);
            port
        };
        let (first, second) = (closed(), closed());
        let config: Config = format!("postgres://app@127.0.0.1:{first},127.0.0.1:{second}/db")
            .parse()
            .unwrap();
        let hosts = Hosts::new(&config);
        let starts = |hosts: &Hosts| {
            let why = hosts.connect().err().expect("nothing listens");
            why.split(':').nth(1).unwrap().to_string()
        };
        assert_eq!(starts(&hosts), first.to_string());
        assert_eq!(starts(&hosts), second.to_string());
        assert_eq!(starts(&hosts), first.to_string());
    }

    #[test]
    fn the_host_that_served_is_tried_first() {
        let (_listener, silent) = silent_server();
        let live = crate::db::postgres::test_cluster::cluster().port;
        let config: Config =
            format!("postgres://postgres@127.0.0.1:{silent},127.0.0.1:{live}/postgres")
                .parse()
                .unwrap();
        let hosts = Hosts::new(&config);
        let started = Instant::now();
        let first = hosts.connect().expect("the live host");
        assert!(
            started.elapsed() >= HOST_CONNECT_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(first.host, 1);
        let started = Instant::now();
        let second = hosts.connect().expect("the live host");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(second.host, 1);
    }

    #[test]
    fn one_host_keeps_the_urls_settings() {
        let config: Config = "postgres://app:pw@db1:5433,db2/accounts?application_name=x\
                              &target_session_attrs=read-write&keepalives_idle=7"
            .parse()
            .unwrap();
        let hosts = Hosts::new(&config);
        let names: Vec<&str> = hosts.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["db1:5433", "db2:5432"]);
        let second = &hosts.hosts[1].config;
        assert_eq!(second.get_hosts(), [Host::Tcp("db2".into())]);
        assert_eq!(second.get_user(), Some("app"));
        assert_eq!(second.get_password(), Some(&b"pw"[..]));
        assert_eq!(second.get_dbname(), Some("accounts"));
        assert_eq!(second.get_application_name(), Some("x"));
        assert_eq!(second.get_keepalives_idle(), Duration::from_secs(7));
        assert_eq!(
            second.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
    }
}
