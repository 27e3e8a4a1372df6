//! A replicated PostgreSQL for the integration tests: a real etcd and two PostgreSQL 15 nodes
//! under real Patroni (Debian's `etcd-server` and `patroni`), on loopback, in a temporary
//! directory; Patroni speaks etcd's v2 API (`etcd:`, etcd with `--enable-v2`): Debian's
//! Patroni 3.0.2 may overwrite the leader key unconditionally through the v3 API (`etcd3:`,
//! fixed in Patroni 3.0.3, patroni/patroni#2689), so a hung primary that resumes could take
//! the lead back from the promoted standby and lose what it acknowledged; synchronous replication (`synchronous_mode`), so a failover loses nothing
//! acknowledged, and `use_pg_rewind`, so a former primary rejoins as a replica. Everything runs
//! as the `postgres` user when the tests run as root, and is stopped when the [`Patroni`] is
//! dropped (a hung node resumed first).
//!
//! A test loses a primary as production does: [`Patroni::kill`] (SIGKILL of its Patroni, its
//! postmaster and every backend), [`Patroni::hang`] (SIGSTOP of them all: nothing is reset,
//! as when a machine freezes or loses its network) or [`Patroni::switchover`].
//!
//! Without `patroni`, `patronictl` or `etcd` on the PATH, the tests fail, saying what to
//! install: they never skip.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::pg::{binaries, free_port, run_as_postgres, spawn_as};

/// How long the cluster may take to have a primary and a synchronous standby.
const START_PATIENCE: Duration = Duration::from_secs(90);

/// A running etcd and two Patroni-managed PostgreSQL nodes.
pub struct Patroni {
    dir: tempfile::TempDir,
    etcd: Child,
    nodes: Vec<Node>,
    owner: Option<(u32, u32)>,
}

/// One PostgreSQL node and its Patroni.
struct Node {
    name: String,
    /// PostgreSQL's port on 127.0.0.1.
    port: u16,
    /// Patroni's REST API port on 127.0.0.1.
    rest: u16,
    config: PathBuf,
    data: PathBuf,
    patroni: Option<Child>,
}

impl Patroni {
    /// etcd, then node 0 (which bootstraps the cluster and is its first primary), then node 1
    /// (a synchronous standby); returns once node 1 is the synchronous standby and the
    /// database `accounts` exists.
    pub fn start() -> Patroni {
        let tools = ["patroni", "patronictl", "etcd"];
        for tool in tools {
            assert!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
                "{tool} is missing: the failover tests need Debian's patroni and etcd-server \
                 (apt-get install patroni etcd-server; .ci/run installs them)"
            );
        }
        let owner = run_as_postgres();
        let dir = tempfile::Builder::new()
            .prefix("patroni-test-")
            .tempdir()
            .expect("a directory for the Patroni cluster");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the Patroni cluster's directory");
        }
        let etcd_port = free_port();
        let etcd = start_etcd(dir.path(), etcd_port, owner);
        let nodes = (0..2)
            .map(|n| {
                let name = format!("node{n}");
                let port = free_port();
                let rest = free_port();
                let config = dir.path().join(format!("{name}.yml"));
                let data = dir.path().join(&name);
                write_owned(
                    &config,
                    &configuration(dir.path(), &name, port, rest, etcd_port),
                    owner,
                );
                Node {
                    name,
                    port,
                    rest,
                    config,
                    data,
                    patroni: None,
                }
            })
            .collect();
        let mut cluster = Patroni {
            dir,
            etcd,
            nodes,
            owner,
        };
        cluster.start_node(0);
        cluster.wait_until(START_PATIENCE, "node0 to lead", |c| c.primary() == Some(0));
        cluster.start_node(1);
        cluster.wait_until(START_PATIENCE, "node1 to be the sync standby", |c| {
            c.is_sync_standby(1)
        });
        cluster
            .psql(0, "CREATE DATABASE accounts")
            .expect("create the accounts database");
        cluster
    }

    /// The URL the instances use: both nodes, the one that takes writes.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!(
            "postgres://postgres@{}/accounts?target_session_attrs=read-write",
            hosts.join(",")
        )
    }

    /// The node whose Patroni says it is the primary (REST `GET /primary` answers 200), if
    /// one does.
    pub fn primary(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&n| rest_status(self.nodes[n].rest, "/primary") == Some(200))
    }

    /// Whether node `n` is a replica that streams from the primary.
    pub fn is_replica(&self, n: usize) -> bool {
        rest_status(self.nodes[n].rest, "/replica") == Some(200)
    }

    /// Whether node `n` is the synchronous standby.
    pub fn is_sync_standby(&self, n: usize) -> bool {
        rest_status(self.nodes[n].rest, "/sync") == Some(200)
    }

    /// Waits until `done`, at most `patience`, else panics naming `what` and the cluster's
    /// state.
    pub fn wait_until(&self, patience: Duration, what: &str, done: impl Fn(&Patroni) -> bool) {
        let started = Instant::now();
        while !done(self) {
            assert!(
                started.elapsed() < patience,
                "waited {patience:?} for {what}: {}",
                self.list()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// `patronictl list`, for messages.
    pub fn list(&self) -> String {
        let out = Command::new("patronictl")
            .arg("-c")
            .arg(&self.nodes[0].config)
            .arg("list")
            .output();
        match out {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(e) => format!("(patronictl: {e})"),
        }
    }

    /// Starts (or starts again) node `n`'s Patroni, which starts its PostgreSQL: a former
    /// primary rejoins as a replica, rewound if it must be.
    pub fn start_node(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", node.name)))
            .expect("a log file for Patroni");
        if let Some((uid, gid)) = self.owner {
            let _ = std::os::unix::fs::chown(
                self.dir.path().join(format!("{}.log", node.name)),
                Some(uid),
                Some(gid),
            );
        }
        let mut command = Command::new("patroni");
        command
            .arg(&node.config)
            .current_dir(self.dir.path())
            .stdout(log.try_clone().expect("the log file, twice"))
            .stderr(log);
        node.patroni = Some(spawn_as(command, self.owner).expect("start patroni"));
    }

    /// Kills node `n` at once: its Patroni, its postmaster and every backend (SIGKILL).
    pub fn kill(&mut self, n: usize) {
        for pid in self.processes(n) {
            signal(pid, libc::SIGKILL);
        }
        if let Some(mut patroni) = self.nodes[n].patroni.take() {
            let _ = patroni.wait();
        }
    }

    /// Stops node `n`'s Patroni, postmaster and backends where they are (SIGSTOP): their
    /// connections stay open and nothing answers. The postmaster first, so that it forks no
    /// backend meanwhile; then its children, looked for again until none is left running.
    pub fn hang(&self, n: usize) {
        let node = &self.nodes[n];
        if let Some(patroni) = &node.patroni {
            signal(patroni.id() as i32, libc::SIGSTOP);
        }
        let Some(postmaster) = postmaster(&node.data) else {
            return;
        };
        signal(postmaster, libc::SIGSTOP);
        for _ in 0..10 {
            let running: Vec<i32> = children(postmaster)
                .into_iter()
                .filter(|&pid| process_state(pid) != Some('T'))
                .collect();
            if running.is_empty() {
                return;
            }
            for pid in running {
                signal(pid, libc::SIGSTOP);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resumes a node [`Patroni::hang`] stopped.
    pub fn resume(&self, n: usize) {
        for pid in self.processes(n) {
            signal(pid, libc::SIGCONT);
        }
    }

    /// A planned switchover to node `candidate` (`patronictl switchover`).
    pub fn switchover(&self, candidate: usize) {
        let out = Command::new("patronictl")
            .arg("-c")
            .arg(&self.nodes[candidate].config)
            .args([
                "switchover",
                "--candidate",
                &self.nodes[candidate].name,
                "--force",
            ])
            .output()
            .expect("run patronictl switchover");
        assert!(
            out.status.success(),
            "patronictl switchover failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `sql` on node `n` with `psql` (as `postgres`): its output, or why it failed.
    pub fn psql(&self, n: usize, sql: &str) -> Result<String, String> {
        let out = Command::new(binaries().join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.nodes[n].port.to_string(), "-U", "postgres"])
            .args([
                "-d",
                if sql.starts_with("CREATE DATABASE") {
                    "postgres"
                } else {
                    "accounts"
                },
            ])
            .args(["-c", sql])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Node `n`'s Patroni, postmaster and the postmaster's children.
    fn processes(&self, n: usize) -> Vec<i32> {
        let node = &self.nodes[n];
        let mut pids: Vec<i32> = node.patroni.iter().map(|c| c.id() as i32).collect();
        if let Some(postmaster) = postmaster(&node.data) {
            pids.push(postmaster);
            pids.extend(children(postmaster));
        }
        pids
    }
}

impl Drop for Patroni {
    fn drop(&mut self) {
        for n in 0..self.nodes.len() {
            self.resume(n);
            let postmaster = postmaster(&self.nodes[n].data);
            if let Some(mut patroni) = self.nodes[n].patroni.take() {
                signal(patroni.id() as i32, libc::SIGKILL);
                let _ = patroni.wait();
            }
            // Patroni's PostgreSQL is not its child's child for the kernel's death signal:
            // stopped here, with its backends.
            if let Some(postmaster) = postmaster {
                signal(postmaster, libc::SIGQUIT);
            }
        }
        signal(self.etcd.id() as i32, libc::SIGKILL);
        let _ = self.etcd.wait();
        // The postmasters' ends, before their directory goes.
        let started = Instant::now();
        while self.nodes.iter().any(|n| postmaster(&n.data).is_some())
            && started.elapsed() < Duration::from_secs(10)
        {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// etcd on `port` (its peer port another free one), data in `dir/etcd`.
fn start_etcd(dir: &Path, port: u16, owner: Option<(u32, u32)>) -> Child {
    let peer = free_port();
    let client_url = format!("http://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut command = Command::new("etcd");
    command
        .args(["--name", "etcd0", "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("etcd0={peer_url}")])
        .arg("--enable-v2")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut etcd = spawn_as(command, owner).expect("start etcd");
    let started = Instant::now();
    while rest_status(port, "/health") != Some(200) {
        if let Ok(Some(status)) = etcd.try_wait() {
            panic!("etcd ended at start: {status}");
        }
        assert!(
            started.elapsed() < START_PATIENCE,
            "etcd did not answer on {client_url}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    etcd
}

/// A node's Patroni configuration: `scripts/patroni-node.yml`, the template `make
/// cluster-ha` fills in too (it says why each setting), filled in.
fn configuration(dir: &Path, name: &str, port: u16, rest: u16, etcd: u16) -> String {
    include_str!("../../scripts/patroni-node.yml")
        .replace("@NAME@", name)
        .replace("@REST@", &rest.to_string())
        .replace("@ETCD@", &etcd.to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@DIR@", &dir.display().to_string())
        .replace("@BIN@", &binaries().display().to_string())
}

/// Writes `text` to `path`, owned by `owner`.
fn write_owned(path: &Path, text: &str, owner: Option<(u32, u32)>) {
    std::fs::write(path, text).expect("write a Patroni configuration");
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown a configuration");
    }
}

/// The status of `GET path` on 127.0.0.1:`port` (Patroni's REST API, etcd's health), if it
/// answers within a second.
fn rest_status(port: u16, path: &str) -> Option<u16> {
    let timeout = Duration::from_secs(1);
    let mut tcp = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout).ok()?;
    tcp.set_read_timeout(Some(timeout)).ok()?;
    tcp.set_write_timeout(Some(timeout)).ok()?;
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The pid of the postmaster of the data directory `data`, if it runs.
fn postmaster(data: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// The fields of `/proc/PID/stat` after the command's closing parenthesis: state, ppid, ...
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// A process's state letter (`T`: stopped).
fn process_state(pid: i32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// The pids whose parent is `parent`.
fn children(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            stat_fields(pid).and_then(|fields| fields.get(1)?.parse::<i32>().ok()) == Some(parent)
        })
        .collect()
}

/// Sends `signal` to `pid` (gone already is fine).
fn signal(pid: i32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions; the pids are this test's processes.
    unsafe { libc::kill(pid, signal) };
}
