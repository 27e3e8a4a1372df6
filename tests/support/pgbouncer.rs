//! A real PgBouncer in front of a test cluster, for the library's unit tests and the
//! integration tests (a module of `postgres.rs`, whose helpers it uses): [`PgBouncer::start`] writes a
//! configuration into a temporary directory and runs `pgbouncer` in the foreground as a child
//! of this process, as the `postgres` user when the tests run as root (PgBouncer refuses to run
//! as root). It gets SIGTERM (PgBouncer's immediate shutdown) when dropped, or when the test
//! process ends, however it ends.
//!
//! The settings are PgBouncer's defaults except `pool_mode = transaction`: a server connection
//! is lent for one transaction only, so a named prepared statement made in one transaction is
//! gone in the next, and startup parameters such as `options` are refused. Every database of
//! the cluster is reached (`* = host=127.0.0.1 port=...`), as the user `postgres` with the
//! password [`PASSWORD`] (PgBouncer checks it; the cluster behind it trusts everyone).
//!
//! The binary is `$PGBOUNCER`, else `pgbouncer` on the `PATH` or in `/usr/sbin` (Debian 12's
//! `pgbouncer` package, 1.18); without it the tests fail, saying so: they never skip.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::{free_port, run_as_postgres, spawn_as};

/// The password of the user `postgres` at PgBouncer (the clients' side).
pub const PASSWORD: &str = "bouncer-test-secret";

/// How long [`PgBouncer::start`] waits for PgBouncer to accept a connection.
const PATIENCE: Duration = Duration::from_secs(30);

/// A running PgBouncer, stopped when dropped.
pub struct PgBouncer {
    port: u16,
    child: Child,
    /// Its configuration, log and pid file; removed when dropped, after it stopped.
    _dir: tempfile::TempDir,
}

impl PgBouncer {
    /// A PgBouncer in transaction pooling mode in front of the PostgreSQL server on
    /// `127.0.0.1:pg_port`, accepting connections.
    pub fn start(pg_port: u16) -> PgBouncer {
        let bin = binary();
        let owner = run_as_postgres();
        let dir = tempfile::Builder::new()
            .prefix("pgbouncer-test-")
            .tempdir()
            .expect("a temporary directory for PgBouncer");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown PgBouncer's directory to postgres");
        }
        let auth_file = dir.path().join("userlist.txt");
        write_owned(&auth_file, &format!("\"postgres\" \"{PASSWORD}\"\n"), owner);
        // A port found free may be taken before PgBouncer binds it: then try another.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = free_port();
            write_owned(
                &dir.path().join("pgbouncer.ini"),
                &configuration(dir.path(), pg_port, port),
                owner,
            );
            let mut child = spawn(&bin, dir.path(), owner);
            let url = url(port, "postgres");
            match wait_until_ready(&mut child, &url) {
                Ok(()) => {
                    return PgBouncer {
                        port,
                        child,
                        _dir: dir,
                    };
                }
                Err(trouble) => {
                    stop(&mut child);
                    let log = log_tail(dir.path());
                    if attempts < 5 && log.contains("in use") {
                        continue;
                    }
                    panic!(
                        "PgBouncer ({}) on port {port} in front of 127.0.0.1:{pg_port} \
                         {trouble}; the end of its log:\n{log}",
                        bin.display()
                    );
                }
            }
        }
    }

    /// The port it listens on, on 127.0.0.1.
    // The library's unit tests, which include this file too, need only the URL.
    #[allow(dead_code)]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `database` through PgBouncer, as `postgres` with its password.
    pub fn url(&self, database: &str) -> String {
        url(self.port, database)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn url(port: u16, database: &str) -> String {
    format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/{database}")
}

/// Waits until a connection through PgBouncer works. Each try runs on a thread of its own,
/// abandoned if PgBouncer holds it past the deadline (it keeps a client waiting for a server
/// up to its `client_login_timeout`, a minute); stopping PgBouncer then ends it.
fn wait_until_ready(child: &mut Child, url: &str) -> Result<(), String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Err(format!("exited at start ({status})")),
            Ok(None) => {}
            Err(e) => return Err(format!("could not be waited for: {e}")),
        }
        let (tx, rx) = mpsc::channel();
        let url = url.to_string();
        thread::Builder::new()
            .name("pgbouncer readiness".into())
            .spawn(move || {
                let outcome = postgres::Client::connect(&url, postgres::NoTls).map(drop);
                let _ = tx.send(outcome.map_err(|e| e.to_string()));
            })
            .expect("a thread to connect to PgBouncer from");
        let wait = deadline.saturating_duration_since(Instant::now());
        let last_error = match rx.recv_timeout(wait) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => "no answer yet".to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "accepted no connection in {PATIENCE:?} (the last try: {last_error})"
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The last lines of PgBouncer's log file and of what it wrote to stderr.
fn log_tail(dir: &Path) -> String {
    let mut tail = String::new();
    for name in ["pgbouncer.log", "stderr.log"] {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(30);
                let _ = writeln!(tail, "--- {name}:");
                for line in &lines[from..] {
                    let _ = writeln!(tail, "{line}");
                }
            }
            Err(e) => {
                let _ = writeln!(tail, "--- {name}: unreadable: {e}");
            }
        }
    }
    tail
}

/// Stops PgBouncer (SIGTERM: its immediate shutdown; SIGKILL if that takes more than five
/// seconds) and waits for it.
fn stop(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill with the pid of our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// PgBouncer's configuration: its defaults but for transaction pooling, plus where to listen,
/// where to write, the databases and the password file.
fn configuration(dir: &Path, pg_port: u16, port: u16) -> String {
    let dir = dir.display();
    format!(
        "[databases]\n\
         * = host=127.0.0.1 port={pg_port}\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir = {dir}\n\
         logfile = {dir}/pgbouncer.log\n\
         pidfile = {dir}/pgbouncer.pid\n\
         auth_file = {dir}/userlist.txt\n\
         pool_mode = transaction\n"
    )
}

/// Starts `pgbouncer` in the foreground on the configuration in `dir`.
fn spawn(bin: &Path, dir: &Path, owner: Option<(u32, u32)>) -> Child {
    let stderr = std::fs::File::create(dir.join("stderr.log")).expect("PgBouncer's stderr file");
    let mut command = Command::new(bin);
    command
        .arg(dir.join("pgbouncer.ini"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    spawn_as(command, owner).unwrap_or_else(|e| panic!("start {}: {e}", bin.display()))
}

/// Writes `text` to `path`, owned by `owner` if given.
fn write_owned(path: &Path, text: &str, owner: Option<(u32, u32)>) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
    }
}

fn binary() -> PathBuf {
    let from_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("pgbouncer"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let candidates = std::env::var_os("PGBOUNCER")
        .map(PathBuf::from)
        .into_iter()
        .chain(from_path)
        .chain([PathBuf::from("/usr/sbin/pgbouncer")]);
    for candidate in candidates {
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "pgbouncer was not found (set PGBOUNCER, or install it: `apt-get install -y \
         pgbouncer`): the tests through PgBouncer cannot run"
    );
}
