//! Throwaway PostgreSQL clusters for the tests, for the library's unit tests and the
//! integration tests (each includes this file with `#[path]`): `initdb` in a temporary
//! directory, then the server as a child of this process, as the `postgres` user when the
//! tests run as root (PostgreSQL refuses to run as root). A server gets SIGTERM when the test
//! process ends, however it ends. [`cluster`] is the one most tests share (removed at a
//! normal exit); [`Cluster::new`] makes one of a test's own (removed when dropped), to stop
//! and start.
//!
//! The binaries are found in `$PG_BIN`, else `pg_config --bindir`, else
//! `/usr/lib/postgresql/15/bin`; without them the tests fail, saying so: they never skip.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// A real PgBouncer in front of a cluster.
#[path = "pgbouncer.rs"]
pub mod pgbouncer;

/// The running cluster of this test process.
pub struct Cluster {
    /// The TCP port it listens on, on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    server: Mutex<Option<Child>>,
    next_database: AtomicU64,
}

/// The shared cluster, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let cluster = Cluster::new();
        let pid = cluster.server.lock().unwrap().as_ref().map_or(0, Child::id);
        SHARED_PID.store(u64::from(pid), Ordering::SeqCst);
        let _ = SHARED_DIR.set(cluster.dir.clone());
        // SAFETY: `remove_at_exit` is a plain `extern "C" fn()` that touches only statics.
        unsafe { libc::atexit(remove_at_exit) };
        cluster
    })
}

impl Cluster {
    /// A new cluster of the caller's own, running.
    pub fn new() -> Cluster {
        Cluster::create(None)
    }

    /// A new cluster of the caller's own made with `initdb --locale=LOCALE` (`C.UTF-8`, say,
    /// Debian's default, where `lower()` folds more than ASCII), running.
    // Not every includer of this file uses it, and clippy runs with `-D warnings`.
    #[allow(dead_code)]
    pub fn with_locale(locale: &str) -> Cluster {
        Cluster::create(Some(locale))
    }

    fn create(locale: Option<&str>) -> Cluster {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let bin = binaries();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("pg-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for the test cluster");
        let owner = run_as_postgres();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the cluster dir");
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(dir.join("data"))
            .stdout(Stdio::null());
        if let Some(locale) = locale {
            initdb.arg(format!("--locale={locale}"));
        }
        let out = as_owner(&mut initdb, owner).output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let cluster = Cluster {
            port,
            dir,
            bin,
            owner,
            server: Mutex::new(None),
            next_database: AtomicU64::new(0),
        };
        cluster.start_server();
        cluster
    }

    /// Starts the server (again, after [`Cluster::stop_server`]) and waits until it answers.
    pub fn start_server(&self) {
        let mut slot = self.server.lock().unwrap();
        assert!(slot.is_none(), "the test cluster is running already");
        let mut command = Command::new(self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-k"])
            .arg(&self.dir)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "max_connections=500"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_as(command, self.owner).expect("start postgres");
        *slot = Some(child);
        drop(slot);
        self.wait_until_ready();
    }

    /// Stops the server at once (as a crash would), keeping its data.
    pub fn stop_server(&self) {
        if let Some(mut child) = self.server.lock().unwrap().take() {
            // SAFETY: kill with a pid of our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGQUIT) };
            let _ = child.wait();
        }
    }

    /// A new, empty database, and the URL to reach it as the superuser.
    pub fn new_database(&self) -> String {
        let n = self.next_database.fetch_add(1, Ordering::SeqCst);
        let name = format!("test_{n}");
        let mut admin = self.admin();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a test database");
        self.url(&name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    fn admin(&self) -> postgres::Client {
        postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .expect("connect to the test cluster")
    }

    fn wait_until_ready(&self) {
        let started = Instant::now();
        loop {
            if postgres::Client::connect(&self.url("postgres"), postgres::NoTls).is_ok() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the test cluster never answered on port {}",
                self.port
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_server();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Something for the [`Starter`] to run.
type Job = Box<dyn FnOnce() + Send>;

/// A thread that lives as long as the process and runs what it is given: children it starts
/// are not killed by PR_SET_PDEATHSIG when a test's thread ends.
struct Starter(OnceLock<Mutex<mpsc::Sender<Job>>>);

static STARTER: Starter = Starter(OnceLock::new());
/// The shared cluster's server and directory, for [`remove_at_exit`] (statics are not dropped).
static SHARED_PID: AtomicU64 = AtomicU64::new(0);
static SHARED_DIR: OnceLock<PathBuf> = OnceLock::new();

impl Starter {
    fn with_starter(&self, job: impl FnOnce() + Send + 'static) {
        let sender = self.0.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            thread::Builder::new()
                .name("postgres starter".into())
                .spawn(move || {
                    for job in rx {
                        job();
                    }
                })
                .expect("a thread to start postgres from");
            Mutex::new(tx)
        });
        sender.lock().unwrap().send(Box::new(job)).unwrap();
    }
}

/// At a normal exit: stop the shared cluster's server and remove its directory.
extern "C" fn remove_at_exit() {
    let pid = SHARED_PID.load(Ordering::SeqCst);
    if pid != 0 {
        // SAFETY: the pid is our child's; a fast shutdown, then we give it a moment.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
        thread::sleep(Duration::from_millis(300));
    }
    if let Some(dir) = SHARED_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

pub fn binaries() -> PathBuf {
    let candidates = std::env::var_os("PG_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            Command::new("pg_config")
                .arg("--bindir")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())),
        )
        .chain([PathBuf::from("/usr/lib/postgresql/15/bin")]);
    for dir in candidates {
        if dir.join("initdb").exists() && dir.join("postgres").exists() {
            return dir;
        }
    }
    panic!(
        "PostgreSQL's initdb and postgres were not found (set PG_BIN, or install Debian's \
         postgresql-15): the PostgreSQL tests cannot run"
    );
}

/// The `postgres` user's uid and gid when the tests run as root, to run the server as.
pub fn run_as_postgres() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        assert!(
            out.status.success(),
            "running as root, the tests need a `postgres` user to run PostgreSQL and PgBouncer as"
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    Some((id("-u"), id("-g")))
}

/// A free TCP port on 127.0.0.1 (free when asked; a server may still find it taken), from
/// below the ports the system gives outgoing connections (`net.ipv4.ip_local_port_range`,
/// 32768 and up by default): the tests' own client sockets, thousands of them, never take it
/// before its server binds it. Each test process walks the ports in its own order (offset by
/// its process id: the unit and integration tests run at once), skipping those it cannot
/// bind. Where the system leaves too few ports below its range, a port the system chooses.
pub fn free_port() -> u16 {
    const SPAN: u32 = 10_000;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let ephemeral_start: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    if ephemeral_start > SPAN + 1024 {
        let low = ephemeral_start - SPAN;
        let offset = std::process::id().wrapping_mul(7_919) % SPAN;
        for _ in 0..SPAN {
            let step = NEXT.fetch_add(1, Ordering::Relaxed) as u32 % SPAN;
            let port = (low + (offset + step) % SPAN) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    let probe = TcpListener::bind("127.0.0.1:0").expect("a free port");
    probe.local_addr().expect("a probe's address").port()
}

/// Starts `command` as `owner` (if given), to die with this process: from a thread that lives
/// as long as the process (a child dies with the thread that started it, PR_SET_PDEATHSIG).
pub fn spawn_as(mut command: Command, owner: Option<(u32, u32)>) -> std::io::Result<Child> {
    as_owner(&mut command, owner);
    // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec, after
    // the user change (which would clear the setting).
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let (tx, rx) = mpsc::channel();
    STARTER.with_starter(move || {
        let _ = tx.send(command.spawn());
    });
    rx.recv().expect("the starter thread")
}

fn as_owner(command: &mut Command, owner: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    command
}
